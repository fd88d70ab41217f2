#include "js_error.h"

#include <cmath>
#include <new>
#include <stdexcept>

namespace sdtrt {

ErrorInfo CaptureCurrentException(const std::string& stage, const std::string& api) {
  ErrorInfo info;
  info.stage = stage;
  try {
    throw;
  } catch (const NativeError& e) {
    info.code = e.code();
    info.stage = e.stage();
    info.status = e.status();
    info.message = e.what();
  } catch (const std::bad_alloc&) {
    info.code = "ERR_OUT_OF_MEMORY";
    info.message = stage + ": out of host memory when calling " + api;
  } catch (const std::exception& e) {
    info.message = stage + ": " + e.what();
  } catch (...) {
    info.message = stage + ": Unknown error when calling " + api;
  }
  return info;
}

Napi::Error ToJsError(Napi::Env env, const ErrorInfo& info) {
  Napi::Error error = Napi::Error::New(env, info.message);
  error.Set("code", Napi::String::New(env, info.code));
  error.Set("stage", Napi::String::New(env, info.stage));
  if (!info.status.empty()) error.Set("status", Napi::String::New(env, info.status));
  return error;
}

Napi::Error ToJsError(Napi::Env env, const NativeError& error) {
  ErrorInfo info;
  info.code = error.code();
  info.stage = error.stage();
  info.status = error.status();
  info.message = error.what();
  return ToJsError(env, info);
}

void ThrowTypeError(Napi::Env env, const std::string& message) {
  Napi::TypeError error = Napi::TypeError::New(env, message);
  error.Set("code", Napi::String::New(env, "ERR_INVALID_ARG_TYPE"));
  throw error;
}

void ThrowRangeError(Napi::Env env, const std::string& message) {
  Napi::RangeError error = Napi::RangeError::New(env, message);
  error.Set("code", Napi::String::New(env, "ERR_OUT_OF_RANGE"));
  throw error;
}

std::string DescribeJsValue(const Napi::Value& value) {
  switch (value.Type()) {
    case napi_undefined: return "undefined";
    case napi_null: return "null";
    case napi_boolean: return std::string(value.As<Napi::Boolean>().Value() ? "true" : "false") + " (boolean)";
    case napi_number: {
      const double v = value.As<Napi::Number>().DoubleValue();
      if (std::isnan(v)) return "NaN (number)";
      return value.ToString().Utf8Value() + " (number)";
    }
    case napi_string: return "a string";
    case napi_symbol: return "a symbol";
    case napi_bigint: return "a bigint";
    case napi_function: return "a function";
    case napi_external: return "an external";
    case napi_object:
      if (value.IsArray()) return "an array";
      if (value.IsTypedArray()) return "a typed array";
      if (value.IsArrayBuffer()) return "an ArrayBuffer";
      return "an object";
  }
  return "an unknown value";
}

Napi::Object RequireObject(const Napi::Value& value, const std::string& name) {
  if (!value.IsObject() || value.IsArray() || value.IsFunction()) {
    ThrowTypeError(value.Env(), name + " must be an object, got " + DescribeJsValue(value));
  }
  return value.As<Napi::Object>();
}

bool HasOption(const Napi::Object& obj, const char* key) {
  Napi::Value v = obj.Get(key);
  return !v.IsUndefined() && !v.IsNull();
}

double RequireNumber(const Napi::Object& obj, const char* key, const std::string& owner) {
  Napi::Value v = obj.Get(key);
  if (!v.IsNumber()) ThrowTypeError(obj.Env(), owner + "." + key + " must be a number, got " + DescribeJsValue(v));
  return v.As<Napi::Number>().DoubleValue();
}

static int64_t CheckInteger(const Napi::Object& obj, const Napi::Value& v, const char* key, const std::string& owner,
                            int64_t min, int64_t max) {
  if (!v.IsNumber()) ThrowTypeError(obj.Env(), owner + "." + key + " must be an integer, got " + DescribeJsValue(v));
  const double d = v.As<Napi::Number>().DoubleValue();
  if (!std::isfinite(d) || std::floor(d) != d) {
    ThrowTypeError(obj.Env(), owner + "." + key + " must be an integer, got " + DescribeJsValue(v));
  }
  if (d < static_cast<double>(min) || d > static_cast<double>(max)) {
    ThrowRangeError(obj.Env(), owner + "." + key + " must be an integer from " + std::to_string(min) + " to " +
                                   std::to_string(max) + ", got " + DescribeJsValue(v));
  }
  return static_cast<int64_t>(d);
}

int64_t RequireInteger(const Napi::Object& obj, const char* key, const std::string& owner, int64_t min, int64_t max) {
  return CheckInteger(obj, obj.Get(key), key, owner, min, max);
}

int64_t OptionalInteger(const Napi::Object& obj, const char* key, const std::string& owner, int64_t min, int64_t max,
                        int64_t fallback) {
  if (!HasOption(obj, key)) return fallback;
  return CheckInteger(obj, obj.Get(key), key, owner, min, max);
}

bool OptionalBoolean(const Napi::Object& obj, const char* key, const std::string& owner, bool fallback) {
  if (!HasOption(obj, key)) return fallback;
  Napi::Value v = obj.Get(key);
  if (!v.IsBoolean()) ThrowTypeError(obj.Env(), owner + "." + key + " must be a boolean, got " + DescribeJsValue(v));
  return v.As<Napi::Boolean>().Value();
}

std::string RequireString(const Napi::Object& obj, const char* key, const std::string& owner) {
  Napi::Value v = obj.Get(key);
  if (!v.IsString()) ThrowTypeError(obj.Env(), owner + "." + key + " must be a string, got " + DescribeJsValue(v));
  return v.As<Napi::String>().Utf8Value();
}

Napi::TypedArray RequireTypedArray(const Napi::Object& obj, const char* key, const std::string& owner,
                                   napi_typedarray_type type, const char* typeName) {
  Napi::Value v = obj.Get(key);
  if (!v.IsTypedArray() || v.As<Napi::TypedArray>().TypedArrayType() != type) {
    ThrowTypeError(obj.Env(), owner + "." + key + " must be a " + typeName + ", got " + DescribeJsValue(v));
  }
  return v.As<Napi::TypedArray>();
}

}  // namespace sdtrt
