// JS entry points of the host paths (host_math.h). Synchronous on purpose: they are test and
// diagnostic helpers working on small arrays, not production calls; they copy their inputs' values
// and return new arrays (no borrowed memory outlives the call).
#pragma once

#include <napi.h>

#include "../common/dtype.h"
#include "vae_math.h"

namespace sdtrt::host {

// The options hostVaeToUint8 and deviceVaeToUint8 (device_kernels_js.h) share:
// { decoded: Float32Array | Uint16Array (float16 bits), batch, channels?, height, width }.
struct VaeToUint8Options {
  Napi::TypedArray decoded;
  DType type = DType::kFloat32;
  int batch = 0, channels = 0, height = 0, width = 0;

  // RangeError unless `decoded` holds batch·channels·height·width values.
  void CheckLength(Napi::Env env) const;
};

// Reads them (types and ranges; the length is CheckLength's) from the call's `options` object.
VaeToUint8Options ReadVaeToUint8Options(const Napi::Object& options);

// The options hostScaleCast and deviceScaleCast share: { values: Float32Array | Uint16Array
// (float16 bits), factor: number, op: "divide" | "multiply", dtype?: "float32" | "float16" }.
struct ScaleCastOptions {
  Napi::TypedArray values;
  DType srcType = DType::kFloat32;
  float factor = 1.0f;  // the JS number rounded to float32 (like Math.fround)
  vae::ScaleOp op = vae::ScaleOp::kDivide;
  DType dstType = DType::kFloat32;
};
ScaleCastOptions ReadScaleCastOptions(const Napi::Object& options);
// A new Float32Array, or Uint16Array of float16 bits, of `count` elements of `type`.
Napi::TypedArray NewFloatArray(Napi::Env env, DType type, size_t count);

// Adds hostRunProgram, hostVaeToUint8, hostScaleCast, hostFloatToHalf, hostHalfToFloat to `exports`.
void RegisterHostMath(Napi::Env env, Napi::Object exports);

}  // namespace sdtrt::host
