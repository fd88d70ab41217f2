#include "engine_builder.h"

#include <NvInfer.h>
#include <NvOnnxParser.h>
#include <cuda_runtime_api.h>

#include <algorithm>
#include <atomic>
#include <map>
#include <memory>
#include <string>
#include <vector>

#include "../common/addon_data.h"
#include "../common/cuda_check.h"
#include "../common/js_error.h"
#include "../common/status.h"
#include "gpu_identity.h"
#include "trt_common.h"
#include "trt_library.h"

namespace sdtrt::trt {

namespace {

constexpr const char* kStage = "engine-build";
constexpr const char* kParseStage = "onnx-parse";

// TensorRT 11 networks are always strongly typed and deprecate the flag; 10.x needs it.
#if NV_TENSORRT_MAJOR >= 11
constexpr nvinfer1::NetworkDefinitionCreationFlags kNetworkFlags = 0U;
#else
constexpr nvinfer1::NetworkDefinitionCreationFlags kNetworkFlags =
    1U << static_cast<uint32_t>(nvinfer1::NetworkDefinitionCreationFlag::kSTRONGLY_TYPED);
#endif

struct ProfileDims {
  std::vector<int64_t> min, opt, max;
};
using Profile = std::map<std::string, ProfileDims>;

struct BuildOptions {
  std::string onnxPath;
  std::vector<Profile> profiles;
  std::vector<uint8_t> timingCache;
  int64_t workspaceBytes = 0;  // 0: TensorRT's default (the device's memory)
  int optimizationLevel = -1;  // -1: TensorRT's default (3)
  int device = 0;
  // ProfilingVerbosity::kDETAILED: the plan keeps each layer's tactic, formats and fused ops, so
  // engine.inspect() (IEngineInspector, what trtexec --dumpLayerInfo prints) can show e.g. whether
  // attention ran as one fused kernel. Off by default: it changes nothing numerically but the plan.
  bool detailedProfiling = false;
  // BuilderFlag::kREFIT: the weights can be replaced later (engine.refit, refitter.h) without a
  // rebuild, which is how LoRA sets are applied. TensorRT may then fuse less around the weights.
  bool refittable = false;
  // When not empty: the network outputs to keep; the others are unmarked before the build, so
  // TensorRT prunes what only they need (CLIP's pooler_output, which sd-trt never reads).
  std::vector<std::string> keepOutputs;
};

// Shared by the JS cancel() function, the progress monitor and the cleanup hook.
struct BuildControl {
  std::atomic<bool> cancelled{false};
};

struct ProgressEvent {
  const char* kind;  // "start", "step", "finish" (string literals)
  std::string phase;
  std::string parent;
  int32_t step = 0;
  int32_t steps = 0;
};

void CallProgress(Napi::Env env, Napi::Function callback, std::nullptr_t*, ProgressEvent* event) {
  std::unique_ptr<ProgressEvent> owned(event);
  if (env == nullptr || callback.IsEmpty()) return;  // the function is being torn down
  Napi::Object e = Napi::Object::New(env);
  e.Set("kind", Napi::String::New(env, owned->kind));
  e.Set("phase", Napi::String::New(env, owned->phase));
  e.Set("parent", owned->parent.empty() ? env.Null() : Napi::String::New(env, owned->parent));
  e.Set("step", Napi::Number::New(env, owned->step));
  e.Set("steps", Napi::Number::New(env, owned->steps));
  try {
    callback.Call({e});
  } catch (const Napi::Error&) {
    // A throwing progress callback must neither stop the build nor crash the process; the TS layer
    // wraps user callbacks and reports their errors itself.
  }
}

using ProgressTsfn = Napi::TypedThreadSafeFunction<std::nullptr_t, ProgressEvent, CallProgress>;

// TensorRT calls these from the builder's thread. stepComplete()'s return value is how a build is
// cancelled: false makes buildSerializedNetwork() give up and return null.
class BuildProgressMonitor : public nvinfer1::IProgressMonitor {
 public:
  BuildProgressMonitor(std::shared_ptr<BuildControl> control, ProgressTsfn* tsfn) : control_(std::move(control)), tsfn_(tsfn) {}

  void phaseStart(char const* phaseName, char const* parentPhase, int32_t nbSteps) noexcept override {
    Send("start", phaseName, parentPhase, 0, nbSteps);
  }
  bool stepComplete(char const* phaseName, int32_t step) noexcept override {
    Send("step", phaseName, nullptr, step + 1, 0);
    return !control_->cancelled.load();
  }
  void phaseFinish(char const* phaseName) noexcept override { Send("finish", phaseName, nullptr, 0, 0); }

 private:
  void Send(const char* kind, char const* phase, char const* parent, int32_t step, int32_t steps) noexcept {
    if (tsfn_ == nullptr) return;
    try {
      auto* event = new ProgressEvent{kind, phase != nullptr ? phase : "", parent != nullptr ? parent : "", step, steps};
      // Non-blocking: when JS falls behind, progress is dropped instead of slowing the build.
      if (tsfn_->NonBlockingCall(event) != napi_ok) delete event;
    } catch (...) {
    }
  }

  std::shared_ptr<BuildControl> control_;
  ProgressTsfn* tsfn_;
};

const char* ParserErrorCodeName(nvonnxparser::ErrorCode code) {
  switch (code) {
    case nvonnxparser::ErrorCode::kSUCCESS: return "kSUCCESS";
    case nvonnxparser::ErrorCode::kINTERNAL_ERROR: return "kINTERNAL_ERROR";
    case nvonnxparser::ErrorCode::kMEM_ALLOC_FAILED: return "kMEM_ALLOC_FAILED";
    case nvonnxparser::ErrorCode::kMODEL_DESERIALIZE_FAILED: return "kMODEL_DESERIALIZE_FAILED";
    case nvonnxparser::ErrorCode::kINVALID_VALUE: return "kINVALID_VALUE";
    case nvonnxparser::ErrorCode::kINVALID_GRAPH: return "kINVALID_GRAPH";
    case nvonnxparser::ErrorCode::kINVALID_NODE: return "kINVALID_NODE";
    case nvonnxparser::ErrorCode::kUNSUPPORTED_GRAPH: return "kUNSUPPORTED_GRAPH";
    case nvonnxparser::ErrorCode::kUNSUPPORTED_NODE: return "kUNSUPPORTED_NODE";
    case nvonnxparser::ErrorCode::kUNSUPPORTED_NODE_ATTR: return "kUNSUPPORTED_NODE_ATTR";
    case nvonnxparser::ErrorCode::kUNSUPPORTED_NODE_INPUT: return "kUNSUPPORTED_NODE_INPUT";
    case nvonnxparser::ErrorCode::kUNSUPPORTED_NODE_DATATYPE: return "kUNSUPPORTED_NODE_DATATYPE";
    case nvonnxparser::ErrorCode::kUNSUPPORTED_NODE_DYNAMIC: return "kUNSUPPORTED_NODE_DYNAMIC";
    case nvonnxparser::ErrorCode::kUNSUPPORTED_NODE_SHAPE: return "kUNSUPPORTED_NODE_SHAPE";
    case nvonnxparser::ErrorCode::kREFIT_FAILED: return "kREFIT_FAILED";
  }
  return "kUNKNOWN";
}

// Every parser error as one line: "node 17 \"/text_model/…/Softmax\" (Softmax): kUNSUPPORTED_NODE: …".
[[noreturn]] void ThrowParseErrors(nvonnxparser::IParser& parser, const std::string& path, const CollectingLogger& logger) {
  const int32_t count = parser.getNbErrors();
  std::string message = "TensorRT's ONNX parser rejected " + path;
  std::string firstCode;
  for (int32_t i = 0; i < count; ++i) {
    const nvonnxparser::IParserError* error = parser.getError(i);
    if (error == nullptr) continue;
    const std::string code = ParserErrorCodeName(error->code());
    if (firstCode.empty()) firstCode = code;
    message += "\n  ";
    if (error->node() >= 0) {
      message += "node " + std::to_string(error->node());
      const char* name = error->nodeName();
      const char* op = error->nodeOperator();
      if (name != nullptr && name[0] != '\0') message += " \"" + std::string(name) + "\"";
      if (op != nullptr && op[0] != '\0') message += " (" + std::string(op) + ")";
      message += ": ";
    }
    message += code + ": " + (error->desc() != nullptr ? error->desc() : "");
    if (error->localFunctionStackSize() > 0) {
      message += " [in local function";
      char const* const* stack = error->localFunctionStack();
      for (int32_t f = 0; f < error->localFunctionStackSize(); ++f) message += std::string(" ") + stack[f];
      message += "]";
    }
  }
  if (count == 0) {
    const std::string heard = logger.RecentErrors();
    message += heard.empty() ? " (no error was reported)" : ": " + heard;
  }
  throw NativeError("ERR_ONNX_PARSE", kParseStage, message, firstCode);
}

[[noreturn]] void ThrowCancelled() { throw NativeError("ABORT_ERR", kStage, "the engine build was cancelled"); }

std::string DescribeInputs(const nvinfer1::INetworkDefinition& network) {
  std::string out;
  for (int32_t i = 0; i < network.getNbInputs(); ++i) {
    const nvinfer1::ITensor* t = network.getInput(i);
    if (!out.empty()) out += ", ";
    out += std::string(t->getName()) + " " + ShapeString(DimsToVector(t->getDimensions()));
  }
  return out.empty() ? "none" : out;
}

// Checks that every profile names only network inputs and covers every input with a dynamic axis.
void CheckProfiles(const std::vector<Profile>& profiles, const nvinfer1::INetworkDefinition& network) {
  for (size_t p = 0; p < profiles.size(); ++p) {
    for (const auto& entry : profiles[p]) {
      bool found = false;
      for (int32_t i = 0; i < network.getNbInputs() && !found; ++i) found = entry.first == network.getInput(i)->getName();
      if (!found) {
        throw NativeError("ERR_INVALID_PROFILE", kStage,
                          "optimization profile " + std::to_string(p) + " names input " + entry.first +
                              ", which the network does not have (inputs: " + DescribeInputs(network) + ")");
      }
    }
    for (int32_t i = 0; i < network.getNbInputs(); ++i) {
      const nvinfer1::ITensor* t = network.getInput(i);
      const std::vector<int64_t> dims = DimsToVector(t->getDimensions());
      bool dynamic = false;
      for (int64_t d : dims) dynamic = dynamic || d < 0;
      if (dynamic && profiles[p].find(t->getName()) == profiles[p].end()) {
        throw NativeError("ERR_INVALID_PROFILE", kStage,
                          "optimization profile " + std::to_string(p) + " gives no shapes for input " + t->getName() + " " +
                              ShapeString(dims) + ", which has dynamic axes");
      }
    }
  }
}

class SdEngineBuildWorker : public NativeAsyncWorker {
 public:
  SdEngineBuildWorker(Napi::Env env, BuildOptions options, std::shared_ptr<BuildControl> control, Napi::Value onProgress)
      : NativeAsyncWorker(env, "SdEngineBuildWorker", kStage), options_(std::move(options)), control_(std::move(control)) {
    if (onProgress.IsFunction()) {
      tsfn_ = ProgressTsfn::New(env, onProgress.As<Napi::Function>(), "SdEngineBuildProgress", 64, 1);
      hasTsfn_ = true;
    }
    // Cancel the build when the environment shuts down (worker_thread exit, process exit).
    cleanup_ = GetAddonData(env).cleanup;
    std::weak_ptr<BuildControl> weak = control_;
    cleanup_->AddCancel(this, [weak]() {
      auto control = weak.lock();
      if (!control) return false;
      control->cancelled.store(true);
      return true;  // registered from creation to completion: a build in flight
    });
  }
  ~SdEngineBuildWorker() override {
    cleanup_->Remove(this);
    ReleaseProgress();
  }

 protected:
  std::string ApiName() const override { return "nvinfer1::IBuilder::buildSerializedNetwork"; }

  void Run() override {
    if (control_->cancelled.load()) ThrowCancelled();
    // TensorRT first: on a machine without it, that is the problem to report, whatever the GPU.
    TrtLibrary& library = TrtLibrary::Get();
    library.RequireBuilder(kStage);
    tensorrtVersion_ = VersionString(library.Infer().version);
    const int device = options_.device;
    SDTRT_CUDA_CHECK(kStage, cudaSetDevice(device));
    gpu_ = QueryGpuIdentity(device, kStage);

    // Declared first, so destroyed last: the config holds a pointer to the timing cache until the
    // config (and the builder that made both) is gone, and locals are destroyed in reverse order.
    TrtPtr<nvinfer1::ITimingCache> cache;
    TrtPtr<nvinfer1::IBuilder> builder(library.CreateBuilder(logger_, kStage));
    TrtPtr<nvinfer1::INetworkDefinition> network(builder->createNetworkV2(kNetworkFlags));
    if (!network) ThrowTrt(kStage, "IBuilder::createNetworkV2 failed", logger_);
    TrtPtr<nvonnxparser::IParser> parser(library.CreateParser(*network, logger_, kParseStage));
    // parseFromFile follows the model's external-data entries relative to its folder.
    if (!parser->parseFromFile(options_.onnxPath.c_str(), static_cast<int>(nvinfer1::ILogger::Severity::kWARNING))) {
      ThrowParseErrors(*parser, options_.onnxPath, logger_);
    }
    if (control_->cancelled.load()) ThrowCancelled();
    if (!options_.keepOutputs.empty()) KeepOnlyOutputs(*network);
    CheckProfiles(options_.profiles, *network);

    TrtPtr<nvinfer1::IBuilderConfig> config(builder->createBuilderConfig());
    if (!config) ThrowTrt(kStage, "IBuilder::createBuilderConfig failed", logger_);
    if (options_.workspaceBytes > 0) {
      config->setMemoryPoolLimit(nvinfer1::MemoryPoolType::kWORKSPACE, static_cast<size_t>(options_.workspaceBytes));
    }
    if (options_.optimizationLevel >= 0) config->setBuilderOptimizationLevel(options_.optimizationLevel);
    if (options_.detailedProfiling) config->setProfilingVerbosity(nvinfer1::ProfilingVerbosity::kDETAILED);
    if (options_.refittable) config->setFlag(nvinfer1::BuilderFlag::kREFIT);
    BuildProgressMonitor monitor(control_, hasTsfn_ ? &tsfn_ : nullptr);
    config->setProgressMonitor(&monitor);

    // The timing cache: a cache from another GPU or TensorRT version is not an error, it just
    // starts over (and the caller is told, so it can replace the file).
    cache.reset(config->createTimingCache(options_.timingCache.empty() ? nullptr : options_.timingCache.data(), options_.timingCache.size()));
    if (!cache || !config->setTimingCache(*cache, false)) {
      timingCacheReset_ = !options_.timingCache.empty();
      cache.reset(config->createTimingCache(nullptr, 0));
      if (!cache || !config->setTimingCache(*cache, false)) ThrowTrt(kStage, "could not create a TensorRT timing cache", logger_);
    }

    for (size_t p = 0; p < options_.profiles.size(); ++p) {
      nvinfer1::IOptimizationProfile* profile = builder->createOptimizationProfile();
      if (profile == nullptr) ThrowTrt(kStage, "IBuilder::createOptimizationProfile failed", logger_);
      for (const auto& entry : options_.profiles[p]) {
        const std::string& name = entry.first;
        const ProfileDims& d = entry.second;
        const bool ok = profile->setDimensions(name.c_str(), nvinfer1::OptProfileSelector::kMIN, VectorToDims(d.min, kStage, name)) &&
                        profile->setDimensions(name.c_str(), nvinfer1::OptProfileSelector::kOPT, VectorToDims(d.opt, kStage, name)) &&
                        profile->setDimensions(name.c_str(), nvinfer1::OptProfileSelector::kMAX, VectorToDims(d.max, kStage, name));
        if (!ok) {
          ThrowTrt(kStage, "optimization profile " + std::to_string(p) + " rejects input " + name + " min " + ShapeString(d.min) +
                               " opt " + ShapeString(d.opt) + " max " + ShapeString(d.max),
                   logger_, "ERR_INVALID_PROFILE");
        }
      }
      if (config->addOptimizationProfile(profile) < 0) {
        ThrowTrt(kStage, "optimization profile " + std::to_string(p) + " is invalid", logger_, "ERR_INVALID_PROFILE");
      }
    }

    for (int32_t i = 0; i < network->getNbInputs(); ++i) {
      const nvinfer1::ITensor* t = network->getInput(i);
      io_.push_back({t->getName(), true, t->getType(), DimsToVector(t->getDimensions())});
    }
    for (int32_t i = 0; i < network->getNbOutputs(); ++i) {
      const nvinfer1::ITensor* t = network->getOutput(i);
      io_.push_back({t->getName(), false, t->getType(), DimsToVector(t->getDimensions())});
    }

    plan_.reset(builder->buildSerializedNetwork(*network, *config));
    config->setProgressMonitor(nullptr);
    if (!plan_ || plan_->size() == 0) {
      if (control_->cancelled.load()) ThrowCancelled();
      ThrowTrt(kStage, "IBuilder::buildSerializedNetwork failed for " + options_.onnxPath, logger_);
    }
    const nvinfer1::ITimingCache* used = config->getTimingCache();
    if (used != nullptr) {
      TrtPtr<nvinfer1::IHostMemory> serialized(used->serialize());
      if (serialized) {
        const auto* bytes = static_cast<const uint8_t*>(serialized->data());
        timingCacheOut_.assign(bytes, bytes + serialized->size());
      }
    }
  }

  void KeepOnlyOutputs(nvinfer1::INetworkDefinition& network) {
    std::vector<nvinfer1::ITensor*> drop;
    std::string names;
    bool kept = false;
    for (int32_t i = 0; i < network.getNbOutputs(); ++i) {
      nvinfer1::ITensor* t = network.getOutput(i);
      const std::string name = t->getName();
      names += (names.empty() ? "" : ", ") + name;
      if (std::find(options_.keepOutputs.begin(), options_.keepOutputs.end(), name) == options_.keepOutputs.end()) {
        drop.push_back(t);
      } else {
        kept = true;
      }
    }
    if (!kept) {
      throw NativeError("ERR_TENSOR_NAME", kStage, options_.onnxPath + " has none of the outputs to keep (it has " + names + ")");
    }
    for (nvinfer1::ITensor* t : drop) network.unmarkOutput(*t);
  }

  Napi::Value Result(Napi::Env env) override {
    Napi::Object out = Napi::Object::New(env);
    // The Buffer takes the IHostMemory: freed by the Buffer's finalizer, never copied.
    nvinfer1::IHostMemory* plan = plan_.release();
    out.Set("plan", Napi::Buffer<uint8_t>::NewOrCopy(env, static_cast<uint8_t*>(plan->data()), plan->size(),
                                                       [plan](Napi::Env, uint8_t*) { delete plan; }));
    out.Set("timingCache", Napi::Buffer<uint8_t>::Copy(env, timingCacheOut_.data(), timingCacheOut_.size()));
    out.Set("timingCacheReset", Napi::Boolean::New(env, timingCacheReset_));
    out.Set("io", TensorsToJs(env, io_));
    out.Set("log", LogToJs(env, logger_.Entries()));
    Napi::Object gpu = Napi::Object::New(env);
    gpu.Set("device", Napi::Number::New(env, gpu_.device));
    gpu.Set("name", Napi::String::New(env, gpu_.name));
    gpu.Set("computeCapability", Napi::String::New(env, gpu_.computeCapability));
    gpu.Set("driverVersion", Napi::String::New(env, gpu_.driverVersion));
    gpu.Set("totalMemory", Napi::Number::New(env, gpu_.totalMemory));
    out.Set("gpu", gpu);
    out.Set("tensorrtVersion", Napi::String::New(env, tensorrtVersion_));
    return out;
  }

  void OnOK() override {
    ReleaseProgress();
    NativeAsyncWorker::OnOK();
  }
  void OnError(const Napi::Error& error) override {
    ReleaseProgress();
    NativeAsyncWorker::OnError(error);
  }

 private:
  void ReleaseProgress() {
    if (hasTsfn_) {
      hasTsfn_ = false;
      tsfn_.Release();
    }
  }

  BuildOptions options_;
  std::shared_ptr<BuildControl> control_;
  std::shared_ptr<CleanupRegistry> cleanup_;
  ProgressTsfn tsfn_;
  bool hasTsfn_ = false;
  CollectingLogger logger_;
  TrtPtr<nvinfer1::IHostMemory> plan_;
  std::vector<uint8_t> timingCacheOut_;
  bool timingCacheReset_ = false;
  std::vector<TensorInfo> io_;
  GpuIdentity gpu_;
  std::string tensorrtVersion_;
};

std::vector<int64_t> ReadDims(Napi::Env env, const Napi::Object& obj, const char* key, const std::string& owner) {
  Napi::Value v = obj.Get(key);
  if (!v.IsArray()) ThrowTypeError(env, owner + "." + key + " must be an array of integers, got " + DescribeJsValue(v));
  Napi::Array a = v.As<Napi::Array>();
  std::vector<int64_t> out;
  for (uint32_t i = 0; i < a.Length(); ++i) {
    Napi::Value d = a.Get(i);
    if (!d.IsNumber()) ThrowTypeError(env, owner + "." + key + "[" + std::to_string(i) + "] must be a number, got " + DescribeJsValue(d));
    const double x = d.As<Napi::Number>().DoubleValue();
    if (x < 0 || x > 1e9 || x != static_cast<double>(static_cast<int64_t>(x))) {
      ThrowRangeError(env, owner + "." + key + "[" + std::to_string(i) + "] must be a non-negative integer, got " + std::to_string(x));
    }
    out.push_back(static_cast<int64_t>(x));
  }
  return out;
}

BuildOptions ReadBuildOptions(Napi::Env env, const Napi::Value& value) {
  const std::string owner = "options";
  Napi::Object options = RequireObject(value, owner);
  BuildOptions out;
  out.onnxPath = RequireString(options, "onnxPath", owner);
  Napi::Value profiles = options.Get("profiles");
  if (!profiles.IsArray() || profiles.As<Napi::Array>().Length() == 0) {
    ThrowTypeError(env, "options.profiles must be a non-empty array of optimization profiles, got " + DescribeJsValue(profiles));
  }
  Napi::Array list = profiles.As<Napi::Array>();
  for (uint32_t p = 0; p < list.Length(); ++p) {
    const std::string profileOwner = "options.profiles[" + std::to_string(p) + "]";
    Napi::Object profile = RequireObject(list.Get(p), profileOwner);
    Profile parsed;
    Napi::Array names = profile.GetPropertyNames();
    for (uint32_t i = 0; i < names.Length(); ++i) {
      const std::string name = names.Get(i).As<Napi::String>().Utf8Value();
      const std::string tensorOwner = profileOwner + "." + name;
      Napi::Object dims = RequireObject(profile.Get(name), tensorOwner);
      ProfileDims d{ReadDims(env, dims, "min", tensorOwner), ReadDims(env, dims, "opt", tensorOwner), ReadDims(env, dims, "max", tensorOwner)};
      if (d.opt.size() != d.min.size() || d.max.size() != d.min.size()) {
        ThrowRangeError(env, tensorOwner + ": min, opt and max must have the same rank");
      }
      parsed[name] = std::move(d);
    }
    out.profiles.push_back(std::move(parsed));
  }
  if (HasOption(options, "timingCache")) {
    Napi::TypedArray cache = RequireTypedArray(options, "timingCache", owner, napi_uint8_array, "Uint8Array");
    const auto* bytes = static_cast<const uint8_t*>(cache.ArrayBuffer().Data()) + cache.ByteOffset();
    // Copied: the worker must not read JS memory from its thread after the caller moves on.
    out.timingCache.assign(bytes, bytes + cache.ByteLength());
  }
  out.workspaceBytes = OptionalInteger(options, "workspaceBytes", owner, 0, INT64_C(1) << 50, 0);
  out.optimizationLevel = static_cast<int>(OptionalInteger(options, "optimizationLevel", owner, 0, 5, -1));
  out.device = static_cast<int>(OptionalInteger(options, "device", owner, 0, 1024, 0));
  out.detailedProfiling = OptionalBoolean(options, "detailedProfiling", owner, false);
  out.refittable = OptionalBoolean(options, "refittable", owner, false);
  if (HasOption(options, "keepOutputs")) {
    Napi::Value keep = options.Get("keepOutputs");
    if (!keep.IsArray()) ThrowTypeError(env, "options.keepOutputs must be an array of output names, got " + DescribeJsValue(keep));
    Napi::Array names = keep.As<Napi::Array>();
    for (uint32_t i = 0; i < names.Length(); ++i) {
      if (!names.Get(i).IsString()) ThrowTypeError(env, "options.keepOutputs[" + std::to_string(i) + "] must be a string");
      out.keepOutputs.push_back(names.Get(i).As<Napi::String>().Utf8Value());
    }
  }
  return out;
}

Napi::Value BuildEngine(const Napi::CallbackInfo& info) {
  Napi::Env env = info.Env();
  BuildOptions options = ReadBuildOptions(env, info[0]);
  Napi::Value onProgress = info.Length() > 1 ? info[1] : env.Undefined();
  if (!onProgress.IsUndefined() && !onProgress.IsNull() && !onProgress.IsFunction()) {
    ThrowTypeError(env, "onProgress must be a function, got " + DescribeJsValue(onProgress));
  }
  auto control = std::make_shared<BuildControl>();
  auto* worker = new SdEngineBuildWorker(env, std::move(options), control, onProgress);
  Napi::Object job = Napi::Object::New(env);
  job.Set("promise", worker->Promise());
  // cancel() owns a reference to the control block for as long as the function object lives.
  auto* held = new std::shared_ptr<BuildControl>(control);
  Napi::Function cancel = Napi::Function::New(
      env,
      [](const Napi::CallbackInfo& call) -> Napi::Value {
        auto* c = static_cast<std::shared_ptr<BuildControl>*>(call.Data());
        (*c)->cancelled.store(true);
        return call.Env().Undefined();
      },
      "cancel", held);
  cancel.AddFinalizer([](Napi::Env, std::shared_ptr<BuildControl>* p) { delete p; }, held);
  job.Set("cancel", cancel);
  worker->Queue();
  return job;
}

}  // namespace

void RegisterEngineBuilder(Napi::Env env, Napi::Object target) {
  target.Set("buildEngine", Napi::Function::New(env, BuildEngine, "buildEngine"));
}

}  // namespace sdtrt::trt
