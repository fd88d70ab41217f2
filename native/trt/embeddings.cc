#include "embeddings.h"

#include <cuda_runtime_api.h>

#include <memory>
#include <string>
#include <vector>

#include "../common/cuda_check.h"
#include "../common/device_tensor.h"
#include "../common/js_error.h"
#include "../denoiser/kernels.h"

namespace sdtrt::trt {

namespace {

constexpr const char* kStage = "embeddings";

struct Part {
  std::shared_ptr<DeviceBuffer> buffer;
  DType dtype;
  size_t count;
};

class SdConcatEmbeddingsWorker : public NativeAsyncWorker {
 public:
  SdConcatEmbeddingsWorker(Napi::Env env, std::vector<Part> parts, std::vector<Napi::Value> pinned, DType dtype,
                           std::vector<int64_t> shape, int device)
      : NativeAsyncWorker(env, "SdConcatEmbeddingsWorker", kStage),
        parts_(std::move(parts)),
        dtype_(dtype),
        shape_(std::move(shape)),
        device_(device) {
    for (const Napi::Value& v : pinned) pinned_.push_back(Napi::Persistent(v.As<Napi::Object>()));
  }

 protected:
  void Run() override {
    SDTRT_CUDA_CHECK(kStage, cudaSetDevice(device_));
    size_t total = 0;
    for (const Part& p : parts_) total += p.count;
    // The result is a new tensor (outputs are never views of reused memory), so it is allocated per
    // call; the work runs on this libuv thread's per-thread default stream rather than a stream
    // created and destroyed per call. (The Denoiser also takes the parts as a list and joins them
    // into its own embedding buffer, which needs neither.)
    result_ = std::make_shared<DeviceBuffer>(total * dtypeSize(dtype_), kStage);
    const cudaStream_t stream = cudaStreamPerThread;
    auto* dst = result_->as<uint8_t>();
    for (const Part& p : parts_) {
      if (p.dtype == dtype_) {
        SDTRT_CUDA_CHECK(kStage, cudaMemcpyAsync(dst, p.buffer->data(), p.count * dtypeSize(dtype_), cudaMemcpyDeviceToDevice, stream));
      } else {
        SDTRT_CUDA_CHECK(kStage, kernels::launchCast(p.buffer->data(), p.dtype, dst, dtype_, p.count, stream));
      }
      dst += p.count * dtypeSize(dtype_);
    }
    SDTRT_CUDA_CHECK(kStage, cudaStreamSynchronize(stream));
  }

  Napi::Value Result(Napi::Env env) override { return DeviceTensor::New(env, std::move(result_), dtype_, shape_, device_); }

 private:
  std::vector<Part> parts_;
  std::vector<Napi::ObjectReference> pinned_;
  DType dtype_;
  std::vector<int64_t> shape_;
  int device_;
  std::shared_ptr<DeviceBuffer> result_;
};

Napi::Value ConcatEmbeddings(const Napi::CallbackInfo& info) {
  Napi::Env env = info.Env();
  if (!info[0].IsArray() || info[0].As<Napi::Array>().Length() == 0) {
    ThrowTypeError(env, "parts must be a non-empty array of DeviceTensor, got " + DescribeJsValue(info[0]));
  }
  Napi::Object options = RequireObject(info[1], "options");
  const std::string type = RequireString(options, "dtype", "options");
  DType dtype;
  if (type == "float32") {
    dtype = DType::kFloat32;
  } else if (type == "float16") {
    dtype = DType::kFloat16;
  } else {
    ThrowRangeError(env, "options.dtype must be \"float32\" or \"float16\", got \"" + type + "\"");
  }
  Napi::Array list = info[0].As<Napi::Array>();
  std::vector<Part> parts;
  std::vector<Napi::Value> pinned;
  std::vector<int64_t> shape;
  int device = -1;
  for (uint32_t i = 0; i < list.Length(); ++i) {
    Napi::Value v = list.Get(i);
    DeviceTensor* t = DeviceTensor::FromJs(v);
    const std::string name = "parts[" + std::to_string(i) + "]";
    if (t == nullptr) ThrowTypeError(env, name + " must be a DeviceTensor, got " + DescribeJsValue(v));
    if (!t->buffer()) throw ToJsError(env, NativeError("ERR_DISPOSED", kStage, name + ": DeviceTensor is disposed"));
    if (t->dtype() != DType::kFloat32 && t->dtype() != DType::kFloat16) {
      ThrowTypeError(env, name + " must hold float32 or float16 embeddings, got " + dtypeName(t->dtype()));
    }
    if (t->shape().size() != 3) ThrowRangeError(env, name + " must have shape [rows, 77 · chunks, hidden]");
    if (shape.empty()) {
      shape = t->shape();
      shape[0] = 0;
      device = t->device();
    } else if (t->shape()[1] != shape[1] || t->shape()[2] != shape[2] || t->device() != device) {
      ThrowRangeError(env, name + " has another sequence length, hidden size or device than parts[0]");
    }
    shape[0] += t->shape()[0];
    parts.push_back({t->buffer(), t->dtype(), static_cast<size_t>(t->elementCount())});
    pinned.push_back(v);
  }
  auto* worker = new SdConcatEmbeddingsWorker(env, std::move(parts), std::move(pinned), dtype, std::move(shape), device);
  return worker->Start();
}

}  // namespace

void RegisterEmbeddings(Napi::Env env, Napi::Object target) {
  target.Set("concatEmbeddings", Napi::Function::New(env, ConcatEmbeddings, "concatEmbeddings"));
}

}  // namespace sdtrt::trt
