// Per-element math of the VAE output kernel, shared with its host path: decoder output in [-1, 1]
// (NCHW float32 or float16) → uint8 RGB, exactly diffusers' postprocessing for `output_type="pil"`:
//
//   v = clamp(x / 2 + 0.5, 0, 1)          float32 (x / 2 is exact)
//   byte = round_half_to_even(v · 255)    numpy's `(image * 255).round().astype("uint8")`
//
// float16 inputs are widened to float32 first (diffusers' fp32 path; the fp16 pipeline would do the
// first line in half precision, which can differ by one level).
// fp16 VAEs can overflow: NaN is never silently turned into black. Each NaN sets kNanFlag (the byte
// is 0), each ±Inf sets kInfFlag (the byte clamps to 255 / 0); callers must fail on a non-zero flag.
//
// Also the VAE's input side: `scaleCastElement`, diffusers' `latents / scaling_factor` before the
// decoder (and `scaling_factor · latents` after the encoder), one float32 operation rounded to
// nearest, then the engine's dtype.
#pragma once

#include <math.h>

#include <cmath>
#include <cstdint>

#include "../common/dtype.h"
#include "../common/hd.h"
#include "../common/tensor_access.h"

namespace sdtrt::vae {

constexpr uint32_t kNanFlag = 1u;
constexpr uint32_t kInfFlag = 2u;

SDTRT_HD uint8_t toByte(float x, uint32_t* flags) {
  if (x != x) {
    *flags |= kNanFlag;
    return 0;
  }
#if defined(__CUDA_ARCH__)
  if (isinf(x)) *flags |= kInfFlag;
#else
  if (std::isinf(x)) *flags |= kInfFlag;
#endif
  float v = x * 0.5f + 0.5f;
  v = v < 0.0f ? 0.0f : (v > 1.0f ? 1.0f : v);
  // rintf rounds half to even in the default rounding mode, on the host and on the device.
  return static_cast<uint8_t>(::rintf(v * 255.0f));
}

// How the scale factor is applied. diffusers divides before the decoder (`latents / scaling_factor`)
// and multiplies after the encoder; x / s and x · (1 / s) differ in the last bit for some x, so the
// division is a division.
enum class ScaleOp : int32_t { kMultiply = 0, kDivide = 1 };

// factor · x or x / factor in float32, correctly rounded (IEEE round to nearest even) on both sides:
// the device uses the _rn intrinsics, so even a --use_fast_math build cannot turn the division into
// a reciprocal multiply or fuse anything; the host is plain SSE arithmetic (-ffp-contract=off).
// Bit-identical to TypeScript's Math.fround(x / Math.fround(s)) and Math.fround(x * Math.fround(s)).
SDTRT_HD float scaleElement(float x, float factor, ScaleOp op) {
#if defined(__CUDA_ARCH__)
  return op == ScaleOp::kDivide ? __fdiv_rn(x, factor) : __fmul_rn(factor, x);
#else
  return op == ScaleOp::kDivide ? x / factor : factor * x;
#endif
}

// dst[i] = cast(scaleElement(src[i])) for float32 / float16 (bits) src and dst; float16 results
// round to nearest even from the float32 value (floatToHalfBits, like the plain cast kernel).
SDTRT_HD void scaleCastElement(const void* src, DType srcType, float factor, ScaleOp op, void* dst, DType dstType, size_t i) {
  storeFloat(dst, i, dstType, scaleElement(loadFloat(src, i, srcType), factor, op));
}

}  // namespace sdtrt::vae
