// The per-element bodies of the denoise loop's kernels, as __host__ __device__ functions over one
// parameter block. kernels.cu runs them one thread per element; host_math.cc runs them in plain
// loops over the same buffers, which is how CI tests the device arithmetic without a GPU.
//
// Loop, for a program of M evaluations and history depth K (x_0 already in x ring slot 0):
//   prologue:            UNet input ← cIn_0·x_0, timestep ← t_0
//   for j = 0 … M−1:     UNet (runner->enqueue)                           out ← UNet(input, t_j)
//                        fused(j): m_j ← guidance(out); x_{j+1} ← update (m_j, and u_j from out's
//                                  uncond half where the row has d); input ← cIn_{j+1}·x_{j+1};
//                                  timestep ← t_{j+1}
// The final latents x_M are in x ring slot M mod K.
#pragma once

#include <cstddef>
#include <cstdint>

#include "../common/dtype.h"
#include "../common/hd.h"
#include "../common/tensor_access.h"
#include "program_math.h"
#include "vae_math.h"

namespace sdtrt::loop {

struct LoopParams {
  const double* table = nullptr;  // evalCount rows of program::rowStride(depth) doubles
  int evalCount = 0;
  int depth = 1;                  // K
  float* xRing = nullptr;         // [depth][n]
  float* mRing = nullptr;         // [depth][n]
  size_t n = 0;                   // batch · imageElems (one latent set)
  int imageElems = 0;             // channels · h · w
  int batch = 0;                  // images
  bool cfg = false;               // UNet batch is [uncond; cond] = 2·batch
  // Where the cond rows start in `sample` and `unetOut` (elements): n when one UNet call takes
  // [uncond; cond]; aligned offsets when they run as two calls (unet_layout.h).
  size_t sampleCondOffset = 0;
  size_t outCondOffset = 0;
  const float* guidance = nullptr;  // [batch] guidance scales (float32), used when cfg
  const float* noise = nullptr;     // [draws][n]
  const void* unetOut = nullptr;    // [unetBatch][imageElems] of outType
  DType outType = DType::kFloat32;
  void* sample = nullptr;           // [unetBatch][imageElems] of sampleType
  DType sampleType = DType::kFloat32;
  void* timestep = nullptr;         // timestepCount elements of timestepType
  DType timestepType = DType::kFloat32;
  int timestepCount = 1;
};

SDTRT_HD const double* row(const LoopParams& p, int j) {
  return p.table + static_cast<size_t>(program::rowStride(p.depth)) * static_cast<size_t>(j);
}

// Element i of the UNet input for evaluation j, from latent value x (duplicated for both CFG halves).
SDTRT_HD void writeUnetInput(const LoopParams& p, int j, size_t i, float x) {
  const float input = program::scaleInput(row(p, j)[program::kRowCIn], x);
  storeFloat(p.sample, i, p.sampleType, input);
  if (p.cfg) storeFloat(p.sample, i + p.sampleCondOffset, p.sampleType, input);
}

SDTRT_HD void writeTimestep(const LoopParams& p, int j) {
  const double t = row(p, j)[program::kRowT];
  for (int k = 0; k < p.timestepCount; ++k) storeAny(p.timestep, static_cast<size_t>(k), p.timestepType, t);
}

// Prologue, element i < n: the input and timestep of evaluation 0.
SDTRT_HD void prologueElement(const LoopParams& p, size_t i) {
  writeUnetInput(p, 0, i, p.xRing[i]);
  if (i == 0) writeTimestep(p, 0);
}

// x − x is 0 for every finite x and NaN for ±Inf and NaN. Written out (not isfinite) so the host
// and device paths share one expression with no library call.
SDTRT_HD bool isFiniteFloat(float x) { return x - x == 0.0f; }

// The fused step after the UNet of evaluation j, element i < n. Returns true when the UNet's output
// for this element (either CFG half) is NaN or ±Inf: an fp16 UNet that overflowed. The kernel
// counts these (LoopControl::nonFinite), so the run fails as a UNet overflow, not later as a
// "VAE overflow" that rebuilding the VAE cannot fix.
SDTRT_HD bool fusedElement(const LoopParams& p, int j, size_t i) {
  const double* r = row(p, j);
  const size_t n = p.n;
  const int K = p.depth;
  float m;
  float u;  // the unconditional output; without CFG the one prediction there is (program_math.h)
  bool finite;
  if (p.cfg) {
    const size_t image = i / static_cast<size_t>(p.imageElems);
    u = loadFloat(p.unetOut, i, p.outType);
    const float c = loadFloat(p.unetOut, i + p.outCondOffset, p.outType);
    finite = isFiniteFloat(u) && isFiniteFloat(c);
    m = program::guide(u, c, p.guidance[image]);
  } else {
    m = loadFloat(p.unetOut, i, p.outType);
    u = m;
    finite = isFiniteFloat(m);
  }
  p.mRing[static_cast<size_t>(program::ringSlot(j, K)) * n + i] = m;

  const double draw = r[program::kRowDraw];
  const float noise = draw >= 0.0 ? p.noise[static_cast<size_t>(draw) * n + i] : 0.0f;
  const float* xRing = p.xRing;
  const float* mRing = p.mRing;
  const float next = program::updateElement(
      r, K, program::historyTerms(j, K),
      [&](int k) { return xRing[static_cast<size_t>(program::ringSlot(j - k, K)) * n + i]; },
      [&](int k) { return k == 0 ? m : mRing[static_cast<size_t>(program::ringSlot(j - k, K)) * n + i]; }, u, noise);
  p.xRing[static_cast<size_t>(program::ringSlot(j + 1, K)) * n + i] = next;

  if (j + 1 < p.evalCount) {
    writeUnetInput(p, j + 1, i, next);
    if (i == 0) writeTimestep(p, j + 1);
  }
  return !finite;
}

// VAE output element o of the uint8 HWC result [batch][h][w][3] from the NCHW decoder output
// [batch][channels ≥ 3][h][w]. Returns the flags (vae_math.h) the element raised.
SDTRT_HD uint32_t vaeElement(const void* src, DType srcType, int channels, int height, int width, size_t o,
                             uint8_t* dst) {
  const size_t plane = static_cast<size_t>(height) * static_cast<size_t>(width);
  const size_t image = o / (plane * 3);
  const size_t rem = o - image * plane * 3;
  const size_t pixel = rem / 3;
  const size_t channel = rem - pixel * 3;
  const size_t s = (image * static_cast<size_t>(channels) + channel) * plane + pixel;
  uint32_t flags = 0;
  dst[o] = vae::toByte(loadFloat(src, s, srcType), &flags);
  return flags;
}

}  // namespace sdtrt::loop
