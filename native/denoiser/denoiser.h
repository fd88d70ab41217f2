// The denoise loop on the device (CUDA builds only). One DenoiserCore per JS Denoiser: a stream,
// device buffers sized for the last request, the bound UNet runner and the captured CUDA graph.
//
// Run() (a libuv thread, never the JS thread):
//   1. (re)allocates and re-binds when shapes grow, program length, history depth or the text lengths
//      (one UNet call, or uncond and cond as two calls: unet_layout.h) change, which
//      also drops the graph (it holds fixed addresses and launch parameters);
//   2. uploads the coefficient table, x_0, every noise draw, the guidance scales and the text
//      embeddings once, up front;
//   3. launches the prologue, then per evaluation (with a prompt-editing row table, first the gather
//      of that evaluation's embeddings rows from the bank: embedding_rows.h) the UNet and ONE fused kernel (guidance, update,
//      next UNet input, next timestep). The evaluation index lives on the device, so one captured
//      graph of "UNet + fused kernel" serves every evaluation: it is captured right after the first
//      evaluation of a run was enqueued normally (TensorRT's warm-up), then replayed; if capture
//      fails the loop goes on with plain launches and the result says why;
//   4. never synchronises inside the loop: the host polls a mapped progress counter written by the
//      fused kernel, to report progress and to keep at most `queueDepth` evaluations queued, so a
//      cancellation lands within `queueDepth` evaluations (queueDepth 0 queues the whole loop at once:
//      the lowest host overhead, but cancellation then waits for the end);
//   5. copies x_M to the host, or (deviceOutput) into a new device buffer the caller owns, so the
//      latents can go on to the VAE without a round trip. See native/README.md.
#pragma once

#include <cuda_runtime_api.h>

#include <atomic>
#include <functional>
#include <memory>
#include <mutex>
#include <string>
#include <vector>

#include "../common/device_buffer.h"
#include "../common/dtype.h"
#include "kernels.h"
#include "program_table.h"
#include "unet_layout.h"
#include "unet_runner.h"

namespace sdtrt {

struct DenoiseRequest {
  const program::Program* program = nullptr;
  const float* latents = nullptr;  // x_0, n = batch·channels·h·w values (borrowed for the call)
  int batch = 1;
  int channels = 4;
  int height = 0;  // latent height
  int width = 0;   // latent width
  std::vector<float> guidance;  // one scale per image; empty = no classifier-free guidance
  const float* noise = nullptr;  // program->noiseDraws · n values (borrowed)
  size_t noiseCount = 0;
  // Text embeddings [unetBatch, sequenceLength, hidden] (uncond rows first with CFG), when the runner
  // needs them: host values (float32 or float16 bits, converted to the runner's dtype) or device
  // tensors whose rows are joined in order (each float32 or float16, converted on the device),
  // holding together exactly unetBatch·sequenceLength·hidden values. sequenceLength is 77 · chunks
  // (A1111's long prompts).
  int sequenceLength = 77;
  const void* hostEmbeddings = nullptr;
  DType hostEmbeddingsType = DType::kFloat32;
  size_t hostEmbeddingsCount = 0;
  struct DevicePart {
    std::shared_ptr<DeviceBuffer> buffer;
    DType type = DType::kFloat16;
    size_t count = 0;
  };
  std::vector<DevicePart> deviceEmbeddings;
  // Prompt editing (embedding_rows.h): when not empty, deviceEmbeddings is a bank of
  // embeddingRowCount rows and entry j·unetBatch + i (checked) is the bank row UNet row i reads at
  // evaluation j; a device kernel gathers them before each UNet call.
  std::vector<int32_t> embeddingRows;
  int embeddingRowCount = 0;
  // A1111's prompt and negative prompt of different lengths (unet_layout.h), with guidance: when
  // splitCallRows > 0 (batch, or 2 · batch for engines that take only the guidance batch) the uncond
  // rows run as their own UNet call at uncondSequenceLength tokens and the cond rows as a second
  // call at sequenceLength; the embeddings are then B rows of uncondSequenceLength followed by B
  // rows of sequenceLength. With a row table the bank is likewise two blocks: its first
  // uncondBankRows rows (the uncond texts) at uncondSequenceLength, the rest at sequenceLength, and
  // each call's rows are gathered into its own block. SDXL's textEmbeds/timeIds stay [uncond; cond]
  // here; each half is uploaded to its call's block.
  int splitCallRows = 0;
  int uncondSequenceLength = 77;
  int uncondBankRows = 0;
  // SDXL's added conditioning, when the runner takes it (UnetRunner::textEmbedsSize() > 0): float32
  // host values (borrowed), text_embeds [unetBatch, textEmbedsSize] and time_ids [unetBatch,
  // timeIdsSize], uncond rows first with guidance; converted to the runner's types on upload.
  const float* textEmbeds = nullptr;
  const float* timeIds = nullptr;
  bool useGraphs = true;
  int queueDepth = 3;  // 0 = no limit
  // x_M into a new device buffer (DenoiseResult::deviceLatents) instead of host memory.
  bool deviceOutput = false;
};

enum class GraphUse { kDisabled, kCaptured, kReplayed, kFallback };
const char* graphUseName(GraphUse use);

struct DenoiseResult {
  std::vector<float> latents;  // x_M (host output)
  // x_M (device output): float32 [batch, channels, h, w], a buffer of its own that no later run
  // touches (the ring slot it was copied from is reused by the next run).
  std::shared_ptr<DeviceBuffer> deviceLatents;
  GraphUse graph = GraphUse::kDisabled;
  std::string graphFallbackReason;
  int evaluations = 0;
  float gpuMs = 0;    // CUDA events: prologue start → last fused kernel end
  double hostMs = 0;  // wall time of Run()
};

class DenoiserCore {
 public:
  // Throws NativeError ERR_NO_GPU (stage "denoiser-create") when no usable GPU is there.
  DenoiserCore(int device, std::shared_ptr<UnetRunner> runner);
  ~DenoiserCore();
  DenoiserCore(const DenoiserCore&) = delete;
  DenoiserCore& operator=(const DenoiserCore&) = delete;

  // `progress(completed)` is called from this thread whenever evaluations complete (each count once).
  DenoiseResult Run(const DenoiseRequest& request, const std::function<void(int)>& progress);

  void RequestCancel() { cancel_.store(true); }
  // True while Run() is in progress (for cancelAll()'s count).
  bool running() const { return running_.load(); }
  void ResetCancel() { cancel_.store(false); }
  // Frees every CUDA object. Idempotent; cancels and waits for a Run() in progress.
  void Release();

  UnetRunner& runner() const { return *runner_; }
  int device() const { return device_; }

 private:
  struct Layout;
  void Prepare(const DenoiseRequest& request, bool bindingsLost);
  void Upload(const DenoiseRequest& request);
  // Prompt editing: the gather kernel(s) of the evaluation in LoopControl::step (no-op without a row table).
  cudaError_t GatherEmbeddings();
  // Prompt editing with two UNet calls: where the bank's cond block starts (elements; 0 otherwise).
  size_t CondBankBlock() const;
  // SDXL's added inputs with two UNet calls: where the cond call's block of callRows rows of
  // `width` values starts (bytes, 256-byte aligned).
  static size_t AddedCondBlock(int width, DType type, int callRows);
  void EnqueueEval(bool useGraph);
  bool Capture(std::string* reason);
  void DestroyGraph();
  static bool SameBuffers(const Layout& a, const Layout& b);
  void StashGraph();
  void RestoreGraph(const Layout& layout);
  void ClearGraphCache();
  int Completed() const;

  int device_;
  std::shared_ptr<UnetRunner> runner_;
  std::mutex runMutex_;
  std::atomic<bool> cancel_{false};
  std::atomic<bool> running_{false};
  bool released_ = false;

  cudaStream_t stream_ = nullptr;
  cudaEvent_t start_ = nullptr;
  cudaEvent_t end_ = nullptr;
  int* progressHost_ = nullptr;  // mapped pinned host memory

  DeviceBuffer control_;  // LoopControl step + blocksDone
  DeviceBuffer table_, xRing_, mRing_, noise_, guidance_, sample_, out_, timestep_, hidden_;
  DeviceBuffer bank_, rowTable_;  // prompt editing: every conditioning's rows, and which ones each evaluation reads
  DeviceBuffer textEmbeds_, timeIds_;  // SDXL's added conditioning (empty for other UNets)
  std::vector<double> hostTable_;
  std::vector<uint8_t> hostStaging_;

  loop::LoopParams params_;
  kernels::LoopControl loopControl_;
  std::unique_ptr<Layout> layout_;  // what the runner is bound to
  loop::UnetLayout unetLayout_;     // where layout_'s UNet rows live in sample_, out_ and hidden_
  cudaGraphExec_t graphExec_ = nullptr;
  std::string captureFailure_;  // why capture failed for the current layout ("" = not tried / worked)
  // Graphs (or capture failures) of recently used other layouts, oldest first: a run with a layout
  // in here replays instead of capturing again.
  struct CachedGraph;
  static constexpr size_t kGraphCacheSize = 4;
  std::vector<CachedGraph> graphCache_;
  bool warmupNeeded_ = false;
};

}  // namespace sdtrt
