// Per-element math of the sampler program (lib/sampler/program.ts), shared by the fused CUDA
// kernel (kernels.cu) and its host path (host_math.cc), so CI checks the kernel's arithmetic on the
// CPU against the TypeScript executor.
//
// For evaluation j and element i (see program.ts):
//   input_j   = cIn_j · x_j                               (UNet input, cast to the model's dtype)
//   m_j       = u + g · (c − u)   with CFG (uncond u first, cond c second, g per image)
//             = out               without CFG (and u = out)
//   x_{j+1}   = Σ_k a_j[k] · x_{j−k} + Σ_k b_j[k] · m_{j−k} + d_j · u_j + c_j · n_j
// d_j (A1111's DDIM CFG++ renoises with the unconditional output) is added only where it is non-zero,
// so every other program sums exactly the terms it summed before.
// Terms reaching before x_0 / m_0 are skipped (program.ts: they are 0), so ring slots that were
// never written — possibly NaN garbage — are never read.
//
// Precision: latents, model outputs and noise are float32 in memory. The update accumulates in
// float64 and rounds once to float32, like the TS executor, which works on JS numbers and stores
// into Float32Array. Guidance is float32 arithmetic in diffusers' order,
// `uncond + g * (text - uncond)` with g rounded to float32 (what torch does with a Python float and
// a float32 tensor). Both compilers are told not to contract a*b+c into an FMA (-ffp-contract=off,
// nvcc --fmad=false), so host and device round identically.
#pragma once

#include <cstddef>
#include <cstdint>

#include "../common/hd.h"

namespace sdtrt::program {

// Row layout of the device coefficient table, one row of doubles per evaluation:
//   [t, cIn, c, drawIndex (−1 = no noise), d, a[0..K-1], b[0..K-1]]
// built on the host from the packed program (program_table.h) and uploaded once per run.
constexpr int kRowT = 0;
constexpr int kRowCIn = 1;
constexpr int kRowC = 2;
constexpr int kRowDraw = 3;
constexpr int kRowD = 4;
constexpr int kRowA = 5;
SDTRT_HD int rowStride(int historyDepth) { return kRowA + 2 * historyDepth; }
SDTRT_HD int rowB(int historyDepth) { return kRowA + historyDepth; }

// Ring buffers of depth K hold x_{j}, …, x_{j−K+1} and m_{j}, …, m_{j−K+1}; index n lives in slot n mod K.
// x_{j+1} reuses the slot of x_{j−K+1}: each element is read (all k) before it is written, by the
// same thread, so the overlap is safe.
SDTRT_HD int ringSlot(int index, int depth) { return index % depth; }

// How many history terms evaluation j may read: min(K, j + 1).
SDTRT_HD int historyTerms(int j, int depth) { return j + 1 < depth ? j + 1 : depth; }

// The UNet input for latent value x: cIn · x rounded to float32 (then cast to the model's dtype).
SDTRT_HD float scaleInput(double cIn, float x) { return static_cast<float>(cIn * static_cast<double>(x)); }

// Classifier-free guidance in float32, diffusers' order of operations.
SDTRT_HD float guide(float uncond, float cond, float scale) { return uncond + scale * (cond - uncond); }

// x_{j+1}[i] from one row of the table. xAt(k) / mAt(k) return x_{j−k}[i] / m_{j−k}[i] as float;
// `uncond` is u_j[i] (read only when d ≠ 0), `noise` is n_j[i] (ignored when the row draws none).
// Summed in the TS executor's order: x terms, m terms, d·u, noise.
template <class XAt, class MAt>
SDTRT_HD float updateElement(const double* row, int depth, int terms, XAt xAt, MAt mAt, float uncond, float noise) {
  const double* a = row + kRowA;
  const double* b = row + rowB(depth);
  double acc = 0.0;
  for (int k = 0; k < terms; ++k) acc += a[k] * static_cast<double>(xAt(k));
  for (int k = 0; k < terms; ++k) acc += b[k] * static_cast<double>(mAt(k));
  if (row[kRowD] != 0.0) acc += row[kRowD] * static_cast<double>(uncond);
  if (row[kRowDraw] >= 0.0) acc += row[kRowC] * static_cast<double>(noise);
  return static_cast<float>(acc);
}

}  // namespace sdtrt::program
