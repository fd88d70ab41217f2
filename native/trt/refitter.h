// Refitting an engine's weights in place (LoRA sets on the TensorRT backend; docs/architecture.md).
//
//   engine.refittable → boolean                         ICudaEngine::isRefittable() (built with kREFIT)
//   engine.refit({ [weightName]: Float32Array }) → Promise<{ refitted, missing, weights }>   (SdEngineRefitWorker)
//
// Weights are named as the ONNX initializers the engine was built from (TensorRT's ONNX parser
// keeps them; sd-trt's converted graphs name them by diffusers key) and given as float32 in the
// initializer's layout (Linear weights [in, out]); each is converted here to the type the engine
// stores it in (getWeightsPrototype: float32, float16 round-to-nearest-even, or bfloat16), and its
// element count is checked against the engine's.
//
// TensorRT may have fused weights together (a MatMul with the bias Add after it, …): it then
// needs the partners of a weight refitted with it. Such a call refits nothing and resolves
// { refitted: false, missing: [names] }; the caller adds those weights (their current values)
// and calls again. Otherwise TensorRT refits (refitCudaEngine) and it resolves
// { refitted: true, missing: [], weights: n }. A weight the engine does not have, a wrong count, or
// an engine built without the refit flag rejects with a NativeError naming the weight or engine.
//
// The weights are copied (converted) on the JS thread before the worker runs (native boundary
// rule 3). The caller must not run the engine while it is refitted: the TS backend refits between
// batches, inside its exclusive lifecycle section (design rule 8).
#pragma once

#include <napi.h>

#include <memory>

namespace sdtrt::trt {

struct LoadedEngine;

// engine.refit(weights): starts SdEngineRefitWorker and returns its promise.
Napi::Value RefitEngine(const Napi::CallbackInfo& info, std::shared_ptr<LoadedEngine> engine);

}  // namespace sdtrt::trt
