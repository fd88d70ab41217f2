// Device runs of the standalone kernels (CUDA builds), for the GPU self-test: each uploads its
// input, runs one kernel of kernels.h and downloads the result, so the device output can be
// compared bit for bit with the host path (host_math_js.h) of the same per-element code.
//
//   deviceVaeToUint8({ decoded, batch, channels?, height, width, device? }) → Promise<{ pixels, nanCount, infCount }>
//   deviceFloatToHalf(values: Float32Array, device?) → Promise<Uint16Array>
//   deviceScaleCast({ values, factor, op, dtype?, device? }) → Promise<Float32Array | Uint16Array>
//       (kernels::launchScaleCast; the host path is hostScaleCast)
//
// Inputs are borrowed (pinned) until the promise settles; outputs are new arrays.
#pragma once

#include <napi.h>

namespace sdtrt {

void RegisterDeviceKernels(Napi::Env env, Napi::Object exports);

}  // namespace sdtrt
