// The shapes every JS class of the addon shares:
//
//   * RegisterClass: keeps the constructor in AddonData (so C++ can create instances) and exports it.
//   * Classes whose instances only C++ creates (TrtEngine, TrtContext, TrtUnet, DeviceTensor):
//     NewFromNative() hands the C++ payload to the constructor through an External, which JS cannot
//     make, so `new X()` from JS is the constructor's TypeError (TakeNativePayload); the new object is
//     type-tagged (napi_type_tag_object, Node-API 8) so UnwrapTagged() can tell a genuine instance
//     from any other object passed back in.
#pragma once

#include <napi.h>

#include <utility>

#include "addon_data.h"
#include "js_error.h"

namespace sdtrt {

// Keeps `ctor` in AddonData::constructors[className] and sets target[className] to it.
inline void RegisterClass(Napi::Env env, Napi::Object target, const char* className, Napi::Function ctor) {
  GetAddonData(env).constructors[className] = Napi::Persistent(ctor);
  target.Set(className, ctor);
}

// Constructs the registered class `className` around `payload` and tags the object. JS thread only.
template <typename Payload>
Napi::Object NewFromNative(Napi::Env env, const char* className, const napi_type_tag& tag, Payload payload) {
  Napi::External<Payload> external = Napi::External<Payload>::New(env, &payload);
  Napi::Object object = GetAddonData(env).constructors[className].New({external});
  object.TypeTag(&tag);
  return object;
}

// In the constructor of such a class: the payload NewFromNative() passed, else a TypeError
// `notWithNew` (which says how instances are made).
template <typename Payload>
Payload TakeNativePayload(const Napi::CallbackInfo& info, const char* notWithNew) {
  if (info.Length() != 1 || !info[0].IsExternal()) ThrowTypeError(info.Env(), notWithNew);
  return std::move(*info[0].As<Napi::External<Payload>>().Data());
}

// The C++ object behind `value` when it is an object tagged `tag`, else nullptr.
template <typename Wrap>
Wrap* UnwrapTagged(const Napi::Value& value, const napi_type_tag& tag) {
  if (!value.IsObject() || !value.As<Napi::Object>().CheckTypeTag(&tag)) return nullptr;
  return Napi::ObjectWrap<Wrap>::Unwrap(value.As<Napi::Object>());
}

}  // namespace sdtrt
