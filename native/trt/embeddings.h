// Device-side assembly of the UNet's text embeddings.
//
//   tensorrt.concatEmbeddings(parts: DeviceTensor[], { dtype: "float32" | "float16" })
//       → Promise<DeviceTensor>   (SdConcatEmbeddingsWorker)
//
// The denoiser takes one [unetBatch, 77, hidden] tensor in the UNet's embedding type, uncond rows
// first with classifier-free guidance; the backend encodes prompts and negative prompts as
// separate TextEmbeddings. This joins their rows on the device (and converts the type when the
// text encoder's output type differs from the UNet's input type), so embeddings never come back
// to the host.
#pragma once

#include <napi.h>

namespace sdtrt::trt {

void RegisterEmbeddings(Napi::Env env, Napi::Object target);

}  // namespace sdtrt::trt
