// RAII owner of one device allocation (CUDA builds only). Movable, not copyable; share it with
// std::shared_ptr when several objects (a DeviceTensor and the worker using it) need it alive.
#pragma once

#include <cuda_runtime_api.h>

#include <cstddef>
#include <utility>

#include "cuda_check.h"

namespace sdtrt {

class DeviceBuffer {
 public:
  DeviceBuffer() = default;
  // Allocates `bytes` on the current device; throws NativeError (ERR_CUDA) naming `stage`.
  DeviceBuffer(size_t bytes, const char* stage) { Allocate(bytes, stage); }
  ~DeviceBuffer() { Free(); }
  DeviceBuffer(const DeviceBuffer&) = delete;
  DeviceBuffer& operator=(const DeviceBuffer&) = delete;
  DeviceBuffer(DeviceBuffer&& other) noexcept { *this = std::move(other); }
  DeviceBuffer& operator=(DeviceBuffer&& other) noexcept {
    if (this != &other) {
      Free();
      data_ = std::exchange(other.data_, nullptr);
      bytes_ = std::exchange(other.bytes_, 0);
    }
    return *this;
  }

  void Allocate(size_t bytes, const char* stage) {
    Free();
    if (bytes == 0) return;
    void* p = nullptr;
    SDTRT_CUDA_CHECK(stage, cudaMalloc(&p, bytes));
    data_ = p;
    bytes_ = bytes;
  }
  // Keeps the allocation when it is already large enough; returns true when the address changed.
  bool Reserve(size_t bytes, const char* stage) {
    if (bytes <= bytes_ && data_ != nullptr) return false;
    Allocate(bytes, stage);
    return true;
  }
  void Free() noexcept {
    // cudaFree can fail at process exit once the runtime is unloading; there is nothing left to do then.
    if (data_ != nullptr) (void)cudaFree(data_);
    data_ = nullptr;
    bytes_ = 0;
  }

  void* data() const noexcept { return data_; }
  template <class T>
  T* as() const noexcept {
    return static_cast<T*>(data_);
  }
  size_t bytes() const noexcept { return bytes_; }

 private:
  void* data_ = nullptr;
  size_t bytes_ = 0;
};

}  // namespace sdtrt
