/**
 * SDXL on the TensorRT backend: `sd-trt build` builds SDXL engine sets (both text encoders, the UNet
 * with its text_embeds/time_ids profiles, the VAE in the precision the manifest records), but
 * running them is not written yet: the text stage would have to join both encoders' penultimate
 * states and keep text_encoder_2's pooled output, and the native denoiser would bind text_embeds
 * and time_ids in its captured loop. Until then `TensorRtBackend.load` refuses an SDXL folder here,
 * before any engine is loaded, so `"auto"` falls back to the CPU backend with this reason instead
 * of running the UNet without its added conditioning.
 */
import { ModelFileError } from "../../errors.js";
import type { ModelFolder } from "../../model/folder.js";

export function refuseSdxlEngines(folder: ModelFolder): void {
  if (!folder.sdxl) return;
  throw new ModelFileError(
    folder.sdxl.textEncoder2.path,
    `model folder ${folder.dir} is SDXL (it has text_encoder_2): sd-trt build makes its engines, but the TensorRT backend does not run them yet; use the CPU backend (--backend cpu)`,
  );
}
