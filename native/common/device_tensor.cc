#include "device_tensor.h"

#include "js_class.h"

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

}  // namespace

void DeviceTensor::Init(Napi::Env env, Napi::Object exports) {
  Napi::Function ctor = DefineClass(env, "DeviceTensor",
                                    {
                                        InstanceAccessor<&DeviceTensor::GetDtype>("dtype"),
                                        InstanceAccessor<&DeviceTensor::GetShape>("shape"),
                                        InstanceAccessor<&DeviceTensor::GetByteLength>("byteLength"),
                                        InstanceAccessor<&DeviceTensor::GetDisposed>("disposed"),
                                        InstanceMethod<&DeviceTensor::Dispose>("dispose"),
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

Napi::Value DeviceTensor::Dispose(const Napi::CallbackInfo& info) {
  buffer_.reset();
  return info.Env().Undefined();
}

}  // namespace sdtrt
