// The TensorRT module's entry points (register.h): everything lives under `exports.tensorrt`
// (lib/native/tensorrt-types.ts: TensorRtBinding).
#include "register.h"

#include "../common/js_error.h"
#include "embeddings.h"
#include "engine.h"
#include "engine_builder.h"
#include "execution_context.h"
#include "trt_library.h"
#include "trt_unet.h"

namespace sdtrt::trt {

namespace {

Napi::Object LibraryToJs(Napi::Env env, const LibraryStatus& status) {
  Napi::Object out = Napi::Object::New(env);
  // Absent fields (not null) for what is unknown: lib/native/types.ts NativeTensorRtLibraryInfo.
  out.Set("loaded", Napi::Boolean::New(env, status.loaded));
  if (!status.library.empty()) out.Set("library", Napi::String::New(env, status.library));
  if (status.version > 0) out.Set("version", Napi::String::New(env, VersionString(status.version)));
  // libnvonnxparser: its API version (getNvOnnxParserVersion), which is not TensorRT's version.
  if (status.apiVersion > 0) out.Set("apiVersion", Napi::String::New(env, VersionString(status.apiVersion)));
  if (!status.loaded && !status.error.empty()) out.Set("error", Napi::String::New(env, status.error));
  Napi::Array attempts = Napi::Array::New(env, status.attempts.size());
  for (size_t i = 0; i < status.attempts.size(); ++i) attempts.Set(static_cast<uint32_t>(i), Napi::String::New(env, status.attempts[i]));
  out.Set("attempts", attempts);
  return out;
}

Napi::Value RuntimeInfoFn(const Napi::CallbackInfo& info) { return RuntimeInfo(info.Env()); }

}  // namespace

Napi::Object RuntimeInfo(Napi::Env env) {
  // { compiledVersion, infer: libnvinfer, parser: libnvonnxparser } (lib/native/types.ts NativeTensorRtInfo).
  TrtLibrary& library = TrtLibrary::Get();
  Napi::Object out = Napi::Object::New(env);
  out.Set("compiledVersion", Napi::String::New(env, CompiledVersion()));
  out.Set("infer", LibraryToJs(env, library.Infer()));
  out.Set("parser", LibraryToJs(env, library.Parser()));
  return out;
}

void Register(Napi::Env env, Napi::Object exports) {
  Napi::Object tensorrt = Napi::Object::New(env);
  tensorrt.Set("runtimeInfo", Napi::Function::New(env, RuntimeInfoFn, "runtimeInfo"));
  RegisterEngineBuilder(env, tensorrt);
  RegisterEngine(env, tensorrt);
  RegisterExecutionContext(env, tensorrt);
  RegisterEmbeddings(env, tensorrt);
  exports.Set("tensorrt", tensorrt);
}

std::shared_ptr<UnetRunner> UnetRunnerFromJs(const Napi::Value& value) { return UnetWrap::RunnerFromJs(value); }

}  // namespace sdtrt::trt
