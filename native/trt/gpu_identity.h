// The GPU an engine is built for, as recorded in manifest.json: name, compute capability and the
// driver version. The driver's own version string ("580.65.06") comes from NVML, dlopen()ed like
// TensorRT so nothing is linked; without NVML the CUDA driver API version ("CUDA 13.0") is used.
#pragma once

#include <string>

namespace sdtrt::trt {

struct GpuIdentity {
  int device = 0;
  std::string name;
  std::string computeCapability;  // "8.9"
  std::string driverVersion;      // "580.65.06" or "CUDA 13.0"
  double totalMemory = 0;
};

// Reads device `device`'s identity. Throws NativeError(ERR_CUDA, stage, …) when CUDA cannot see it.
GpuIdentity QueryGpuIdentity(int device, const char* stage);

}  // namespace sdtrt::trt
