// Element types of the tensors exchanged with the UNet runner and the kernels. Kept free of CUDA
// headers so host-only builds (no CUDA toolkit) can use it too; unet_runner.h includes it.
#pragma once

#include <cstddef>
#include <cstdint>

namespace sdtrt {

enum class DType : int32_t { kFloat32 = 0, kFloat16 = 1, kInt32 = 2, kInt64 = 3 };

inline size_t dtypeSize(DType t) {
  switch (t) {
    case DType::kFloat32: return 4;
    case DType::kFloat16: return 2;
    case DType::kInt32: return 4;
    case DType::kInt64: return 8;
  }
  return 0;
}

inline const char* dtypeName(DType t) {
  switch (t) {
    case DType::kFloat32: return "float32";
    case DType::kFloat16: return "float16";
    case DType::kInt32: return "int32";
    case DType::kInt64: return "int64";
  }
  return "unknown";
}

}  // namespace sdtrt
