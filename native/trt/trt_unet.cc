#include "trt_unet.h"

#include "../common/js_class.h"

namespace sdtrt::trt {

namespace {

constexpr const char* kStage = "unet";
constexpr napi_type_tag kUnetTag = {0x7364747274727475ULL, 0x6e65740000000001ULL};

DType FloatTypeOf(const ContextState& ctx, const std::string& tensor, bool input) {
  const TensorInfo* t = ctx.engine->Find(tensor);
  if (t == nullptr || t->input != input) {
    throw NativeError("ERR_TENSOR_NAME", "unet-create",
                      "UNet engine " + ctx.engine->name + " has no " + (input ? "input " : "output ") + tensor);
  }
  return ToDType(t->type, "unet-create", tensor);
}

// The fixed width of a [batch, width] input (sd-trt build fixes it: profiles.ts).
int StaticLastAxis(const ContextState& ctx, const std::string& tensor) {
  const TensorInfo* t = ctx.engine->Find(tensor);
  if (t->shape.size() != 2 || t->shape[1] <= 0) {
    throw NativeError("ERR_SHAPE", "unet-create",
                      "UNet engine " + ctx.engine->name + " input " + tensor + " has shape " + ShapeString(t->shape) +
                          ", expected [batch, N] with a fixed N");
  }
  return static_cast<int>(t->shape[1]);
}

}  // namespace

TrtUnetRunner::TrtUnetRunner(std::shared_ptr<ContextState> context, UnetTensorNames names, TimestepLayout layout, int hiddenSize)
    : context_(std::move(context)), names_(std::move(names)), layout_(layout), hiddenSize_(hiddenSize) {
  sampleType_ = FloatTypeOf(*context_, names_.sample, true);
  timestepType_ = FloatTypeOf(*context_, names_.timestep, true);
  hiddenType_ = FloatTypeOf(*context_, names_.hidden, true);
  outType_ = FloatTypeOf(*context_, names_.out, false);
  for (DType t : {sampleType_, hiddenType_, outType_}) {
    if (t != DType::kFloat32 && t != DType::kFloat16) {
      throw NativeError("ERR_TENSORRT_UNSUPPORTED", "unet-create", "UNet sample, embeddings and output must be float32 or float16");
    }
  }
  if (names_.textEmbeds.empty() != names_.timeIds.empty()) {
    throw NativeError("ERR_TENSOR_NAME", "unet-create", "SDXL's added conditioning needs both textEmbeds and timeIds (or neither)");
  }
  if (!names_.textEmbeds.empty()) {
    textEmbedsType_ = FloatTypeOf(*context_, names_.textEmbeds, true);
    timeIdsType_ = FloatTypeOf(*context_, names_.timeIds, true);
    textEmbedsSize_ = StaticLastAxis(*context_, names_.textEmbeds);
    timeIdsSize_ = StaticLastAxis(*context_, names_.timeIds);
  }
  const TensorInfo* hidden = context_->engine->Find(names_.hidden);
  if (!hidden->shape.empty() && hidden->shape.back() > 0 && hidden->shape.back() != hiddenSize_) {
    throw NativeError("ERR_SHAPE", "unet-create",
                      "UNet engine " + context_->engine->name + " takes embeddings of size " + std::to_string(hidden->shape.back()) +
                          ", not " + std::to_string(hiddenSize_));
  }
}

class TrtUnetRunner::Lease : public UnetRunner::RunLease {
 public:
  Lease(const TrtUnetRunner& runner, std::shared_ptr<ContextState> ctx)
      : runner_(runner), ctx_(std::move(ctx)), scratchLock_(ctx_->scratch->mutex), contextLock_(ctx_->mutex) {}
  bool bindingsLost() const override { return ctx_->bindGeneration != runner_.boundGeneration_; }

 private:
  const TrtUnetRunner& runner_;
  std::shared_ptr<ContextState> ctx_;
  std::unique_lock<std::mutex> scratchLock_;  // scratch first, then the context: ContextWorker's order
  std::unique_lock<std::mutex> contextLock_;
};

void TrtUnetRunner::claim(const void* owner, const char* stage) {
  if (released()) throw NativeError("ERR_DISPOSED", stage, "TrtUnet is disposed");
  const void* expected = nullptr;
  if (!context_->unetOwner.compare_exchange_strong(expected, owner) && expected != owner) {
    throw NativeError("ERR_RUNNER_OWNED", stage,
                      "this TrtUnet (engine " + context_->engine->name +
                          ") is already used by another Denoiser: a UNet context has one set of tensor addresses, so one "
                          "Denoiser per context. Dispose the other Denoiser first, or give this one its own context "
                          "(engine.createContext(scratch).createUnet(…))");
  }
}

void TrtUnetRunner::disown(const void* owner) {
  const void* expected = owner;
  context_->unetOwner.compare_exchange_strong(expected, nullptr);
}

std::unique_ptr<UnetRunner::RunLease> TrtUnetRunner::acquire(const void* owner, const char* stage) {
  if (context_->unetOwner.load() != owner) {
    throw NativeError("ERR_RUNNER_OWNED", stage, "this Denoiser does not own its TrtUnet's context (it was released)");
  }
  auto lease = std::make_unique<Lease>(*this, context_);
  if (released() || !context_->context) throw NativeError("ERR_DISPOSED", stage, "TrtUnet is disposed");
  return lease;
}

void TrtUnetRunner::bind(const UnetBindings& b, cudaStream_t stream) {
  std::shared_ptr<ContextState> ctx = context_;
  if (released() || !ctx->context) throw NativeError("ERR_DISPOSED", kStage, "TrtUnet is disposed");
  // No lock here: the denoiser holds this runner's lease (the context's and the scratch's locks).
  if (b.sampleType != sampleType_ || b.hiddenType != hiddenType_ || b.outType != outType_ || b.timestepType != timestepType_) {
    throw NativeError("ERR_INVALID_BINDING", kStage, "the denoiser bound tensors of other types than the UNet engine takes");
  }
  if (b.hiddenSize != hiddenSize_ || b.latentChannels != 4) {
    throw NativeError("ERR_INVALID_BINDING", kStage,
                      "the denoiser bound embeddings of size " + std::to_string(b.hiddenSize) + " and " + std::to_string(b.latentChannels) +
                          " latent channels; the UNet takes " + std::to_string(hiddenSize_) + " and 4");
  }
  const bool split = b.splitCallRows > 0;
  const int callRows = split ? b.splitCallRows : b.unetBatch;
  if (b.timestepCount != timestepCount(callRows)) {
    throw NativeError("ERR_INVALID_BINDING", kStage,
                      "the denoiser bound " + std::to_string(b.timestepCount) + " timestep values, the UNet takes " +
                          std::to_string(timestepCount(callRows)));
  }
  const bool added = textEmbedsSize_ > 0;
  if (added && (b.textEmbeds == nullptr || b.timeIds == nullptr || b.textEmbedsSize != textEmbedsSize_ || b.timeIdsSize != timeIdsSize_ ||
                b.textEmbedsType != textEmbedsType_ || b.timeIdsType != timeIdsType_)) {
    throw NativeError("ERR_INVALID_BINDING", kStage,
                      "the denoiser bound text_embeds/time_ids of sizes " + std::to_string(b.textEmbedsSize) + "/" + std::to_string(b.timeIdsSize) +
                          " (or other types); the UNet takes " + std::to_string(textEmbedsSize_) + "/" + std::to_string(timeIdsSize_));
  }
  if (split && (b.condSample == nullptr || b.condEncoderHiddenStates == nullptr || b.condOut == nullptr ||
                (added && (b.condTextEmbeds == nullptr || b.condTimeIds == nullptr)))) {
    throw NativeError("ERR_INVALID_BINDING", kStage, "the denoiser asked for two UNet calls without the cond call's buffers");
  }
  if (split) {
    // The uncond call on this context, the cond call on its sibling: each keeps its own text length
    // and addresses, so the captured loop never re-binds (execution_context.h).
    BindCall(*ctx, callRows, b.uncondSequenceLength, {b.sample, b.encoderHiddenStates, b.out, b.textEmbeds, b.timeIds}, b, stream);
    BindCall(ctx->Sibling(kStage), callRows, b.sequenceLength, {b.condSample, b.condEncoderHiddenStates, b.condOut, b.condTextEmbeds, b.condTimeIds}, b,
             stream);
  } else {
    BindCall(*ctx, callRows, b.sequenceLength, {b.sample, b.encoderHiddenStates, b.out, b.textEmbeds, b.timeIds}, b, stream);
  }
  split_ = split;
  boundGeneration_ = ctx->bindGeneration;
}

void TrtUnetRunner::BindCall(ContextState& ctx, int rows, int sequenceLength, const CallAddresses& at, const UnetBindings& b,
                             cudaStream_t stream) {
  const int64_t batch = rows;
  std::vector<int64_t> timestep;
  if (layout_ == TimestepLayout::kSingle) timestep = {1};
  if (layout_ == TimestepLayout::kPerRow) timestep = {batch};
  const bool added = textEmbedsSize_ > 0;
  InputShapes shapes = {{names_.sample, {batch, 4, b.latentHeight, b.latentWidth}},
                        {names_.timestep, timestep},
                        {names_.hidden, {batch, sequenceLength, b.hiddenSize}}};
  if (added) {
    shapes.push_back({names_.textEmbeds, {batch, textEmbedsSize_}});
    shapes.push_back({names_.timeIds, {batch, timeIdsSize_}});
  }
  ctx.SetInputShapes(shapes, stream, kStage);
  const std::vector<int64_t> outShape = ctx.ShapeOf(names_.out, kStage);
  const std::vector<int64_t> expected = {batch, 4, b.latentHeight, b.latentWidth};
  if (outShape != expected) {
    throw NativeError("ERR_SHAPE", kStage, "UNet output " + names_.out + " has shape " + ShapeString(outShape) + ", expected " + ShapeString(expected));
  }
  ctx.Bind(names_.sample, at.sample, kStage);
  ctx.Bind(names_.timestep, b.timestep, kStage);
  ctx.Bind(names_.hidden, at.hidden, kStage);
  ctx.Bind(names_.out, at.out, kStage);
  std::set<std::string> bound = {names_.sample, names_.timestep, names_.hidden, names_.out};
  if (added) {
    ctx.Bind(names_.textEmbeds, at.textEmbeds, kStage);
    ctx.Bind(names_.timeIds, at.timeIds, kStage);
    bound.insert(names_.textEmbeds);
    bound.insert(names_.timeIds);
  }
  ctx.BindRemaining(bound, kStage);
}

void TrtUnetRunner::enqueue(cudaStream_t stream) {
  // No lock and no allocation here: this runs inside CUDA graph capture. With two calls the uncond
  // call comes first, then the cond call, both on the denoiser's stream (they share the scratch).
  context_->Enqueue(stream, kStage);
  if (split_) context_->sibling->Enqueue(stream, kStage);
}

Napi::Function UnetWrap::Define(Napi::Env env) {
  return DefineClass(env, "TrtUnet",
                     {
                         InstanceAccessor<&UnetWrap::GetDisposed>("disposed"),
                         InstanceAccessor<&UnetWrap::GetTypes>("types"),
                         InstanceMethod<&UnetWrap::Dispose>("dispose"),
                     });
}

Napi::Object UnetWrap::New(Napi::Env env, std::shared_ptr<TrtUnetRunner> runner) {
  return NewFromNative(env, "TrtUnet", kUnetTag, std::move(runner));
}

std::shared_ptr<TrtUnetRunner> UnetWrap::RunnerFromJs(const Napi::Value& value) {
  UnetWrap* wrap = UnwrapTagged<UnetWrap>(value, kUnetTag);
  if (wrap == nullptr || !wrap->runner_ || wrap->runner_->released()) return nullptr;
  return wrap->runner_;
}

UnetWrap::UnetWrap(const Napi::CallbackInfo& info)
    : Napi::ObjectWrap<UnetWrap>(info),
      runner_(TakeNativePayload<std::shared_ptr<TrtUnetRunner>>(
          info, "TrtUnet objects are created by context.createUnet(), not with new")) {}

Napi::Value UnetWrap::GetDisposed(const Napi::CallbackInfo& info) {
  return Napi::Boolean::New(info.Env(), !runner_ || runner_->released());
}

Napi::Value UnetWrap::GetTypes(const Napi::CallbackInfo& info) {
  Napi::Env env = info.Env();
  if (!runner_ || runner_->released()) throw ToJsError(env, NativeError("ERR_DISPOSED", "unet", "TrtUnet is disposed"));
  Napi::Object out = Napi::Object::New(env);
  out.Set("sample", Napi::String::New(env, dtypeName(runner_->sampleType())));
  out.Set("timestep", Napi::String::New(env, dtypeName(runner_->timestepType())));
  out.Set("hidden", Napi::String::New(env, dtypeName(runner_->hiddenType())));
  out.Set("out", Napi::String::New(env, dtypeName(runner_->outType())));
  return out;
}

Napi::Value UnetWrap::Dispose(const Napi::CallbackInfo& info) {
  // A Denoiser created from this UNet keeps its own runner reference; dispose that Denoiser first.
  if (runner_) runner_->Release();
  runner_.reset();
  return info.Env().Undefined();
}

void RegisterUnet(Napi::Env env, Napi::Object target) {
  RegisterClass(env, target, "TrtUnet", UnetWrap::Define(env));
}

}  // namespace sdtrt::trt
