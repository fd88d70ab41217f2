#include "denoiser_js.h"

#include <algorithm>
#include <cstdint>
#include <memory>
#include <string>
#include <vector>

#include "../common/addon_data.h"
#include "../common/dtype.h"
#include "../common/js_class.h"
#include "../common/js_error.h"
#include "../common/status.h"
#include "embedding_rows.h"
#include "program_table.h"

#if SDTRT_WITH_CUDA
#include "../common/device_tensor.h"
#include "analytic_unet.h"
#include "denoiser.h"
#endif
#if SDTRT_WITH_TENSORRT
#include "../trt/register.h"
#endif

namespace sdtrt {

namespace {

constexpr int kSequenceLength = 77;
constexpr const char* kEmbeddingsTypes =
    "options.embeddings must be a Float32Array, a Uint16Array of float16 bits, a DeviceTensor or an array of DeviceTensors, got ";
// Most 77-token chunks a prompt may have (`sd-trt build --max-prompt-chunks` allows 32).
constexpr int kMaxChunks = 64;

class DenoiserWrap : public Napi::ObjectWrap<DenoiserWrap> {
 public:
  static Napi::Function Define(Napi::Env env) {
    return DefineClass(env, "Denoiser",
                       {
                           InstanceMethod<&DenoiserWrap::Run>("run"),
                           InstanceMethod<&DenoiserWrap::Cancel>("cancel"),
                           InstanceMethod<&DenoiserWrap::Dispose>("dispose"),
                           InstanceAccessor<&DenoiserWrap::GetDisposed>("disposed"),
                           InstanceAccessor<&DenoiserWrap::GetBusy>("busy"),
                       });
  }

  explicit DenoiserWrap(const Napi::CallbackInfo& info);
  ~DenoiserWrap() override;

#if SDTRT_WITH_CUDA
  // Called by the worker on the JS thread when its run is over.
  void RunFinished();
  DenoiserCore* core() const { return core_.get(); }
#endif

 private:
  Napi::Value Run(const Napi::CallbackInfo& info);
  Napi::Value Cancel(const Napi::CallbackInfo& info);
  Napi::Value Dispose(const Napi::CallbackInfo& info);
  Napi::Value GetDisposed(const Napi::CallbackInfo& info) { return Napi::Boolean::New(info.Env(), disposed_); }
  Napi::Value GetBusy(const Napi::CallbackInfo& info) { return Napi::Boolean::New(info.Env(), busy_); }
  void ReleaseCore();

  bool disposed_ = false;
  bool busy_ = false;
#if SDTRT_WITH_CUDA
  std::shared_ptr<DenoiserCore> core_;
  std::shared_ptr<CleanupRegistry> cleanup_;
#endif
};

// Reads the options both builds check, so a wrong type is a TypeError with or without CUDA.
struct CreateOptions {
  bool analytic = false;
  Napi::Value engine;
  DType analyticType = DType::kFloat32;
  int device = 0;
};

CreateOptions ReadCreateOptions(const Napi::CallbackInfo& info) {
  Napi::Env env = info.Env();
  Napi::Object options = RequireObject(info[0], "options");
  CreateOptions out;
  Napi::Value unet = options.Get("unet");
  if (unet.IsString()) {
    const std::string name = unet.As<Napi::String>().Utf8Value();
    if (name != "analytic") {
      ThrowRangeError(env, "options.unet must be \"analytic\" or a TensorRT UNet engine object, got \"" + name + "\"");
    }
    out.analytic = true;
  } else if (unet.IsObject()) {
    out.engine = unet;
  } else {
    ThrowTypeError(env, "options.unet must be \"analytic\" or a TensorRT UNet engine object, got " + DescribeJsValue(unet));
  }
  if (HasOption(options, "analyticDtype")) {
    const std::string dtype = RequireString(options, "analyticDtype", "options");
    if (dtype == "float16") {
      out.analyticType = DType::kFloat16;
    } else if (dtype != "float32") {
      ThrowRangeError(env, "options.analyticDtype must be \"float32\" or \"float16\", got \"" + dtype + "\"");
    }
  }
  out.device = static_cast<int>(OptionalInteger(options, "device", "options", 0, 1024, 0));
  return out;
}

#if SDTRT_WITH_CUDA

class SdDenoiseWorker : public Napi::AsyncProgressQueueWorker<int> {
 public:
  SdDenoiseWorker(Napi::Env env, DenoiserWrap* owner, std::shared_ptr<DenoiserCore> core, program::Program program,
                  DenoiseRequest request, std::vector<Napi::Value> pinned, Napi::Value onProgress)
      : Napi::AsyncProgressQueueWorker<int>(env, "SdDenoiseWorker"),
        deferred_(Napi::Promise::Deferred::New(env)),
        owner_(owner),
        core_(std::move(core)),
        program_(std::move(program)),
        request_(std::move(request)) {
    request_.program = &program_;
    // Keep the Denoiser and every borrowed input alive until the run is over.
    owner_->Ref();
    for (const Napi::Value& value : pinned) pinned_.push_back(Napi::Persistent(value.As<Napi::Object>()));
    if (onProgress.IsFunction()) onProgress_ = Napi::Persistent(onProgress.As<Napi::Function>());
  }
  ~SdDenoiseWorker() override { owner_->Unref(); }

  Napi::Promise Promise() const { return deferred_.Promise(); }

 protected:
  void Execute(const ExecutionProgress& progress) override {
    try {
      int sent = 0;
      result_ = core_->Run(request_, [&](int done) {
        // Every evaluation gets its own progress event (a queue, not "latest wins").
        while (sent < done) {
          ++sent;
          progress.Send(&sent, 1);
        }
      });
    } catch (...) {
      error_ = CaptureCurrentException("denoise", "Denoiser.run");
      SetError(error_.message);
    }
  }

  void OnProgress(const int* data, size_t count) override {
    if (onProgress_.IsEmpty() || progressFailed_) return;
    Napi::Env env = Env();
    for (size_t i = 0; i < count; ++i) {
      try {
        onProgress_.Call({Napi::Number::New(env, data[i]), Napi::Number::New(env, program_.evalCount)});
      } catch (const Napi::Error& e) {
        // A throwing progress callback must not be lost or crash the process: the run's promise
        // rejects with it once the run is over.
        progressFailed_ = true;
        progressError_ = Napi::Persistent(e.Value());
        return;
      }
    }
  }

  void OnOK() override {
    Napi::Env env = Env();
    owner_->RunFinished();
    if (progressFailed_) {
      deferred_.Reject(progressError_.Value());
      return;
    }
    Napi::Object out = Napi::Object::New(env);
    if (result_.deviceLatents) {
      // The buffer is the tensor's own: nothing the next run writes (native/README.md).
      out.Set("latents", DeviceTensor::New(env, std::move(result_.deviceLatents), DType::kFloat32,
                                           {request_.batch, request_.channels, request_.height, request_.width}, core_->device()));
    } else {
      Napi::Float32Array latents = Napi::Float32Array::New(env, result_.latents.size());
      std::copy(result_.latents.begin(), result_.latents.end(), latents.Data());
      out.Set("latents", latents);
    }
    out.Set("graph", Napi::String::New(env, graphUseName(result_.graph)));
    if (!result_.graphFallbackReason.empty()) {
      out.Set("graphFallbackReason", Napi::String::New(env, result_.graphFallbackReason));
    }
    out.Set("evaluations", Napi::Number::New(env, result_.evaluations));
    out.Set("gpuMs", Napi::Number::New(env, result_.gpuMs));
    out.Set("hostMs", Napi::Number::New(env, result_.hostMs));
    deferred_.Resolve(out);
  }

  void OnError(const Napi::Error&) override {
    owner_->RunFinished();
    deferred_.Reject(ToJsError(Env(), error_).Value());
  }

 private:
  Napi::Promise::Deferred deferred_;
  DenoiserWrap* owner_;
  std::shared_ptr<DenoiserCore> core_;
  program::Program program_;
  DenoiseRequest request_;
  std::vector<Napi::ObjectReference> pinned_;
  Napi::FunctionReference onProgress_;
  DenoiseResult result_;
  ErrorInfo error_;
  bool progressFailed_ = false;
  Napi::ObjectReference progressError_;
};

#endif  // SDTRT_WITH_CUDA

DenoiserWrap::DenoiserWrap(const Napi::CallbackInfo& info) : Napi::ObjectWrap<DenoiserWrap>(info) {
  Napi::Env env = info.Env();
  CreateOptions options = ReadCreateOptions(info);
#if !SDTRT_WITH_CUDA
  (void)options;
  throw ToJsError(env, NativeError("ERR_NO_CUDA", "denoiser-create",
                                   "CUDA support was not compiled in: this addon was built without the CUDA toolkit. "
                                   "Install the CUDA toolkit (nvcc) and run `npm run build:native`"));
#else
  std::shared_ptr<UnetRunner> runner;
  if (options.analytic) {
    runner = std::make_shared<AnalyticUnetRunner>(options.analyticType);
  } else {
#if SDTRT_WITH_TENSORRT
    runner = trt::UnetRunnerFromJs(options.engine);
    if (!runner) {
      ThrowTypeError(env, "options.unet must be \"analytic\" or a TensorRT UNet engine object, got " +
                              DescribeJsValue(options.engine) + " that is not a UNet engine");
    }
#else
    ThrowTypeError(env, "options.unet must be \"analytic\": TensorRT support was not compiled in, so engine objects "
                        "cannot exist in this build");
#endif
  }
  try {
    core_ = std::make_shared<DenoiserCore>(options.device, std::move(runner));
  } catch (const NativeError& e) {
    throw ToJsError(env, e);
  }
  // At environment shutdown, cancel any run and free the CUDA objects before the runtime unloads.
  cleanup_ = GetAddonData(env).cleanup;
  std::weak_ptr<DenoiserCore> weak = core_;
  cleanup_->Add(this, [weak]() {
    if (auto core = weak.lock()) core->Release();
  });
  cleanup_->AddCancel(this, [weak]() {
    auto core = weak.lock();
    if (!core || !core->running()) return false;
    core->RequestCancel();
    return true;
  });
#endif
}

DenoiserWrap::~DenoiserWrap() { ReleaseCore(); }

void DenoiserWrap::ReleaseCore() {
#if SDTRT_WITH_CUDA
  if (cleanup_) cleanup_->Remove(this);
  if (core_) core_->Release();
  core_.reset();
#endif
}

#if SDTRT_WITH_CUDA
void DenoiserWrap::RunFinished() {
  busy_ = false;
  if (disposed_) ReleaseCore();
}
#endif

Napi::Value DenoiserWrap::Cancel(const Napi::CallbackInfo& info) {
#if SDTRT_WITH_CUDA
  if (core_ && busy_) core_->RequestCancel();
#endif
  return info.Env().Undefined();
}

Napi::Value DenoiserWrap::Dispose(const Napi::CallbackInfo& info) {
  if (!disposed_) {
    disposed_ = true;
#if SDTRT_WITH_CUDA
    if (busy_) {
      // The worker still uses the core: cancel it; RunFinished() frees everything afterwards.
      if (core_) core_->RequestCancel();
    } else {
      ReleaseCore();
    }
#endif
  }
  return info.Env().Undefined();
}

Napi::Value DenoiserWrap::Run(const Napi::CallbackInfo& info) {
  Napi::Env env = info.Env();
  if (disposed_) throw ToJsError(env, NativeError("ERR_DISPOSED", "denoise", "Denoiser is disposed"));
  const std::string owner = "options";
  Napi::Object options = RequireObject(info[0], owner);
  Napi::TypedArray packed = RequireTypedArray(options, "program", owner, napi_float64_array, "Float64Array");
  Napi::TypedArray latents = RequireTypedArray(options, "latents", owner, napi_float32_array, "Float32Array");
  Napi::TypedArray noise = RequireTypedArray(options, "noise", owner, napi_float32_array, "Float32Array");
  const int batch = static_cast<int>(RequireInteger(options, "batch", owner, 1, 1024));
  const int height = static_cast<int>(RequireInteger(options, "height", owner, 1, 1 << 14));
  const int width = static_cast<int>(RequireInteger(options, "width", owner, 1, 1 << 14));
  const int channels = static_cast<int>(OptionalInteger(options, "channels", owner, 1, 64, 4));
  const bool useGraphs = OptionalBoolean(options, "useGraphs", owner, true);
  const int queueDepth = static_cast<int>(OptionalInteger(options, "queueDepth", owner, 0, 1 << 20, 3));
  // The text length: 77 · chunks for A1111's long prompts.
  const int sequenceLength = static_cast<int>(OptionalInteger(options, "sequenceLength", owner, kSequenceLength, kSequenceLength * kMaxChunks, kSequenceLength));
  if (sequenceLength % kSequenceLength != 0) {
    ThrowRangeError(env, "options.sequenceLength must be a multiple of 77 (chunks of 77 tokens), got " + std::to_string(sequenceLength));
  }
  // A1111's prompt and negative prompt of different lengths: the uncond rows as their own UNet call
  // (unet_layout.h), { uncondSequenceLength, callRows } with callRows = batch or 2 · batch.
  int splitCallRows = 0;
  int uncondSequenceLength = sequenceLength;
  if (HasOption(options, "splitCalls")) {
    const std::string where = "options.splitCalls";
    Napi::Object split = RequireObject(options.Get("splitCalls"), where);
    uncondSequenceLength = static_cast<int>(RequireInteger(split, "uncondSequenceLength", where, kSequenceLength, kSequenceLength * kMaxChunks));
    if (uncondSequenceLength % kSequenceLength != 0) {
      ThrowRangeError(env, where + ".uncondSequenceLength must be a multiple of 77 (chunks of 77 tokens), got " + std::to_string(uncondSequenceLength));
    }
    splitCallRows = static_cast<int>(RequireInteger(split, "callRows", where, 1, 2048));
    if (splitCallRows != batch && splitCallRows != 2 * batch) {
      ThrowRangeError(env, where + ".callRows must be the batch (" + std::to_string(batch) + ") or twice it (" + std::to_string(2 * batch) +
                               ", for engines that take only the guidance batch), got " + std::to_string(splitCallRows));
    }
    if (!HasOption(options, "guidance")) ThrowTypeError(env, where + " needs options.guidance: only the uncond rows of classifier-free guidance run as their own call");
  }
  Napi::Value onProgress = options.Get("onProgress");
  if (!onProgress.IsUndefined() && !onProgress.IsNull() && !onProgress.IsFunction()) {
    ThrowTypeError(env, "options.onProgress must be a function, got " + DescribeJsValue(onProgress));
  }
  std::vector<float> guidance;
  if (HasOption(options, "guidance")) {
    Napi::TypedArray g = RequireTypedArray(options, "guidance", owner, napi_float64_array, "Float64Array");
    if (g.ElementLength() != static_cast<size_t>(batch)) {
      ThrowRangeError(env, "options.guidance must hold one scale per image (" + std::to_string(batch) + "), got " +
                               std::to_string(g.ElementLength()));
    }
    for (size_t b = 0; b < g.ElementLength(); ++b) guidance.push_back(static_cast<float>(g.As<Napi::Float64Array>()[b]));
  }
  program::Program program;
  try {
    program = program::Unpack(packed.As<Napi::Float64Array>().Data(), packed.ElementLength());
  } catch (const NativeError& e) {
    throw ToJsError(env, e);
  }
  const size_t n = static_cast<size_t>(batch) * channels * height * width;
  if (latents.ElementLength() != n) {
    ThrowRangeError(env, "options.latents must hold batch·channels·height·width = " + std::to_string(n) +
                             " values, got " + std::to_string(latents.ElementLength()));
  }
  const size_t noiseCount = static_cast<size_t>(program.noiseDraws) * n;
  if (noise.ElementLength() != noiseCount) {
    ThrowRangeError(env, "options.noise must hold one latent-sized draw per evaluation that draws noise (" +
                             std::to_string(program.noiseDraws) + " × " + std::to_string(n) + " = " +
                             std::to_string(noiseCount) + " values), got " + std::to_string(noise.ElementLength()));
  }
  bool deviceOutput = false;
  if (HasOption(options, "output")) {
    const std::string output = RequireString(options, "output", owner);
    if (output == "device") {
      deviceOutput = true;
    } else if (output != "host") {
      ThrowRangeError(env, "options.output must be \"host\" or \"device\", got \"" + output + "\"");
    }
  }
  // Prompt editing (embedding_rows.h): the bank row each UNet row reads at each evaluation.
  const bool hasRowTable = HasOption(options, "embeddingRows");
  Napi::TypedArray rowTable;
  if (hasRowTable) rowTable = RequireTypedArray(options, "embeddingRows", owner, napi_int32_array, "Int32Array");
  Napi::Value embeddings = options.Get("embeddings");
  const bool hasEmbeddings = !embeddings.IsUndefined() && !embeddings.IsNull();
  if (hasEmbeddings && !embeddings.IsObject()) {
    ThrowTypeError(env, std::string(kEmbeddingsTypes) + DescribeJsValue(embeddings));
  }

#if !SDTRT_WITH_CUDA
  (void)useGraphs;
  (void)queueDepth;
  (void)deviceOutput;
  (void)hasRowTable;
  (void)splitCallRows;
  (void)uncondSequenceLength;
  throw ToJsError(env, NativeError("ERR_NO_CUDA", "denoise", "CUDA support was not compiled in"));
#else
  if (busy_) {
    throw ToJsError(env, NativeError("ERR_BUSY", "denoise",
                                     "Denoiser is already running; wait for the previous run() to settle"));
  }
  DenoiseRequest request;
  request.latents = latents.As<Napi::Float32Array>().Data();
  request.batch = batch;
  request.channels = channels;
  request.height = height;
  request.width = width;
  request.guidance = std::move(guidance);
  request.noise = noise.As<Napi::Float32Array>().Data();
  request.noiseCount = noiseCount;
  request.useGraphs = useGraphs;
  request.queueDepth = queueDepth;
  request.deviceOutput = deviceOutput;
  request.sequenceLength = sequenceLength;
  request.splitCallRows = splitCallRows;
  request.uncondSequenceLength = uncondSequenceLength;
  std::vector<Napi::Value> pinned = {latents, noise};

  UnetRunner& runner = core_->runner();
  if (runner.hiddenSize() > 0) {
    const size_t unetBatch = static_cast<size_t>(request.guidance.empty() ? batch : 2 * batch);
    const size_t hidden = static_cast<size_t>(runner.hiddenSize());
    // With two calls the first `batch` rows (uncond) are uncondSequenceLength tokens long.
    const size_t uncondRows = splitCallRows > 0 ? static_cast<size_t>(batch) : 0;
    const auto lengthOfRow = [&](int64_t row) { return static_cast<size_t>(row) < uncondRows ? uncondSequenceLength : sequenceLength; };
    const size_t count = (uncondRows * uncondSequenceLength + (unetBatch - uncondRows) * sequenceLength) * hidden;
    const std::string shape = splitCallRows > 0 ? "[" + std::to_string(batch) + ", " + std::to_string(uncondSequenceLength) + ", " + std::to_string(hidden) +
                                                      "] uncond rows then [" + std::to_string(batch) + ", " + std::to_string(sequenceLength) + ", " +
                                                      std::to_string(hidden) + "] cond rows"
                                                : "[" + std::to_string(unetBatch) + ", " + std::to_string(sequenceLength) + ", " + std::to_string(hidden) + "]";
    if (!hasEmbeddings) {
      ThrowTypeError(env, "options.embeddings is required by this UNet: " + shape +
                              " text embeddings (uncond rows first with guidance)");
    }
    // Device tensors: one [unetBatch, sequenceLength, hidden] tensor, or a list whose rows are joined in order
    // on the device (e.g. [uncond, cond] straight from encodeText), float32 or float16 each.
    std::vector<Napi::Value> parts;
    if (embeddings.IsArray()) {
      Napi::Array list = embeddings.As<Napi::Array>();
      for (uint32_t i = 0; i < list.Length(); ++i) parts.push_back(list.Get(i));
      if (parts.empty()) ThrowRangeError(env, "options.embeddings must not be an empty list");
    } else if (DeviceTensor::FromJs(embeddings) != nullptr) {
      parts.push_back(embeddings);
    }
    if (!parts.empty()) {
      int64_t rows = 0;
      // A bank (row table) with two calls: its uncond texts' parts come first, at uncondSequenceLength.
      int64_t uncondBankRows = 0;
      bool condPartSeen = false;
      for (size_t i = 0; i < parts.size(); ++i) {
        const std::string name = embeddings.IsArray() ? "options.embeddings[" + std::to_string(i) + "]" : "options.embeddings";
        DeviceTensor* tensor = DeviceTensor::FromJs(parts[i]);
        if (tensor == nullptr) ThrowTypeError(env, name + " must be a DeviceTensor, got " + DescribeJsValue(parts[i]));
        if (!tensor->buffer()) throw ToJsError(env, NativeError("ERR_DISPOSED", "denoise", name + ": DeviceTensor is disposed"));
        const std::vector<int64_t>& dims = tensor->shape();
        const bool floatType = tensor->dtype() == DType::kFloat32 || tensor->dtype() == DType::kFloat16;
        int length = lengthOfRow(rows);
        if (hasRowTable && splitCallRows > 0) {
          condPartSeen = condPartSeen || (dims.size() == 3 && dims[1] == sequenceLength);
          length = condPartSeen ? sequenceLength : uncondSequenceLength;
        }
        if (!floatType || dims.size() != 3 || dims[1] != length || dims[2] != runner.hiddenSize() ||
            tensor->device() != core_->device()) {
          std::string got = std::string(dtypeName(tensor->dtype())) + " [";
          for (size_t d = 0; d < dims.size(); ++d) got += (d ? ", " : "") + std::to_string(dims[d]);
          got += "] on device " + std::to_string(tensor->device());
          ThrowRangeError(env, name + " must be a float32 or float16 [rows, " + std::to_string(length) + ", " + std::to_string(runner.hiddenSize()) +
                                   "] tensor on device " + std::to_string(core_->device()) + ", got " + got);
        }
        if (hasRowTable && splitCallRows > 0 && !condPartSeen) uncondBankRows += dims[0];
        if (!hasRowTable && static_cast<size_t>(rows) < uncondRows && static_cast<size_t>(rows + dims[0]) > uncondRows) {
          ThrowRangeError(env, name + " holds uncond and cond rows, but with options.splitCalls they have different text lengths: give them as separate tensors");
        }
        rows += dims[0];
        request.deviceEmbeddings.push_back({tensor->buffer(), tensor->dtype(), static_cast<size_t>(tensor->elementCount())});
        pinned.push_back(parts[i]);
      }
      if (hasRowTable) {
        // A bank of any number of rows; the table says which ones each evaluation binds. With two
        // calls the uncond UNet rows must read the uncond block and the cond rows the cond block.
        program::BankHalves halves;
        if (splitCallRows > 0) {
          if (uncondBankRows == 0 || uncondBankRows == rows) {
            ThrowRangeError(env, "options.embeddings with options.splitCalls and options.embeddingRows must be the uncond texts' rows at " +
                                     std::to_string(uncondSequenceLength) + " tokens, then the cond texts' rows at " + std::to_string(sequenceLength));
          }
          halves = {batch, static_cast<int>(std::min<int64_t>(uncondBankRows, INT32_MAX))};
        }
        try {
          request.embeddingRows = program::CheckEmbeddingRows(rowTable.As<Napi::Int32Array>().Data(), rowTable.ElementLength(),
                                                             program.evalCount, static_cast<int>(unetBatch), static_cast<int>(std::min<int64_t>(rows, INT32_MAX)), halves);
        } catch (const NativeError& e) {
          throw ToJsError(env, e);
        }
        request.embeddingRowCount = static_cast<int>(rows);
        request.uncondBankRows = halves.uncondBankRows;
      } else if (static_cast<size_t>(rows) != unetBatch) {
        ThrowRangeError(env, "options.embeddings must hold " + shape + " embeddings, got " + std::to_string(rows) + " rows");
      }
    } else if (embeddings.IsTypedArray()) {
      if (hasRowTable) ThrowTypeError(env, "options.embeddingRows needs the embeddings as DeviceTensors (the bank of every conditioning, encoded on the device)");
      Napi::TypedArray array = embeddings.As<Napi::TypedArray>();
      if (array.TypedArrayType() == napi_float32_array) {
        request.hostEmbeddingsType = DType::kFloat32;
      } else if (array.TypedArrayType() == napi_uint16_array) {
        request.hostEmbeddingsType = DType::kFloat16;
      } else {
        ThrowTypeError(env, std::string(kEmbeddingsTypes) + DescribeJsValue(embeddings));
      }
      if (array.ElementLength() != count) {
        ThrowRangeError(env, "options.embeddings must hold " + shape + " = " + std::to_string(count) + " values, got " +
                                 std::to_string(array.ElementLength()));
      }
      request.hostEmbeddings = static_cast<const uint8_t*>(array.ArrayBuffer().Data()) + array.ByteOffset();
      request.hostEmbeddingsCount = count;
      pinned.push_back(embeddings);
    } else {
      ThrowTypeError(env, std::string(kEmbeddingsTypes) + DescribeJsValue(embeddings));
    }
  }

  if (hasRowTable && request.embeddingRows.empty()) {
    ThrowTypeError(env, "options.embeddingRows selects text embeddings rows, but this UNet takes no text embeddings");
  }
  if (runner.textEmbedsSize() > 0) {
    if (hasRowTable) ThrowTypeError(env, "options.embeddingRows (prompt editing) is not supported with SDXL UNets: their pooled text_embeds would have to switch too");
    // SDXL's added conditioning: float32 [unetBatch, size] each, uncond rows first with guidance.
    const size_t unetBatch = static_cast<size_t>(request.guidance.empty() ? batch : 2 * batch);
    const auto addedInput = [&](const char* key, int size) -> const float* {
      if (!options.Has(key) || options.Get(key).IsUndefined()) {
        ThrowTypeError(env, std::string("options.") + key + " is required by this UNet (SDXL): a Float32Array [" + std::to_string(unetBatch) +
                                ", " + std::to_string(size) + "], uncond rows first with guidance");
      }
      Napi::TypedArray array = RequireTypedArray(options, key, owner, napi_float32_array, "Float32Array");
      const size_t want = unetBatch * static_cast<size_t>(size);
      if (array.ElementLength() != want) {
        ThrowRangeError(env, std::string("options.") + key + " must hold [" + std::to_string(unetBatch) + ", " + std::to_string(size) + "] = " +
                                 std::to_string(want) + " values, got " + std::to_string(array.ElementLength()));
      }
      pinned.push_back(options.Get(key));
      return array.As<Napi::Float32Array>().Data();
    };
    request.textEmbeds = addedInput("textEmbeds", runner.textEmbedsSize());
    request.timeIds = addedInput("timeIds", runner.timeIdsSize());
  }

  core_->ResetCancel();
  auto* worker = new SdDenoiseWorker(env, this, core_, std::move(program), std::move(request), std::move(pinned), onProgress);
  Napi::Promise promise = worker->Promise();
  busy_ = true;
  worker->Queue();
  return promise;
#endif
}

}  // namespace

void RegisterDenoiser(Napi::Env env, Napi::Object exports) {
  RegisterClass(env, exports, "Denoiser", DenoiserWrap::Define(env));
}

}  // namespace sdtrt
