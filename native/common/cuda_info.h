// What the CUDA runtime can see: versions and devices, for info() / `sd-trt doctor`. Every failure
// is reported as data (a missing driver or GPU is a normal answer here), never thrown.
// CUDA builds only; addon.cc reports "not compiled in" otherwise.
#pragma once

#include <cstdint>
#include <string>
#include <vector>

namespace sdtrt {

struct CudaDeviceInfo {
  int index = 0;
  std::string name;
  int major = 0;
  int minor = 0;
  uint64_t totalMemory = 0;
  int64_t freeMemory = -1;  // -1 when not queried or not available
  int multiprocessors = 0;
  std::string error;        // why some of the above could not be read
};

struct CudaInfo {
  int runtimeVersion = 0;  // e.g. 13000 for CUDA 13.0 (the statically linked runtime)
  int driverVersion = 0;   // 0 when no driver is installed
  std::string driverError;
  std::vector<CudaDeviceInfo> devices;
  std::string deviceError;  // why no device could be listed ("" when the query worked)
  std::string deviceErrorStatus;  // CUDA status name of that failure
};

// queryFreeMemory creates each device's primary context (needed for cudaMemGetInfo); leave it off
// for a cheap query.
CudaInfo QueryCudaInfo(bool queryFreeMemory);

}  // namespace sdtrt
