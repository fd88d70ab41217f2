// Kernel launchers (CUDA builds only). Each launches on `stream`, allocates nothing, never
// synchronises, and returns cudaGetLastError() of its launch so callers wrap it in
// SDTRT_CUDA_CHECK(stage, …). All of them may be captured into a CUDA graph.
//
// The per-element math lives in __host__ __device__ headers (loop_math.h, vae_math.h), whose host
// paths CI tests against the TypeScript reference.
#pragma once

#include <cuda_runtime_api.h>

#include <cstddef>
#include <cstdint>

#include "../common/dtype.h"
#include "loop_math.h"
#include "vae_math.h"

namespace sdtrt::kernels {

// Device-side control block of the denoise loop. The fused kernel reads the evaluation index from
// `step` (so one captured graph serves every evaluation) and its last block to finish advances it,
// then publishes it to `progressHost` — mapped pinned host memory the host polls for progress
// without synchronising.
//
// The fused kernel also counts the latent elements whose UNet output was NaN/±Inf (`nonFinite`) and
// keeps the first evaluation that produced one (`firstNonFinite`, INT_MAX while there is none): a
// few atomics per block on the values it reads anyway.
struct LoopControl {
  int* step = nullptr;                 // device
  unsigned int* blocksDone = nullptr;  // device, 0 between launches
  int* progressHost = nullptr;         // device view of mapped host memory: evaluations completed
  unsigned long long* nonFinite = nullptr;  // device
  int* firstNonFinite = nullptr;            // device
};

// Resets the control block (step, counters) and writes the UNet input and timestep of evaluation 0 (x_0 must be in
// x ring slot 0).
cudaError_t launchLoopPrologue(const loop::LoopParams& params, const LoopControl& control, cudaStream_t stream);

// Guidance + program update + next UNet input + next timestep for the evaluation in control.step.
cudaError_t launchFusedStep(const loop::LoopParams& params, const LoopControl& control, cudaStream_t stream);

// Decoder output [batch][channels][h][w] (float32 or float16) in [-1, 1] → uint8 RGB [batch][h][w][3],
// diffusers' rounding (vae_math.h). counters[0] += NaN count, counters[1] += ±Inf count; zero them
// before the launch (cudaMemsetAsync) and fail the decode when either is non-zero.
cudaError_t launchVaeToUint8(const void* src, DType srcType, int batch, int channels, int height, int width,
                             uint8_t* dst, unsigned long long* counters, cudaStream_t stream);

// dst[i] = cast(src[i] / factor) (ScaleOp::kDivide: diffusers' `latents / scaling_factor` into the
// VAE decoder's input dtype) or cast(factor · src[i]) (kMultiply), for float32/float16 src and dst.
// One float32 operation, correctly rounded (vae::scaleElement): bit-identical to the TypeScript
// `Math.fround(x / Math.fround(factor))` followed by the plain cast. src and dst may be the same
// buffer (element-wise, in place) when the types are equal. cudaErrorInvalidValue for other dtypes.
cudaError_t launchScaleCast(const void* src, DType srcType, float factor, vae::ScaleOp op, void* dst, DType dstType,
                            size_t count, cudaStream_t stream);

// Which UNet rows one gather launch fills (default: all of them, once). With uncond and cond as two
// UNet calls of different text lengths (unet_layout.h) each call's block is gathered on its own:
// UNet rows [first, first + count) from a bank block whose row 0 is bank row `bankBase`, written
// `copies` times in a row (2 when each call computes its rows twice).
struct GatherRows {
  int first = 0;
  int count = -1;  // -1: unetBatch
  int bankBase = 0;
  int copies = 1;
};

// Prompt editing (embedding_rows.h): for the evaluation j in *step, copies bank row
// rowTable[j·unetBatch + first + i] − bankBase (rowBytes bytes each) to row c·count + i of dst,
// for i < count and c < copies. Launched right before the UNet, so it reads the same `step` the
// following fused kernel does.
cudaError_t launchGatherEmbeddingRows(const void* bank, void* dst, size_t rowBytes, const int32_t* rowTable, const int* step,
                                      int unetBatch, GatherRows rows, cudaStream_t stream);

// Element-wise conversion between any two DTypes (float ↔ half, int32 ↔ int64 token ids, …);
// float → integer truncates toward zero.
cudaError_t launchCast(const void* src, DType srcType, void* dst, DType dstType, size_t count, cudaStream_t stream);

// Rows that restore one mean together ("Original"): A1111 encodes the texts of one prompt's
// prompt-editing schedule in one call, and `z.mean()` then spans all of them (per chunk index).
// `ids` (device int32 [rows]): rows with the same id form a group; `rowSums` (device double
// [2 · rows]): scratch. Both null: every row on its own.
struct EmphasisGroups {
  const int32_t* ids = nullptr;
  double* rowSums = nullptr;
};

// A1111's emphasis (modules/sd_emphasis.py) on text-encoder output z [rows][tokens][hidden]
// (float32 or float16) in place, one block per row (one 77-token chunk): z · m per token
// (`multipliers` [rows][tokens], float32, device); with `restoreMean` ("Original") the row is then
// scaled by mean(z before) / mean(z after) of its group (`groups`; without, of the row). Products
// are rounded to z's type; the means are summed in double and the ratio rounded to float32, as
// lib/prompt/emphasis.ts does on the CPU.
cudaError_t launchEmphasis(void* z, DType type, const float* multipliers, int rows, int tokens, int hidden, bool restoreMean,
                           const EmphasisGroups& groups, cudaStream_t stream);

}  // namespace sdtrt::kernels
