// Loaded TensorRT engines and the device memory their execution contexts share.
//
//   tensorrt.loadEngine(plan: Uint8Array, { name, device? }) → Promise<TrtEngine>   (SdEngineLoadWorker)
//   engine.name / .device / .io / .profiles / .deviceMemoryBytes / .disposed
//   engine.inspect() → { verbosity, layers }  IEngineInspector's JSON (trtexec --dumpLayerInfo)
//   engine.refittable / engine.refit(weights) → Promise                             (refitter.h)
//   engine.createContext(scratch) → TrtContext                                     (execution_context.h)
//   engine.dispose()
//
//   new tensorrt.DeviceScratch(bytes, { device? })    one device buffer that every context of a
//   scratch.bytes / .disposed / .dispose()            pipeline uses as TensorRT's activation memory
//
// Contexts are created with ExecutionContextAllocationStrategy::kUSER_MANAGED and given the
// scratch through setDeviceMemoryV2(), so the text encoder, UNet and VAE contexts of a pipeline
// share one allocation sized to the largest getDeviceMemorySizeV2() (the TensorRT demo's
// `calculateMaxDeviceMemory`). That is safe because a pipeline runs one stage at a time: the
// CLIP/VAE workers hold the scratch's mutex for their whole call, and the TS backend serialises
// denoise calls with them (design rule 8).
//
// Lifetimes: a context holds its engine and its scratch (shared_ptr), so dispose() on an engine or
// scratch only drops the JS object's reference; the memory goes when the last context using it is
// gone. Contexts are destroyed before their engine, and engines before their runtime.
#pragma once

#include <NvInferRuntime.h>
#include <napi.h>

#include <map>
#include <memory>
#include <mutex>
#include <string>
#include <vector>

#include "../common/addon_data.h"
#include "../common/device_buffer.h"
#include "trt_common.h"
#include "trt_logger.h"

namespace sdtrt::trt {

struct ScratchState {
  int device = 0;
  DeviceBuffer buffer;
  std::mutex mutex;  // held by a CLIP/VAE call while it uses the memory
};

struct ProfileRange {
  std::vector<int64_t> min, opt, max;
};

struct LoadedEngine {
  std::string name;
  int device = 0;
  CollectingLogger logger{nvinfer1::ILogger::Severity::kWARNING};  // declared first: outlives the runtime
  TrtPtr<nvinfer1::IRuntime> runtime;
  TrtPtr<nvinfer1::ICudaEngine> engine;
  std::vector<TensorInfo> io;
  std::vector<std::map<std::string, ProfileRange>> profiles;
  int64_t deviceMemoryBytes = 0;

  ~LoadedEngine();
  const TensorInfo* Find(const std::string& name) const;
};

class DeviceScratchWrap : public Napi::ObjectWrap<DeviceScratchWrap> {
 public:
  static Napi::Function Define(Napi::Env env);
  static DeviceScratchWrap* FromJs(const Napi::Value& value);
  explicit DeviceScratchWrap(const Napi::CallbackInfo& info);
  ~DeviceScratchWrap() override;
  std::shared_ptr<ScratchState> state() const { return state_; }

 private:
  Napi::Value GetBytes(const Napi::CallbackInfo& info);
  Napi::Value GetDisposed(const Napi::CallbackInfo& info);
  Napi::Value Dispose(const Napi::CallbackInfo& info);
  std::shared_ptr<ScratchState> state_;
  std::shared_ptr<CleanupRegistry> cleanup_;
};

class EngineWrap : public Napi::ObjectWrap<EngineWrap> {
 public:
  static Napi::Function Define(Napi::Env env);
  // Wraps a loaded engine as a JS TrtEngine (JS thread only).
  static Napi::Object New(Napi::Env env, std::shared_ptr<LoadedEngine> engine);
  explicit EngineWrap(const Napi::CallbackInfo& info);
  ~EngineWrap() override;

 private:
  std::shared_ptr<LoadedEngine> Require(Napi::Env env, const char* what) const;
  Napi::Value GetName(const Napi::CallbackInfo& info);
  Napi::Value GetDevice(const Napi::CallbackInfo& info);
  Napi::Value GetIo(const Napi::CallbackInfo& info);
  Napi::Value GetProfiles(const Napi::CallbackInfo& info);
  Napi::Value GetDeviceMemoryBytes(const Napi::CallbackInfo& info);
  Napi::Value GetDisposed(const Napi::CallbackInfo& info);
  Napi::Value CreateContext(const Napi::CallbackInfo& info);
  Napi::Value Inspect(const Napi::CallbackInfo& info);
  Napi::Value GetRefittable(const Napi::CallbackInfo& info);
  Napi::Value Refit(const Napi::CallbackInfo& info);
  Napi::Value Dispose(const Napi::CallbackInfo& info);
  std::shared_ptr<LoadedEngine> engine_;
  std::shared_ptr<CleanupRegistry> cleanup_;
};

void RegisterEngine(Napi::Env env, Napi::Object target);

}  // namespace sdtrt::trt
