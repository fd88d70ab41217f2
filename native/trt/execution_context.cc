#include "execution_context.h"

#include <algorithm>
#include <cmath>
#include <cstring>
#include <set>

#include "../common/cuda_check.h"
#include "../common/device_tensor.h"
#include "../common/js_class.h"
#include "../common/js_error.h"
#include "../common/tensor_access.h"
#include "../denoiser/kernels.h"
#include "trt_unet.h"

namespace sdtrt::trt {

namespace {

constexpr napi_type_tag kContextTag = {0x7364747274727463ULL, 0x6f6e746578740001ULL};
constexpr int kTokens = 77;

std::string DescribeProfiles(const LoadedEngine& engine, const InputShapes& shapes) {
  std::string out;
  for (size_t p = 0; p < engine.profiles.size(); ++p) {
    out += "\n  profile " + std::to_string(p) + ":";
    for (const auto& s : shapes) {
      auto it = engine.profiles[p].find(s.first);
      if (it == engine.profiles[p].end()) continue;
      out += " " + s.first + " " + ShapeString(it->second.min) + "…" + ShapeString(it->second.max);
    }
  }
  return out;
}

bool Within(const std::vector<int64_t>& shape, const std::vector<int64_t>& lo, const std::vector<int64_t>& hi) {
  if (shape.size() != lo.size() || shape.size() != hi.size()) return false;
  for (size_t i = 0; i < shape.size(); ++i) {
    if (shape[i] < lo[i] || shape[i] > hi[i]) return false;
  }
  return true;
}

// The shapes of the engine's fixed inputs must match exactly.
bool MatchesStatic(const std::vector<int64_t>& shape, const std::vector<int64_t>& declared) {
  if (shape.size() != declared.size()) return false;
  for (size_t i = 0; i < shape.size(); ++i) {
    if (declared[i] >= 0 && declared[i] != shape[i]) return false;
  }
  return true;
}

}  // namespace

// ------------------------------------------------------------------------------------ ContextState

ContextState::ContextState(std::shared_ptr<LoadedEngine> e, std::shared_ptr<ScratchState> s)
    : engine(std::move(e)), scratch(std::move(s)) {
  constexpr const char* stage = "context-create";
  SDTRT_CUDA_CHECK(stage, cudaSetDevice(engine->device));
  // No memory of its own: the activations live in the shared scratch (setDeviceMemoryV2).
  context.reset(engine->engine->createExecutionContext(nvinfer1::ExecutionContextAllocationStrategy::kUSER_MANAGED));
  if (!context) ThrowTrt(stage, "ICudaEngine::createExecutionContext failed for " + engine->name, engine->logger);
  context->setDeviceMemoryV2(scratch->buffer.data(), static_cast<int64_t>(scratch->buffer.bytes()));
  SDTRT_CUDA_CHECK(stage, cudaStreamCreateWithFlags(&stream, cudaStreamNonBlocking));
}

ContextState::~ContextState() { Release(); }

void ContextState::Release() noexcept {
  if (engine) (void)cudaSetDevice(engine->device);
  if (stream != nullptr) {
    (void)cudaStreamSynchronize(stream);
    (void)cudaStreamDestroy(stream);
    stream = nullptr;
  }
  if (sibling) {
    sibling->Release();
    sibling.reset();
  }
  context.reset();  // before the engine it came from
  buffers.clear();
  engine.reset();
  scratch.reset();
}

void ContextState::RequireAlive(const char* stage) const {
  if (!context) throw NativeError("ERR_DISPOSED", stage, "TrtContext is disposed");
}

nvinfer1::DataType ContextState::TypeOf(const std::string& tensor, const char* stage) const {
  const TensorInfo* t = engine->Find(tensor);
  if (t == nullptr) {
    std::string names;
    for (const TensorInfo& io : engine->io) names += (names.empty() ? "" : ", ") + io.name;
    throw NativeError("ERR_TENSOR_NAME", stage, "engine " + engine->name + " has no tensor " + tensor + " (it has " + names + ")");
  }
  return t->type;
}

void ContextState::SetInputShapes(const InputShapes& shapes, cudaStream_t s, const char* stage) {
  const int32_t count = engine->engine->getNbOptimizationProfiles();
  int chosen = -1;
  for (int32_t p = 0; p < count && chosen < 0; ++p) {
    bool fits = true;
    for (const auto& entry : shapes) {
      const TensorInfo* t = engine->Find(entry.first);
      if (t == nullptr || !t->input) {
        throw NativeError("ERR_TENSOR_NAME", stage, "engine " + engine->name + " has no input " + entry.first);
      }
      auto range = engine->profiles[static_cast<size_t>(p)].find(entry.first);
      fits = fits && (range == engine->profiles[static_cast<size_t>(p)].end() ? MatchesStatic(entry.second, t->shape)
                                                                              : Within(entry.second, range->second.min, range->second.max));
    }
    if (fits) chosen = p;
  }
  if (chosen < 0) {
    std::string asked;
    for (const auto& entry : shapes) asked += (asked.empty() ? "" : ", ") + entry.first + " " + ShapeString(entry.second);
    throw NativeError("ERR_SHAPE", stage,
                      "no optimization profile of engine " + engine->name + " accepts " + asked + DescribeProfiles(*engine, shapes) +
                          "\n(rebuild the engines for this batch size and image size with `sd-trt build`)");
  }
  if (chosen != profile || context->getOptimizationProfile() != chosen) {
    if (!context->setOptimizationProfileAsync(chosen, s)) {
      ThrowTrt(stage, "IExecutionContext::setOptimizationProfileAsync(" + std::to_string(chosen) + ") failed", engine->logger);
    }
    profile = chosen;
  }
  for (const auto& entry : shapes) {
    if (!context->setInputShape(entry.first.c_str(), VectorToDims(entry.second, stage, entry.first))) {
      ThrowTrt(stage, "IExecutionContext::setInputShape(" + entry.first + ", " + ShapeString(entry.second) + ") failed", engine->logger);
    }
  }
  if (!context->allInputDimensionsSpecified()) {
    std::string missing;
    for (const TensorInfo& t : engine->io) {
      if (!t.input) continue;
      bool given = false;
      for (const auto& entry : shapes) given = given || entry.first == t.name;
      if (!given) missing += (missing.empty() ? "" : ", ") + t.name;
    }
    throw NativeError("ERR_SHAPE", stage, "engine " + engine->name + " needs shapes for every input; not given: " + missing);
  }
}

std::vector<int64_t> ContextState::ShapeOf(const std::string& tensor, const char* stage) const {
  std::vector<int64_t> shape = DimsToVector(context->getTensorShape(tensor.c_str()));
  for (int64_t d : shape) {
    if (d < 0) {
      throw NativeError("ERR_SHAPE", stage, "TensorRT cannot tell the shape of " + tensor + " in engine " + engine->name + " (" +
                                                ShapeString(shape) + ")");
    }
  }
  return shape;
}

void* ContextState::Buffer(const std::string& key, size_t bytes, const char* stage) {
  DeviceBuffer& buffer = buffers[key];
  buffer.Reserve(std::max<size_t>(bytes, 1), stage);
  return buffer.data();
}

void ContextState::Bind(const std::string& tensor, void* address, const char* stage) {
  ++bindGeneration;
  if (!context->setTensorAddress(tensor.c_str(), address)) {
    ThrowTrt(stage, "IExecutionContext::setTensorAddress(" + tensor + ") failed", engine->logger);
  }
}

void ContextState::BindRemaining(const std::set<std::string>& bound, const char* stage) {
  for (const TensorInfo& t : engine->io) {
    if (bound.count(t.name) != 0) continue;
    const size_t size = DataTypeSize(t.type);
    if (size == 0) {
      throw NativeError("ERR_TENSORRT_UNSUPPORTED", stage, "engine tensor " + t.name + " has the sub-byte type " + DataTypeName(t.type));
    }
    const std::vector<int64_t> shape = ShapeOf(t.name, stage);
    Bind(t.name, Buffer("io:" + t.name, static_cast<size_t>(Volume(shape)) * size, stage), stage);
  }
}

void ContextState::Enqueue(cudaStream_t s, const char* stage) {
  if (!context->enqueueV3(s)) ThrowTrt(stage, "IExecutionContext::enqueueV3 failed for " + engine->name, engine->logger);
}

ContextState& ContextState::Sibling(const char* stage) {
  RequireAlive(stage);
  if (!sibling) sibling = std::make_shared<ContextState>(engine, scratch);
  return *sibling;
}

// ---------------------------------------------------------------------------------------- workers

namespace {

// Base of the context workers: holds the context (and so its engine and scratch) and the pinned
// JS inputs until the promise settles, and runs with both locks held.
class ContextWorker : public NativeAsyncWorker {
 public:
  ContextWorker(Napi::Env env, const char* name, const char* stage, std::shared_ptr<ContextState> state, std::vector<Napi::Value> pinned)
      : NativeAsyncWorker(env, name, stage), state_(std::move(state)), stage_(stage) {
    for (const Napi::Value& v : pinned) pinned_.push_back(Napi::Persistent(v.As<Napi::Object>()));
  }

 protected:
  void Run() final {
    // Scratch first, then the context: the same order everywhere, so two workers cannot deadlock.
    std::lock_guard<std::mutex> scratchLock(state_->scratch->mutex);
    std::lock_guard<std::mutex> contextLock(state_->mutex);
    state_->RequireAlive(stage_);
    SDTRT_CUDA_CHECK(stage_, cudaSetDevice(state_->engine->device));
    // GPU time of the whole call on the context's stream (uploads, engine, kernels, download),
    // from CUDA events: what `sd-trt bench` reports per stage.
    Events events(stage_);
    try {
      SDTRT_CUDA_CHECK(stage_, cudaEventRecord(events.start, state_->stream));
      RunLocked(*state_);
      SDTRT_CUDA_CHECK(stage_, cudaEventRecord(events.end, state_->stream));
      SDTRT_CUDA_CHECK(stage_, cudaStreamSynchronize(state_->stream));
    } catch (...) {
      // A throw after enqueueV3 (a failed kernel launch or copy) leaves the engine running on the
      // shared scratch and the context's buffers: wait for it before the locks are released (by
      // unwinding, after this), so no other context starts on the same scratch meanwhile.
      (void)cudaStreamSynchronize(state_->stream);
      (void)cudaGetLastError();
      throw;
    }
    float ms = 0;
    SDTRT_CUDA_CHECK(stage_, cudaEventElapsedTime(&ms, events.start, events.end));
    gpuMs_ = ms;
    Finish();
  }
  virtual void RunLocked(ContextState& ctx) = 0;
  virtual void Finish() {}

  struct Events {
    cudaEvent_t start = nullptr;
    cudaEvent_t end = nullptr;
    explicit Events(const char* stage) {
      SDTRT_CUDA_CHECK(stage, cudaEventCreate(&start));
      const cudaError_t status = cudaEventCreate(&end);
      if (status != cudaSuccess) {
        (void)cudaEventDestroy(start);
        throwCudaError(status, stage, "cudaEventCreate(&end)");
      }
    }
    ~Events() {
      (void)cudaEventDestroy(start);
      (void)cudaEventDestroy(end);
    }
  };

  std::shared_ptr<ContextState> state_;
  const char* stage_;
  double gpuMs_ = 0;

 private:
  std::vector<Napi::ObjectReference> pinned_;
};

struct TensorNames {
  std::string input;
  std::string output;
};

// A batch of NCHW images (VAE latents or pixels) as a call passed it: a borrowed Float32Array, or
// (decodeImage) a float32 / float16 DeviceTensor, optionally divided by a scale factor on the device.
struct ImageBatch {
  Napi::Value source;  // pinned by the worker until it settles
  const float* host = nullptr;
  std::shared_ptr<DeviceBuffer> device;
  DType deviceType = DType::kFloat32;
  int batch = 0, channels = 0, height = 0, width = 0;
  bool divide = false;
  float divisor = 1.0f;  // the JS number rounded to float32, as Math.fround does
};

struct ImageDims {
  int batch, height, width;
};

ImageDims ReadImageDims(const Napi::Object& options, const std::string& owner, int64_t maxSide) {
  const int batch = static_cast<int>(RequireInteger(options, "batch", owner, 1, 1024));
  const int height = static_cast<int>(RequireInteger(options, "height", owner, 1, maxSide));
  const int width = static_cast<int>(RequireInteger(options, "width", owner, 1, maxSide));
  return {batch, height, width};
}

// options[key]: a Float32Array of batch × channels × height × width values, with batch, height and
// width (each side at most maxSide) read from options too.
ImageBatch ReadImageBatch(const Napi::Object& options, const std::string& owner, const char* key, int channels, int64_t maxSide) {
  Napi::TypedArray values = RequireTypedArray(options, key, owner, napi_float32_array, "Float32Array");
  const ImageDims dims = ReadImageDims(options, owner, maxSide);
  if (values.ElementLength() != static_cast<size_t>(dims.batch) * channels * dims.height * dims.width) {
    ThrowRangeError(options.Env(), owner + "." + key + " must hold batch × " + std::to_string(channels) + " × height × width values, got " +
                                       std::to_string(values.ElementLength()));
  }
  ImageBatch out;
  out.source = values;
  out.host = values.As<Napi::Float32Array>().Data();
  out.batch = dims.batch;
  out.channels = channels;
  out.height = dims.height;
  out.width = dims.width;
  return out;
}

// decodeImage's latents: a Float32Array [batch, 4, height, width] or a DeviceTensor of that shape
// (float32 or float16) on the engine's device; `scalingFactor` (optional, a finite number > 0)
// divides them by it on the device first.
ImageBatch ReadLatents(const Napi::Object& options, const std::string& owner, int device) {
  constexpr int kChannels = 4;
  constexpr int64_t kMaxSide = 1 << 12;
  Napi::Env env = options.Env();
  Napi::Value value = options.Get("latents");
  ImageBatch out;
  if (DeviceTensor* tensor = DeviceTensor::FromJs(value)) {
    const ImageDims dims = ReadImageDims(options, owner, kMaxSide);
    if (!tensor->buffer()) throw ToJsError(env, NativeError("ERR_DISPOSED", "vae-decode", "options.latents: DeviceTensor is disposed"));
    const std::vector<int64_t> want = {dims.batch, kChannels, dims.height, dims.width};
    const bool floatType = tensor->dtype() == DType::kFloat32 || tensor->dtype() == DType::kFloat16;
    if (!floatType || tensor->shape() != want || tensor->device() != device) {
      ThrowRangeError(env, owner + ".latents must be a float32 or float16 " + ShapeString(want) + " tensor on device " + std::to_string(device) +
                               ", got " + dtypeName(tensor->dtype()) + " " + ShapeString(tensor->shape()) + " on device " +
                               std::to_string(tensor->device()));
    }
    out.source = value;
    out.device = tensor->buffer();
    out.deviceType = tensor->dtype();
    out.batch = dims.batch;
    out.channels = kChannels;
    out.height = dims.height;
    out.width = dims.width;
  } else if (value.IsTypedArray()) {
    out = ReadImageBatch(options, owner, "latents", kChannels, kMaxSide);
  } else {
    ThrowTypeError(env, owner + ".latents must be a Float32Array or a DeviceTensor, got " + DescribeJsValue(value));
  }
  if (HasOption(options, "scalingFactor")) {
    const double factor = RequireNumber(options, "scalingFactor", owner);
    if (!std::isfinite(factor) || !(factor > 0)) {
      ThrowRangeError(env, owner + ".scalingFactor must be a finite number > 0, got " + DescribeJsValue(options.Get("scalingFactor")));
    }
    out.divide = true;
    out.divisor = static_cast<float>(factor);
  }
  return out;
}

// A text-encoder input besides the ids, copied from JS: the edited graph's `clip_skip` (int32) and
// `extra_token_vectors` (float32) of lib/onnx/text-encoder-edit.ts.
struct ExtraInput {
  std::string name;
  std::vector<int64_t> dims;
  nvinfer1::DataType type;
  std::vector<uint8_t> bytes;
};

class SdClipEncodeWorker : public ContextWorker {
 public:
  // Emphasis applied to each computed row before the gather (A1111's sd_emphasis.py).
  enum class Emphasis { kNone, kOriginal, kNoNorm };

  SdClipEncodeWorker(Napi::Env env, std::shared_ptr<ContextState> state, Napi::TypedArray ids, int rows, TensorNames names,
                     std::vector<int32_t> outputRows, int chunks, std::vector<float> multipliers, Emphasis emphasis,
                     std::vector<int32_t> emphasisGroups, std::vector<ExtraInput> extras, std::string pooledName)
      : ContextWorker(env, "SdClipEncodeWorker", "clip-encode", std::move(state), {ids}),
        ids_(ids.As<Napi::Int32Array>().Data()),
        rows_(rows),
        names_(std::move(names)),
        outputRows_(std::move(outputRows)),
        chunks_(chunks),
        multipliers_(std::move(multipliers)),
        emphasis_(emphasis),
        emphasisGroups_(std::move(emphasisGroups)),
        extras_(std::move(extras)),
        pooledName_(std::move(pooledName)) {}

 protected:
  std::string ApiName() const override { return "nvinfer1::IExecutionContext::enqueueV3 (text encoder)"; }

  void RunLocked(ContextState& ctx) override {
    const size_t count = static_cast<size_t>(rows_) * kTokens;
    const nvinfer1::DataType idsType = ctx.TypeOf(names_.input, stage_);
    InputShapes shapes{{names_.input, {rows_, kTokens}}};
    for (const ExtraInput& extra : extras_) shapes.emplace_back(extra.name, extra.dims);
    ctx.SetInputShapes(shapes, ctx.stream, stage_);
    void* ids = nullptr;
    if (idsType == nvinfer1::DataType::kINT32) {
      ids = ctx.Buffer("in:" + names_.input, count * 4, stage_);
      SDTRT_CUDA_CHECK(stage_, cudaMemcpyAsync(ids, ids_, count * 4, cudaMemcpyHostToDevice, ctx.stream));
    } else if (idsType == nvinfer1::DataType::kINT64) {
      // Token ids are small; widening them on the host is cheaper than a kernel launch.
      std::vector<int64_t> wide(ids_, ids_ + count);
      ids = ctx.Buffer("in:" + names_.input, count * 8, stage_);
      SDTRT_CUDA_CHECK(stage_, cudaMemcpyAsync(ids, wide.data(), count * 8, cudaMemcpyHostToDevice, ctx.stream));
      SDTRT_CUDA_CHECK(stage_, cudaStreamSynchronize(ctx.stream));  // `wide` dies at the end of this block
    } else {
      throw NativeError("ERR_TENSORRT_UNSUPPORTED", stage_, "text encoder input " + names_.input + " is " + DataTypeName(idsType) +
                                                                 ", expected int32 or int64 token ids");
    }
    ctx.Bind(names_.input, ids, stage_);
    std::set<std::string> bound{names_.input};
    for (const ExtraInput& extra : extras_) {
      if (ctx.TypeOf(extra.name, stage_) != extra.type) {
        throw NativeError("ERR_TENSORRT_UNSUPPORTED", stage_, "text encoder input " + extra.name + " is " + DataTypeName(ctx.TypeOf(extra.name, stage_)) +
                                                                   ", expected " + DataTypeName(extra.type));
      }
      void* device = ctx.Buffer("in:" + extra.name, extra.bytes.size(), stage_);
      // extras_ lives until the worker is deleted, after the stream work it feeds.
      SDTRT_CUDA_CHECK(stage_, cudaMemcpyAsync(device, extra.bytes.data(), extra.bytes.size(), cudaMemcpyHostToDevice, ctx.stream));
      ctx.Bind(extra.name, device, stage_);
      bound.insert(extra.name);
    }
    ctx.BindRemaining(bound, stage_);
    ctx.Enqueue(ctx.stream, stage_);

    const std::vector<int64_t> shape = ctx.ShapeOf(names_.output, stage_);
    if (shape.size() != 3 || shape[0] != rows_ || shape[1] != kTokens) {
      throw NativeError("ERR_SHAPE", stage_, "text encoder output " + names_.output + " has shape " + ShapeString(shape) + ", expected [" +
                                                 std::to_string(rows_) + ", 77, hidden]");
    }
    hidden_ = shape[2];
    dtype_ = ToDType(ctx.TypeOf(names_.output, stage_), stage_, names_.output);
    if (!pooledName_.empty()) {
      // SDXL's text_embeds [rows, P] of every computed row, to the host: a few KiB, read by the
      // caller for the UNet's added conditioning (the first chunk of each prompt).
      const std::vector<int64_t> pooled = ctx.ShapeOf(pooledName_, stage_);
      if (pooled.size() != 2 || pooled[0] != rows_ || pooled[1] <= 0) {
        throw NativeError("ERR_SHAPE", stage_, "text encoder output " + pooledName_ + " has shape " + ShapeString(pooled) + ", expected [" +
                                                   std::to_string(rows_) + ", size]");
      }
      pooledSize_ = pooled[1];
      pooledType_ = ToDType(ctx.TypeOf(pooledName_, stage_), stage_, pooledName_);
      pooledBytes_.resize(static_cast<size_t>(rows_ * pooledSize_) * dtypeSize(pooledType_));
      SDTRT_CUDA_CHECK(stage_, cudaMemcpyAsync(pooledBytes_.data(), ctx.Buffer("io:" + pooledName_, 0, stage_), pooledBytes_.size(),
                                               cudaMemcpyDeviceToHost, ctx.stream));
    }
    const size_t rowBytes = static_cast<size_t>(kTokens * hidden_) * dtypeSize(dtype_);
    void* output = ctx.Buffer("io:" + names_.output, 0, stage_);
    if (emphasis_ != Emphasis::kNone) {
      // Each computed row is one 77-token chunk: A1111 weights each chunk, and "Original" rescales
      // it on its own, or with the rows of its group (the texts of one prompt's schedule).
      const size_t bytes = multipliers_.size() * sizeof(float);
      void* multipliers = ctx.Buffer("in:emphasis-multipliers", bytes, stage_);
      SDTRT_CUDA_CHECK(stage_, cudaMemcpyAsync(multipliers, multipliers_.data(), bytes, cudaMemcpyHostToDevice, ctx.stream));
      kernels::EmphasisGroups groups;
      if (!emphasisGroups_.empty()) {
        const size_t groupBytes = emphasisGroups_.size() * sizeof(int32_t);
        void* ids = ctx.Buffer("in:emphasis-groups", groupBytes, stage_);
        SDTRT_CUDA_CHECK(stage_, cudaMemcpyAsync(ids, emphasisGroups_.data(), groupBytes, cudaMemcpyHostToDevice, ctx.stream));
        groups.ids = static_cast<const int32_t*>(ids);
        groups.rowSums = static_cast<double*>(ctx.Buffer("scratch:emphasis-row-sums", 2 * emphasisGroups_.size() * sizeof(double), stage_));
      }
      SDTRT_CUDA_CHECK(stage_, kernels::launchEmphasis(output, dtype_, static_cast<const float*>(multipliers), rows_, kTokens,
                                                       static_cast<int>(hidden_), emphasis_ == Emphasis::kOriginal, groups, ctx.stream));
    }
    // A fresh allocation: the result outlives this call, the context's output buffer does not.
    result_ = std::make_shared<DeviceBuffer>(std::max<size_t>(outputRows_.size() * rowBytes, 1), stage_);
    const auto* src = static_cast<const uint8_t*>(output);
    auto* dst = result_->as<uint8_t>();
    for (size_t r = 0; r < outputRows_.size(); ++r) {
      SDTRT_CUDA_CHECK(stage_, cudaMemcpyAsync(dst + r * rowBytes, src + static_cast<size_t>(outputRows_[r]) * rowBytes, rowBytes,
                                               cudaMemcpyDeviceToDevice, ctx.stream));
    }
    device_ = ctx.engine->device;
  }

  Napi::Value Result(Napi::Env env) override {
    Napi::Object out = Napi::Object::New(env);
    // Consecutive chunk rows are contiguous, so [rows · chunks, 77, hidden] is [rows, 77 · chunks, hidden].
    const int64_t rows = static_cast<int64_t>(outputRows_.size()) / chunks_;
    out.Set("embeddings", DeviceTensor::New(env, std::move(result_), dtype_, {rows, static_cast<int64_t>(kTokens) * chunks_, hidden_}, device_));
    out.Set("gpuMs", Napi::Number::New(env, gpuMs_));
    if (!pooledName_.empty()) {
      // The worker synchronised its stream before Result(): the bytes are there.
      const size_t count = static_cast<size_t>(rows_ * pooledSize_);
      Napi::Float32Array pooled = Napi::Float32Array::New(env, count);
      for (size_t i = 0; i < count; ++i) pooled[i] = loadFloat(pooledBytes_.data(), i, pooledType_);
      out.Set("pooled", pooled);
    }
    return out;
  }

 private:
  const int32_t* ids_;
  int rows_;
  TensorNames names_;
  std::vector<int32_t> outputRows_;
  int chunks_;
  std::vector<float> multipliers_;  // copied on the main thread: [rows][77]
  Emphasis emphasis_;
  std::vector<int32_t> emphasisGroups_;  // [rows] or empty (every row on its own)
  std::vector<ExtraInput> extras_;
  std::shared_ptr<DeviceBuffer> result_;
  DType dtype_ = DType::kFloat32;
  int64_t hidden_ = 0;
  int device_ = 0;
  std::string pooledName_;  // SDXL's text_embeds output; empty: not read
  std::vector<uint8_t> pooledBytes_;
  DType pooledType_ = DType::kFloat32;
  int64_t pooledSize_ = 0;
};

// Writes the image batch into `tensor`'s input buffer in the engine's type (float32 or float16):
// host values are uploaded, device values copied; with `divide`, x / divisor in float32 on the way
// (kernels::launchScaleCast, bit-identical to TypeScript's divideFloat32 before the upload).
void* StageInput(ContextState& ctx, const std::string& tensor, const ImageBatch& in, const char* stage) {
  const size_t count = static_cast<size_t>(in.batch) * in.channels * in.height * in.width;
  const DType type = ToDType(ctx.TypeOf(tensor, stage), stage, tensor);
  if (type != DType::kFloat32 && type != DType::kFloat16) {
    throw NativeError("ERR_TENSORRT_UNSUPPORTED", stage, "input " + tensor + " is " + dtypeName(type) + ", expected float32 or float16");
  }
  void* input = ctx.Buffer("in:" + tensor, count * dtypeSize(type), stage);
  const void* src = nullptr;
  DType srcType = DType::kFloat32;
  if (in.device) {
    src = in.device->data();
    srcType = in.deviceType;
  } else if (type == DType::kFloat32 && !in.divide) {
    SDTRT_CUDA_CHECK(stage, cudaMemcpyAsync(input, in.host, count * 4, cudaMemcpyHostToDevice, ctx.stream));
    return input;
  } else {
    void* staging = ctx.Buffer("staging:" + tensor, count * 4, stage);
    SDTRT_CUDA_CHECK(stage, cudaMemcpyAsync(staging, in.host, count * 4, cudaMemcpyHostToDevice, ctx.stream));
    src = staging;
  }
  if (in.divide) {
    SDTRT_CUDA_CHECK(stage, kernels::launchScaleCast(src, srcType, in.divisor, vae::ScaleOp::kDivide, input, type, count, ctx.stream));
  } else if (srcType == type) {
    SDTRT_CUDA_CHECK(stage, cudaMemcpyAsync(input, src, count * dtypeSize(type), cudaMemcpyDeviceToDevice, ctx.stream));
  } else {
    SDTRT_CUDA_CHECK(stage, kernels::launchCast(src, srcType, input, type, count, ctx.stream));
  }
  return input;
}

// Base of the VAE workers: the engine runs on one batch of NCHW images, the input (and the device
// tensor's buffer, if that is what it is) held until the promise settles; subclasses read the output.
class VaeWorker : public ContextWorker {
 public:
  VaeWorker(Napi::Env env, const char* name, const char* stage, std::shared_ptr<ContextState> state, ImageBatch input,
            TensorNames names)
      : ContextWorker(env, name, stage, std::move(state), {input.source}),
        input_(std::move(input)),
        batch_(input_.batch),
        channels_(input_.channels),
        height_(input_.height),
        width_(input_.width),
        names_(std::move(names)) {
    input_.source = Napi::Value();  // a handle of this call's scope: ContextWorker pinned the object
  }

 protected:
  // Stages the input (in the engine's input dtype), binds every tensor and enqueues the engine.
  void EnqueueInput(ContextState& ctx) {
    ctx.SetInputShapes({{names_.input, {batch_, channels_, height_, width_}}}, ctx.stream, stage_);
    ctx.Bind(names_.input, StageInput(ctx, names_.input, input_, stage_), stage_);
    ctx.BindRemaining({names_.input}, stage_);
    ctx.Enqueue(ctx.stream, stage_);
  }

  ImageBatch input_;
  int batch_, channels_, height_, width_;
  TensorNames names_;
};

class SdVaeDecodeWorker : public VaeWorker {
 public:
  SdVaeDecodeWorker(Napi::Env env, std::shared_ptr<ContextState> state, ImageBatch latents, TensorNames names)
      : VaeWorker(env, "SdVaeDecodeWorker", "vae-decode", std::move(state), std::move(latents), std::move(names)) {}

 protected:
  std::string ApiName() const override { return "nvinfer1::IExecutionContext::enqueueV3 (VAE decoder)"; }

  void RunLocked(ContextState& ctx) override {
    EnqueueInput(ctx);

    const std::vector<int64_t> shape = ctx.ShapeOf(names_.output, stage_);
    if (shape.size() != 4 || shape[0] != batch_ || shape[1] != 3) {
      throw NativeError("ERR_SHAPE", stage_, "VAE decoder output " + names_.output + " has shape " + ShapeString(shape) + ", expected [" +
                                                 std::to_string(batch_) + ", 3, H, W]");
    }
    outHeight_ = static_cast<int>(shape[2]);
    outWidth_ = static_cast<int>(shape[3]);
    const DType type = ToDType(ctx.TypeOf(names_.output, stage_), stage_, names_.output);
    const size_t bytes = static_cast<size_t>(batch_) * outHeight_ * outWidth_ * 3;
    auto* rgb = static_cast<uint8_t*>(ctx.Buffer("rgb", bytes, stage_));
    auto* counters = static_cast<unsigned long long*>(ctx.Buffer("nan-counters", 2 * sizeof(unsigned long long), stage_));
    SDTRT_CUDA_CHECK(stage_, cudaMemsetAsync(counters, 0, 2 * sizeof(unsigned long long), ctx.stream));
    SDTRT_CUDA_CHECK(stage_, kernels::launchVaeToUint8(ctx.Buffer("io:" + names_.output, 0, stage_), type, batch_, 3, outHeight_,
                                                       outWidth_, rgb, counters, ctx.stream));
    pixels_.resize(bytes);
    SDTRT_CUDA_CHECK(stage_, cudaMemcpyAsync(pixels_.data(), rgb, bytes, cudaMemcpyDeviceToHost, ctx.stream));
    SDTRT_CUDA_CHECK(stage_, cudaMemcpyAsync(counts_, counters, sizeof(counts_), cudaMemcpyDeviceToHost, ctx.stream));
  }

  void Finish() override {
    // Never hand back a black image for an overflowed fp16 VAE (docs/architecture.md).
    if (counts_[0] > 0 || counts_[1] > 0) {
      const std::string what = counts_[0] > 0 ? std::to_string(counts_[0]) + " NaN" : std::to_string(counts_[1]) + " infinite";
      throw NativeError("ERR_VAE_NAN", stage_,
                        "VAE produced NaN (fp16 overflow?): " + what + " values in the decoded image — rebuild the VAE engine in fp32 with "
                        "`sd-trt build … --fp32-vae`",
                        counts_[0] > 0 ? "nan" : "inf");
    }
  }

  Napi::Value Result(Napi::Env env) override {
    Napi::Object out = Napi::Object::New(env);
    out.Set("pixels", Napi::Buffer<uint8_t>::Copy(env, pixels_.data(), pixels_.size()));
    out.Set("width", Napi::Number::New(env, outWidth_));
    out.Set("height", Napi::Number::New(env, outHeight_));
    out.Set("gpuMs", Napi::Number::New(env, gpuMs_));
    return out;
  }

 private:
  int outHeight_ = 0, outWidth_ = 0;
  std::vector<uint8_t> pixels_;
  unsigned long long counts_[2] = {0, 0};
};

class SdVaeEncodeWorker : public VaeWorker {
 public:
  SdVaeEncodeWorker(Napi::Env env, std::shared_ptr<ContextState> state, ImageBatch pixels, TensorNames names)
      : VaeWorker(env, "SdVaeEncodeWorker", "vae-encode", std::move(state), std::move(pixels), std::move(names)) {}

 protected:
  std::string ApiName() const override { return "nvinfer1::IExecutionContext::enqueueV3 (VAE encoder)"; }

  void RunLocked(ContextState& ctx) override {
    EnqueueInput(ctx);
    shape_ = ctx.ShapeOf(names_.output, stage_);
    const DType type = ToDType(ctx.TypeOf(names_.output, stage_), stage_, names_.output);
    const size_t n = static_cast<size_t>(Volume(shape_));
    const void* out = ctx.Buffer("io:" + names_.output, 0, stage_);
    void* wide = const_cast<void*>(out);
    if (type != DType::kFloat32) {
      wide = ctx.Buffer("staging:" + names_.output, n * 4, stage_);
      SDTRT_CUDA_CHECK(stage_, kernels::launchCast(out, type, wide, DType::kFloat32, n, ctx.stream));
    }
    data_.resize(n);
    SDTRT_CUDA_CHECK(stage_, cudaMemcpyAsync(data_.data(), wide, n * 4, cudaMemcpyDeviceToHost, ctx.stream));
  }

  Napi::Value Result(Napi::Env env) override {
    Napi::Object out = Napi::Object::New(env);
    Napi::Float32Array data = Napi::Float32Array::New(env, data_.size());
    std::copy(data_.begin(), data_.end(), data.Data());
    out.Set("data", data);
    out.Set("shape", ShapeToJs(env, shape_));
    out.Set("gpuMs", Napi::Number::New(env, gpuMs_));
    return out;
  }

 private:
  std::vector<int64_t> shape_;
  std::vector<float> data_;
};

TensorNames ReadNames(const Napi::Object& options, const std::string& owner) {
  return {RequireString(options, "input", owner), RequireString(options, "output", owner)};
}

}  // namespace

// -------------------------------------------------------------------------------------- TrtContext

Napi::Function ContextWrap::Define(Napi::Env env) {
  return DefineClass(env, "TrtContext",
                     {
                         InstanceMethod<&ContextWrap::EncodeText>("encodeText"),
                         InstanceMethod<&ContextWrap::DecodeImage>("decodeImage"),
                         InstanceMethod<&ContextWrap::EncodeImage>("encodeImage"),
                         InstanceMethod<&ContextWrap::CreateUnet>("createUnet"),
                         InstanceAccessor<&ContextWrap::GetDisposed>("disposed"),
                         InstanceMethod<&ContextWrap::Dispose>("dispose"),
                     });
}

Napi::Object ContextWrap::New(Napi::Env env, std::shared_ptr<ContextState> state) {
  return NewFromNative(env, "TrtContext", kContextTag, std::move(state));
}

ContextWrap::ContextWrap(const Napi::CallbackInfo& info)
    : Napi::ObjectWrap<ContextWrap>(info),
      state_(TakeNativePayload<std::shared_ptr<ContextState>>(
          info, "TrtContext objects are created by engine.createContext(), not with new")) {
  cleanup_ = GetAddonData(info.Env()).cleanup;
  std::weak_ptr<ContextState> weak = state_;
  cleanup_->Add(this, [weak]() {
    if (auto s = weak.lock()) {
      std::lock_guard<std::mutex> lock(s->mutex);
      s->Release();
    }
  });
}

ContextWrap::~ContextWrap() { cleanup_->Remove(this); }

std::shared_ptr<ContextState> ContextWrap::Require(Napi::Env env, const char* stage) const {
  if (!state_) throw ToJsError(env, NativeError("ERR_DISPOSED", stage, "TrtContext is disposed"));
  return state_;
}

Napi::Value ContextWrap::EncodeText(const Napi::CallbackInfo& info) {
  Napi::Env env = info.Env();
  const std::string owner = "options";
  Napi::Object options = RequireObject(info[0], owner);
  Napi::TypedArray ids = RequireTypedArray(options, "ids", owner, napi_int32_array, "Int32Array");
  const int rows = static_cast<int>(RequireInteger(options, "rows", owner, 1, 4096));
  if (ids.ElementLength() != static_cast<size_t>(rows) * kTokens) {
    ThrowRangeError(env, "options.ids must hold rows × 77 = " + std::to_string(rows * kTokens) + " token ids, got " +
                             std::to_string(ids.ElementLength()));
  }
  Napi::TypedArray map = RequireTypedArray(options, "outputRows", owner, napi_int32_array, "Int32Array");
  std::vector<int32_t> outputRows(map.ElementLength());
  for (size_t r = 0; r < outputRows.size(); ++r) {
    outputRows[r] = map.As<Napi::Int32Array>()[r];
    if (outputRows[r] < 0 || outputRows[r] >= rows) {
      ThrowRangeError(env, "options.outputRows[" + std::to_string(r) + "] must be a computed row from 0 to " + std::to_string(rows - 1) +
                               ", got " + std::to_string(outputRows[r]));
    }
  }
  if (outputRows.empty()) ThrowRangeError(env, "options.outputRows must name at least one row");
  const int chunks = static_cast<int>(OptionalInteger(options, "chunks", owner, 1, 64, 1));
  if (outputRows.size() % static_cast<size_t>(chunks) != 0) {
    ThrowRangeError(env, "options.outputRows must hold whole prompts of options.chunks = " + std::to_string(chunks) + " rows, got " +
                             std::to_string(outputRows.size()) + " rows");
  }
  using Emphasis = SdClipEncodeWorker::Emphasis;
  Emphasis emphasis = Emphasis::kNone;
  std::vector<float> multipliers;
  if (HasOption(options, "emphasis")) {
    const std::string mode = RequireString(options, "emphasis", owner);
    if (mode == "original") emphasis = Emphasis::kOriginal;
    else if (mode == "no-norm") emphasis = Emphasis::kNoNorm;
    else ThrowRangeError(env, "options.emphasis must be \"original\" or \"no-norm\", got \"" + mode + "\"");
    Napi::TypedArray m = RequireTypedArray(options, "multipliers", owner, napi_float32_array, "Float32Array");
    if (m.ElementLength() != static_cast<size_t>(rows) * kTokens) {
      ThrowRangeError(env, "options.multipliers must hold rows × 77 = " + std::to_string(rows * kTokens) + " weights, got " +
                               std::to_string(m.ElementLength()));
    }
    const float* data = m.As<Napi::Float32Array>().Data();
    multipliers.assign(data, data + m.ElementLength());
  }
  // options.emphasisGroups: Int32Array [rows]; rows with one id restore one mean ("original").
  std::vector<int32_t> emphasisGroups;
  if (HasOption(options, "emphasisGroups")) {
    if (emphasis != Emphasis::kOriginal) ThrowTypeError(env, "options.emphasisGroups needs options.emphasis \"original\" (the only mode that restores a mean)");
    Napi::TypedArray g = RequireTypedArray(options, "emphasisGroups", owner, napi_int32_array, "Int32Array");
    if (g.ElementLength() != static_cast<size_t>(rows)) {
      ThrowRangeError(env, "options.emphasisGroups must hold one group id per computed row (" + std::to_string(rows) + "), got " +
                               std::to_string(g.ElementLength()));
    }
    const int32_t* data = g.As<Napi::Int32Array>().Data();
    emphasisGroups.assign(data, data + g.ElementLength());
  }
  // options.extraInputs: [{ name, dims, data: Int32Array | Float32Array }] for the edited graph's inputs.
  std::vector<ExtraInput> extras;
  if (HasOption(options, "extraInputs")) {
    Napi::Value list = options.Get("extraInputs");
    if (!list.IsArray()) ThrowTypeError(env, "options.extraInputs must be an array, got " + DescribeJsValue(list));
    Napi::Array array = list.As<Napi::Array>();
    for (uint32_t i = 0; i < array.Length(); ++i) {
      const std::string where = "options.extraInputs[" + std::to_string(i) + "]";
      Napi::Object entry = RequireObject(array.Get(i), where);
      ExtraInput extra;
      extra.name = RequireString(entry, "name", where);
      Napi::Value dimsValue = entry.Get("dims");
      if (!dimsValue.IsArray()) ThrowTypeError(env, where + ".dims must be an array of sizes, got " + DescribeJsValue(dimsValue));
      Napi::Array dims = dimsValue.As<Napi::Array>();
      int64_t volume = 1;
      for (uint32_t d = 0; d < dims.Length(); ++d) {
        Napi::Value v = dims.Get(d);
        if (!v.IsNumber() || v.As<Napi::Number>().DoubleValue() < 1 || v.As<Napi::Number>().DoubleValue() > (1 << 20)) {
          ThrowRangeError(env, where + ".dims[" + std::to_string(d) + "] must be an integer from 1 to 1048576, got " + DescribeJsValue(v));
        }
        extra.dims.push_back(v.As<Napi::Number>().Int64Value());
        volume *= extra.dims.back();
      }
      Napi::Value data = entry.Get("data");
      if (!data.IsTypedArray()) ThrowTypeError(env, where + ".data must be an Int32Array or a Float32Array, got " + DescribeJsValue(data));
      Napi::TypedArray typed = data.As<Napi::TypedArray>();
      if (typed.TypedArrayType() == napi_int32_array) extra.type = nvinfer1::DataType::kINT32;
      else if (typed.TypedArrayType() == napi_float32_array) extra.type = nvinfer1::DataType::kFLOAT;
      else ThrowTypeError(env, where + ".data must be an Int32Array or a Float32Array");
      if (typed.ElementLength() != static_cast<size_t>(volume)) {
        ThrowRangeError(env, where + ".data must hold " + std::to_string(volume) + " values (the product of dims), got " + std::to_string(typed.ElementLength()));
      }
      const auto* bytes = static_cast<const uint8_t*>(typed.ArrayBuffer().Data()) + typed.ByteOffset();
      extra.bytes.assign(bytes, bytes + typed.ByteLength());
      extras.push_back(std::move(extra));
    }
  }
  auto* worker = new SdClipEncodeWorker(env, Require(env, "clip-encode"), ids, rows, ReadNames(options, owner), std::move(outputRows), chunks,
                                        std::move(multipliers), emphasis, std::move(emphasisGroups), std::move(extras),
                                        HasOption(options, "pooledOutput") ? RequireString(options, "pooledOutput", owner) : std::string());
  return worker->Start();
}

Napi::Value ContextWrap::DecodeImage(const Napi::CallbackInfo& info) {
  Napi::Env env = info.Env();
  const std::string owner = "options";
  Napi::Object options = RequireObject(info[0], owner);
  std::shared_ptr<ContextState> state = Require(env, "vae-decode");
  ImageBatch latents = ReadLatents(options, owner, state->engine ? state->engine->device : 0);
  auto* worker = new SdVaeDecodeWorker(env, std::move(state), std::move(latents), ReadNames(options, owner));
  return worker->Start();
}

Napi::Value ContextWrap::EncodeImage(const Napi::CallbackInfo& info) {
  Napi::Env env = info.Env();
  const std::string owner = "options";
  Napi::Object options = RequireObject(info[0], owner);
  ImageBatch pixels = ReadImageBatch(options, owner, "pixels", 3, 1 << 15);
  auto* worker = new SdVaeEncodeWorker(env, Require(env, "vae-encode"), std::move(pixels), ReadNames(options, owner));
  return worker->Start();
}

Napi::Value ContextWrap::CreateUnet(const Napi::CallbackInfo& info) {
  Napi::Env env = info.Env();
  const std::string owner = "options";
  Napi::Object options = RequireObject(info[0], owner);
  UnetTensorNames names{RequireString(options, "sample", owner), RequireString(options, "timestep", owner),
                        RequireString(options, "hidden", owner), RequireString(options, "out", owner)};
  const std::string layout = RequireString(options, "timestepLayout", owner);
  TimestepLayout timestepLayout;
  if (layout == "scalar") {
    timestepLayout = TimestepLayout::kScalar;
  } else if (layout == "single") {
    timestepLayout = TimestepLayout::kSingle;
  } else if (layout == "per-row") {
    timestepLayout = TimestepLayout::kPerRow;
  } else {
    ThrowRangeError(env, "options.timestepLayout must be \"scalar\", \"single\" or \"per-row\", got \"" + layout + "\"");
  }
  const int hiddenSize = static_cast<int>(RequireInteger(options, "hiddenSize", owner, 1, 1 << 16));
  // SDXL's added conditioning: the engine's text_embeds and time_ids inputs, by name.
  if (options.Has("textEmbeds") && !options.Get("textEmbeds").IsUndefined()) names.textEmbeds = RequireString(options, "textEmbeds", owner);
  if (options.Has("timeIds") && !options.Get("timeIds").IsUndefined()) names.timeIds = RequireString(options, "timeIds", owner);
  std::shared_ptr<TrtUnetRunner> runner;
  try {
    runner = std::make_shared<TrtUnetRunner>(Require(env, "unet-create"), std::move(names), timestepLayout, hiddenSize);
  } catch (const NativeError& e) {
    throw ToJsError(env, e);
  }
  return UnetWrap::New(env, std::move(runner));
}

Napi::Value ContextWrap::GetDisposed(const Napi::CallbackInfo& info) { return Napi::Boolean::New(info.Env(), !state_); }

Napi::Value ContextWrap::Dispose(const Napi::CallbackInfo& info) {
  // In-flight workers and UNet runners hold their own reference; the context is destroyed with the
  // last of them (never under a running enqueue).
  state_.reset();
  return info.Env().Undefined();
}

void RegisterExecutionContext(Napi::Env env, Napi::Object target) {
  RegisterClass(env, target, "TrtContext", ContextWrap::Define(env));
  RegisterUnet(env, target);
}

}  // namespace sdtrt::trt
