// The TensorRT UNet as the denoiser's UnetRunner (denoiser/unet_runner.h).
//
//   context.createUnet({ sample, timestep, hidden, out, timestepLayout, hiddenSize,
//                        textEmbeds?, timeIds? }) → TrtUnet   (SDXL: the added-conditioning inputs)
//   new Denoiser({ unet: trtUnet })        the denoiser finds the runner with UnetRunnerFromJs()
//   trtUnet.disposed / trtUnet.dispose()
//
// bind() sets the input shapes (choosing the optimization profile that holds the UNet batch and
// latent size, on the denoiser's stream) and binds the denoiser's fixed device buffers by tensor
// name; enqueue() is a bare enqueueV3() on the denoiser's stream: no allocation, no host
// synchronisation, no address change, so the denoiser can capture it into a CUDA graph after one
// warm run. Every other output of the engine is bound once, in bind(), to a context buffer.
//
// Uncond and cond of different text lengths (A1111 without pad_cond_uncond; UnetBindings::
// splitCallRows): the uncond call runs on this context and the cond call on a second context of the
// same engine and scratch (ContextState::sibling), each with its own shapes fixed in bind(), so one
// captured graph holds both enqueues. The lease's locks (this context's and the scratch's) cover
// the sibling too: it is private to this runner, so it needs no lock of its own. The two contexts
// may select the same optimization profile: TensorRT asks for separate profiles only for contexts
// "in concurrent use" (NvInferRuntime.h, IExecutionContext), and these run one after the other on
// one stream, as the contexts sharing the scratch memory must.
#pragma once

#include <napi.h>

#include <atomic>
#include <memory>
#include <string>

#include "../denoiser/unet_runner.h"
#include "execution_context.h"

namespace sdtrt::trt {

struct UnetTensorNames {
  std::string sample;
  std::string timestep;
  std::string hidden;
  std::string out;
  // SDXL's added conditioning inputs (both or neither; empty for other UNets).
  std::string textEmbeds;
  std::string timeIds;
};

// How the graph takes its timestep (lib/model/graph-io.ts TimestepLayout).
enum class TimestepLayout { kScalar, kSingle, kPerRow };

class TrtUnetRunner : public UnetRunner {
 public:
  // Checks that the engine has the named tensors with usable types; throws NativeError otherwise.
  TrtUnetRunner(std::shared_ptr<ContextState> context, UnetTensorNames names, TimestepLayout layout, int hiddenSize);

  DType sampleType() const override { return sampleType_; }
  DType timestepType() const override { return timestepType_; }
  int timestepCount(int callRows) const override { return layout_ == TimestepLayout::kPerRow ? callRows : 1; }
  DType hiddenType() const override { return hiddenType_; }
  DType outType() const override { return outType_; }
  int hiddenSize() const override { return hiddenSize_; }
  int textEmbedsSize() const override { return textEmbedsSize_; }
  int timeIdsSize() const override { return timeIdsSize_; }
  DType textEmbedsType() const override { return textEmbedsType_; }
  DType timeIdsType() const override { return timeIdsType_; }
  // Called by the owning denoiser while it holds the lease from acquire() (the context's locks).
  void bind(const UnetBindings& bindings, cudaStream_t stream) override;
  void enqueue(cudaStream_t stream) override;
  // One denoiser per context (ContextState::unetOwner), whichever runner of it the denoiser took.
  void claim(const void* owner, const char* stage) override;
  void disown(const void* owner) override;
  // Locks the scratch and then the context (the order every context worker uses) for a whole run.
  std::unique_ptr<RunLease> acquire(const void* owner, const char* stage) override;

  // TrtUnet.dispose(): later bind() calls fail with ERR_DISPOSED. A run in progress keeps going
  // (the context is freed with the runner, once the Denoiser holding it lets go).
  void Release() { released_.store(true); }
  bool released() const { return released_.load(); }

 private:
  class Lease;
  // One call's tensors (the timestep is shared by both calls).
  struct CallAddresses {
    void* sample;
    void* hidden;
    void* out;
    void* textEmbeds;  // SDXL (null otherwise)
    void* timeIds;
  };
  // Sets one call's input shapes (the profile holding them) on `ctx` and binds its addresses.
  void BindCall(ContextState& ctx, int rows, int sequenceLength, const CallAddresses& at, const UnetBindings& b, cudaStream_t stream);
  std::shared_ptr<ContextState> context_;
  std::atomic<bool> released_{false};
  // ContextState::bindGeneration right after this runner's last bind(); 0 = never bound.
  uint64_t boundGeneration_ = 0;
  // The last bind() asked for two calls: enqueue() runs the context (uncond) and its sibling (cond).
  bool split_ = false;
  UnetTensorNames names_;
  TimestepLayout layout_;
  int hiddenSize_;
  DType sampleType_, timestepType_, hiddenType_, outType_;
  // SDXL: the engine's static last axes of text_embeds and time_ids (0 without them).
  int textEmbedsSize_ = 0, timeIdsSize_ = 0;
  DType textEmbedsType_ = DType::kFloat32, timeIdsType_ = DType::kFloat32;
};

class UnetWrap : public Napi::ObjectWrap<UnetWrap> {
 public:
  static Napi::Function Define(Napi::Env env);
  static Napi::Object New(Napi::Env env, std::shared_ptr<TrtUnetRunner> runner);
  // The runner behind `value`, or nullptr when it is not a live TrtUnet.
  static std::shared_ptr<TrtUnetRunner> RunnerFromJs(const Napi::Value& value);
  explicit UnetWrap(const Napi::CallbackInfo& info);

 private:
  Napi::Value GetDisposed(const Napi::CallbackInfo& info);
  Napi::Value GetTypes(const Napi::CallbackInfo& info);
  Napi::Value Dispose(const Napi::CallbackInfo& info);
  std::shared_ptr<TrtUnetRunner> runner_;
};

void RegisterUnet(Napi::Env env, Napi::Object target);

}  // namespace sdtrt::trt
