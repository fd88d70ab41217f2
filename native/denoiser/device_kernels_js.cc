#include "device_kernels_js.h"

#include <algorithm>
#include <cstring>
#include <string>
#include <vector>

#include "../common/cuda_check.h"
#include "../common/device_buffer.h"
#include "../common/js_error.h"
#include "host_math_js.h"
#include "kernels.h"

namespace sdtrt {

namespace {

// One stream per call: these are test entry points, not a hot path.
class ScopedStream {
 public:
  explicit ScopedStream(const char* stage) { SDTRT_CUDA_CHECK(stage, cudaStreamCreateWithFlags(&stream_, cudaStreamNonBlocking)); }
  ~ScopedStream() {
    if (stream_ != nullptr) (void)cudaStreamDestroy(stream_);
  }
  cudaStream_t get() const { return stream_; }

 private:
  cudaStream_t stream_ = nullptr;
};

class SdVaeToUint8Worker : public NativeAsyncWorker {
 public:
  SdVaeToUint8Worker(Napi::Env env, Napi::TypedArray decoded, DType type, int batch, int channels, int height, int width,
                     int device)
      : NativeAsyncWorker(env, "SdVaeToUint8Worker", "vae-to-uint8"),
        pinned_(Napi::Persistent(decoded.As<Napi::Object>())),
        src_(static_cast<const uint8_t*>(decoded.ArrayBuffer().Data()) + decoded.ByteOffset()),
        srcBytes_(decoded.ByteLength()),
        type_(type),
        batch_(batch),
        channels_(channels),
        height_(height),
        width_(width),
        device_(device) {}

 protected:
  void Run() override {
    constexpr const char* stage = "vae-to-uint8";
    SDTRT_CUDA_CHECK(stage, cudaSetDevice(device_));
    ScopedStream stream(stage);
    const size_t outBytes = static_cast<size_t>(batch_) * height_ * width_ * 3;
    DeviceBuffer src(srcBytes_, stage), dst(outBytes, stage), counters(2 * sizeof(unsigned long long), stage);
    SDTRT_CUDA_CHECK(stage, cudaMemcpyAsync(src.data(), src_, srcBytes_, cudaMemcpyHostToDevice, stream.get()));
    SDTRT_CUDA_CHECK(stage, cudaMemsetAsync(counters.data(), 0, counters.bytes(), stream.get()));
    SDTRT_CUDA_CHECK(stage, kernels::launchVaeToUint8(src.data(), type_, batch_, channels_, height_, width_,
                                                      dst.as<uint8_t>(), counters.as<unsigned long long>(), stream.get()));
    pixels_.resize(outBytes);
    SDTRT_CUDA_CHECK(stage, cudaMemcpyAsync(pixels_.data(), dst.data(), outBytes, cudaMemcpyDeviceToHost, stream.get()));
    SDTRT_CUDA_CHECK(stage, cudaMemcpyAsync(counts_, counters.data(), sizeof counts_, cudaMemcpyDeviceToHost, stream.get()));
    SDTRT_CUDA_CHECK(stage, cudaStreamSynchronize(stream.get()));
  }

  Napi::Value Result(Napi::Env env) override {
    Napi::Object out = Napi::Object::New(env);
    Napi::Uint8Array pixels = Napi::Uint8Array::New(env, pixels_.size());
    std::memcpy(pixels.Data(), pixels_.data(), pixels_.size());
    out.Set("pixels", pixels);
    out.Set("nanCount", Napi::Number::New(env, static_cast<double>(counts_[0])));
    out.Set("infCount", Napi::Number::New(env, static_cast<double>(counts_[1])));
    return out;
  }

 private:
  Napi::ObjectReference pinned_;
  const uint8_t* src_;
  size_t srcBytes_;
  DType type_;
  int batch_, channels_, height_, width_, device_;
  std::vector<uint8_t> pixels_;
  unsigned long long counts_[2] = {0, 0};
};

class SdFloatToHalfWorker : public NativeAsyncWorker {
 public:
  SdFloatToHalfWorker(Napi::Env env, Napi::Float32Array values, int device)
      : NativeAsyncWorker(env, "SdFloatToHalfWorker", "float-to-half"),
        pinned_(Napi::Persistent(values.As<Napi::Object>())),
        src_(values.Data()),
        count_(values.ElementLength()),
        device_(device) {}

 protected:
  void Run() override {
    constexpr const char* stage = "float-to-half";
    SDTRT_CUDA_CHECK(stage, cudaSetDevice(device_));
    ScopedStream stream(stage);
    DeviceBuffer src(count_ * sizeof(float), stage), dst(count_ * sizeof(uint16_t), stage);
    bits_.resize(count_);
    if (count_ > 0) {
      SDTRT_CUDA_CHECK(stage, cudaMemcpyAsync(src.data(), src_, count_ * sizeof(float), cudaMemcpyHostToDevice, stream.get()));
      SDTRT_CUDA_CHECK(stage, kernels::launchCast(src.data(), DType::kFloat32, dst.data(), DType::kFloat16, count_, stream.get()));
      SDTRT_CUDA_CHECK(stage, cudaMemcpyAsync(bits_.data(), dst.data(), count_ * sizeof(uint16_t), cudaMemcpyDeviceToHost,
                                              stream.get()));
    }
    SDTRT_CUDA_CHECK(stage, cudaStreamSynchronize(stream.get()));
  }

  Napi::Value Result(Napi::Env env) override {
    Napi::Uint16Array out = Napi::Uint16Array::New(env, bits_.size());
    if (!bits_.empty()) std::memcpy(out.Data(), bits_.data(), bits_.size() * sizeof(uint16_t));
    return out;
  }

 private:
  Napi::ObjectReference pinned_;
  const float* src_;
  size_t count_;
  int device_;
  std::vector<uint16_t> bits_;
};

class SdScaleCastWorker : public NativeAsyncWorker {
 public:
  SdScaleCastWorker(Napi::Env env, const host::ScaleCastOptions& o, int device)
      : NativeAsyncWorker(env, "SdScaleCastWorker", "scale-cast"),
        pinned_(Napi::Persistent(o.values.As<Napi::Object>())),
        src_(static_cast<const uint8_t*>(o.values.ArrayBuffer().Data()) + o.values.ByteOffset()),
        options_(o),
        count_(o.values.ElementLength()),
        device_(device) {
    options_.values = Napi::TypedArray();  // a handle of this call's scope: pinned_ holds the array
  }

 protected:
  void Run() override {
    constexpr const char* stage = "scale-cast";
    out_.resize(count_ * dtypeSize(options_.dstType));
    if (count_ == 0) return;
    SDTRT_CUDA_CHECK(stage, cudaSetDevice(device_));
    ScopedStream stream(stage);
    const size_t inBytes = count_ * dtypeSize(options_.srcType);
    DeviceBuffer src(inBytes, stage), dst(out_.size(), stage);
    SDTRT_CUDA_CHECK(stage, cudaMemcpyAsync(src.data(), src_, inBytes, cudaMemcpyHostToDevice, stream.get()));
    SDTRT_CUDA_CHECK(stage, kernels::launchScaleCast(src.data(), options_.srcType, options_.factor, options_.op, dst.data(),
                                                     options_.dstType, count_, stream.get()));
    SDTRT_CUDA_CHECK(stage, cudaMemcpyAsync(out_.data(), dst.data(), out_.size(), cudaMemcpyDeviceToHost, stream.get()));
    SDTRT_CUDA_CHECK(stage, cudaStreamSynchronize(stream.get()));
  }

  Napi::Value Result(Napi::Env env) override {
    Napi::TypedArray out = host::NewFloatArray(env, options_.dstType, count_);
    if (!out_.empty()) std::memcpy(static_cast<uint8_t*>(out.ArrayBuffer().Data()) + out.ByteOffset(), out_.data(), out_.size());
    return out;
  }

 private:
  Napi::ObjectReference pinned_;
  const uint8_t* src_;
  host::ScaleCastOptions options_;
  size_t count_;
  int device_;
  std::vector<uint8_t> out_;
};

Napi::Value DeviceScaleCast(const Napi::CallbackInfo& info) {
  Napi::Object options = RequireObject(info[0], "options");
  const host::ScaleCastOptions o = host::ReadScaleCastOptions(options);
  const int device = static_cast<int>(OptionalInteger(options, "device", "options", 0, 1024, 0));
  auto* worker = new SdScaleCastWorker(info.Env(), o, device);
  return worker->Start();
}

// A1111's emphasis kernel on float32 values [rows][77][hidden] (the TensorRT text encoder's path).
class SdEmphasisWorker : public NativeAsyncWorker {
 public:
  SdEmphasisWorker(Napi::Env env, std::vector<float> z, std::vector<float> multipliers, std::vector<int32_t> groups, int rows, int hidden,
                   bool restoreMean, int device)
      : NativeAsyncWorker(env, "SdEmphasisWorker", "emphasis"),
        z_(std::move(z)),
        multipliers_(std::move(multipliers)),
        groups_(std::move(groups)),
        rows_(rows),
        hidden_(hidden),
        restoreMean_(restoreMean),
        device_(device) {}

 protected:
  void Run() override {
    constexpr const char* stage = "emphasis";
    SDTRT_CUDA_CHECK(stage, cudaSetDevice(device_));
    ScopedStream stream(stage);
    DeviceBuffer z(std::max<size_t>(z_.size() * sizeof(float), 1), stage), m(std::max<size_t>(multipliers_.size() * sizeof(float), 1), stage);
    SDTRT_CUDA_CHECK(stage, cudaMemcpyAsync(z.data(), z_.data(), z_.size() * sizeof(float), cudaMemcpyHostToDevice, stream.get()));
    SDTRT_CUDA_CHECK(stage, cudaMemcpyAsync(m.data(), multipliers_.data(), multipliers_.size() * sizeof(float), cudaMemcpyHostToDevice, stream.get()));
    kernels::EmphasisGroups groups;
    DeviceBuffer ids, sums;
    if (!groups_.empty()) {
      ids.Allocate(groups_.size() * sizeof(int32_t), stage);
      sums.Allocate(2 * groups_.size() * sizeof(double), stage);
      SDTRT_CUDA_CHECK(stage, cudaMemcpyAsync(ids.data(), groups_.data(), groups_.size() * sizeof(int32_t), cudaMemcpyHostToDevice, stream.get()));
      groups = {ids.as<int32_t>(), sums.as<double>()};
    }
    SDTRT_CUDA_CHECK(stage, kernels::launchEmphasis(z.data(), DType::kFloat32, m.as<float>(), rows_, 77, hidden_, restoreMean_, groups, stream.get()));
    SDTRT_CUDA_CHECK(stage, cudaMemcpyAsync(z_.data(), z.data(), z_.size() * sizeof(float), cudaMemcpyDeviceToHost, stream.get()));
    SDTRT_CUDA_CHECK(stage, cudaStreamSynchronize(stream.get()));
  }

  Napi::Value Result(Napi::Env env) override {
    Napi::Float32Array out = Napi::Float32Array::New(env, z_.size());
    if (!z_.empty()) std::memcpy(out.Data(), z_.data(), z_.size() * sizeof(float));
    return out;
  }

 private:
  std::vector<float> z_, multipliers_;
  std::vector<int32_t> groups_;
  int rows_, hidden_;
  bool restoreMean_;
  int device_;
};

Napi::Value DeviceEmphasis(const Napi::CallbackInfo& info) {
  Napi::Env env = info.Env();
  const std::string owner = "options";
  Napi::Object options = RequireObject(info[0], owner);
  Napi::TypedArray z = RequireTypedArray(options, "z", owner, napi_float32_array, "Float32Array");
  Napi::TypedArray m = RequireTypedArray(options, "multipliers", owner, napi_float32_array, "Float32Array");
  const int hidden = static_cast<int>(RequireInteger(options, "hidden", owner, 1, 1 << 16));
  const int rows = static_cast<int>(m.ElementLength() / 77);
  if (m.ElementLength() != static_cast<size_t>(rows) * 77 || z.ElementLength() != static_cast<size_t>(rows) * 77 * hidden) {
    ThrowRangeError(env, "options.multipliers must hold rows × 77 values and options.z rows × 77 × hidden");
  }
  const std::string mode = RequireString(options, "mode", owner);
  if (mode != "original" && mode != "no-norm") ThrowRangeError(env, "options.mode must be \"original\" or \"no-norm\", got \"" + mode + "\"");
  const int device = static_cast<int>(OptionalInteger(options, "device", owner, 0, 1024, 0));
  // options.groups: Int32Array [rows], rows of one id restore one mean (kernels::EmphasisGroups).
  std::vector<int32_t> groups;
  if (HasOption(options, "groups")) {
    Napi::TypedArray g = RequireTypedArray(options, "groups", owner, napi_int32_array, "Int32Array");
    if (g.ElementLength() != static_cast<size_t>(rows)) ThrowRangeError(env, "options.groups must hold one group id per row (" + std::to_string(rows) + ")");
    groups.assign(g.As<Napi::Int32Array>().Data(), g.As<Napi::Int32Array>().Data() + rows);
  }
  const float* zp = z.As<Napi::Float32Array>().Data();
  const float* mp = m.As<Napi::Float32Array>().Data();
  auto* worker = new SdEmphasisWorker(env, std::vector<float>(zp, zp + z.ElementLength()), std::vector<float>(mp, mp + m.ElementLength()),
                                      std::move(groups), rows, hidden, mode == "original", device);
  return worker->Start();
}

Napi::Value DeviceVaeToUint8(const Napi::CallbackInfo& info) {
  Napi::Env env = info.Env();
  const std::string owner = "options";
  Napi::Object options = RequireObject(info[0], owner);
  const host::VaeToUint8Options o = host::ReadVaeToUint8Options(options);
  const int device = static_cast<int>(OptionalInteger(options, "device", owner, 0, 1024, 0));
  o.CheckLength(env);
  auto* worker = new SdVaeToUint8Worker(env, o.decoded, o.type, o.batch, o.channels, o.height, o.width, device);
  return worker->Start();
}

Napi::Value DeviceFloatToHalf(const Napi::CallbackInfo& info) {
  Napi::Env env = info.Env();
  if (!info[0].IsTypedArray() || info[0].As<Napi::TypedArray>().TypedArrayType() != napi_float32_array) {
    ThrowTypeError(env, "values must be a Float32Array, got " + DescribeJsValue(info[0]));
  }
  int device = 0;
  if (info.Length() > 1 && !info[1].IsUndefined()) {
    if (!info[1].IsNumber()) ThrowTypeError(env, "device must be an integer, got " + DescribeJsValue(info[1]));
    device = info[1].As<Napi::Number>().Int32Value();
  }
  auto* worker = new SdFloatToHalfWorker(env, info[0].As<Napi::Float32Array>(), device);
  return worker->Start();
}

}  // namespace

void RegisterDeviceKernels(Napi::Env env, Napi::Object exports) {
  exports.Set("deviceVaeToUint8", Napi::Function::New(env, DeviceVaeToUint8, "deviceVaeToUint8"));
  exports.Set("deviceFloatToHalf", Napi::Function::New(env, DeviceFloatToHalf, "deviceFloatToHalf"));
  exports.Set("deviceScaleCast", Napi::Function::New(env, DeviceScaleCast, "deviceScaleCast"));
  exports.Set("deviceEmphasis", Napi::Function::New(env, DeviceEmphasis, "deviceEmphasis"));
}

}  // namespace sdtrt
