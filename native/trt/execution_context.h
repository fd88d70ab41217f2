// An execution context of one engine, on the shared scratch memory, with its own CUDA stream.
//
//   context.encodeText({ ids: Int32Array, rows, input, output, outputRows: Int32Array })
//       → Promise<{ embeddings: DeviceTensor, gpuMs }>  (SdClipEncodeWorker) text embeddings
//         [outputRows.length, 77, hidden] that stay on the device: row r of the result is computed
//         row outputRows[r] (padding to a profile's batch and repeated prompts cost no extra rows)
//   context.decodeImage({ latents: Float32Array | DeviceTensor, batch, height, width, input, output, scalingFactor? })
//       → Promise<{ pixels: Buffer, width, height, gpuMs }>  (SdVaeDecodeWorker) uint8 RGB HWC per
//         image, via the fused VAE kernel; rejects with ERR_VAE_NAN when the decoder produced NaN/Inf.
//         Device latents (float32/float16 [batch, 4, height, width] on the engine's device, e.g.
//         Denoiser.run's with output "device") never visit the host; with scalingFactor the latents
//         are divided by it on the device (a float32 division, like diffusers and the TS path)
//   context.encodeImage({ pixels: Float32Array, batch, height, width, input, output })
//       → Promise<{ data: Float32Array, shape: number[], gpuMs }>  (SdVaeEncodeWorker)
//
// gpuMs: GPU time of the call on the context's stream from CUDA events (uploads, the engine, the
// kernels and the download).
//   context.createUnet({ sample, timestep, hidden, out, timestepLayout }) → TrtUnet for the Denoiser
//   context.disposed / context.dispose()
//
// Borrowed inputs (ids, latents, pixels, a latents DeviceTensor) are pinned on the worker until it settles; every output
// is a fresh allocation (a new DeviceTensor or a new Buffer), never a view of the context's I/O
// buffers, which the next call overwrites (design rule 3).
//
// The optimization profile is chosen per call: the first profile whose [min, max] holds every
// input shape (a static build has one profile per batch size).
#pragma once

#include <NvInferRuntime.h>
#include <cuda_runtime_api.h>
#include <napi.h>

#include <atomic>
#include <cstdint>
#include <map>
#include <memory>
#include <mutex>
#include <set>
#include <string>
#include <utility>
#include <vector>

#include "../common/addon_data.h"
#include "../common/device_buffer.h"
#include "engine.h"

namespace sdtrt::trt {

using InputShapes = std::vector<std::pair<std::string, std::vector<int64_t>>>;

struct ContextState {
  std::shared_ptr<LoadedEngine> engine;
  std::shared_ptr<ScratchState> scratch;
  TrtPtr<nvinfer1::IExecutionContext> context;
  cudaStream_t stream = nullptr;
  std::mutex mutex;  // one call at a time on this context
  std::map<std::string, DeviceBuffer> buffers;
  int profile = 0;
  // Bumped by every Bind() (under `mutex`): a UNet runner compares it with the value after its own
  // bind() to see whether anyone moved the context's tensor addresses since (trt_unet.h).
  uint64_t bindGeneration = 0;
  // The denoiser bound to this context's UNet runner(s), or null (one owner: trt_unet.h).
  std::atomic<const void*> unetOwner{nullptr};
  // A second context of the same engine on the same scratch, made on first use by a UNet runner
  // that evaluates uncond and cond as two calls of different text lengths (trt_unet.h): each context
  // keeps its own input shapes and addresses, so neither call re-binds inside the captured loop. It
  // is used only under this context's `mutex` (and the scratch's) and released with it.
  std::shared_ptr<ContextState> sibling;

  ContextState(std::shared_ptr<LoadedEngine> engine, std::shared_ptr<ScratchState> scratch);
  ~ContextState();
  // Destroys the context and the stream (idempotent). Callers hold `mutex` or own the last reference.
  void Release() noexcept;

  void RequireAlive(const char* stage) const;
  nvinfer1::DataType TypeOf(const std::string& tensor, const char* stage) const;
  // Picks the profile covering `shapes` (switching on `stream` when it changes) and sets them.
  void SetInputShapes(const InputShapes& shapes, cudaStream_t stream, const char* stage);
  std::vector<int64_t> ShapeOf(const std::string& tensor, const char* stage) const;
  // A grow-only device buffer owned by the context, keyed by name.
  void* Buffer(const std::string& key, size_t bytes, const char* stage);
  void Bind(const std::string& tensor, void* address, const char* stage);
  // Binds every I/O tensor not in `bound` to an owned buffer sized for the current shapes.
  void BindRemaining(const std::set<std::string>& bound, const char* stage);
  void Enqueue(cudaStream_t stream, const char* stage);
  // `sibling`, created when missing. Callers hold `mutex`.
  ContextState& Sibling(const char* stage);
};

class ContextWrap : public Napi::ObjectWrap<ContextWrap> {
 public:
  static Napi::Function Define(Napi::Env env);
  static Napi::Object New(Napi::Env env, std::shared_ptr<ContextState> state);
  explicit ContextWrap(const Napi::CallbackInfo& info);
  ~ContextWrap() override;

 private:
  std::shared_ptr<ContextState> Require(Napi::Env env, const char* stage) const;
  Napi::Value EncodeText(const Napi::CallbackInfo& info);
  Napi::Value DecodeImage(const Napi::CallbackInfo& info);
  Napi::Value EncodeImage(const Napi::CallbackInfo& info);
  Napi::Value CreateUnet(const Napi::CallbackInfo& info);
  Napi::Value GetDisposed(const Napi::CallbackInfo& info);
  Napi::Value Dispose(const Napi::CallbackInfo& info);
  std::shared_ptr<ContextState> state_;
  std::shared_ptr<CleanupRegistry> cleanup_;
};

void RegisterExecutionContext(Napi::Env env, Napi::Object target);

}  // namespace sdtrt::trt
