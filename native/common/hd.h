// SDTRT_HD marks functions shared by CUDA kernels and their host paths (`__host__ __device__` under
// nvcc, nothing under a plain C++ compiler), so the per-element math is compiled once for the device
// and once for the CPU tests from the same source.
#pragma once

#if defined(__CUDACC__)
#define SDTRT_HD __host__ __device__ __forceinline__
#else
#define SDTRT_HD inline
#endif
