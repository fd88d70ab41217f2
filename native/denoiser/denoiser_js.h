// The JS `Denoiser` class (lib/native/types.ts: NativeDenoiser):
//
//   new Denoiser({ unet: "analytic" | <TensorRT UNet engine>, analyticDtype?, device? })
//   denoiser.run(options) → Promise<NativeDenoiseResult>     one SdDenoiseWorker per call
//   denoiser.cancel()                                           stops a run between evaluations
//   denoiser.dispose()                                          idempotent
//   denoiser.disposed / denoiser.busy
//
// One run at a time per Denoiser (a second run() while one is in flight is refused with ERR_BUSY;
// the TS layer queues). In builds without CUDA the constructor throws ERR_NO_CUDA after checking
// its argument types.
#pragma once

#include <napi.h>

namespace sdtrt {

void RegisterDenoiser(Napi::Env env, Napi::Object exports);

}  // namespace sdtrt
