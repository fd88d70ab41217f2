/**
 * A single-file SDXL checkpoint, base or refiner, as a CheckpointSource, mapped as diffusers'
 * single_file_utils.py maps it (at 58eb52c: `infer_diffusers_model_type` "xl_base" / "xl_refiner",
 * `convert_ldm_unet_checkpoint`, `convert_ldm_vae_checkpoint`, `convert_ldm_clip_checkpoint`,
 * `convert_open_clip_checkpoint`):
 *
 * - `conditioner.embedders.0.transformer.*` (the base's CLIP ViT-L, transformers' own names) → text_encoder;
 * - `conditioner.embedders.1.model.*` (the base's OpenCLIP ViT-bigG), or `conditioner.embedders.0.model.*`
 *   (the refiner's, its only encoder) → text_encoder_2: `in_proj` split into q/k/v, every layer kept,
 *   `text_projection` [width, projection] transposed into the linear weight;
 * - `model.diffusion_model.*` → unet, SD's renames plus `label_emb` → `add_embedding` (the refiner's
 *   added embedding takes 5 time ids, the base's 6);
 * - `first_stage_model.*` → vae.
 *
 * Configs come from the shapes (sdxl.ts) or from a diffusers folder (`configFolder`), as in the SD
 * reader (single-file.ts).
 */
import { ModelFileError } from "../../errors.js";
import type { StreamedSafetensorsFile } from "../../model/safetensors.js";
import type { CheckpointSource } from "../types.js";
import { LDM_PREFIX, type MappedKey, mapClipKey, mapOpenClipKey, mapUnetKey } from "./ldm-keys.js";
import { deriveFromShapes, mapLdmUnetAndVae } from "./ldm-unet-vae.js";
import { deriveSdxlClipConfig, deriveSdxlOpenClipConfig, deriveSdxlUnetConfig, deriveSdxlVaeConfig, SDXL_PREFIX, SDXL_TIME_IDS, SDXL_UNET_DIRECT, sdxlSchedulerConfig } from "./sdxl.js";
import type { SingleFileOptions } from "./options.js";
import { mapComponent, shapesOf, weightSourceOf, withPrefix } from "./tensors.js";

/** A UNet key (after `model.diffusion_model.`). */
function mapSdxlUnetKey(key: string, layersPerBlock: number): MappedKey | undefined {
  const direct = SDXL_UNET_DIRECT[key];
  return direct === undefined ? mapUnetKey(key, layersPerBlock) : { key: direct };
}

/** A text_encoder_2 key (after `conditioner.embedders.1.model.`, the refiner's `conditioner.embedders.0.model.`): OpenCLIP ViT-bigG with its projection. */
function mapSdxlOpenClipKey(key: string, shape: readonly number[]): MappedKey[] {
  if (key === "text_projection") return [{ key: "text_projection.weight", transform: { kind: "transpose" } }];
  return mapOpenClipKey(key, shape, true);
}

/** The parts a whole checkpoint has, each with where its tensors are. */
interface Part {
  readonly what: string;
  readonly where: string;
  readonly present: boolean;
}

/** Reads a single-file SDXL checkpoint (base or refiner) already opened by readSingleFile. @throws ModelFileError naming the file and what is wrong. */
export async function readSdxlSingleFile(path: string, file: StreamedSafetensorsFile, options: SingleFileOptions): Promise<CheckpointSource> {
  const allKeys = [...file.tensors.keys(), ...file.otherTensors.keys()];
  const has = (prefix: string) => allKeys.some((k) => k.startsWith(prefix));
  // The refiner: OpenCLIP alone, as the first embedder (diffusers' is_open_clip_sdxl_refiner_model).
  const refiner = has(SDXL_PREFIX.refinerOpenClip) && !has(SDXL_PREFIX.clip);
  const openClipPrefix = refiner ? SDXL_PREFIX.refinerOpenClip : SDXL_PREFIX.openClip;
  const vaePrefix = LDM_PREFIX.vae.find(has);
  const parts: Part[] = [
    { what: "UNet", where: LDM_PREFIX.unet, present: has(LDM_PREFIX.unet) },
    { what: "VAE", where: LDM_PREFIX.vae.join('" or "'), present: vaePrefix !== undefined },
    ...(refiner ? [] : [{ what: "CLIP ViT-L text encoder", where: SDXL_PREFIX.clip, present: has(SDXL_PREFIX.clip) }]),
    { what: "OpenCLIP ViT-bigG text encoder", where: openClipPrefix, present: has(openClipPrefix) },
  ];
  const missing = parts.filter((part) => !part.present);
  if (missing.length > 0) {
    const listed = missing.map((part) => `${part.what} (no tensors under "${part.where}")`).join(", ");
    throw new ModelFileError(path, `${path} is an SDXL ${refiner ? "refiner " : ""}checkpoint without its ${listed}; sd-trt converts a whole SDXL ${refiner ? "refiner" : "base"} checkpoint`);
  }

  const unetStored = withPrefix(file.tensors, LDM_PREFIX.unet);
  const vaeStored = withPrefix(file.tensors, vaePrefix!);
  const inChannels = unetStored.get("input_blocks.0.0.weight")?.shape[1];
  if (inChannels !== undefined && inChannels !== 4) {
    throw new ModelFileError(path, `${path} has a UNet with ${inChannels} input channels (an inpainting model); sd-trt converts SDXL txt2img/img2img models with 4`);
  }
  const { folder, unet, vae } = await mapLdmUnetAndVae(path, unetStored, vaeStored, options.configFolder, mapSdxlUnetKey);
  const folderIsRefiner = folder !== undefined && folder.text_encoder === undefined;
  if (folder !== undefined && folderIsRefiner !== refiner) {
    const described = folderIsRefiner ? "an SDXL refiner (text_encoder_2 alone)" : "an SDXL base (text_encoder and text_encoder_2)";
    throw new ModelFileError(options.configFolder!, `${options.configFolder} holds the configs of ${described}, but ${path} is an SDXL ${refiner ? "refiner" : "base"} checkpoint; pass the configs of the same model`);
  }
  const textEncoder2 = mapComponent(path, "text encoder 2", withPrefix(file.tensors, openClipPrefix), (key, tensor) => mapSdxlOpenClipKey(key, tensor.shape));
  const textEncoder = refiner ? undefined : mapComponent(path, "text encoder", withPrefix(file.tensors, SDXL_PREFIX.clip), (key) => [mapClipKey(key)]);

  // SDXL's configs: epsilon, no upcast attention (its UNet configs do not set it).
  const predictionType = options.predictionType ?? (folder?.scheduler["prediction_type"] as string | undefined) ?? "epsilon";
  const upcastAttention = options.upcastAttention ?? (folder?.unet["upcast_attention"] as boolean | undefined) ?? false;
  const derive = <T>(what: string, make: () => T): T => deriveFromShapes(path, what, make);
  const textEncoder2Config = folder?.text_encoder_2 ?? derive("text_encoder_2", () => deriveSdxlOpenClipConfig(shapesOf(textEncoder2)));
  const timeIds = refiner ? SDXL_TIME_IDS.refiner : SDXL_TIME_IDS.base;
  const unetConfig = folder?.unet ?? derive("the UNet", () => deriveSdxlUnetConfig(shapesOf(unetStored), Number(textEncoder2Config["projection_dim"]), upcastAttention, timeIds));
  const textEncoderSource = textEncoder && { config: folder?.text_encoder ?? derive("the text encoder", () => deriveSdxlClipConfig(shapesOf(textEncoder))), weights: weightSourceOf(textEncoder) };
  return {
    family: "sdxl",
    ...(refiner ? { refiner } : {}),
    path,
    components: {
      ...(textEncoderSource ? { text_encoder: textEncoderSource } : {}),
      text_encoder_2: { config: textEncoder2Config, weights: weightSourceOf(textEncoder2) },
      unet: { config: { ...unetConfig, upcast_attention: upcastAttention }, weights: weightSourceOf(unet) },
      vae: { config: folder?.vae ?? derive("the VAE", () => deriveSdxlVaeConfig(shapesOf(vaeStored))), weights: weightSourceOf(vae) },
    },
    schedulerConfig: { ...(folder?.scheduler ?? sdxlSchedulerConfig(predictionType)), prediction_type: predictionType },
  };
}
