// The denoise loop's kernels and the pixel / cast kernels (kernels.h). Thin: every element's math
// is in loop_math.h / vae_math.h, shared with the host paths.
#include "kernels.h"

#include <algorithm>
#include <climits>

namespace sdtrt::kernels {

namespace {

constexpr int kThreads = 256;
// Grid-stride loops keep the grid bounded; 4096 blocks of 256 cover 1M elements per sweep.
constexpr size_t kMaxBlocks = 4096;

unsigned int blocksFor(size_t count) {
  const size_t blocks = (count + kThreads - 1) / kThreads;
  return static_cast<unsigned int>(std::max<size_t>(1, std::min(blocks, kMaxBlocks)));
}

__device__ size_t globalIndex() { return static_cast<size_t>(blockIdx.x) * blockDim.x + threadIdx.x; }
__device__ size_t globalStride() { return static_cast<size_t>(gridDim.x) * blockDim.x; }

__global__ void loopPrologueKernel(loop::LoopParams p, LoopControl control) {
  for (size_t i = globalIndex(); i < p.n; i += globalStride()) loop::prologueElement(p, i);
  if (globalIndex() == 0) {
    *control.step = 0;
    *control.blocksDone = 0;
    *control.nonFinite = 0;
    *control.firstNonFinite = INT_MAX;
    *reinterpret_cast<volatile int*>(control.progressHost) = 0;
  }
}

__global__ void fusedStepKernel(loop::LoopParams p, LoopControl control) {
  // Every block reads the index before any block can advance it: the advancing block is the last
  // one to arrive below, after all others finished (and thus read `step`).
  const int j = *reinterpret_cast<volatile int*>(control.step);
  unsigned long long bad = 0;
  for (size_t i = globalIndex(); i < p.n; i += globalStride()) bad += loop::fusedElement(p, j, i) ? 1 : 0;
  // Non-finite UNet outputs are rare (a broken run), so the atomics cost nothing on a healthy one.
  if (bad != 0) {
    atomicAdd(control.nonFinite, bad);
    atomicMin(control.firstNonFinite, j);
  }

  __shared__ bool lastBlock;
  __syncthreads();
  if (threadIdx.x == 0) {
    __threadfence();
    const unsigned int arrived = atomicAdd(control.blocksDone, 1u);
    lastBlock = arrived == gridDim.x - 1;
  }
  __syncthreads();
  if (lastBlock && threadIdx.x == 0) {
    *control.blocksDone = 0;
    *reinterpret_cast<volatile int*>(control.step) = j + 1;
    __threadfence_system();
    *reinterpret_cast<volatile int*>(control.progressHost) = j + 1;
  }
}

// One UNet row per blockIdx.y, one copy per blockIdx.z: the bank row the table names for the
// evaluation in `step` (launchGatherEmbeddingRows). Word is the widest unit that divides the row's bytes.
template <typename Word>
__global__ void gatherRowsKernel(const Word* bank, Word* dst, size_t rowWords, const int32_t* rowTable, const int* step, int unetBatch,
                                 GatherRows rows) {
  const int j = *step;
  const int row = blockIdx.y;
  const int32_t bankRow = rowTable[static_cast<size_t>(j) * unetBatch + rows.first + row] - rows.bankBase;
  const Word* src = bank + static_cast<size_t>(bankRow) * rowWords;
  Word* out = dst + (static_cast<size_t>(blockIdx.z) * rows.count + row) * rowWords;
  for (size_t i = globalIndex(); i < rowWords; i += globalStride()) out[i] = src[i];
}

__global__ void vaeToUint8Kernel(const void* src, DType srcType, int channels, int height, int width, size_t total,
                                 uint8_t* dst, unsigned long long* counters) {
  unsigned long long nans = 0, infs = 0;
  for (size_t o = globalIndex(); o < total; o += globalStride()) {
    const uint32_t flags = loop::vaeElement(src, srcType, channels, height, width, o, dst);
    nans += (flags & vae::kNanFlag) ? 1 : 0;
    infs += (flags & vae::kInfFlag) ? 1 : 0;
  }
  if (nans) atomicAdd(&counters[0], nans);
  if (infs) atomicAdd(&counters[1], infs);
}

__global__ void scaleCastKernel(const void* src, DType srcType, float factor, vae::ScaleOp op, void* dst, DType dstType,
                                size_t count) {
  for (size_t i = globalIndex(); i < count; i += globalStride()) vae::scaleCastElement(src, srcType, factor, op, dst, dstType, i);
}

// Any DType to any other through double (tensor_access.h's loadAny / storeAny).
__global__ void castKernel(const void* src, DType srcType, void* dst, DType dstType, size_t count) {
  for (size_t i = globalIndex(); i < count; i += globalStride()) storeAny(dst, i, dstType, loadAny(src, i, srcType));
}

// Sum over a block of kThreads threads (every thread gets the result).
__device__ double blockSum(double value, double* shared) {
  shared[threadIdx.x] = value;
  __syncthreads();
  for (int stride = kThreads / 2; stride > 0; stride /= 2) {
    if (threadIdx.x < stride) shared[threadIdx.x] += shared[threadIdx.x + stride];
    __syncthreads();
  }
  const double sum = shared[0];
  __syncthreads();  // shared is reused by the next call
  return sum;
}

__global__ void emphasisKernel(void* z, DType type, const float* multipliers, int tokens, int hidden, bool restoreMean) {
  __shared__ double shared[kThreads];
  const size_t count = static_cast<size_t>(tokens) * hidden;
  const size_t base = static_cast<size_t>(blockIdx.x) * count;
  const float* m = multipliers + static_cast<size_t>(blockIdx.x) * tokens;
  double before = 0;
  if (restoreMean) {
    for (size_t i = threadIdx.x; i < count; i += kThreads) before += loadFloat(z, base + i, type);
    before = blockSum(before, shared);
  }
  double after = 0;
  for (size_t i = threadIdx.x; i < count; i += kThreads) {
    storeFloat(z, base + i, type, loadFloat(z, base + i, type) * m[i / hidden]);
    after += loadFloat(z, base + i, type);
  }
  if (!restoreMean) return;
  after = blockSum(after, shared);
  const float ratio = static_cast<float>(before / count) / static_cast<float>(after / count);
  for (size_t i = threadIdx.x; i < count; i += kThreads) storeFloat(z, base + i, type, loadFloat(z, base + i, type) * ratio);
}

// "Original" over groups of rows (launchEmphasis with `groups`), pass 1, one block per row: z · m,
// and the row's sums before and after into rowSums[2·row], rowSums[2·row + 1].
__global__ void emphasisRowSumsKernel(void* z, DType type, const float* multipliers, int tokens, int hidden, double* rowSums) {
  __shared__ double shared[kThreads];
  const size_t count = static_cast<size_t>(tokens) * hidden;
  const size_t base = static_cast<size_t>(blockIdx.x) * count;
  const float* m = multipliers + static_cast<size_t>(blockIdx.x) * tokens;
  double before = 0, after = 0;
  for (size_t i = threadIdx.x; i < count; i += kThreads) {
    before += loadFloat(z, base + i, type);
    storeFloat(z, base + i, type, loadFloat(z, base + i, type) * m[i / hidden]);
    after += loadFloat(z, base + i, type);
  }
  before = blockSum(before, shared);
  after = blockSum(after, shared);
  if (threadIdx.x == 0) {
    rowSums[2 * blockIdx.x] = before;
    rowSums[2 * blockIdx.x + 1] = after;
  }
}

// Pass 2, one block per row: the row's group means (every row with its group id, in row order), and
// the row scaled by mean(before) / mean(after) of the group, as `z.mean()` over A1111's batch.
__global__ void emphasisRestoreGroupKernel(void* z, DType type, int rows, int tokens, int hidden, const int32_t* groups, const double* rowSums) {
  __shared__ float ratio;
  const size_t count = static_cast<size_t>(tokens) * hidden;
  const size_t base = static_cast<size_t>(blockIdx.x) * count;
  if (threadIdx.x == 0) {
    const int32_t group = groups[blockIdx.x];
    double before = 0, after = 0;
    size_t members = 0;
    for (int r = 0; r < rows; ++r) {
      if (groups[r] != group) continue;
      before += rowSums[2 * r];
      after += rowSums[2 * r + 1];
      ++members;
    }
    const double n = static_cast<double>(count * members);
    ratio = static_cast<float>(before / n) / static_cast<float>(after / n);
  }
  __syncthreads();
  for (size_t i = threadIdx.x; i < count; i += kThreads) storeFloat(z, base + i, type, loadFloat(z, base + i, type) * ratio);
}

}  // namespace

cudaError_t launchEmphasis(void* z, DType type, const float* multipliers, int rows, int tokens, int hidden, bool restoreMean,
                           const EmphasisGroups& groups, cudaStream_t stream) {
  if (rows == 0) return cudaSuccess;
  if (type != DType::kFloat32 && type != DType::kFloat16) return cudaErrorInvalidValue;
  if (!restoreMean || groups.ids == nullptr) {
    emphasisKernel<<<rows, kThreads, 0, stream>>>(z, type, multipliers, tokens, hidden, restoreMean);
    return cudaGetLastError();
  }
  if (groups.rowSums == nullptr) return cudaErrorInvalidValue;
  emphasisRowSumsKernel<<<rows, kThreads, 0, stream>>>(z, type, multipliers, tokens, hidden, groups.rowSums);
  const cudaError_t sums = cudaGetLastError();
  if (sums != cudaSuccess) return sums;
  emphasisRestoreGroupKernel<<<rows, kThreads, 0, stream>>>(z, type, rows, tokens, hidden, groups.ids, groups.rowSums);
  return cudaGetLastError();
}

cudaError_t launchLoopPrologue(const loop::LoopParams& params, const LoopControl& control, cudaStream_t stream) {
  loopPrologueKernel<<<blocksFor(params.n), kThreads, 0, stream>>>(params, control);
  return cudaGetLastError();
}

cudaError_t launchFusedStep(const loop::LoopParams& params, const LoopControl& control, cudaStream_t stream) {
  fusedStepKernel<<<blocksFor(params.n), kThreads, 0, stream>>>(params, control);
  return cudaGetLastError();
}

cudaError_t launchVaeToUint8(const void* src, DType srcType, int batch, int channels, int height, int width,
                             uint8_t* dst, unsigned long long* counters, cudaStream_t stream) {
  const size_t total = static_cast<size_t>(batch) * height * width * 3;
  if (total == 0) return cudaSuccess;
  vaeToUint8Kernel<<<blocksFor(total), kThreads, 0, stream>>>(src, srcType, channels, height, width, total, dst, counters);
  return cudaGetLastError();
}

cudaError_t launchScaleCast(const void* src, DType srcType, float factor, vae::ScaleOp op, void* dst, DType dstType,
                            size_t count, cudaStream_t stream) {
  if (count == 0) return cudaSuccess;
  const bool floatTypes = (srcType == DType::kFloat32 || srcType == DType::kFloat16) &&
                          (dstType == DType::kFloat32 || dstType == DType::kFloat16);
  if (!floatTypes) return cudaErrorInvalidValue;
  // In place only element for element: a float16 → float32 cast in place would overwrite inputs.
  if (src == dst && srcType != dstType) return cudaErrorInvalidValue;
  scaleCastKernel<<<blocksFor(count), kThreads, 0, stream>>>(src, srcType, factor, op, dst, dstType, count);
  return cudaGetLastError();
}

cudaError_t launchGatherEmbeddingRows(const void* bank, void* dst, size_t rowBytes, const int32_t* rowTable, const int* step,
                                      int unetBatch, GatherRows rows, cudaStream_t stream) {
  if (rows.count < 0) rows.count = unetBatch;
  if (rowBytes == 0 || unetBatch <= 0 || rows.count == 0 || rows.copies <= 0) return cudaSuccess;
  const auto launch = [&](auto word) {
    using Word = decltype(word);
    const size_t rowWords = rowBytes / sizeof(Word);
    const dim3 grid(blocksFor(rowWords), static_cast<unsigned int>(rows.count), static_cast<unsigned int>(rows.copies));
    gatherRowsKernel<Word><<<grid, kThreads, 0, stream>>>(static_cast<const Word*>(bank), static_cast<Word*>(dst), rowWords, rowTable, step, unetBatch, rows);
  };
  // DeviceBuffer allocations are 256-byte aligned, so a row offset that divides by the word is aligned too.
  if (rowBytes % sizeof(uint4) == 0) {
    launch(uint4{});
  } else if (rowBytes % sizeof(uint32_t) == 0) {
    launch(uint32_t{});
  } else {
    launch(uint8_t{});
  }
  return cudaGetLastError();
}

cudaError_t launchCast(const void* src, DType srcType, void* dst, DType dstType, size_t count, cudaStream_t stream) {
  if (count == 0) return cudaSuccess;
  castKernel<<<blocksFor(count), kThreads, 0, stream>>>(src, srcType, dst, dstType, count);
  return cudaGetLastError();
}

}  // namespace sdtrt::kernels
