#include "denoiser.h"

#include <algorithm>
#include <chrono>
#include <cstring>
#include <thread>
#include <tuple>

#include "../common/cuda_check.h"
#include "../common/half.h"
#include "program_math.h"

namespace sdtrt {

namespace {

constexpr const char* kStage = "denoise";

std::string describe(cudaError_t err) {
  const char* text = cudaGetErrorString(err);
  const char* name = cudaGetErrorName(err);
  return std::string(text ? text : "unknown CUDA error") + " (" + (name ? name : "?") + ")";
}

void pause() { std::this_thread::sleep_for(std::chrono::microseconds(20)); }

}  // namespace

const char* graphUseName(GraphUse use) {
  switch (use) {
    case GraphUse::kDisabled: return "disabled";
    case GraphUse::kCaptured: return "captured";
    case GraphUse::kReplayed: return "replayed";
    case GraphUse::kFallback: return "fallback";
  }
  return "disabled";
}

// Everything the bound runner and a captured graph depend on. Any change: re-bind, drop the graph.
struct DenoiserCore::Layout {
  int batch, channels, height, width, unetBatch, depth, evalCount, hiddenSize, sequenceLength;
  int splitCallRows, uncondSequenceLength;  // two UNet calls (unet_layout.h); 0 and sequenceLength for one
  int uncondBankRows;                       // prompt editing with two calls: the bank's uncond block (0 otherwise)
  bool cfg;
  const void *table, *xRing, *mRing, *noise, *guidance, *sample, *out, *timestep, *hidden;
  const void *textEmbeds, *timeIds;  // SDXL's added conditioning (null for other UNets)
  const void *bank, *rowTable;       // prompt editing (null without a row table)
  // A new text length (of either call) changes the UNet's input shapes: the captured graph must not be replayed.
  auto key() const {
    return std::tie(batch, channels, height, width, unetBatch, depth, evalCount, hiddenSize, sequenceLength, splitCallRows,
                    uncondSequenceLength, uncondBankRows, cfg, table, xRing,
                    mRing, noise, guidance, sample, out, timestep, hidden, textEmbeds, timeIds, bank, rowTable);
  }
  bool operator==(const Layout& o) const { return key() == o.key(); }
};

struct DenoiserCore::CachedGraph {
  Layout layout;
  cudaGraphExec_t exec = nullptr;  // null when capture failed for this layout
  std::string failure;
};

DenoiserCore::DenoiserCore(int device, std::shared_ptr<UnetRunner> runner) : device_(device), runner_(std::move(runner)) {
  constexpr const char* stage = "denoiser-create";
  int count = 0;
  const cudaError_t countStatus = cudaGetDeviceCount(&count);
  if (countStatus != cudaSuccess) {
    (void)cudaGetLastError();
    const char* name = cudaGetErrorName(countStatus);
    throw NativeError("ERR_NO_GPU", stage,
                      "no usable CUDA GPU: " + describe(countStatus) +
                          ". Check that the NVIDIA driver is installed (`nvidia-smi`) and run `sd-trt doctor`",
                      name ? name : "");
  }
  if (device < 0 || device >= count) {
    throw NativeError("ERR_NO_GPU", stage,
                      "CUDA device " + std::to_string(device) + " does not exist (" + std::to_string(count) +
                          " device(s) found)",
                      "cudaErrorInvalidDevice");
  }
  // One owner per runner (unet_runner.h): a second Denoiser on the same TrtUnet fails here, at
  // creation, rather than corrupting the first one's runs.
  runner_->claim(this, stage);
  try {
    SDTRT_CUDA_CHECK(stage, cudaSetDevice(device_));
    SDTRT_CUDA_CHECK(stage, cudaStreamCreateWithFlags(&stream_, cudaStreamNonBlocking));
    SDTRT_CUDA_CHECK(stage, cudaEventCreate(&start_));
    SDTRT_CUDA_CHECK(stage, cudaEventCreate(&end_));
    void* mapped = nullptr;
    SDTRT_CUDA_CHECK(stage, cudaHostAlloc(&mapped, sizeof(int), cudaHostAllocMapped));
    progressHost_ = static_cast<int*>(mapped);
    *progressHost_ = 0;
    void* progressDevice = nullptr;
    SDTRT_CUDA_CHECK(stage, cudaHostGetDevicePointer(&progressDevice, mapped, 0));
    // [0] step, [1] blocksDone, [2] firstNonFinite, [3] padding, then the 8-byte aligned nonFinite count.
    control_.Allocate(4 * sizeof(int) + sizeof(unsigned long long), stage);
    SDTRT_CUDA_CHECK(stage, cudaMemset(control_.data(), 0, control_.bytes()));
    loopControl_.step = control_.as<int>();
    loopControl_.blocksDone = reinterpret_cast<unsigned int*>(control_.as<int>() + 1);
    loopControl_.progressHost = static_cast<int*>(progressDevice);
    loopControl_.firstNonFinite = control_.as<int>() + 2;
    loopControl_.nonFinite = reinterpret_cast<unsigned long long*>(control_.as<uint8_t>() + 4 * sizeof(int));
  } catch (...) {
    Release();
    throw;
  }
}

DenoiserCore::~DenoiserCore() { Release(); }

void DenoiserCore::DestroyGraph() {
  if (graphExec_ != nullptr) (void)cudaGraphExecDestroy(graphExec_);
  graphExec_ = nullptr;
}

void DenoiserCore::Release() {
  cancel_.store(true);
  std::lock_guard<std::mutex> lock(runMutex_);
  if (released_) return;
  released_ = true;
  // Errors are ignored from here on: at process exit the runtime may already be unloading.
  (void)cudaSetDevice(device_);
  if (stream_ != nullptr) (void)cudaStreamSynchronize(stream_);
  DestroyGraph();
  ClearGraphCache();
  for (DeviceBuffer* b : {&table_, &xRing_, &mRing_, &noise_, &guidance_, &sample_, &out_, &timestep_, &hidden_, &textEmbeds_, &timeIds_, &bank_, &rowTable_, &control_}) {
    b->Free();
  }
  if (progressHost_ != nullptr) (void)cudaFreeHost(progressHost_);
  progressHost_ = nullptr;
  if (start_ != nullptr) (void)cudaEventDestroy(start_);
  if (end_ != nullptr) (void)cudaEventDestroy(end_);
  if (stream_ != nullptr) (void)cudaStreamDestroy(stream_);
  start_ = end_ = nullptr;
  stream_ = nullptr;
  layout_.reset();
  if (runner_) runner_->disown(this);
  runner_.reset();
  (void)cudaGetLastError();
}

int DenoiserCore::Completed() const { return *static_cast<volatile int*>(progressHost_); }

void DenoiserCore::Prepare(const DenoiseRequest& r, bool bindingsLost) {
  const program::Program& program = *r.program;
  UnetRunner& runner = *runner_;
  const bool cfg = !r.guidance.empty();
  const int imageElems = r.channels * r.height * r.width;
  const size_t n = static_cast<size_t>(r.batch) * static_cast<size_t>(imageElems);
  const int unetBatch = cfg ? 2 * r.batch : r.batch;
  const int K = program.historyDepth;
  const int hiddenSize = runner.hiddenSize();
  const bool split = cfg && r.splitCallRows > 0;
  const int uncondLength = split ? r.uncondSequenceLength : r.sequenceLength;
  const loop::UnetLayout u = loop::unetLayout(n, r.batch, cfg, split ? r.splitCallRows : 0, uncondLength, r.sequenceLength, hiddenSize,
                                              dtypeSize(runner.sampleType()), dtypeSize(runner.outType()), dtypeSize(runner.hiddenType()));
  // Both calls of a split evaluation read the one timestep buffer.
  const int timestepCount = runner.timestepCount(u.callRows);

  table_.Reserve(static_cast<size_t>(program::rowStride(K)) * program.evalCount * sizeof(double), kStage);
  xRing_.Reserve(static_cast<size_t>(K) * n * sizeof(float), kStage);
  mRing_.Reserve(static_cast<size_t>(K) * n * sizeof(float), kStage);
  noise_.Reserve(static_cast<size_t>(program.noiseDraws) * n * sizeof(float), kStage);
  guidance_.Reserve(static_cast<size_t>(r.batch) * sizeof(float), kStage);
  sample_.Reserve(u.sampleElems * dtypeSize(runner.sampleType()), kStage);
  out_.Reserve(u.outElems * dtypeSize(runner.outType()), kStage);
  timestep_.Reserve(static_cast<size_t>(timestepCount) * dtypeSize(runner.timestepType()), kStage);
  if (hiddenSize > 0) hidden_.Reserve(u.hiddenElems * dtypeSize(runner.hiddenType()), kStage);
  const bool edited = hiddenSize > 0 && !r.embeddingRows.empty();
  const int uncondBankRows = edited && split ? r.uncondBankRows : 0;
  if (edited) {
    // With two calls: the uncond texts' block, then the cond texts' at an aligned offset (CondBankBlock).
    const size_t hs = dtypeSize(runner.hiddenType());
    const size_t uncondBlock = static_cast<size_t>(uncondBankRows) * uncondLength * hiddenSize;
    const size_t condStart = uncondBankRows > 0 ? loop::alignedElements(uncondBlock, hs) : 0;
    bank_.Reserve((condStart + static_cast<size_t>(r.embeddingRowCount - uncondBankRows) * r.sequenceLength * hiddenSize) * hs, kStage);
    rowTable_.Reserve(r.embeddingRows.size() * sizeof(int32_t), kStage);
  }
  const bool added = runner.textEmbedsSize() > 0;
  if (split && edited && (uncondBankRows < 1 || uncondBankRows >= r.embeddingRowCount)) {
    // The JS layer refuses this first: the bank needs both blocks.
    throw NativeError("ERR_INVALID_ARG", kStage, "two UNet calls with prompt editing need the bank's uncond and cond blocks");
  }
  if (added) {
    // One call: [unetBatch] rows; two calls: each call's callRows rows, the cond call's block aligned.
    const size_t te = static_cast<size_t>(runner.textEmbedsSize()), ti = static_cast<size_t>(runner.timeIdsSize());
    const size_t teSize = dtypeSize(runner.textEmbedsType()), tiSize = dtypeSize(runner.timeIdsType());
    const size_t rows = static_cast<size_t>(u.callRows);
    textEmbeds_.Reserve((split ? loop::alignedElements(rows * te, teSize) + rows * te : static_cast<size_t>(unetBatch) * te) * teSize, kStage);
    timeIds_.Reserve((split ? loop::alignedElements(rows * ti, tiSize) + rows * ti : static_cast<size_t>(unetBatch) * ti) * tiSize, kStage);
  }

  Layout layout{r.batch, r.channels, r.height, r.width, unetBatch, K, program.evalCount, hiddenSize, r.sequenceLength,
                split ? u.callRows : 0, uncondLength, uncondBankRows, cfg,
                table_.data(), xRing_.data(), mRing_.data(), noise_.data(), guidance_.data(), sample_.data(),
                out_.data(), timestep_.data(), hiddenSize > 0 ? hidden_.data() : nullptr,
                added ? textEmbeds_.data() : nullptr, added ? timeIds_.data() : nullptr,
                edited ? bank_.data() : nullptr, edited ? rowTable_.data() : nullptr};
  if (layout_ && *layout_ == layout && !bindingsLost) return;

  // A layout change keeps the current layout's graph in a small cache (alternating batch sizes
  // must not re-capture every run). Cached graphs hold the buffers' addresses, so they are only
  // kept while no buffer moved, and none survives bindings moved by someone else.
  if (layout_ && !bindingsLost && SameBuffers(*layout_, layout)) {
    StashGraph();
  } else {
    DestroyGraph();
    ClearGraphCache();
  }
  captureFailure_.clear();
  layout_.reset();

  UnetBindings b;
  b.unetBatch = unetBatch;
  b.classifierFreeGuidance = cfg;
  b.latentHeight = r.height;
  b.latentWidth = r.width;
  b.latentChannels = r.channels;
  b.sequenceLength = r.sequenceLength;
  b.hiddenSize = hiddenSize;
  b.sample = sample_.data();
  b.sampleType = runner.sampleType();
  b.timestep = timestep_.data();
  b.timestepType = runner.timestepType();
  b.timestepCount = timestepCount;
  b.encoderHiddenStates = hiddenSize > 0 ? hidden_.data() : nullptr;
  b.hiddenType = runner.hiddenType();
  b.out = out_.data();
  b.outType = runner.outType();
  if (split) {
    b.splitCallRows = u.callRows;
    b.uncondSequenceLength = uncondLength;
    b.condSample = sample_.as<uint8_t>() + u.condCallSample * dtypeSize(runner.sampleType());
    b.condOut = out_.as<uint8_t>() + u.condCallOut * dtypeSize(runner.outType());
    b.condEncoderHiddenStates = hiddenSize > 0 ? hidden_.as<uint8_t>() + u.condCallHidden * dtypeSize(runner.hiddenType()) : nullptr;
  }
  if (added && split) {
    b.condTextEmbeds = textEmbeds_.as<uint8_t>() + AddedCondBlock(runner.textEmbedsSize(), runner.textEmbedsType(), u.callRows);
    b.condTimeIds = timeIds_.as<uint8_t>() + AddedCondBlock(runner.timeIdsSize(), runner.timeIdsType(), u.callRows);
  }
  if (added) {
    b.textEmbeds = textEmbeds_.data();
    b.textEmbedsType = runner.textEmbedsType();
    b.textEmbedsSize = runner.textEmbedsSize();
    b.timeIds = timeIds_.data();
    b.timeIdsType = runner.timeIdsType();
    b.timeIdsSize = runner.timeIdsSize();
  }
  runner.bind(b, stream_);

  loop::LoopParams& p = params_;
  p.table = table_.as<double>();
  p.evalCount = program.evalCount;
  p.depth = K;
  p.xRing = xRing_.as<float>();
  p.mRing = mRing_.as<float>();
  p.n = n;
  p.imageElems = imageElems;
  p.batch = r.batch;
  p.cfg = cfg;
  p.sampleCondOffset = u.sampleCondOffset;
  p.outCondOffset = u.outCondOffset;
  p.guidance = guidance_.as<float>();
  p.noise = noise_.as<float>();
  p.unetOut = out_.data();
  p.outType = runner.outType();
  p.sample = sample_.data();
  p.sampleType = runner.sampleType();
  p.timestep = timestep_.data();
  p.timestepType = runner.timestepType();
  p.timestepCount = timestepCount;
  layout_ = std::make_unique<Layout>(layout);
  unetLayout_ = u;
  RestoreGraph(layout);
}

bool DenoiserCore::SameBuffers(const Layout& a, const Layout& b) {
  return std::tie(a.table, a.xRing, a.mRing, a.noise, a.guidance, a.sample, a.out, a.timestep, a.hidden, a.textEmbeds, a.timeIds, a.bank, a.rowTable) ==
         std::tie(b.table, b.xRing, b.mRing, b.noise, b.guidance, b.sample, b.out, b.timestep, b.hidden, b.textEmbeds, b.timeIds, b.bank, b.rowTable);
}

void DenoiserCore::StashGraph() {
  if (!layout_ || (graphExec_ == nullptr && captureFailure_.empty())) return;
  graphCache_.push_back({*layout_, graphExec_, captureFailure_});
  graphExec_ = nullptr;
  if (graphCache_.size() > kGraphCacheSize) {
    if (graphCache_.front().exec != nullptr) (void)cudaGraphExecDestroy(graphCache_.front().exec);
    graphCache_.erase(graphCache_.begin());
  }
}

void DenoiserCore::RestoreGraph(const Layout& layout) {
  for (auto it = graphCache_.begin(); it != graphCache_.end(); ++it) {
    if (it->layout == layout) {
      graphExec_ = it->exec;
      captureFailure_ = it->failure;
      graphCache_.erase(it);
      // The runner was just bound again for this layout: its first evaluation runs as plain
      // launches (TensorRT's per-shape setup after setInputShape), then the graph is replayed.
      warmupNeeded_ = graphExec_ != nullptr;
      return;
    }
  }
}

void DenoiserCore::ClearGraphCache() {
  for (CachedGraph& g : graphCache_) {
    if (g.exec != nullptr) (void)cudaGraphExecDestroy(g.exec);
  }
  graphCache_.clear();
}

namespace {

// float32 host values → `count` values of `want` at `dst` on the device (`staging` holds the
// converted bytes until the pageable copy has been staged, i.e. until cudaMemcpyAsync returns).
void UploadAs(const float* src, size_t count, void* dst, DType want, std::vector<uint8_t>& staging, cudaStream_t stream) {
  staging.resize(count * dtypeSize(want));
  for (size_t i = 0; i < count; ++i) storeFloat(staging.data(), i, want, src[i]);
  SDTRT_CUDA_CHECK(kStage, cudaMemcpyAsync(dst, staging.data(), staging.size(), cudaMemcpyHostToDevice, stream));
}

}  // namespace

void DenoiserCore::Upload(const DenoiseRequest& r) {
  const size_t n = params_.n;
  hostTable_ = program::BuildDeviceTable(*r.program);
  // Pageable host → device copies return once the source is staged, so borrowed JS memory and the
  // host vectors are free to change after each call returns.
  SDTRT_CUDA_CHECK(kStage, cudaMemcpyAsync(table_.data(), hostTable_.data(), hostTable_.size() * sizeof(double),
                                           cudaMemcpyHostToDevice, stream_));
  SDTRT_CUDA_CHECK(kStage, cudaMemcpyAsync(xRing_.data(), r.latents, n * sizeof(float), cudaMemcpyHostToDevice, stream_));
  if (r.noiseCount > 0) {
    SDTRT_CUDA_CHECK(kStage, cudaMemcpyAsync(noise_.data(), r.noise, r.noiseCount * sizeof(float),
                                             cudaMemcpyHostToDevice, stream_));
  }
  if (!r.guidance.empty()) {
    SDTRT_CUDA_CHECK(kStage, cudaMemcpyAsync(guidance_.data(), r.guidance.data(), r.guidance.size() * sizeof(float),
                                             cudaMemcpyHostToDevice, stream_));
  }
  if (runner_->hiddenSize() > 0) {
    const DType want = runner_->hiddenType();
    const size_t width = static_cast<size_t>(runner_->hiddenSize());
    const size_t wantSize = dtypeSize(want);
    // Where the embeddings' values go, in order. With a row table the parts fill the bank (every
    // conditioning of the run) and the gather kernel fills hidden_ per evaluation; with two UNet
    // calls the uncond rows fill the uncond call's block and the cond rows the cond call's
    // (unet_layout.h); else they fill hidden_ directly.
    struct Segment {
      uint8_t* dst;
      size_t count;
    };
    std::vector<Segment> segments;
    const loop::UnetLayout& u = unetLayout_;
    const size_t images = static_cast<size_t>(layout_->batch);
    if (layout_->rowTable != nullptr) {
      SDTRT_CUDA_CHECK(kStage, cudaMemcpyAsync(rowTable_.data(), r.embeddingRows.data(), r.embeddingRows.size() * sizeof(int32_t),
                                               cudaMemcpyHostToDevice, stream_));
      const size_t uncondBank = static_cast<size_t>(layout_->uncondBankRows);
      if (uncondBank > 0) segments.push_back({bank_.as<uint8_t>(), uncondBank * layout_->uncondSequenceLength * width});
      segments.push_back({bank_.as<uint8_t>() + CondBankBlock() * wantSize,
                          (static_cast<size_t>(r.embeddingRowCount) - uncondBank) * layout_->sequenceLength * width});
    } else if (u.split) {
      segments.push_back({hidden_.as<uint8_t>(), images * layout_->uncondSequenceLength * width});
      segments.push_back({hidden_.as<uint8_t>() + u.condCallHidden * wantSize, images * layout_->sequenceLength * width});
    } else {
      segments.push_back({hidden_.as<uint8_t>(), static_cast<size_t>(layout_->unetBatch) * layout_->sequenceLength * width});
    }
    if (!r.deviceEmbeddings.empty()) {
      // The parts' rows, joined in order (the JS layer checked that they hold every segment's values;
      // with two calls no part spans both halves, but nothing here depends on that).
      size_t segment = 0, filled = 0;
      for (const DenoiseRequest::DevicePart& part : r.deviceEmbeddings) {
        const auto* src = static_cast<const uint8_t*>(part.buffer->data());
        size_t left = part.count;
        while (left > 0 && segment < segments.size()) {
          const size_t take = std::min(left, segments[segment].count - filled);
          uint8_t* dst = segments[segment].dst + filled * wantSize;
          if (part.type == want) {
            SDTRT_CUDA_CHECK(kStage, cudaMemcpyAsync(dst, src, take * wantSize, cudaMemcpyDeviceToDevice, stream_));
          } else {
            SDTRT_CUDA_CHECK(kStage, kernels::launchCast(src, part.type, dst, want, take, stream_));
          }
          src += take * dtypeSize(part.type);
          left -= take;
          filled += take;
          if (filled == segments[segment].count) {
            ++segment;
            filled = 0;
          }
        }
      }
    } else {
      const auto* src = static_cast<const uint8_t*>(r.hostEmbeddings);
      for (const Segment& segment : segments) {
        if (r.hostEmbeddingsType == want) {
          SDTRT_CUDA_CHECK(kStage, cudaMemcpyAsync(segment.dst, src, segment.count * wantSize, cudaMemcpyHostToDevice, stream_));
        } else {
          // float32 ↔ float16 on the host: embeddings are small (2·77·768 values per chunk for SD 1.x at batch 1).
          hostStaging_.resize(segment.count * wantSize);
          for (size_t i = 0; i < segment.count; ++i) storeFloat(hostStaging_.data(), i, want, loadFloat(src, i, r.hostEmbeddingsType));
          SDTRT_CUDA_CHECK(kStage, cudaMemcpyAsync(segment.dst, hostStaging_.data(), hostStaging_.size(), cudaMemcpyHostToDevice, stream_));
        }
        src += segment.count * dtypeSize(r.hostEmbeddingsType);
      }
    }
    if (u.split && u.callRows == 2 * layout_->batch && layout_->rowTable == nullptr) {
      // Engines that take only the guidance batch: each call computes its rows twice, so its
      // embeddings block holds its B rows twice (the second copy's output is never read). With a
      // row table the gather writes both copies instead.
      for (const Segment& segment : segments) {
        SDTRT_CUDA_CHECK(kStage, cudaMemcpyAsync(segment.dst + segment.count * wantSize, segment.dst, segment.count * wantSize,
                                                 cudaMemcpyDeviceToDevice, stream_));
      }
    }
  }
  if (runner_->textEmbedsSize() > 0) {
    // SDXL's text_embeds and time_ids: tiny ([unetBatch, 1280] and [unetBatch, 6] for SDXL), so
    // converted on the host. The JS layer checked both hold unetBatch rows of the runner's sizes.
    // With two calls each half goes to its call's block, twice when the calls take 2 × batch rows.
    const auto upload = [&](const float* values, int width, DType type, DeviceBuffer& buffer) {
      const size_t w = static_cast<size_t>(width);
      if (!unetLayout_.split) {
        UploadAs(values, static_cast<size_t>(layout_->unetBatch) * w, buffer.data(), type, hostStaging_, stream_);
        return;
      }
      const size_t half = static_cast<size_t>(layout_->batch) * w;
      const size_t copies = static_cast<size_t>(unetLayout_.callRows / layout_->batch);
      uint8_t* blocks[2] = {buffer.as<uint8_t>(), buffer.as<uint8_t>() + AddedCondBlock(width, type, unetLayout_.callRows)};
      for (size_t h = 0; h < 2; ++h) {
        for (size_t c = 0; c < copies; ++c) UploadAs(values + h * half, half, blocks[h] + c * half * dtypeSize(type), type, hostStaging_, stream_);
      }
    };
    upload(r.textEmbeds, runner_->textEmbedsSize(), runner_->textEmbedsType(), textEmbeds_);
    upload(r.timeIds, runner_->timeIdsSize(), runner_->timeIdsType(), timeIds_);
  }
}

size_t DenoiserCore::AddedCondBlock(int width, DType type, int callRows) {
  return loop::alignedElements(static_cast<size_t>(callRows) * static_cast<size_t>(width), dtypeSize(type)) * dtypeSize(type);
}

size_t DenoiserCore::CondBankBlock() const {
  if (layout_->uncondBankRows == 0) return 0;
  const size_t uncondBlock = static_cast<size_t>(layout_->uncondBankRows) * layout_->uncondSequenceLength * layout_->hiddenSize;
  return loop::alignedElements(uncondBlock, dtypeSize(runner_->hiddenType()));
}

cudaError_t DenoiserCore::GatherEmbeddings() {
  if (layout_->rowTable == nullptr) return cudaSuccess;
  const size_t hs = dtypeSize(runner_->hiddenType());
  const size_t width = static_cast<size_t>(layout_->hiddenSize);
  const int32_t* table = rowTable_.as<int32_t>();
  if (!unetLayout_.split) {
    return kernels::launchGatherEmbeddingRows(bank_.data(), hidden_.data(), layout_->sequenceLength * width * hs, table, loopControl_.step,
                                              layout_->unetBatch, {}, stream_);
  }
  // Two calls: each call's block from its half of the bank, at its own text length, written
  // callRows / batch times (unet_layout.h).
  const int images = layout_->batch;
  const int copies = unetLayout_.callRows / images;
  const cudaError_t uncond = kernels::launchGatherEmbeddingRows(bank_.data(), hidden_.data(), layout_->uncondSequenceLength * width * hs, table,
                                                                loopControl_.step, layout_->unetBatch, {0, images, 0, copies}, stream_);
  if (uncond != cudaSuccess) return uncond;
  return kernels::launchGatherEmbeddingRows(bank_.as<uint8_t>() + CondBankBlock() * hs, hidden_.as<uint8_t>() + unetLayout_.condCallHidden * hs,
                                            layout_->sequenceLength * width * hs, table, loopControl_.step, layout_->unetBatch,
                                            {images, images, layout_->uncondBankRows, copies}, stream_);
}

void DenoiserCore::EnqueueEval(bool useGraph) {
  if (useGraph && graphExec_ != nullptr) {
    SDTRT_CUDA_CHECK(kStage, cudaGraphLaunch(graphExec_, stream_));
  } else {
    SDTRT_CUDA_CHECK(kStage, GatherEmbeddings());
    runner_->enqueue(stream_);
    SDTRT_CUDA_CHECK(kStage, kernels::launchFusedStep(params_, loopControl_, stream_));
  }
}

bool DenoiserCore::Capture(std::string* reason) {
  // Thread-local mode: only calls from this thread are checked for capture safety, so other
  // threads (another Denoiser, an engine build) keep working while this stream is captured.
  cudaError_t status = cudaStreamBeginCapture(stream_, cudaStreamCaptureModeThreadLocal);
  if (status != cudaSuccess) {
    (void)cudaGetLastError();
    *reason = "cudaStreamBeginCapture failed: " + describe(status);
    return false;
  }
  std::string enqueueError;
  try {
    // The gather reads the evaluation index on the device: one graph for every conditioning.
    status = GatherEmbeddings();
    if (status != cudaSuccess) enqueueError = "embeddings gather launch: " + describe(status);
    if (enqueueError.empty()) runner_->enqueue(stream_);
    if (enqueueError.empty()) status = kernels::launchFusedStep(params_, loopControl_, stream_);
    if (enqueueError.empty() && status != cudaSuccess) enqueueError = "fused step launch: " + describe(status);
  } catch (const std::exception& e) {
    enqueueError = e.what();
  }
  cudaGraph_t graph = nullptr;
  const cudaError_t endStatus = cudaStreamEndCapture(stream_, &graph);
  if (!enqueueError.empty() || endStatus != cudaSuccess || graph == nullptr) {
    if (graph != nullptr) (void)cudaGraphDestroy(graph);
    (void)cudaGetLastError();
    *reason = !enqueueError.empty() ? "the UNet could not be captured: " + enqueueError
                                    : "cudaStreamEndCapture failed: " + describe(endStatus);
    return false;
  }
  cudaGraphExec_t exec = nullptr;
  status = cudaGraphInstantiate(&exec, graph, 0);
  (void)cudaGraphDestroy(graph);
  if (status != cudaSuccess) {
    (void)cudaGetLastError();
    *reason = "cudaGraphInstantiate failed: " + describe(status);
    return false;
  }
  graphExec_ = exec;
  return true;
}

DenoiseResult DenoiserCore::Run(const DenoiseRequest& r, const std::function<void(int)>& progress) {
  std::lock_guard<std::mutex> lock(runMutex_);
  if (released_) throw NativeError("ERR_DISPOSED", kStage, "Denoiser is disposed");
  running_.store(true);
  struct ClearRunning {
    std::atomic<bool>& flag;
    ~ClearRunning() { flag.store(false); }
  } clearRunning{running_};
  // The runner's resources (a TensorRT context and the scratch it shares with the CLIP and VAE
  // contexts) are held for the whole run, from bind() to the last evaluation: nothing else may
  // enqueue on them or move their tensor addresses meanwhile. Declared before the try block, so the
  // catch below synchronises the stream before the lease is released.
  std::unique_ptr<UnetRunner::RunLease> lease = runner_->acquire(this, kStage);
  const auto wallStart = std::chrono::steady_clock::now();
  const int M = r.program->evalCount;
  DenoiseResult result;
  result.evaluations = M;
  int reported = 0;
  auto report = [&]() {
    const int done = Completed();
    if (done > reported && done <= M) {
      reported = done;
      progress(done);
    }
  };
  // Surfaces asynchronous failures (a kernel fault, a TensorRT error) while the host waits.
  auto checkStream = [&]() -> bool {
    const cudaError_t q = cudaStreamQuery(stream_);
    if (q == cudaSuccess) return true;
    if (q != cudaErrorNotReady) throwCudaError(q, kStage, "denoise loop (asynchronous error)");
    return false;
  };

  try {
    SDTRT_CUDA_CHECK(kStage, cudaSetDevice(device_));
    Prepare(r, lease != nullptr && lease->bindingsLost());
    // The device output is allocated before the loop: out of memory fails the run before it starts.
    std::shared_ptr<DeviceBuffer> deviceLatents;
    if (r.deviceOutput) deviceLatents = std::make_shared<DeviceBuffer>(params_.n * sizeof(float), kStage);
    Upload(r);
    *static_cast<volatile int*>(progressHost_) = 0;
    SDTRT_CUDA_CHECK(kStage, cudaEventRecord(start_, stream_));
    SDTRT_CUDA_CHECK(kStage, kernels::launchLoopPrologue(params_, loopControl_, stream_));

    if (!r.useGraphs) {
      result.graph = GraphUse::kDisabled;
    } else if (graphExec_ != nullptr) {
      result.graph = GraphUse::kReplayed;
    } else if (!captureFailure_.empty()) {
      result.graph = GraphUse::kFallback;
      result.graphFallbackReason = captureFailure_;
    }
    bool cancelled = false;
    for (int j = 0; j < M && !cancelled; ++j) {
      while (r.queueDepth > 0 && j - Completed() >= r.queueDepth) {
        if (cancel_.load()) break;
        report();
        if (checkStream()) break;
        pause();
      }
      if (cancel_.load()) {
        cancelled = true;
        break;
      }
      // A graph captured earlier is kept, but not used by a run that disabled graphs; a restored
      // graph waits for one plain evaluation after the re-bind (RestoreGraph).
      EnqueueEval(r.useGraphs && !(j == 0 && warmupNeeded_));
      if (j == 0) warmupNeeded_ = false;
      if (j == 0 && r.useGraphs && graphExec_ == nullptr && captureFailure_.empty()) {
        // The first evaluation ran as plain launches (warming TensorRT up); capture the next.
        std::string reason;
        if (Capture(&reason)) {
          result.graph = GraphUse::kCaptured;
        } else {
          captureFailure_ = reason;
          result.graph = GraphUse::kFallback;
          result.graphFallbackReason = reason;
        }
      }
      report();
    }
    SDTRT_CUDA_CHECK(kStage, cudaEventRecord(end_, stream_));
    for (;;) {
      report();
      const cudaError_t q = cudaEventQuery(end_);
      if (q == cudaSuccess) break;
      if (q != cudaErrorNotReady) throwCudaError(q, kStage, "denoise loop (asynchronous error)");
      pause();
    }
    report();
    if (cancelled) {
      throw NativeError("ABORT_ERR", kStage,
                        "cancelled after " + std::to_string(Completed()) + " of " + std::to_string(M) + " evaluations");
    }
    SDTRT_CUDA_CHECK(kStage, cudaEventElapsedTime(&result.gpuMs, start_, end_));
    // The fused kernel counted the UNet outputs that were NaN/±Inf (loop_math.h fusedElement).
    unsigned long long nonFinite = 0;
    int firstNonFinite = 0;
    SDTRT_CUDA_CHECK(kStage, cudaMemcpy(&nonFinite, loopControl_.nonFinite, sizeof(nonFinite), cudaMemcpyDeviceToHost));
    SDTRT_CUDA_CHECK(kStage, cudaMemcpy(&firstNonFinite, loopControl_.firstNonFinite, sizeof(firstNonFinite), cudaMemcpyDeviceToHost));
    if (nonFinite > 0) {
      // The status carries the numbers for the typed error (lib/native/load.ts: UnetOverflowError).
      throw NativeError("ERR_UNET_NAN", kStage,
                        "the UNet produced NaN/Inf: " + std::to_string(nonFinite) + " non-finite output values, first at evaluation " +
                            std::to_string(firstNonFinite + 1) + " of " + std::to_string(M),
                        "evaluation=" + std::to_string(firstNonFinite) + ";count=" + std::to_string(nonFinite));
    }
    const size_t last = static_cast<size_t>(program::ringSlot(M, params_.depth)) * params_.n;
    if (deviceLatents) {
      // A copy, never the ring slot itself: the next run overwrites the ring.
      SDTRT_CUDA_CHECK(kStage, cudaMemcpyAsync(deviceLatents->data(), params_.xRing + last, params_.n * sizeof(float),
                                               cudaMemcpyDeviceToDevice, stream_));
    } else {
      result.latents.resize(params_.n);
      SDTRT_CUDA_CHECK(kStage, cudaMemcpyAsync(result.latents.data(), params_.xRing + last, params_.n * sizeof(float),
                                               cudaMemcpyDeviceToHost, stream_));
    }
    SDTRT_CUDA_CHECK(kStage, cudaStreamSynchronize(stream_));
    result.deviceLatents = std::move(deviceLatents);
  } catch (...) {
    // Leave nothing running on buffers the next call may reuse or free.
    if (stream_ != nullptr) (void)cudaStreamSynchronize(stream_);
    (void)cudaGetLastError();
    throw;
  }
  result.hostMs = std::chrono::duration<double, std::milli>(std::chrono::steady_clock::now() - wallStart).count();
  return result;
}

}  // namespace sdtrt
