// DeviceTensor: a JS handle on device memory, so data that should stay on the GPU (CLIP
// embeddings from native/trt, fed to the Denoiser) can be passed between native calls without a
// round trip through the host. CUDA builds only.
//
// Ownership: the tensor holds a shared_ptr<DeviceBuffer>. A call that uses a tensor copies that
// shared_ptr (and pins the JS object) for its duration, so dispose() while a call is running frees
// the memory only when the call is done. dispose() is idempotent; a disposed tensor is refused by
// every consumer ("DeviceTensor is disposed").
//
// Created only from C++ (DeviceTensor::New); `new DeviceTensor()` from JS is a TypeError.
//
// tensor.toHost() → Promise<Float32Array | Uint16Array (float16 bits) | Int32Array | BigInt64Array>
// (SdTensorDownloadWorker) copies the values to a new host array: for tests and debugging, not
// for the generation path, where tensors stay on the device.
#pragma once

#include <napi.h>

#include <cstdint>
#include <memory>
#include <vector>

#include "device_buffer.h"
#include "dtype.h"

namespace sdtrt {

class DeviceTensor : public Napi::ObjectWrap<DeviceTensor> {
 public:
  static void Init(Napi::Env env, Napi::Object exports);
  // Wraps `buffer` (on CUDA device `device`) as a JS DeviceTensor. JS thread only.
  static Napi::Object New(Napi::Env env, std::shared_ptr<DeviceBuffer> buffer, DType dtype, std::vector<int64_t> shape,
                          int device);
  // The DeviceTensor behind `value`, or nullptr when `value` is not one (checked with a type tag).
  static DeviceTensor* FromJs(const Napi::Value& value);

  explicit DeviceTensor(const Napi::CallbackInfo& info);

  std::shared_ptr<DeviceBuffer> buffer() const { return buffer_; }  // nullptr once disposed
  DType dtype() const { return dtype_; }
  const std::vector<int64_t>& shape() const { return shape_; }
  int64_t elementCount() const;
  int device() const { return device_; }

 private:
  Napi::Value GetDtype(const Napi::CallbackInfo& info);
  Napi::Value GetShape(const Napi::CallbackInfo& info);
  Napi::Value GetByteLength(const Napi::CallbackInfo& info);
  Napi::Value GetDisposed(const Napi::CallbackInfo& info);
  Napi::Value Dispose(const Napi::CallbackInfo& info);
  Napi::Value ToHost(const Napi::CallbackInfo& info);

  std::shared_ptr<DeviceBuffer> buffer_;
  DType dtype_ = DType::kFloat32;
  std::vector<int64_t> shape_;
  int device_ = 0;
};

}  // namespace sdtrt
