// sd_trt.node: the Node-API entry point. Registers
//   info(options?)                  what was compiled in, CUDA versions and devices (never throws for
//                                   a missing driver/GPU: those are reported as data)
//   Denoiser                        the device denoise loop (denoiser/denoiser_js.h)
//   DeviceTensor                    device-resident tensors passed between native calls (CUDA builds)
//   deviceVaeToUint8, deviceFloatToHalf
//                                   device runs of single kernels, for the GPU self-test (CUDA builds)
//   hostRunProgram, hostVaeToUint8, hostFloatToHalf, hostHalfToFloat
//                                   host paths of the kernel math, for tests (denoiser/host_math_js.h)
//   …and the TensorRT module's exports (native/trt, when compiled in).
// Loading never touches the GPU: CUDA is first initialised by info() or a Denoiser.
#include <napi.h>

#include <string>

#include "common/addon_data.h"
#include "common/js_error.h"
#include "denoiser/denoiser_js.h"
#include "denoiser/host_math_js.h"

#if SDTRT_WITH_CUDA
#include <cuda_runtime_api.h>

#include "common/cuda_info.h"
#include "common/device_tensor.h"
#include "denoiser/device_kernels_js.h"
#endif
#if SDTRT_WITH_TENSORRT
#include "trt/register.h"
#endif

#ifndef SDTRT_VERSION
#define SDTRT_VERSION "0.0.0"
#endif
#ifndef SDTRT_CUDA_ARCHS
#define SDTRT_CUDA_ARCHS ""
#endif

namespace sdtrt {

namespace {

Napi::Object BuildInfo(Napi::Env env) {
  Napi::Object build = Napi::Object::New(env);
  build.Set("napiVersion", Napi::Number::New(env, NAPI_VERSION));
#if SDTRT_WITH_CUDA
  build.Set("cuda", Napi::Boolean::New(env, true));
  build.Set("cudaVersion", Napi::Number::New(env, CUDART_VERSION));
  build.Set("cudaArchitectures", Napi::String::New(env, SDTRT_CUDA_ARCHS));
#else
  build.Set("cuda", Napi::Boolean::New(env, false));
  build.Set("cudaVersion", Napi::Number::New(env, 0));
  build.Set("cudaArchitectures", Napi::String::New(env, ""));
#endif
#if SDTRT_WITH_TENSORRT
  build.Set("tensorrt", Napi::Boolean::New(env, true));
#else
  build.Set("tensorrt", Napi::Boolean::New(env, false));
#endif
  return build;
}

// info({ freeMemory?: boolean }): see lib/native/types.ts NativeInfo.
Napi::Value Info(const Napi::CallbackInfo& info) {
  Napi::Env env = info.Env();
  bool freeMemory = false;
  if (info.Length() > 0 && !info[0].IsUndefined()) {
    Napi::Object options = RequireObject(info[0], "options");
    freeMemory = OptionalBoolean(options, "freeMemory", "options", false);
  }
  Napi::Object out = Napi::Object::New(env);
  out.Set("version", Napi::String::New(env, SDTRT_VERSION));
  out.Set("napi", Napi::Number::New(env, NAPI_VERSION));
  out.Set("build", BuildInfo(env));
  Napi::Array devices = Napi::Array::New(env);
#if SDTRT_WITH_CUDA
  out.Set("cudaCompiledIn", Napi::Boolean::New(env, true));
  const CudaInfo cuda = QueryCudaInfo(freeMemory);
  out.Set("cudaRuntimeVersion", Napi::Number::New(env, cuda.runtimeVersion));
  out.Set("cudaDriverVersion", Napi::Number::New(env, cuda.driverVersion));
  if (!cuda.driverError.empty()) out.Set("cudaDriverError", Napi::String::New(env, cuda.driverError));
  for (size_t i = 0; i < cuda.devices.size(); ++i) {
    const CudaDeviceInfo& d = cuda.devices[i];
    Napi::Object device = Napi::Object::New(env);
    device.Set("index", Napi::Number::New(env, d.index));
    device.Set("name", Napi::String::New(env, d.name));
    device.Set("computeCapability", Napi::String::New(env, std::to_string(d.major) + "." + std::to_string(d.minor)));
    device.Set("totalMemory", Napi::Number::New(env, static_cast<double>(d.totalMemory)));
    if (d.freeMemory >= 0) {
      device.Set("freeMemory", Napi::Number::New(env, static_cast<double>(d.freeMemory)));
    } else {
      device.Set("freeMemory", env.Null());
    }
    device.Set("multiprocessors", Napi::Number::New(env, d.multiprocessors));
    if (!d.error.empty()) device.Set("error", Napi::String::New(env, d.error));
    devices.Set(static_cast<uint32_t>(i), device);
  }
  if (!cuda.deviceError.empty()) {
    out.Set("deviceError", Napi::String::New(env, cuda.deviceError));
    out.Set("deviceErrorStatus", Napi::String::New(env, cuda.deviceErrorStatus));
  }
#else
  (void)freeMemory;
  out.Set("cudaCompiledIn", Napi::Boolean::New(env, false));
  out.Set("cudaRuntimeVersion", Napi::Number::New(env, 0));
  out.Set("cudaDriverVersion", Napi::Number::New(env, 0));
  out.Set("cudaDriverError", Napi::String::New(env, "CUDA support was not compiled in"));
  out.Set("deviceError", Napi::String::New(env, "CUDA support was not compiled in"));
  out.Set("deviceErrorStatus", Napi::String::New(env, ""));
#endif
  out.Set("devices", devices);
#if SDTRT_WITH_TENSORRT
  out.Set("tensorrtCompiledIn", Napi::Boolean::New(env, true));
  out.Set("tensorrt", trt::RuntimeInfo(env));
#else
  out.Set("tensorrtCompiledIn", Napi::Boolean::New(env, false));
  out.Set("tensorrt", env.Null());
  out.Set("tensorrtError",
          Napi::String::New(env, "TensorRT support was not compiled in (the addon was built without TensorRT headers)"));
#endif
  return out;
}

// cancelAll() → number: asks every in-flight denoise loop and engine build of this environment to
// stop; returns at once (their promises reject with ABORT_ERR) with how many were running.
Napi::Value CancelAll(const Napi::CallbackInfo& info) {
  return Napi::Number::New(info.Env(), static_cast<double>(GetAddonData(info.Env()).cleanup->CancelAll()));
}

// shutdown(): what the environment cleanup hook does, on demand: cancel everything, wait for running
// denoise loops to stop (within their queueDepth evaluations) and free every CUDA/TensorRT object.
// For process.on("exit") (lib/native/load.ts): process.exit() runs no cleanup hooks, and Node waits
// for pending async work before it runs them, so without this a second Ctrl-C or a worker exit
// waits for a whole loop. Objects used afterwards report ERR_DISPOSED. Returns how many loops and
// builds were running when it cancelled them.
Napi::Value Shutdown(const Napi::CallbackInfo& info) {
  return Napi::Number::New(info.Env(), static_cast<double>(GetAddonData(info.Env()).cleanup->RunAll()));
}

}  // namespace

Napi::Object Init(Napi::Env env, Napi::Object exports) {
  auto* data = new AddonData();
  env.SetInstanceData<AddonData>(data);
  // One hook for every CUDA/TensorRT object of this environment (addon_data.h).
  std::shared_ptr<CleanupRegistry> registry = data->cleanup;
  env.AddCleanupHook([registry]() { registry->RunAll(); });

  exports.Set("info", Napi::Function::New(env, Info, "info"));
  exports.Set("cancelAll", Napi::Function::New(env, CancelAll, "cancelAll"));
  exports.Set("shutdown", Napi::Function::New(env, Shutdown, "shutdown"));
  RegisterDenoiser(env, exports);
  host::RegisterHostMath(env, exports);
#if SDTRT_WITH_CUDA
  DeviceTensor::Init(env, exports);
  RegisterDeviceKernels(env, exports);
#endif
#if SDTRT_WITH_TENSORRT
  trt::Register(env, exports);
#endif
  return exports;
}

}  // namespace sdtrt

static Napi::Object InitSdTrt(Napi::Env env, Napi::Object exports) { return sdtrt::Init(env, exports); }

NODE_API_MODULE(sd_trt, InitSdTrt)
