#include "gpu_identity.h"

#include <cuda_runtime_api.h>
#include <dlfcn.h>

#include <mutex>

#include "../common/cuda_check.h"

namespace sdtrt::trt {

namespace {

// NVML's C entry points (nvml.h), declared here so no NVML header or library is needed to build.
using NvmlInitFn = int (*)();
using NvmlShutdownFn = int (*)();
using NvmlDriverVersionFn = int (*)(char* version, unsigned int length);

std::string NvmlDriverVersion() {
  static std::once_flag once;
  static std::string version;
  std::call_once(once, [] {
    void* nvml = dlopen("libnvidia-ml.so.1", RTLD_NOW | RTLD_LOCAL);
    if (nvml == nullptr) return;
    auto init = reinterpret_cast<NvmlInitFn>(dlsym(nvml, "nvmlInit_v2"));
    auto shutdown = reinterpret_cast<NvmlShutdownFn>(dlsym(nvml, "nvmlShutdown"));
    auto driver = reinterpret_cast<NvmlDriverVersionFn>(dlsym(nvml, "nvmlSystemGetDriverVersion"));
    if (init != nullptr && shutdown != nullptr && driver != nullptr && init() == 0) {
      char buffer[96] = {0};
      if (driver(buffer, sizeof(buffer)) == 0) version = buffer;
      shutdown();
    }
    // The library stays loaded: unloading NVML while another user in the process holds it is unsafe.
  });
  return version;
}

}  // namespace

GpuIdentity QueryGpuIdentity(int device, const char* stage) {
  cudaDeviceProp props{};
  SDTRT_CUDA_CHECK(stage, cudaGetDeviceProperties(&props, device));
  GpuIdentity out;
  out.device = device;
  out.name = props.name;
  out.computeCapability = std::to_string(props.major) + "." + std::to_string(props.minor);
  out.totalMemory = static_cast<double>(props.totalGlobalMem);
  out.driverVersion = NvmlDriverVersion();
  if (out.driverVersion.empty()) {
    int cudaDriver = 0;
    SDTRT_CUDA_CHECK(stage, cudaDriverGetVersion(&cudaDriver));
    out.driverVersion = "CUDA " + std::to_string(cudaDriver / 1000) + "." + std::to_string((cudaDriver % 1000) / 10);
  }
  return out;
}

}  // namespace sdtrt::trt
