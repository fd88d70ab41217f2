// Errors crossing the Node-API boundary (docs/architecture.md, native boundary rule 4).
//
// * NativeError (status.h) → JS Error whose message starts with the stage and which carries `code`,
//   `stage` and `status` properties; lib/native/load.ts rethrows it as the TS NativeError with the
//   caller's stack.
// * Argument type checks: native code re-checks only types (TS validates values); a wrong type is a
//   TypeError with code ERR_INVALID_ARG_TYPE, an impossible size a RangeError with ERR_OUT_OF_RANGE.
//   Never assert or abort on anything that came from JS.
// * NativeAsyncWorker: the AsyncWorker + Promise shape every long call uses (style.md §3): Execute()
//   runs Run() on a libuv thread and captures any exception as an ErrorInfo (plain strings, no N-API);
//   OnOK()/OnError() settle the promise on the JS thread.
#pragma once

#include <napi.h>

#include <cstdint>
#include <exception>
#include <string>

#include "status.h"

namespace sdtrt {

// A failure captured off the JS thread, turned into a JS error later on the JS thread.
struct ErrorInfo {
  std::string code = "ERR_NATIVE";
  std::string stage;
  std::string message;  // full message, stage prefix included
  std::string status;
};

// Converts the exception currently being handled (call inside a catch block) into an ErrorInfo.
// `stage` and `api` name what failed when the exception carries no stage of its own
// ("Unknown error when calling <api>").
ErrorInfo CaptureCurrentException(const std::string& stage, const std::string& api);

Napi::Error ToJsError(Napi::Env env, const ErrorInfo& info);
Napi::Error ToJsError(Napi::Env env, const NativeError& error);

// TypeError/RangeError with Node's codes. Thrown as C++ exceptions (node-addon-api turns them into
// JS exceptions at the boundary).
[[noreturn]] void ThrowTypeError(Napi::Env env, const std::string& message);
[[noreturn]] void ThrowRangeError(Napi::Env env, const std::string& message);

// "a number", "undefined", "an object", … for messages.
std::string DescribeJsValue(const Napi::Value& value);

// Option readers for `owner.key` (messages say "options.batch must be …, got …").
Napi::Object RequireObject(const Napi::Value& value, const std::string& name);
bool HasOption(const Napi::Object& obj, const char* key);
double RequireNumber(const Napi::Object& obj, const char* key, const std::string& owner);
int64_t RequireInteger(const Napi::Object& obj, const char* key, const std::string& owner, int64_t min, int64_t max);
int64_t OptionalInteger(const Napi::Object& obj, const char* key, const std::string& owner, int64_t min, int64_t max,
                        int64_t fallback);
bool OptionalBoolean(const Napi::Object& obj, const char* key, const std::string& owner, bool fallback);
std::string RequireString(const Napi::Object& obj, const char* key, const std::string& owner);

// Returns the typed array stored at obj[key] when its element type is `type`; TypeError otherwise.
Napi::TypedArray RequireTypedArray(const Napi::Object& obj, const char* key, const std::string& owner,
                                   napi_typedarray_type type, const char* typeName);

// Base class for a long native call returning a Promise. Subclasses implement Run() (libuv thread,
// no N-API) and Result() (JS thread). The worker's name is what shows in async_hooks / diagnostics.
class NativeAsyncWorker : public Napi::AsyncWorker {
 public:
  NativeAsyncWorker(Napi::Env env, const char* resourceName, std::string stage)
      : Napi::AsyncWorker(env, resourceName), deferred_(Napi::Promise::Deferred::New(env)), stage_(std::move(stage)) {}

  Napi::Promise Promise() const { return deferred_.Promise(); }

  // Queues the worker (which deletes itself once it has settled) and returns its promise.
  Napi::Promise Start() {
    Napi::Promise promise = Promise();
    Queue();
    return promise;
  }

 protected:
  virtual void Run() = 0;
  virtual Napi::Value Result(Napi::Env env) = 0;
  // Name of the API whose failure this worker reports when an exception carries no stage.
  virtual std::string ApiName() const { return stage_; }

  void Execute() final {
    try {
      Run();
    } catch (...) {
      error_ = CaptureCurrentException(stage_, ApiName());
      SetError(error_.message);
    }
  }
  void OnOK() override { deferred_.Resolve(Result(Env())); }
  void OnError(const Napi::Error&) override { deferred_.Reject(ToJsError(Env(), error_).Value()); }

 private:
  Napi::Promise::Deferred deferred_;
  std::string stage_;
  ErrorInfo error_;
};

}  // namespace sdtrt
