// Entry points of the TensorRT part of the addon (native/trt), compiled only when TensorRT
// headers were found at build time (SDTRT_WITH_TENSORRT). native/addon.cc calls these.
#pragma once

#include <napi.h>

#include <memory>

#include "../denoiser/unet_runner.h"

namespace sdtrt::trt {

// Adds the TensorRT classes/functions (engine build, engine load, …) to the addon exports.
void Register(Napi::Env env, Napi::Object exports);

// Returns the UnetRunner behind a JS engine object created by this module, or nullptr when
// `value` is not one (the caller then throws a TypeError naming the option).
std::shared_ptr<UnetRunner> UnetRunnerFromJs(const Napi::Value& value);

// Runtime status for `doctor`: whether libnvinfer could be dlopen'ed, its version, the error.
Napi::Object RuntimeInfo(Napi::Env env);

}  // namespace sdtrt::trt
