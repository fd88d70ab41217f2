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
#pragma once

#include <math.h>

#include <cmath>
#include <cstdint>

#include "../common/hd.h"

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

}  // namespace sdtrt::vae
