// The seam between the denoiser (CUDA loop, native/denoiser) and whatever computes the UNet:
// a TensorRT engine (native/trt) or the built-in analytic stand-in used by the GPU self-test.
//
// Contract: bind() is called with fixed device addresses before the loop is captured into a
// CUDA graph; enqueue() must only launch work on `stream` (no host synchronisation, no
// allocation, no change of addresses) so that it can be captured and replayed.
#pragma once

#include <cuda_runtime_api.h>

#include <cstdint>
#include <memory>

// DType and dtypeSize() live in common/dtype.h (no CUDA headers there, so host-only builds share them).
#include "../common/dtype.h"

namespace sdtrt {

struct UnetBindings {
  int unetBatch = 0;       // images × 2 with classifier-free guidance, else images
  // True when the batch is [uncond rows; cond rows] (classifier-free guidance): unetBatch = 2 × images.
  // Runners that compute a real UNet can ignore it; the analytic stand-in uses it to give the uncond
  // half a different output.
  bool classifierFreeGuidance = false;
  int latentHeight = 0;
  int latentWidth = 0;
  int latentChannels = 4;
  int sequenceLength = 77;
  int hiddenSize = 0;
  void* sample = nullptr;  // [unetBatch, 4, h, w] of sampleType
  DType sampleType = DType::kFloat16;
  void* timestep = nullptr;  // timestepCount elements of timestepType (1 = scalar / [1])
  DType timestepType = DType::kFloat32;
  int timestepCount = 1;
  void* encoderHiddenStates = nullptr;  // [unetBatch, 77, hidden] of hiddenType
  DType hiddenType = DType::kFloat16;
  void* out = nullptr;  // [unetBatch, 4, h, w] of outType
  DType outType = DType::kFloat16;
  // SDXL's added conditioning, for a runner whose textEmbedsSize() > 0 (null / 0 otherwise): the
  // pooled text embedding [unetBatch, textEmbedsSize] and the time ids [unetBatch, timeIdsSize],
  // uncond rows first with classifier-free guidance. Uploaded once per run, like the embeddings.
  void* textEmbeds = nullptr;
  DType textEmbedsType = DType::kFloat16;
  int textEmbedsSize = 0;
  void* timeIds = nullptr;
  DType timeIdsType = DType::kFloat16;
  int timeIdsSize = 0;
  // A1111's prompt and negative prompt of different lengths (unet_layout.h), with guidance only:
  // when splitCallRows > 0 each evaluation is two calls of splitCallRows rows (images, or 2 × images
  // for engines that take only the guidance batch): first the uncond call on sample /
  // encoderHiddenStates (uncondSequenceLength tokens) / out, then the cond call on condSample /
  // condEncoderHiddenStates (sequenceLength tokens) / condOut (and SDXL's condTextEmbeds /
  // condTimeIds, splitCallRows rows each). Both read `timestep` (timestepCount values for
  // splitCallRows rows). Every address is 256-byte aligned.
  int splitCallRows = 0;
  int uncondSequenceLength = 0;
  void* condSample = nullptr;
  void* condEncoderHiddenStates = nullptr;
  void* condOut = nullptr;
  void* condTextEmbeds = nullptr;
  void* condTimeIds = nullptr;
};

class UnetRunner {
 public:
  virtual ~UnetRunner() = default;
  // What the model wants for each tensor, so the denoiser can allocate and cast to match.
  virtual DType sampleType() const = 0;
  virtual DType timestepType() const = 0;
  // 1 for a scalar or [1] timestep; the call's rows for a [B] timestep.
  virtual int timestepCount(int callRows) const = 0;
  virtual DType hiddenType() const = 0;
  virtual DType outType() const = 0;
  virtual int hiddenSize() const = 0;
  // SDXL's added conditioning (UnetBindings::textEmbeds/timeIds): 0 when the UNet takes none.
  virtual int textEmbedsSize() const { return 0; }
  virtual int timeIdsSize() const { return 0; }
  virtual DType textEmbedsType() const { return DType::kFloat32; }
  virtual DType timeIdsType() const { return DType::kFloat32; }
  // Fixes the shapes and device addresses for the following enqueue() calls. May throw NativeError.
  virtual void bind(const UnetBindings& bindings, cudaStream_t stream) = 0;
  // Launches one UNet evaluation (one call, or the uncond and the cond call) on `stream`. Must be
  // CUDA-graph capturable.
  virtual void enqueue(cudaStream_t stream) = 0;

  // Held by the denoiser for a whole run (bind, every enqueue, until its stream is synchronised):
  // whatever the runner shares (a TensorRT execution context, the scratch memory of its engines)
  // is not used by anyone else meanwhile. Destroyed after the stream is synchronised.
  class RunLease {
   public:
    virtual ~RunLease() = default;
    // True when someone else moved the runner's bindings since its last bind() (the denoiser then
    // binds again and drops its graph, which holds the old addresses).
    virtual bool bindingsLost() const { return false; }
  };
  // A runner whose bindings live in shared state (a TensorRT context: one set of tensor addresses)
  // has one owner at a time: claim() makes `owner` (a denoiser) it, and throws NativeError
  // ERR_RUNNER_OWNED (`stage`) while another denoiser holds it — a second denoiser's bind() would
  // move the addresses under the first one's captured graph. disown() gives it up (the denoiser's
  // Release()). acquire() is called by the owner at the start of every run; it throws ERR_DISPOSED
  // once the runner is released. The defaults: nothing shared, any number of owners, no lease.
  virtual void claim(const void* owner, const char* stage) {}
  virtual void disown(const void* owner) {}
  virtual std::unique_ptr<RunLease> acquire(const void* owner, const char* stage) { return nullptr; }
};

}  // namespace sdtrt
