// IEEE 754 binary16 <-> binary32 conversions shared by kernels and host paths. Round to nearest,
// ties to even, like __float2half_rn; NaN becomes the canonical 0x7fff (what the device produces),
// values from 65520 up overflow to infinity. On the device the hardware conversion is used; the
// host code below gives the same bits (it is exercised against known values in the tests).
#pragma once

#include <cstdint>
#include <cstring>

#include "hd.h"

#if defined(__CUDACC__)
#include <cuda_fp16.h>
#endif

namespace sdtrt {

SDTRT_HD uint32_t floatBits(float f) {
#if defined(__CUDA_ARCH__)
  return __float_as_uint(f);
#else
  uint32_t u;
  std::memcpy(&u, &f, sizeof u);
  return u;
#endif
}

SDTRT_HD float bitsToFloat(uint32_t u) {
#if defined(__CUDA_ARCH__)
  return __uint_as_float(u);
#else
  float f;
  std::memcpy(&f, &u, sizeof f);
  return f;
#endif
}

SDTRT_HD uint16_t floatToHalfBits(float f) {
#if defined(__CUDA_ARCH__)
  return __half_as_ushort(__float2half_rn(f));
#else
  // F. Giesen's float_to_half_fast3_rtne: exact RNE using one float addition for subnormals.
  uint32_t x = floatBits(f);
  const uint32_t sign = x & 0x80000000u;
  x ^= sign;
  uint16_t out;
  if (x >= (127u + 16u) << 23) {  // |f| >= 65536, Inf or NaN
    out = x > (255u << 23) ? 0x7fffu : 0x7c00u;
  } else if (x < (113u << 23)) {  // result is subnormal or zero: align the 10 mantissa bits at the bottom
    const float denormMagic = bitsToFloat(((127u - 15u) + (23u - 10u) + 1u) << 23);
    out = static_cast<uint16_t>(floatBits(bitsToFloat(x) + denormMagic) - floatBits(denormMagic));
  } else {
    const uint32_t mantissaOdd = (x >> 13) & 1u;
    x += (static_cast<uint32_t>(15 - 127) << 23) + 0xfffu;  // rebias exponent, round half up…
    x += mantissaOdd;                                        // …then make ties go to even
    out = static_cast<uint16_t>(x >> 13);                    // 65520…65535 carry into Inf here
  }
  if (out == 0x7fffu) return out;  // canonical NaN keeps no sign, like the device
  return static_cast<uint16_t>(out | (sign >> 16));
#endif
}

SDTRT_HD float halfBitsToFloat(uint16_t h) {
#if defined(__CUDA_ARCH__)
  return __half2float(__ushort_as_half(h));
#else
  const uint32_t sign = static_cast<uint32_t>(h & 0x8000u) << 16;
  const uint32_t exponent = (h >> 10) & 0x1fu;
  const uint32_t mantissa = h & 0x3ffu;
  if (exponent == 0) {
    // Zero or subnormal: mantissa · 2^-24 is exact in float.
    const float magnitude = static_cast<float>(mantissa) * 5.9604644775390625e-8f;
    return sign ? -magnitude : magnitude;
  }
  if (exponent == 31) return bitsToFloat(sign | 0x7f800000u | (mantissa << 13));
  return bitsToFloat(sign | ((exponent + 112u) << 23) | (mantissa << 13));
#endif
}

}  // namespace sdtrt
