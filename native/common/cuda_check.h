// One checker for every CUDA runtime call (style.md §5, TRT demo `_CUASSERT`): a failed call becomes a
// sdtrt::NativeError with code "ERR_CUDA", the stage, the failing call, CUDA's description and the
// status name ("cudaErrorMemoryAllocation"), which the TS layer maps to a typed error.
//
//   SDTRT_CUDA_CHECK("denoise", cudaMallocAsync(&p, bytes, stream));
//
// Only for code compiled with CUDA (SDTRT_WITH_CUDA). Never aborts: it throws.
#pragma once

#include <cuda_runtime_api.h>

#include <string>

#include "status.h"

namespace sdtrt {

// Builds the NativeError for `err` without throwing (for code that collects errors, e.g. info()).
inline NativeError cudaNativeError(cudaError_t err, const std::string& stage, const std::string& call) {
  const char* name = cudaGetErrorName(err);
  const char* text = cudaGetErrorString(err);
  return NativeError("ERR_CUDA", stage, call + " failed: " + (text ? text : "unknown CUDA error") + " (" + (name ? name : "?") + ")",
                     name ? name : "");
}

[[noreturn]] inline void throwCudaError(cudaError_t err, const char* stage, const char* call) {
  // Reset the thread's "last error" so a non-sticky failure (bad argument, out of memory) is not
  // reported again by the next unrelated cudaGetLastError().
  (void)cudaGetLastError();
  throw cudaNativeError(err, stage, call);
}

}  // namespace sdtrt

#define SDTRT_CUDA_CHECK(stage, expr)                                   \
  do {                                                                  \
    const cudaError_t sdtrt_cuda_status_ = (expr);                      \
    if (sdtrt_cuda_status_ != cudaSuccess) {                            \
      ::sdtrt::throwCudaError(sdtrt_cuda_status_, (stage), #expr);      \
    }                                                                   \
  } while (0)
