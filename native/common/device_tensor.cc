#include "device_tensor.h"

#include <cstring>
#include <string>

#include "cuda_check.h"
#include "js_class.h"
#include "js_error.h"

namespace sdtrt {

namespace {

// Identifies objects created by this class (napi_type_tag_object, Node-API 8).
constexpr napi_type_tag kDeviceTensorTag = {0x7364747274656e73ULL, 0x6f72000000000001ULL};

// Handed from New() to the constructor (NewFromNative).
struct PendingTensor {
  std::shared_ptr<DeviceBuffer> buffer;
  DType dtype;
  std::vector<int64_t> shape;
  int device;
};

// Copies a tensor's bytes to the host. Holds the buffer (and the JS tensor) until it settles, so a
// dispose() meanwhile frees the memory afterwards.
class SdTensorDownloadWorker : public NativeAsyncWorker {
 public:
  SdTensorDownloadWorker(Napi::Env env, const Napi::Object& tensor, std::shared_ptr<DeviceBuffer> buffer, DType dtype,
                         size_t count, int device)
      : NativeAsyncWorker(env, "SdTensorDownloadWorker", "tensor-download"),
        pinned_(Napi::Persistent(tensor)),
        buffer_(std::move(buffer)),
        dtype_(dtype),
        count_(count),
        device_(device) {}

 protected:
  void Run() override {
    constexpr const char* stage = "tensor-download";
    bytes_.resize(count_ * dtypeSize(dtype_));
    if (bytes_.empty()) return;
    SDTRT_CUDA_CHECK(stage, cudaSetDevice(device_));
    // Synchronous copy: every producer of a DeviceTensor has finished writing it before the tensor
    // reaches JS, and our streams are non-blocking, so this waits for nothing else.
    SDTRT_CUDA_CHECK(stage, cudaMemcpy(bytes_.data(), buffer_->data(), bytes_.size(), cudaMemcpyDeviceToHost));
  }

  Napi::Value Result(Napi::Env env) override {
    Napi::ArrayBuffer storage = Napi::ArrayBuffer::New(env, bytes_.size());
    if (!bytes_.empty()) std::memcpy(storage.Data(), bytes_.data(), bytes_.size());
    switch (dtype_) {
      case DType::kFloat16: return Napi::Uint16Array::New(env, count_, storage, 0);
      case DType::kInt32: return Napi::Int32Array::New(env, count_, storage, 0);
      case DType::kInt64: return Napi::TypedArrayOf<int64_t>::New(env, count_, storage, 0, napi_bigint64_array);
      case DType::kFloat32: break;
    }
    return Napi::Float32Array::New(env, count_, storage, 0);
  }

 private:
  Napi::ObjectReference pinned_;
  std::shared_ptr<DeviceBuffer> buffer_;
  DType dtype_;
  size_t count_;
  int device_;
  std::vector<uint8_t> bytes_;
};

}  // namespace

void DeviceTensor::Init(Napi::Env env, Napi::Object exports) {
  Napi::Function ctor = DefineClass(env, "DeviceTensor",
                                    {
                                        InstanceAccessor<&DeviceTensor::GetDtype>("dtype"),
                                        InstanceAccessor<&DeviceTensor::GetShape>("shape"),
                                        InstanceAccessor<&DeviceTensor::GetByteLength>("byteLength"),
                                        InstanceAccessor<&DeviceTensor::GetDisposed>("disposed"),
                                        InstanceMethod<&DeviceTensor::Dispose>("dispose"),
                                        InstanceMethod<&DeviceTensor::ToHost>("toHost"),
                                    });
  RegisterClass(env, exports, "DeviceTensor", ctor);
}

Napi::Object DeviceTensor::New(Napi::Env env, std::shared_ptr<DeviceBuffer> buffer, DType dtype,
                               std::vector<int64_t> shape, int device) {
  return NewFromNative(env, "DeviceTensor", kDeviceTensorTag, PendingTensor{std::move(buffer), dtype, std::move(shape), device});
}

DeviceTensor* DeviceTensor::FromJs(const Napi::Value& value) { return UnwrapTagged<DeviceTensor>(value, kDeviceTensorTag); }

DeviceTensor::DeviceTensor(const Napi::CallbackInfo& info) : Napi::ObjectWrap<DeviceTensor>(info) {
  PendingTensor pending = TakeNativePayload<PendingTensor>(
      info, "DeviceTensor objects are created by the addon (CLIP encode and similar), not with new");
  buffer_ = std::move(pending.buffer);
  dtype_ = pending.dtype;
  shape_ = std::move(pending.shape);
  device_ = pending.device;
}

int64_t DeviceTensor::elementCount() const {
  int64_t count = 1;
  for (int64_t d : shape_) count *= d;
  return count;
}

Napi::Value DeviceTensor::GetDtype(const Napi::CallbackInfo& info) { return Napi::String::New(info.Env(), dtypeName(dtype_)); }

Napi::Value DeviceTensor::GetShape(const Napi::CallbackInfo& info) {
  Napi::Array shape = Napi::Array::New(info.Env(), shape_.size());
  for (size_t i = 0; i < shape_.size(); ++i) shape.Set(static_cast<uint32_t>(i), Napi::Number::New(info.Env(), static_cast<double>(shape_[i])));
  return shape;
}

Napi::Value DeviceTensor::GetByteLength(const Napi::CallbackInfo& info) {
  return Napi::Number::New(info.Env(), static_cast<double>(elementCount() * static_cast<int64_t>(dtypeSize(dtype_))));
}

Napi::Value DeviceTensor::GetDisposed(const Napi::CallbackInfo& info) { return Napi::Boolean::New(info.Env(), !buffer_); }

Napi::Value DeviceTensor::ToHost(const Napi::CallbackInfo& info) {
  Napi::Env env = info.Env();
  if (!buffer_) throw ToJsError(env, NativeError("ERR_DISPOSED", "tensor-download", "DeviceTensor is disposed"));
  auto* worker = new SdTensorDownloadWorker(env, info.This().As<Napi::Object>(), buffer_, dtype_,
                                            static_cast<size_t>(elementCount()), device_);
  return worker->Start();
}

Napi::Value DeviceTensor::Dispose(const Napi::CallbackInfo& info) {
  buffer_.reset();
  return info.Env().Undefined();
}

}  // namespace sdtrt
