#include "host_math_js.h"

#include <cstdint>
#include <cstring>
#include <string>

#include "../common/half.h"
#include "../common/js_error.h"
#include "../common/trt_version.h"
#include "embedding_rows.h"
#include "host_math.h"

namespace sdtrt::host {

namespace {

constexpr int64_t kMaxDim = 1 << 16;

DType FloatTypeOption(const Napi::Object& options, const char* key, const std::string& owner) {
  if (!HasOption(options, key)) return DType::kFloat32;
  const std::string value = RequireString(options, key, owner);
  if (value == "float32") return DType::kFloat32;
  if (value == "float16") return DType::kFloat16;
  ThrowRangeError(options.Env(), owner + "." + key + " must be \"float32\" or \"float16\", got \"" + value + "\"");
}

// hostRunProgram({ program, latents, noise, batch, height, width, channels?, guidance?, sampleType?, splitCallRows? })
// → x_M; hostRunProgramStats(same) → { latents: x_M, unetNonFinite, firstNonFiniteEvaluation }.
Napi::Value RunProgram(const Napi::CallbackInfo& info, bool withStats) {
  Napi::Env env = info.Env();
  const std::string owner = "options";
  Napi::Object options = RequireObject(info[0], owner);
  Napi::TypedArray packed = RequireTypedArray(options, "program", owner, napi_float64_array, "Float64Array");
  Napi::TypedArray latents = RequireTypedArray(options, "latents", owner, napi_float32_array, "Float32Array");
  Napi::TypedArray noise = RequireTypedArray(options, "noise", owner, napi_float32_array, "Float32Array");
  AnalyticRunOptions run;
  run.batch = static_cast<int>(RequireInteger(options, "batch", owner, 1, 1024));
  run.height = static_cast<int>(RequireInteger(options, "height", owner, 1, kMaxDim));
  run.width = static_cast<int>(RequireInteger(options, "width", owner, 1, kMaxDim));
  run.channels = static_cast<int>(OptionalInteger(options, "channels", owner, 1, 64, 4));
  run.sampleType = FloatTypeOption(options, "sampleType", owner);
  // Two UNet calls per evaluation (unet_layout.h): 0, batch or 2 · batch rows each (checked by RunProgramAnalytic).
  run.splitCallRows = static_cast<int>(OptionalInteger(options, "splitCallRows", owner, 0, 2048, 0));
  if (HasOption(options, "guidance")) {
    Napi::TypedArray g = RequireTypedArray(options, "guidance", owner, napi_float64_array, "Float64Array");
    if (g.ElementLength() != static_cast<size_t>(run.batch)) {
      ThrowRangeError(env, "options.guidance must hold one scale per image (" + std::to_string(run.batch) + "), got " +
                               std::to_string(g.ElementLength()));
    }
    const double* values = g.As<Napi::Float64Array>().Data();
    for (int b = 0; b < run.batch; ++b) run.guidance.push_back(static_cast<float>(values[b]));
  }
  const size_t n = static_cast<size_t>(run.batch) * run.channels * run.height * run.width;
  if (latents.ElementLength() != n) {
    ThrowRangeError(env, "options.latents must hold batch·channels·height·width = " + std::to_string(n) +
                             " values, got " + std::to_string(latents.ElementLength()));
  }
  try {
    const program::Program program =
        program::Unpack(packed.As<Napi::Float64Array>().Data(), packed.ElementLength());
    LoopStats stats;
    const std::vector<float> result =
        RunProgramAnalytic(program, latents.As<Napi::Float32Array>().Data(), noise.As<Napi::Float32Array>().Data(),
                           noise.ElementLength(), run, &stats);
    Napi::Float32Array out = Napi::Float32Array::New(env, result.size());
    std::memcpy(out.Data(), result.data(), result.size() * sizeof(float));
    if (!withStats) return out;
    Napi::Object o = Napi::Object::New(env);
    o.Set("latents", out);
    o.Set("unetNonFinite", Napi::Number::New(env, static_cast<double>(stats.nonFinite)));
    o.Set("firstNonFiniteEvaluation", Napi::Number::New(env, stats.firstNonFinite));
    return o;
  } catch (const NativeError& e) {
    throw ToJsError(env, e);
  }
}

// hostVaeToUint8({ decoded: Float32Array | Uint16Array (float16 bits), batch, channels?, height, width })
Napi::Value HostVaeToUint8(const Napi::CallbackInfo& info) {
  Napi::Env env = info.Env();
  const VaeToUint8Options o = ReadVaeToUint8Options(RequireObject(info[0], "options"));
  o.CheckLength(env);
  const uint8_t* src = static_cast<const uint8_t*>(o.decoded.ArrayBuffer().Data()) + o.decoded.ByteOffset();
  Napi::Uint8Array pixels = Napi::Uint8Array::New(env, static_cast<size_t>(o.batch) * o.height * o.width * 3);
  const VaeFlagsCount counts = VaeToUint8(src, o.type, o.batch, o.channels, o.height, o.width, pixels.Data());
  Napi::Object result = Napi::Object::New(env);
  result.Set("pixels", pixels);
  result.Set("nanCount", Napi::Number::New(env, static_cast<double>(counts.nanCount)));
  result.Set("infCount", Napi::Number::New(env, static_cast<double>(counts.infCount)));
  return result;
}

// hostScaleCast({ values, factor, op, dtype? }) → Float32Array | Uint16Array (float16 bits)
Napi::Value HostScaleCast(const Napi::CallbackInfo& info) {
  Napi::Env env = info.Env();
  const ScaleCastOptions o = ReadScaleCastOptions(RequireObject(info[0], "options"));
  const size_t count = o.values.ElementLength();
  Napi::TypedArray out = NewFloatArray(env, o.dstType, count);
  const uint8_t* src = static_cast<const uint8_t*>(o.values.ArrayBuffer().Data()) + o.values.ByteOffset();
  uint8_t* dst = static_cast<uint8_t*>(out.ArrayBuffer().Data()) + out.ByteOffset();
  ScaleCast(src, o.srcType, o.factor, o.op, dst, o.dstType, count);
  return out;
}

Napi::Value HostFloatToHalf(const Napi::CallbackInfo& info) {
  Napi::Env env = info.Env();
  if (!info[0].IsTypedArray() || info[0].As<Napi::TypedArray>().TypedArrayType() != napi_float32_array) {
    ThrowTypeError(env, "values must be a Float32Array, got " + DescribeJsValue(info[0]));
  }
  Napi::Float32Array in = info[0].As<Napi::Float32Array>();
  Napi::Uint16Array out = Napi::Uint16Array::New(env, in.ElementLength());
  for (size_t i = 0; i < in.ElementLength(); ++i) out[i] = floatToHalfBits(in[i]);
  return out;
}

Napi::Value HostHalfToFloat(const Napi::CallbackInfo& info) {
  Napi::Env env = info.Env();
  if (!info[0].IsTypedArray() || info[0].As<Napi::TypedArray>().TypedArrayType() != napi_uint16_array) {
    ThrowTypeError(env, "bits must be a Uint16Array of float16 bits, got " + DescribeJsValue(info[0]));
  }
  Napi::Uint16Array in = info[0].As<Napi::Uint16Array>();
  Napi::Float32Array out = Napi::Float32Array::New(env, in.ElementLength());
  for (size_t i = 0; i < in.ElementLength(); ++i) out[i] = halfBitsToFloat(in[i]);
  return out;
}

}  // namespace

VaeToUint8Options ReadVaeToUint8Options(const Napi::Object& options) {
  const std::string owner = "options";
  Napi::Value decodedValue = options.Get("decoded");
  VaeToUint8Options out;
  if (decodedValue.IsTypedArray() && decodedValue.As<Napi::TypedArray>().TypedArrayType() == napi_float32_array) {
    out.type = DType::kFloat32;
  } else if (decodedValue.IsTypedArray() && decodedValue.As<Napi::TypedArray>().TypedArrayType() == napi_uint16_array) {
    out.type = DType::kFloat16;
  } else {
    ThrowTypeError(options.Env(), "options.decoded must be a Float32Array or a Uint16Array of float16 bits, got " +
                                      DescribeJsValue(decodedValue));
  }
  out.decoded = decodedValue.As<Napi::TypedArray>();
  out.batch = static_cast<int>(RequireInteger(options, "batch", owner, 1, 1024));
  out.channels = static_cast<int>(OptionalInteger(options, "channels", owner, 3, 64, 3));
  out.height = static_cast<int>(RequireInteger(options, "height", owner, 1, kMaxDim));
  out.width = static_cast<int>(RequireInteger(options, "width", owner, 1, kMaxDim));
  return out;
}

void VaeToUint8Options::CheckLength(Napi::Env env) const {
  const size_t expected = static_cast<size_t>(batch) * channels * height * width;
  if (decoded.ElementLength() != expected) {
    ThrowRangeError(env, "options.decoded must hold batch·channels·height·width = " + std::to_string(expected) +
                             " values, got " + std::to_string(decoded.ElementLength()));
  }
}

ScaleCastOptions ReadScaleCastOptions(const Napi::Object& options) {
  const std::string owner = "options";
  Napi::Env env = options.Env();
  Napi::Value values = options.Get("values");
  ScaleCastOptions out;
  if (values.IsTypedArray() && values.As<Napi::TypedArray>().TypedArrayType() == napi_float32_array) {
    out.srcType = DType::kFloat32;
  } else if (values.IsTypedArray() && values.As<Napi::TypedArray>().TypedArrayType() == napi_uint16_array) {
    out.srcType = DType::kFloat16;
  } else {
    ThrowTypeError(env, "options.values must be a Float32Array or a Uint16Array of float16 bits, got " + DescribeJsValue(values));
  }
  out.values = values.As<Napi::TypedArray>();
  out.factor = static_cast<float>(RequireNumber(options, "factor", owner));
  const std::string op = RequireString(options, "op", owner);
  if (op == "divide") {
    out.op = vae::ScaleOp::kDivide;
  } else if (op == "multiply") {
    out.op = vae::ScaleOp::kMultiply;
  } else {
    ThrowRangeError(env, "options.op must be \"divide\" or \"multiply\", got \"" + op + "\"");
  }
  out.dstType = FloatTypeOption(options, "dtype", owner);
  return out;
}

Napi::TypedArray NewFloatArray(Napi::Env env, DType type, size_t count) {
  if (type == DType::kFloat16) return Napi::Uint16Array::New(env, count);
  return Napi::Float32Array::New(env, count);
}

static Napi::Value HostRunProgram(const Napi::CallbackInfo& info) { return RunProgram(info, false); }
static Napi::Value HostRunProgramStats(const Napi::CallbackInfo& info) { return RunProgram(info, true); }

// hostTensorRtVersionProblem(library, headers) → "" or why a libnvinfer reporting `library`
// (major·10000 + minor·100 + patch) must not be used with headers of version `headers`: the rule
// native/trt applies when it loads TensorRT, testable without TensorRT (common/trt_version.h).
static Napi::Value HostTensorRtVersionProblem(const Napi::CallbackInfo& info) {
  Napi::Env env = info.Env();
  if (!info[0].IsNumber() || !info[1].IsNumber()) ThrowTypeError(env, "hostTensorRtVersionProblem(library, headers) takes two numbers");
  const auto library = static_cast<int32_t>(info[0].As<Napi::Number>().Int32Value());
  const auto headers = static_cast<int32_t>(info[1].As<Napi::Number>().Int32Value());
  return Napi::String::New(env, trt::LibraryVersionProblem(library, headers, "libnvinfer.so." + std::to_string(library / 10000)));
}

// hostCheckEmbeddingRows({ table: Int32Array, evaluations, unetBatch, bankRows, uncondUnetRows?, uncondBankRows? }) → undefined: the
// checks Denoiser.run applies to options.embeddingRows (embedding_rows.h), testable without a GPU.
static Napi::Value HostCheckEmbeddingRows(const Napi::CallbackInfo& info) {
  Napi::Env env = info.Env();
  const std::string owner = "options";
  Napi::Object options = RequireObject(info[0], owner);
  Napi::TypedArray table = RequireTypedArray(options, "table", owner, napi_int32_array, "Int32Array");
  const int evaluations = static_cast<int>(RequireInteger(options, "evaluations", owner, 1, program::kMaxEvals));
  const int unetBatch = static_cast<int>(RequireInteger(options, "unetBatch", owner, 1, 2048));
  const int bankRows = static_cast<int>(RequireInteger(options, "bankRows", owner, 0, INT32_MAX));
  program::BankHalves halves;
  halves.uncondUnetRows = static_cast<int>(OptionalInteger(options, "uncondUnetRows", owner, 0, 2048, 0));
  halves.uncondBankRows = static_cast<int>(OptionalInteger(options, "uncondBankRows", owner, 0, INT32_MAX, 0));
  try {
    (void)program::CheckEmbeddingRows(table.As<Napi::Int32Array>().Data(), table.ElementLength(), evaluations, unetBatch, bankRows, halves);
  } catch (const NativeError& e) {
    throw ToJsError(env, e);
  }
  return env.Undefined();
}

void RegisterHostMath(Napi::Env env, Napi::Object exports) {
  exports.Set("hostCheckEmbeddingRows", Napi::Function::New(env, HostCheckEmbeddingRows, "hostCheckEmbeddingRows"));
  exports.Set("hostRunProgramStats", Napi::Function::New(env, HostRunProgramStats, "hostRunProgramStats"));
  exports.Set("hostTensorRtVersionProblem", Napi::Function::New(env, HostTensorRtVersionProblem, "hostTensorRtVersionProblem"));
  exports.Set("hostScaleCast", Napi::Function::New(env, HostScaleCast, "hostScaleCast"));
  exports.Set("hostRunProgram", Napi::Function::New(env, HostRunProgram, "hostRunProgram"));
  exports.Set("hostVaeToUint8", Napi::Function::New(env, HostVaeToUint8, "hostVaeToUint8"));
  exports.Set("hostFloatToHalf", Napi::Function::New(env, HostFloatToHalf, "hostFloatToHalf"));
  exports.Set("hostHalfToFloat", Napi::Function::New(env, HostHalfToFloat, "hostHalfToFloat"));
}

}  // namespace sdtrt::host
