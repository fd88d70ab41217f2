// Small helpers shared by the TensorRT builder and runtime: ownership of TensorRT objects, data
// type and shape conversions, and the error for a failed TensorRT call (with what the logger
// heard).
#pragma once

#include <NvInferRuntime.h>
#include <napi.h>

#include <cstdint>
#include <memory>
#include <string>
#include <vector>

#include "../common/dtype.h"
#include "../common/status.h"
#include "trt_logger.h"

namespace sdtrt::trt {

// TensorRT ≥ 10 objects are released with plain `delete` (destroy() is gone).
template <class T>
using TrtPtr = std::unique_ptr<T>;

// "float32", "float16", "int32", "int64", "int8", "uint8", "bool", "bfloat16", "fp8", …
inline const char* DataTypeName(nvinfer1::DataType type) {
  switch (type) {
    case nvinfer1::DataType::kFLOAT: return "float32";
    case nvinfer1::DataType::kHALF: return "float16";
    case nvinfer1::DataType::kINT32: return "int32";
    case nvinfer1::DataType::kINT64: return "int64";
    case nvinfer1::DataType::kINT8: return "int8";
    case nvinfer1::DataType::kUINT8: return "uint8";
    case nvinfer1::DataType::kBOOL: return "bool";
    case nvinfer1::DataType::kBF16: return "bfloat16";
    case nvinfer1::DataType::kFP8: return "fp8";
    default: return "other";
  }
}

// Bytes per element, or 0 for sub-byte types (int4/fp4), which no tensor we bind uses.
inline size_t DataTypeSize(nvinfer1::DataType type) {
  switch (type) {
    case nvinfer1::DataType::kFLOAT:
    case nvinfer1::DataType::kINT32: return 4;
    case nvinfer1::DataType::kHALF:
    case nvinfer1::DataType::kBF16: return 2;
    case nvinfer1::DataType::kINT64: return 8;
    case nvinfer1::DataType::kINT8:
    case nvinfer1::DataType::kUINT8:
    case nvinfer1::DataType::kBOOL:
    case nvinfer1::DataType::kFP8: return 1;
    default: return 0;
  }
}

// The DType the kernels understand for an engine tensor; throws for the others.
inline DType ToDType(nvinfer1::DataType type, const std::string& stage, const std::string& tensor) {
  switch (type) {
    case nvinfer1::DataType::kFLOAT: return DType::kFloat32;
    case nvinfer1::DataType::kHALF: return DType::kFloat16;
    case nvinfer1::DataType::kINT32: return DType::kInt32;
    case nvinfer1::DataType::kINT64: return DType::kInt64;
    default:
      throw NativeError("ERR_TENSORRT_UNSUPPORTED", stage,
                        "engine tensor " + tensor + " is " + DataTypeName(type) +
                            "; sd-trt binds float32, float16, int32 and int64 tensors only");
  }
}

inline std::vector<int64_t> DimsToVector(const nvinfer1::Dims& dims) {
  std::vector<int64_t> out;
  for (int32_t i = 0; i < dims.nbDims && i < nvinfer1::Dims::MAX_DIMS; ++i) out.push_back(dims.d[i]);
  return out;
}

inline nvinfer1::Dims VectorToDims(const std::vector<int64_t>& v, const std::string& stage, const std::string& tensor) {
  if (v.size() > static_cast<size_t>(nvinfer1::Dims::MAX_DIMS)) {
    throw NativeError("ERR_INVALID_SHAPE", stage, "tensor " + tensor + " has rank " + std::to_string(v.size()) +
                                                      ", TensorRT allows at most " + std::to_string(nvinfer1::Dims::MAX_DIMS));
  }
  nvinfer1::Dims dims{};
  dims.nbDims = static_cast<int32_t>(v.size());
  for (size_t i = 0; i < v.size(); ++i) dims.d[i] = v[i];
  return dims;
}

// "[2, 4, 64, 64]"
inline std::string ShapeString(const std::vector<int64_t>& v) {
  std::string out = "[";
  for (size_t i = 0; i < v.size(); ++i) out += (i ? ", " : "") + std::to_string(v[i]);
  return out + "]";
}

inline int64_t Volume(const std::vector<int64_t>& v) {
  int64_t n = 1;
  for (int64_t d : v) n *= d;
  return n;
}

// A failed TensorRT call: the API that failed, plus the errors TensorRT logged for it.
[[noreturn]] inline void ThrowTrt(const std::string& stage, const std::string& what, const CollectingLogger& logger,
                                  const std::string& code = "ERR_TENSORRT") {
  const std::string heard = logger.RecentErrors();
  throw NativeError(code, stage, what + (heard.empty() ? "" : ": " + heard));
}

// JS array of {severity, message}.
inline Napi::Array LogToJs(Napi::Env env, const std::vector<LogEntry>& entries) {
  Napi::Array out = Napi::Array::New(env, entries.size());
  for (size_t i = 0; i < entries.size(); ++i) {
    Napi::Object e = Napi::Object::New(env);
    e.Set("severity", Napi::String::New(env, SeverityName(entries[i].severity)));
    e.Set("message", Napi::String::New(env, entries[i].message));
    out.Set(static_cast<uint32_t>(i), e);
  }
  return out;
}

inline Napi::Array ShapeToJs(Napi::Env env, const std::vector<int64_t>& shape) {
  Napi::Array out = Napi::Array::New(env, shape.size());
  for (size_t i = 0; i < shape.size(); ++i) out.Set(static_cast<uint32_t>(i), Napi::Number::New(env, static_cast<double>(shape[i])));
  return out;
}

// One I/O tensor of a network or engine.
struct TensorInfo {
  std::string name;
  bool input = true;
  nvinfer1::DataType type = nvinfer1::DataType::kFLOAT;
  std::vector<int64_t> shape;  // -1 for dynamic axes
};

inline Napi::Array TensorsToJs(Napi::Env env, const std::vector<TensorInfo>& tensors) {
  Napi::Array out = Napi::Array::New(env, tensors.size());
  for (size_t i = 0; i < tensors.size(); ++i) {
    Napi::Object t = Napi::Object::New(env);
    t.Set("name", Napi::String::New(env, tensors[i].name));
    t.Set("mode", Napi::String::New(env, tensors[i].input ? "input" : "output"));
    t.Set("dtype", Napi::String::New(env, DataTypeName(tensors[i].type)));
    t.Set("shape", ShapeToJs(env, tensors[i].shape));
    out.Set(static_cast<uint32_t>(i), t);
  }
  return out;
}

}  // namespace sdtrt::trt
