// Typed element loads/stores shared by kernels and host paths. The dtype is a run-time value (it
// comes from the engine), uniform across a launch, so the switch costs no divergence.
#pragma once

#include <cstddef>
#include <cstdint>

#include "dtype.h"
#include "half.h"
#include "hd.h"

namespace sdtrt {

// Reads element i of a float32 or float16 tensor as float.
SDTRT_HD float loadFloat(const void* base, size_t i, DType type) {
  if (type == DType::kFloat16) return halfBitsToFloat(static_cast<const uint16_t*>(base)[i]);
  return static_cast<const float*>(base)[i];
}

// Writes v to element i of a float32 or float16 tensor (float16: round to nearest even).
SDTRT_HD void storeFloat(void* base, size_t i, DType type, float v) {
  if (type == DType::kFloat16) {
    static_cast<uint16_t*>(base)[i] = floatToHalfBits(v);
  } else {
    static_cast<float*>(base)[i] = v;
  }
}

// Writes v to element i of a tensor of any DType the way diffusers hands a timestep to a model of
// that dtype: float32/float16 by rounding (to nearest even), integers by truncation toward zero
// (torch's `.to(torch.int64)`; SD timesteps of integer schedules are whole numbers anyway).
SDTRT_HD void storeAny(void* base, size_t i, DType type, double v) {
  switch (type) {
    case DType::kFloat32: static_cast<float*>(base)[i] = static_cast<float>(v); break;
    case DType::kFloat16: static_cast<uint16_t*>(base)[i] = floatToHalfBits(static_cast<float>(v)); break;
    case DType::kInt32: static_cast<int32_t*>(base)[i] = static_cast<int32_t>(v); break;
    case DType::kInt64: static_cast<int64_t*>(base)[i] = static_cast<int64_t>(v); break;
  }
}

// Reads element i of a tensor of any DType as double: exact for float32/float16 and for integers
// below 2^53 (token ids, timesteps).
SDTRT_HD double loadAny(const void* base, size_t i, DType type) {
  switch (type) {
    case DType::kFloat32: return static_cast<const float*>(base)[i];
    case DType::kFloat16: return halfBitsToFloat(static_cast<const uint16_t*>(base)[i]);
    case DType::kInt32: return static_cast<const int32_t*>(base)[i];
    case DType::kInt64: return static_cast<double>(static_cast<const int64_t*>(base)[i]);
  }
  return 0.0;
}

}  // namespace sdtrt
