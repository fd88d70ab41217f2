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

namespace sdtrt::kernels {

// Device-side control block of the denoise loop. The fused kernel reads the evaluation index from
// `step` (so one captured graph serves every evaluation) and its last block to finish advances it,
// then publishes it to `progressHost` — mapped pinned host memory the host polls for progress
// without synchronising.
struct LoopControl {
  int* step = nullptr;                 // device
  unsigned int* blocksDone = nullptr;  // device, 0 between launches
  int* progressHost = nullptr;         // device view of mapped host memory: evaluations completed
};

// Resets the control block and writes the UNet input and timestep of evaluation 0 (x_0 must be in
// x ring slot 0).
cudaError_t launchLoopPrologue(const loop::LoopParams& params, const LoopControl& control, cudaStream_t stream);

// Guidance + program update + next UNet input + next timestep for the evaluation in control.step.
cudaError_t launchFusedStep(const loop::LoopParams& params, const LoopControl& control, cudaStream_t stream);

// Decoder output [batch][channels][h][w] (float32 or float16) in [-1, 1] → uint8 RGB [batch][h][w][3],
// diffusers' rounding (vae_math.h). counters[0] += NaN count, counters[1] += ±Inf count; zero them
// before the launch (cudaMemsetAsync) and fail the decode when either is non-zero.
cudaError_t launchVaeToUint8(const void* src, DType srcType, int batch, int channels, int height, int width,
                             uint8_t* dst, unsigned long long* counters, cudaStream_t stream);

// dst[i] = cast(scale · src[i]) for float32/float16 src and dst (e.g. latents / scaling_factor into
// the VAE decoder's input dtype). scale is applied in float32: float(scale) · src[i].
cudaError_t launchScaleCast(const void* src, DType srcType, float scale, void* dst, DType dstType, size_t count,
                            cudaStream_t stream);

// Element-wise conversion between any two DTypes (float ↔ half, int32 ↔ int64 token ids, …);
// float → integer truncates toward zero.
cudaError_t launchCast(const void* src, DType srcType, void* dst, DType dstType, size_t count, cudaStream_t stream);

// A1111's emphasis (modules/sd_emphasis.py) on text-encoder output z [rows][tokens][hidden]
// (float32 or float16) in place, one block per row (one 77-token chunk): z · m per token
// (`multipliers` [rows][tokens], float32, device); with `restoreMean` ("Original") the row is then
// scaled by mean(z before) / mean(z after). Products are rounded to z's type; the means are summed
// in double and the ratio rounded to float32, as lib/prompt/emphasis.ts does on the CPU.
cudaError_t launchEmphasis(void* z, DType type, const float* multipliers, int rows, int tokens, int hidden, bool restoreMean,
                           cudaStream_t stream);

}  // namespace sdtrt::kernels
