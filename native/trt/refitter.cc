#include "refitter.h"

#include <cuda_runtime_api.h>

#include <cstring>
#include <string>
#include <utility>
#include <vector>

#include "../common/cuda_check.h"
#include "../common/half.h"
#include "../common/js_error.h"
#include "engine.h"
#include "trt_common.h"
#include "trt_library.h"
#include "trt_logger.h"

namespace sdtrt::trt {

namespace {

constexpr const char* kStage = "engine-refit";

// One weight as given: float32 values, converted to the engine's type once it is known.
struct NamedWeights {
  std::string name;
  std::vector<float> values;
  std::vector<uint16_t> halves;  // the float16 / bfloat16 form, when the engine stores that
};

uint16_t FloatToBf16Bits(float f) {
  uint32_t x = floatBits(f);
  if ((x & 0x7fffffffu) > 0x7f800000u) return 0x7fc0u;  // NaN
  x += 0x7fffu + ((x >> 16) & 1u);                       // round to nearest, ties to even
  return static_cast<uint16_t>(x >> 16);
}

class SdEngineRefitWorker : public NativeAsyncWorker {
 public:
  SdEngineRefitWorker(Napi::Env env, std::shared_ptr<LoadedEngine> engine, std::vector<NamedWeights> weights)
      : NativeAsyncWorker(env, "SdEngineRefitWorker", kStage), engine_(std::move(engine)), weights_(std::move(weights)) {}

 protected:
  std::string ApiName() const override { return "nvinfer1::IRefitter::refitCudaEngine"; }

  void Run() override {
    TrtLibrary& library = TrtLibrary::Get();
    library.RequireRuntime(kStage);
    SDTRT_CUDA_CHECK(kStage, cudaSetDevice(engine_->device));
    nvinfer1::ICudaEngine& engine = *engine_->engine;
    if (!engine.isRefittable()) {
      throw NativeError("ERR_ENGINE_NOT_REFITTABLE", kStage,
                        "engine " + engine_->name + " was built without the refit flag, so its weights cannot be changed; rebuild it refittable (sd-trt build --refittable)");
    }
    CollectingLogger logger{nvinfer1::ILogger::Severity::kWARNING};
    TrtPtr<nvinfer1::IRefitter> refitter(library.CreateRefitter(engine, logger, kStage));
    for (NamedWeights& w : weights_) {
      const nvinfer1::Weights prototype = refitter->getWeightsPrototype(w.name.c_str());
      if (prototype.count < 0) {
        throw NativeError("ERR_REFIT_WEIGHTS", kStage, "engine " + engine_->name + " has no refittable weights named " + w.name);
      }
      if (prototype.count != static_cast<int64_t>(w.values.size())) {
        throw NativeError("ERR_REFIT_WEIGHTS", kStage,
                          "weights " + w.name + " of engine " + engine_->name + " have " + std::to_string(prototype.count) + " values, " +
                              std::to_string(w.values.size()) + " were given");
      }
      nvinfer1::Weights given{prototype.type, nullptr, prototype.count};
      switch (prototype.type) {
        case nvinfer1::DataType::kFLOAT:
          given.values = w.values.data();
          break;
        case nvinfer1::DataType::kHALF:
        case nvinfer1::DataType::kBF16: {
          const bool half = prototype.type == nvinfer1::DataType::kHALF;
          w.halves.resize(w.values.size());
          for (size_t i = 0; i < w.values.size(); ++i) w.halves[i] = half ? floatToHalfBits(w.values[i]) : FloatToBf16Bits(w.values[i]);
          given.values = w.halves.data();
          break;
        }
        default:
          throw NativeError("ERR_REFIT_WEIGHTS", kStage,
                            "weights " + w.name + " of engine " + engine_->name + " are " + DataTypeName(prototype.type) + ", which sd-trt does not refit");
      }
      if (!refitter->setNamedWeights(w.name.c_str(), given)) {
        ThrowTrt(kStage, "IRefitter::setNamedWeights rejected " + w.name + " for engine " + engine_->name, logger, "ERR_REFIT_WEIGHTS");
      }
    }
    const int32_t missing = refitter->getMissingWeights(0, nullptr);
    if (missing > 0) {
      std::vector<const char*> names(static_cast<size_t>(missing), nullptr);
      refitter->getMissingWeights(missing, names.data());
      for (const char* name : names) {
        if (name != nullptr) missing_.emplace_back(name);  // copied: the strings belong to the engine
      }
      return;  // nothing refitted: the caller adds these and calls again
    }
    if (!refitter->refitCudaEngine()) ThrowTrt(kStage, "IRefitter::refitCudaEngine failed for engine " + engine_->name, logger);
    refitted_ = true;
  }

  Napi::Value Result(Napi::Env env) override {
    Napi::Object out = Napi::Object::New(env);
    out.Set("refitted", Napi::Boolean::New(env, refitted_));
    Napi::Array missing = Napi::Array::New(env, missing_.size());
    for (size_t i = 0; i < missing_.size(); ++i) missing.Set(static_cast<uint32_t>(i), Napi::String::New(env, missing_[i]));
    out.Set("missing", missing);
    out.Set("weights", Napi::Number::New(env, refitted_ ? static_cast<double>(weights_.size()) : 0.0));
    return out;
  }

 private:
  std::shared_ptr<LoadedEngine> engine_;
  std::vector<NamedWeights> weights_;
  std::vector<std::string> missing_;
  bool refitted_ = false;
};

}  // namespace

Napi::Value RefitEngine(const Napi::CallbackInfo& info, std::shared_ptr<LoadedEngine> engine) {
  Napi::Env env = info.Env();
  if (info.Length() < 1 || !info[0].IsObject() || info[0].IsArray()) {
    throw Napi::TypeError::New(env, "engine.refit(weights): weights must be an object of { name: Float32Array }");
  }
  Napi::Object given = info[0].As<Napi::Object>();
  Napi::Array names = given.GetPropertyNames();
  std::vector<NamedWeights> weights;
  weights.reserve(names.Length());
  for (uint32_t i = 0; i < names.Length(); ++i) {
    const std::string name = names.Get(i).As<Napi::String>().Utf8Value();
    Napi::Value value = given.Get(name);
    if (!value.IsTypedArray() || value.As<Napi::TypedArray>().TypedArrayType() != napi_float32_array) {
      throw Napi::TypeError::New(env, "engine.refit(weights): weights[" + name + "] must be a Float32Array");
    }
    Napi::Float32Array array = value.As<Napi::Float32Array>();
    NamedWeights w;
    w.name = name;
    w.values.resize(array.ElementLength());
    if (!w.values.empty()) std::memcpy(w.values.data(), array.Data(), w.values.size() * sizeof(float));
    weights.push_back(std::move(w));
  }
  auto* worker = new SdEngineRefitWorker(env, std::move(engine), std::move(weights));
  return worker->Start();
}

}  // namespace sdtrt::trt
