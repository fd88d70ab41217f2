// Host paths of the device kernels: the same per-element functions (loop_math.h, analytic_model.h,
// vae_math.h) run in plain loops on the CPU. They exist so that CI, which has no GPU, checks the
// kernels' arithmetic against the TypeScript executor and diffusers' goldens; the addon exposes them
// as hostRunProgram() / hostVaeToUint8() / hostScaleCast() (host_math_js.cc).
#pragma once

#include <cstddef>
#include <cstdint>
#include <vector>

#include "../common/dtype.h"
#include "program_table.h"
#include "vae_math.h"

namespace sdtrt::host {

struct AnalyticRunOptions {
  int batch = 1;
  int channels = 4;
  int height = 0;
  int width = 0;
  std::vector<float> guidance;  // empty: no classifier-free guidance; else one scale per image
  DType sampleType = DType::kFloat32;  // the stand-in's input/output dtype (float32 or float16)
  DType timestepType = DType::kFloat32;
  // With guidance: 0 runs [uncond; cond] as one UNet call; batch or 2 · batch runs them as two calls
  // of that many rows each (A1111's prompt and negative prompt of different lengths), with the
  // device loop's buffer layout (unet_layout.h).
  int splitCallRows = 0;
};

// Runs `program` with the analytic stand-in UNet exactly as the device loop does (prologue, UNet,
// fused update per evaluation) and returns x_M [batch, channels, h, w]. `x0` holds n = batch ·
// channels · h · w values, `noise` the program's draws, noiseDraws · n values in order.
// The ring buffers, and the gaps between the two calls' blocks, start filled with NaN, so a read of a
// slot before it is written, or of a misplaced row, shows up.
// `stats` (optional) receives what the fused kernel's counters would hold: latent elements whose
// UNet output was NaN/±Inf, and the first evaluation with one (-1 for none).
struct LoopStats {
  uint64_t nonFinite = 0;
  int firstNonFinite = -1;
};
std::vector<float> RunProgramAnalytic(const program::Program& program, const float* x0, const float* noise,
                                      size_t noiseCount, const AnalyticRunOptions& options, LoopStats* stats = nullptr);

struct VaeFlagsCount {
  uint64_t nanCount = 0;
  uint64_t infCount = 0;
};

// Decoder output [batch][channels][h][w] (float32 or float16 bits) → uint8 [batch][h][w][3].
VaeFlagsCount VaeToUint8(const void* src, DType srcType, int batch, int channels, int height, int width, uint8_t* dst);

// dst[i] = cast(src[i] / factor) or cast(factor · src[i]) (vae::scaleCastElement), float32 or
// float16 bits on either side: the host path of kernels::launchScaleCast.
void ScaleCast(const void* src, DType srcType, float factor, vae::ScaleOp op, void* dst, DType dstType, size_t count);

}  // namespace sdtrt::host
