/**
 * A single-file checkpoint (`model.diffusion_model.*`, `first_stage_model.*`, `cond_stage_model.*`
 * in one `.safetensors`) as a CheckpointSource: the family detected from its keys, every weight
 * renamed to its diffusers key (ldm-keys.ts) and read from the file only when asked, and configs
 * derived from the shapes (ldm-configs.ts) or taken from a diffusers folder. Tensors outside the
 * three components (`model_ema.*` EMA copies, `alphas_cumprod`, optimizer state) are left out, as
 * diffusers leaves them out by default.
 *
 * v-prediction and upcast attention cannot be read off the weights. diffusers decides them for a
 * single file with no config by its `global_step` (absent from `.safetensors` files) and otherwise
 * by the SD 2.1 config it loads for every SD 2.x file: v_prediction and upcast_attention for SD
 * 2.x, epsilon and no upcast for SD 1.x. That is the default here too; `predictionType` (SD 2.x
 * "base" 512 models are epsilon) and `upcastAttention` override it.
 */
import { ModelFileError } from "../../errors.js";
import { openSafetensors } from "../../model/safetensors.js";
import type { CheckpointSource, ModelFamily } from "../types.js";
import { deriveSchedulerConfig, deriveTextEncoderConfig, deriveUnetConfig, deriveVaeConfig } from "./ldm-configs.js";
import { LDM_PREFIX, mapClipKey, mapOpenClipKey, mapUnetKey } from "./ldm-keys.js";
import { deriveFromShapes, mapLdmUnetAndVae } from "./ldm-unet-vae.js";
import { readSdxlSingleFile } from "./sdxl-single-file.js";
import { mapComponent, shapesOf, weightSourceOf, withPrefix } from "./tensors.js";
import type { SingleFileOptions } from "./options.js";

export type { CheckpointOverrides, SingleFileOptions } from "./options.js";

/**
 * The family from a single file's keys: SDXL's conditioner, else the UNet with CLIP ViT-L
 * (`cond_stage_model.transformer.`, SD 1.x) or OpenCLIP ViT-H (`cond_stage_model.model.`, SD 2.x).
 * diffusers tells SD 2.x by a cross-attention width of 1024; the text tower is the same test for
 * every published model and also holds for narrower ones. Undefined: not a checkpoint of these.
 */
export function detectFamily(keys: Iterable<string>): ModelFamily | undefined {
  let unet = false;
  let clip = false;
  let openClip = false;
  for (const key of keys) {
    if (key.startsWith("conditioner.embedders.")) return "sdxl";
    unet ||= key.startsWith(LDM_PREFIX.unet);
    clip ||= key.startsWith(LDM_PREFIX.clip);
    openClip ||= key.startsWith(LDM_PREFIX.openClip);
  }
  if (!unet) return undefined;
  if (openClip) return "sd2";
  if (clip) return "sd1";
  return undefined;
}

function unknownArchitecture(path: string, keys: readonly string[]): ModelFileError {
  const shown = keys.slice(0, 6).map((k) => JSON.stringify(k)).join(", ");
  return new ModelFileError(
    path,
    `${path} is not a Stable Diffusion checkpoint sd-trt knows: it has no UNet under "${LDM_PREFIX.unet}" with a text encoder under "${LDM_PREFIX.clip}" (SD 1.x) or "${LDM_PREFIX.openClip}" (SD 2.x). ` +
      `Its ${keys.length} tensors begin ${shown}${keys.length > 6 ? ", …" : ""}`,
  );
}

/** Reads a single-file `.safetensors` checkpoint. @throws ModelFileError naming the file and what is wrong. */
export async function readSingleFile(path: string, options: SingleFileOptions = {}): Promise<CheckpointSource> {
  const file = await openSafetensors(path);
  const allKeys = [...file.tensors.keys(), ...file.otherTensors.keys()];
  const family = detectFamily(allKeys);
  if (family === undefined) throw unknownArchitecture(path, allKeys);
  if (family === "sdxl") return readSdxlSingleFile(path, file, options);

  const unetStored = withPrefix(file.tensors, LDM_PREFIX.unet);
  const vaePrefix = LDM_PREFIX.vae.find((p) => allKeys.some((k) => k.startsWith(p)));
  if (vaePrefix === undefined) throw new ModelFileError(path, `${path} has no VAE (no tensors under "${LDM_PREFIX.vae.join('" or "')}"); sd-trt needs a checkpoint with its VAE baked in`);
  const vaeStored = withPrefix(file.tensors, vaePrefix);
  const textStored = withPrefix(file.tensors, family === "sd1" ? LDM_PREFIX.clip : LDM_PREFIX.openClip);
  const inChannels = unetStored.get("input_blocks.0.0.weight")?.shape[1];
  if (inChannels !== undefined && inChannels !== 4) {
    throw new ModelFileError(path, `${path} has a UNet with ${inChannels} input channels (an inpainting or instruct-pix2pix model); sd-trt converts txt2img/img2img models with 4`);
  }

  const { folder, unet, vae } = await mapLdmUnetAndVae(path, unetStored, vaeStored, options.configFolder, mapUnetKey);
  const textEncoder = mapComponent(path, "text encoder", textStored, (key, tensor) => (family === "sd1" ? [mapClipKey(key)] : mapOpenClipKey(key, tensor.shape)));

  const predictionType = options.predictionType ?? (folder?.scheduler["prediction_type"] as string | undefined) ?? (family === "sd2" ? "v_prediction" : "epsilon");
  const upcastAttention = options.upcastAttention ?? (folder?.unet["upcast_attention"] as boolean | undefined) ?? family === "sd2";
  const derive = <T>(what: string, make: () => T): T => deriveFromShapes(path, what, make);
  const unetConfig = folder?.unet ?? derive("the UNet", () => deriveUnetConfig(shapesOf(unetStored), family, upcastAttention));
  return {
    family,
    path,
    components: {
      text_encoder: { config: folder?.text_encoder ?? derive("the text encoder", () => deriveTextEncoderConfig(shapesOf(textEncoder), family)), weights: weightSourceOf(textEncoder) },
      unet: { config: { ...unetConfig, upcast_attention: upcastAttention }, weights: weightSourceOf(unet) },
      vae: { config: folder?.vae ?? derive("the VAE", () => deriveVaeConfig(shapesOf(vaeStored), family)), weights: weightSourceOf(vae) },
    },
    schedulerConfig: { ...(folder?.scheduler ?? deriveSchedulerConfig(family, predictionType)), prediction_type: predictionType },
  };
}
