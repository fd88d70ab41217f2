#include "cuda_info.h"

#include <cuda_runtime_api.h>

namespace sdtrt {

namespace {

std::string describe(cudaError_t err) {
  const char* text = cudaGetErrorString(err);
  const char* name = cudaGetErrorName(err);
  return std::string(text ? text : "unknown CUDA error") + " (" + (name ? name : "?") + ")";
}

}  // namespace

CudaInfo QueryCudaInfo(bool queryFreeMemory) {
  CudaInfo info;
  if (cudaRuntimeGetVersion(&info.runtimeVersion) != cudaSuccess) info.runtimeVersion = 0;
  const cudaError_t driverStatus = cudaDriverGetVersion(&info.driverVersion);
  if (driverStatus != cudaSuccess) {
    info.driverVersion = 0;
    info.driverError = describe(driverStatus);
  } else if (info.driverVersion == 0) {
    info.driverError = "no NVIDIA driver is installed (libcuda.so.1 was not found)";
  }
  (void)cudaGetLastError();

  int count = 0;
  const cudaError_t countStatus = cudaGetDeviceCount(&count);
  if (countStatus != cudaSuccess) {
    info.deviceError = describe(countStatus);
    const char* name = cudaGetErrorName(countStatus);
    info.deviceErrorStatus = name ? name : "";
    (void)cudaGetLastError();
    return info;
  }
  int previous = -1;
  (void)cudaGetDevice(&previous);
  for (int i = 0; i < count; ++i) {
    CudaDeviceInfo device;
    device.index = i;
    cudaDeviceProp prop{};
    const cudaError_t propStatus = cudaGetDeviceProperties(&prop, i);
    if (propStatus != cudaSuccess) {
      device.error = describe(propStatus);
      (void)cudaGetLastError();
    } else {
      device.name = prop.name;
      device.major = prop.major;
      device.minor = prop.minor;
      device.totalMemory = prop.totalGlobalMem;
      device.multiprocessors = prop.multiProcessorCount;
    }
    if (queryFreeMemory && device.error.empty()) {
      size_t freeBytes = 0, totalBytes = 0;
      cudaError_t memStatus = cudaSetDevice(i);
      if (memStatus == cudaSuccess) memStatus = cudaMemGetInfo(&freeBytes, &totalBytes);
      if (memStatus == cudaSuccess) {
        device.freeMemory = static_cast<int64_t>(freeBytes);
      } else {
        device.error = "free memory: " + describe(memStatus);
        (void)cudaGetLastError();
      }
    }
    info.devices.push_back(std::move(device));
  }
  if (previous >= 0) (void)cudaSetDevice(previous);
  return info;
}

}  // namespace sdtrt
