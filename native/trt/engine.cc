#include "engine.h"
#include "refitter.h"

#include <cuda_runtime_api.h>

#include "../common/cuda_check.h"
#include "../common/js_class.h"
#include "../common/js_error.h"
#include "execution_context.h"
#include "trt_library.h"

namespace sdtrt::trt {

namespace {

constexpr const char* kLoadStage = "engine-load";

// Identify objects created by this module (napi_type_tag_object).
constexpr napi_type_tag kScratchTag = {0x7364747274727473ULL, 0x6372617463680001ULL};
constexpr napi_type_tag kEngineTag = {0x7364747274727465ULL, 0x6e67696e65000001ULL};

Napi::Object ProfilesToJs(Napi::Env env, const std::map<std::string, ProfileRange>& profile) {
  Napi::Object out = Napi::Object::New(env);
  for (const auto& entry : profile) {
    Napi::Object range = Napi::Object::New(env);
    range.Set("min", ShapeToJs(env, entry.second.min));
    range.Set("opt", ShapeToJs(env, entry.second.opt));
    range.Set("max", ShapeToJs(env, entry.second.max));
    out.Set(entry.first, range);
  }
  return out;
}

// SdEngineLoadWorker: deserializes a plan on a libuv thread. The plan's bytes are borrowed from
// the caller's Uint8Array, which the worker pins until it settles.
class SdEngineLoadWorker : public NativeAsyncWorker {
 public:
  SdEngineLoadWorker(Napi::Env env, Napi::TypedArray plan, std::string name, int device)
      : NativeAsyncWorker(env, "SdEngineLoadWorker", kLoadStage),
        pinned_(Napi::Persistent(plan.As<Napi::Object>())),
        data_(static_cast<const uint8_t*>(plan.ArrayBuffer().Data()) + plan.ByteOffset()),
        size_(plan.ByteLength()),
        name_(std::move(name)),
        device_(device) {}

 protected:
  std::string ApiName() const override { return "nvinfer1::IRuntime::deserializeCudaEngine"; }

  void Run() override {
    TrtLibrary::Get().RequireRuntime(kLoadStage);
    const int device = device_;
    SDTRT_CUDA_CHECK(kLoadStage, cudaSetDevice(device));
    auto loaded = std::make_shared<LoadedEngine>();
    loaded->name = name_;
    loaded->device = device_;
    loaded->runtime.reset(TrtLibrary::Get().CreateRuntime(loaded->logger, kLoadStage));
    loaded->engine.reset(loaded->runtime->deserializeCudaEngine(data_, size_));
    if (!loaded->engine) {
      ThrowTrt(kLoadStage,
               "IRuntime::deserializeCudaEngine failed for " + name_ +
                   " (a plan loads only with the TensorRT version and GPU architecture it was built for)",
               loaded->logger);
    }
    nvinfer1::ICudaEngine& engine = *loaded->engine;
    for (int32_t i = 0; i < engine.getNbIOTensors(); ++i) {
      const char* name = engine.getIOTensorName(i);
      TensorInfo t;
      t.name = name;
      t.input = engine.getTensorIOMode(name) == nvinfer1::TensorIOMode::kINPUT;
      t.type = engine.getTensorDataType(name);
      t.shape = DimsToVector(engine.getTensorShape(name));
      loaded->io.push_back(std::move(t));
    }
    for (int32_t p = 0; p < engine.getNbOptimizationProfiles(); ++p) {
      std::map<std::string, ProfileRange> profile;
      for (const TensorInfo& t : loaded->io) {
        if (!t.input) continue;
        const nvinfer1::Dims mn = engine.getProfileShape(t.name.c_str(), p, nvinfer1::OptProfileSelector::kMIN);
        if (mn.nbDims < 0) continue;  // not part of the profile (no dynamic axis)
        profile[t.name] = ProfileRange{DimsToVector(mn),
                                       DimsToVector(engine.getProfileShape(t.name.c_str(), p, nvinfer1::OptProfileSelector::kOPT)),
                                       DimsToVector(engine.getProfileShape(t.name.c_str(), p, nvinfer1::OptProfileSelector::kMAX))};
      }
      loaded->profiles.push_back(std::move(profile));
    }
    loaded->deviceMemoryBytes = engine.getDeviceMemorySizeV2();
    loaded_ = std::move(loaded);
  }

  Napi::Value Result(Napi::Env env) override { return EngineWrap::New(env, std::move(loaded_)); }

 private:
  Napi::ObjectReference pinned_;
  const uint8_t* data_;
  size_t size_;
  std::string name_;
  int device_;
  std::shared_ptr<LoadedEngine> loaded_;
};

Napi::Value LoadEngine(const Napi::CallbackInfo& info) {
  Napi::Env env = info.Env();
  if (!info[0].IsTypedArray() || info[0].As<Napi::TypedArray>().TypedArrayType() != napi_uint8_array) {
    ThrowTypeError(env, "plan must be a Uint8Array or Buffer holding a serialized TensorRT engine, got " + DescribeJsValue(info[0]));
  }
  Napi::TypedArray plan = info[0].As<Napi::TypedArray>();
  if (plan.ByteLength() == 0) ThrowRangeError(env, "plan is empty");
  Napi::Object options = RequireObject(info[1], "options");
  const std::string name = RequireString(options, "name", "options");
  const int device = static_cast<int>(OptionalInteger(options, "device", "options", 0, 1024, 0));
  auto* worker = new SdEngineLoadWorker(env, plan, name, device);
  return worker->Start();
}

}  // namespace

// ------------------------------------------------------------------------------------ LoadedEngine

LoadedEngine::~LoadedEngine() {
  // The runtime must outlive the engine, and the logger both (member order does the latter).
  if (engine || runtime) (void)cudaSetDevice(device);
  engine.reset();
  runtime.reset();
}

const TensorInfo* LoadedEngine::Find(const std::string& tensor) const {
  for (const TensorInfo& t : io) {
    if (t.name == tensor) return &t;
  }
  return nullptr;
}

// --------------------------------------------------------------------------------- DeviceScratch

Napi::Function DeviceScratchWrap::Define(Napi::Env env) {
  return DefineClass(env, "DeviceScratch",
                     {
                         InstanceAccessor<&DeviceScratchWrap::GetBytes>("bytes"),
                         InstanceAccessor<&DeviceScratchWrap::GetDisposed>("disposed"),
                         InstanceMethod<&DeviceScratchWrap::Dispose>("dispose"),
                     });
}

DeviceScratchWrap* DeviceScratchWrap::FromJs(const Napi::Value& value) {
  return UnwrapTagged<DeviceScratchWrap>(value, kScratchTag);
}

DeviceScratchWrap::DeviceScratchWrap(const Napi::CallbackInfo& info) : Napi::ObjectWrap<DeviceScratchWrap>(info) {
  Napi::Env env = info.Env();
  if (!info[0].IsNumber()) ThrowTypeError(env, "bytes must be a number, got " + DescribeJsValue(info[0]));
  const double bytes = info[0].As<Napi::Number>().DoubleValue();
  if (!(bytes >= 0) || bytes > 1e15 || bytes != static_cast<double>(static_cast<int64_t>(bytes))) {
    ThrowRangeError(env, "bytes must be a non-negative integer, got " + std::to_string(bytes));
  }
  int device = 0;
  if (info.Length() > 1 && !info[1].IsUndefined()) {
    Napi::Object options = RequireObject(info[1], "options");
    device = static_cast<int>(OptionalInteger(options, "device", "options", 0, 1024, 0));
  }
  auto state = std::make_shared<ScratchState>();
  state->device = device;
  try {
    SDTRT_CUDA_CHECK("scratch-alloc", cudaSetDevice(device));
    // Allocation is short (no kernel runs): done on the JS thread, as a constructor must be.
    state->buffer.Allocate(static_cast<size_t>(bytes), "scratch-alloc");
  } catch (const NativeError& e) {
    throw ToJsError(env, e);
  }
  state_ = std::move(state);
  info.This().As<Napi::Object>().TypeTag(&kScratchTag);
  cleanup_ = GetAddonData(env).cleanup;
  std::weak_ptr<ScratchState> weak = state_;
  cleanup_->Add(this, [weak]() {
    if (auto s = weak.lock()) {
      std::lock_guard<std::mutex> lock(s->mutex);
      s->buffer.Free();
    }
  });
}

DeviceScratchWrap::~DeviceScratchWrap() { cleanup_->Remove(this); }

Napi::Value DeviceScratchWrap::GetBytes(const Napi::CallbackInfo& info) {
  return Napi::Number::New(info.Env(), state_ ? static_cast<double>(state_->buffer.bytes()) : 0.0);
}

Napi::Value DeviceScratchWrap::GetDisposed(const Napi::CallbackInfo& info) { return Napi::Boolean::New(info.Env(), !state_); }

Napi::Value DeviceScratchWrap::Dispose(const Napi::CallbackInfo& info) {
  // Contexts created on this scratch keep using it; the memory goes with the last of them.
  state_.reset();
  return info.Env().Undefined();
}

// ------------------------------------------------------------------------------------- TrtEngine

Napi::Function EngineWrap::Define(Napi::Env env) {
  return DefineClass(env, "TrtEngine",
                     {
                         InstanceAccessor<&EngineWrap::GetName>("name"),
                         InstanceAccessor<&EngineWrap::GetDevice>("device"),
                         InstanceAccessor<&EngineWrap::GetIo>("io"),
                         InstanceAccessor<&EngineWrap::GetProfiles>("profiles"),
                         InstanceAccessor<&EngineWrap::GetDeviceMemoryBytes>("deviceMemoryBytes"),
                         InstanceAccessor<&EngineWrap::GetDisposed>("disposed"),
                         InstanceMethod<&EngineWrap::CreateContext>("createContext"),
                         InstanceMethod<&EngineWrap::Inspect>("inspect"),
                         InstanceAccessor<&EngineWrap::GetRefittable>("refittable"),
                         InstanceMethod<&EngineWrap::Refit>("refit"),
                         InstanceMethod<&EngineWrap::Dispose>("dispose"),
                     });
}

Napi::Object EngineWrap::New(Napi::Env env, std::shared_ptr<LoadedEngine> engine) {
  return NewFromNative(env, "TrtEngine", kEngineTag, std::move(engine));
}

EngineWrap::EngineWrap(const Napi::CallbackInfo& info)
    : Napi::ObjectWrap<EngineWrap>(info),
      engine_(TakeNativePayload<std::shared_ptr<LoadedEngine>>(
          info, "TrtEngine objects are created by tensorrt.loadEngine(), not with new")) {
  cleanup_ = GetAddonData(info.Env()).cleanup;
  // At shutdown the engine is dropped; contexts still holding it release it after themselves.
  cleanup_->Add(this, [this]() { engine_.reset(); });
}

EngineWrap::~EngineWrap() { cleanup_->Remove(this); }

std::shared_ptr<LoadedEngine> EngineWrap::Require(Napi::Env env, const char* what) const {
  if (!engine_) throw ToJsError(env, NativeError("ERR_DISPOSED", what, "TrtEngine is disposed"));
  return engine_;
}

Napi::Value EngineWrap::GetName(const Napi::CallbackInfo& info) { return Napi::String::New(info.Env(), Require(info.Env(), "engine")->name); }
Napi::Value EngineWrap::GetDevice(const Napi::CallbackInfo& info) { return Napi::Number::New(info.Env(), Require(info.Env(), "engine")->device); }
Napi::Value EngineWrap::GetIo(const Napi::CallbackInfo& info) { return TensorsToJs(info.Env(), Require(info.Env(), "engine")->io); }

Napi::Value EngineWrap::GetProfiles(const Napi::CallbackInfo& info) {
  auto engine = Require(info.Env(), "engine");
  Napi::Array out = Napi::Array::New(info.Env(), engine->profiles.size());
  for (size_t p = 0; p < engine->profiles.size(); ++p) out.Set(static_cast<uint32_t>(p), ProfilesToJs(info.Env(), engine->profiles[p]));
  return out;
}

Napi::Value EngineWrap::GetDeviceMemoryBytes(const Napi::CallbackInfo& info) {
  return Napi::Number::New(info.Env(), static_cast<double>(Require(info.Env(), "engine")->deviceMemoryBytes));
}

Napi::Value EngineWrap::GetDisposed(const Napi::CallbackInfo& info) { return Napi::Boolean::New(info.Env(), !engine_); }

Napi::Value EngineWrap::CreateContext(const Napi::CallbackInfo& info) {
  Napi::Env env = info.Env();
  auto engine = Require(env, "context-create");
  DeviceScratchWrap* scratchWrap = DeviceScratchWrap::FromJs(info[0]);
  if (scratchWrap == nullptr) ThrowTypeError(env, "scratch must be a tensorrt.DeviceScratch, got " + DescribeJsValue(info[0]));
  auto scratch = scratchWrap->state();
  if (!scratch) throw ToJsError(env, NativeError("ERR_DISPOSED", "context-create", "DeviceScratch is disposed"));
  if (scratch->device != engine->device) {
    ThrowRangeError(env, "scratch is on device " + std::to_string(scratch->device) + ", the engine " + engine->name +
                             " on device " + std::to_string(engine->device));
  }
  if (static_cast<int64_t>(scratch->buffer.bytes()) < engine->deviceMemoryBytes) {
    ThrowRangeError(env, "scratch holds " + std::to_string(scratch->buffer.bytes()) + " bytes, the engine " + engine->name + " needs " +
                             std::to_string(engine->deviceMemoryBytes) + " (size it to the largest deviceMemoryBytes of the engines sharing it)");
  }
  std::shared_ptr<ContextState> state;
  try {
    state = std::make_shared<ContextState>(engine, scratch);
  } catch (const NativeError& e) {
    throw ToJsError(env, e);
  }
  return ContextWrap::New(env, std::move(state));
}

// { verbosity: "detailed" | "layer_names_only" | "none", layers: string }: the engine's layers as
// IEngineInspector reports them in JSON (the same information as trtexec --dumpLayerInfo
// --exportLayerInfo). Full detail (tactics, formats, fused ops) needs a plan built with
// detailedProfiling; otherwise only layer names. Synchronous: it reads the plan, runs nothing.
Napi::Value EngineWrap::Inspect(const Napi::CallbackInfo& info) {
  Napi::Env env = info.Env();
  auto engine = Require(env, "engine-inspect");
  const char* verbosity = "layer_names_only";
  switch (engine->engine->getProfilingVerbosity()) {
    case nvinfer1::ProfilingVerbosity::kDETAILED: verbosity = "detailed"; break;
    case nvinfer1::ProfilingVerbosity::kNONE: verbosity = "none"; break;
    default: break;
  }
  TrtPtr<nvinfer1::IEngineInspector> inspector(engine->engine->createEngineInspector());
  if (!inspector) throw ToJsError(env, NativeError("ERR_TENSORRT", "engine-inspect", "ICudaEngine::createEngineInspector failed for " + engine->name));
  const char* text = inspector->getEngineInformation(nvinfer1::LayerInformationFormat::kJSON);
  Napi::Object out = Napi::Object::New(env);
  out.Set("verbosity", Napi::String::New(env, verbosity));
  out.Set("layers", Napi::String::New(env, text != nullptr ? text : ""));
  return out;
}

Napi::Value EngineWrap::GetRefittable(const Napi::CallbackInfo& info) {
  return Napi::Boolean::New(info.Env(), Require(info.Env(), "engine")->engine->isRefittable());
}

Napi::Value EngineWrap::Refit(const Napi::CallbackInfo& info) { return RefitEngine(info, Require(info.Env(), "engine-refit")); }

Napi::Value EngineWrap::Dispose(const Napi::CallbackInfo& info) {
  engine_.reset();
  return info.Env().Undefined();
}

void RegisterEngine(Napi::Env env, Napi::Object target) {
  RegisterClass(env, target, "DeviceScratch", DeviceScratchWrap::Define(env));
  RegisterClass(env, target, "TrtEngine", EngineWrap::Define(env));
  target.Set("loadEngine", Napi::Function::New(env, LoadEngine, "loadEngine"));
}

}  // namespace sdtrt::trt
