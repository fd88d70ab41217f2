/**
 * SDXL on the TensorRT backend: not built yet. The engines would need the second text encoder,
 * the UNet's `text_embeds`/`time_ids` bound in the graph-captured loop and an fp32 VAE
 * (`force_upcast`); until they exist an SDXL folder is refused here, before any engine is built or
 * loaded, so `"auto"` falls back to the CPU backend with this reason instead of running the UNet
 * without its added conditioning.
 */
import { ModelFileError } from "../../errors.js";
import type { ModelFolder } from "../../model/folder.js";

export function refuseSdxlEngines(folder: ModelFolder): void {
  if (!folder.sdxl) return;
  throw new ModelFileError(
    folder.sdxl.textEncoder2.path,
    `model folder ${folder.dir} is SDXL (it has text_encoder_2), which the TensorRT backend does not run yet; use the CPU backend (--backend cpu)`,
  );
}
