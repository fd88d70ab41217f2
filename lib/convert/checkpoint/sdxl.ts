/**
 * SDXL's facts shared by its two sources (the single-file reader, sdxl-single-file.ts, and the diffusers
 * folder reader): the base checkpoint's configs derived from tensor shapes, its scheduler, and the
 * refiner's refusal.
 *
 * Shapes say the UNet's levels, widths and per-level transformer depths, the cross-attention width and
 * the added-embedding input (`label_emb.0.0.weight` [time_embed_dim, adm_in]: adm_in = pooled width +
 * 6 · addition_time_embed_dim, the pooled width being text_encoder_2's projection). What they do not say
 * is SDXL base's (stabilityai/stable-diffusion-xl-base-1.0's configs, which diffusers loads for every
 * "xl_base" file given no `config=`): 64-wide attention heads everywhere, 1024² images, the VAE's
 * scaling_factor 0.13025 with force_upcast (its fp16 activations overflow), EulerDiscrete with "leading"
 * timesteps. Its text encoders are CLIP ViT-L (SD 1.x's, quick_gelu) and OpenCLIP ViT-bigG (gelu, as
 * SD 2.x's ViT-H), so their configs follow those families' rules.
 */
import { ModelFileError } from "../../errors.js";
import { deriveTextEncoderConfig, deriveUnetConfig, deriveVaeConfig, SD_TRAINING_SCHEDULE, type ShapeIndex, unetLayersPerBlock } from "./ldm-configs.js";

/** The single-file prefixes of SDXL's text encoders (`conditioner.embedders.*`). */
export const SDXL_PREFIX = {
  /** The base's CLIP ViT-L (transformers' CLIPTextModel keys) → text_encoder. */
  clip: "conditioner.embedders.0.transformer.",
  /** The base's OpenCLIP ViT-bigG → text_encoder_2. */
  openClip: "conditioner.embedders.1.model.",
  /** The refiner's only text encoder, OpenCLIP ViT-bigG (diffusers' "xl_refiner" keys). */
  refinerOpenClip: "conditioner.embedders.0.model.",
} as const;

/** SDXL base's UNet added-embedding keys (`label_emb` in the original layout). */
export const SDXL_UNET_DIRECT: Readonly<Record<string, string>> = {
  "label_emb.0.0.weight": "add_embedding.linear_1.weight",
  "label_emb.0.0.bias": "add_embedding.linear_1.bias",
  "label_emb.0.2.weight": "add_embedding.linear_2.weight",
  "label_emb.0.2.bias": "add_embedding.linear_2.bias",
};

/** stabilityai/stable-diffusion-xl-base-1.0's scheduler/scheduler_config.json (diffusers 0.40 writes the rest as defaults). */
export function sdxlSchedulerConfig(predictionType: string): Record<string, unknown> {
  return {
    _class_name: "EulerDiscreteScheduler",
    ...SD_TRAINING_SCHEDULE,
    clip_sample: false,
    prediction_type: predictionType,
    trained_betas: null,
    use_karras_sigmas: false,
  };
}

/**
 * The refiner (one OpenCLIP encoder, aesthetic-score time ids) is a second model of an SDXL
 * generation; converting it is not implemented, it runs from its ONNX folder.
 */
export function sdxlRefinerRefusal(path: string): ModelFileError {
  return new ModelFileError(
    path,
    `${path} is an SDXL refiner (its only text encoder is OpenCLIP ViT-bigG and its UNet takes aesthetic-score time ids); ` +
      "sd-trt converts SDXL base checkpoints, not the refiner: use the refiner as an optimum ONNX folder (text_encoder_2, unet, vae_decoder)",
  );
}

function shapeOf(shapes: ShapeIndex, key: string, what: string): readonly number[] {
  const shape = shapes.get(key);
  if (shape === undefined) throw new Error(`${what}: ${key} is missing`);
  return shape;
}

/** The UNet's config (LDM names, `model.diffusion_model.` removed); `pooledWidth` is text_encoder_2's projection width. */
export function deriveSdxlUnetConfig(shapes: ShapeIndex, pooledWidth: number, upcastAttention: boolean): Record<string, unknown> {
  // SD 2.x's rule for heads (64 wide) is SDXL's; the rest is read off the shapes below.
  const base = deriveUnetConfig(shapes, "sd2", upcastAttention);
  const levels = (base["block_out_channels"] as number[]).length;
  const perLevel = unetLayersPerBlock(shapes) + 1;
  const keys = [...shapes.keys()];
  // Per level, the transformer blocks of its first attention (a level without attention: 1, diffusers' placeholder).
  const depth = Array.from({ length: levels }, (_, level) => {
    const prefix = `input_blocks.${1 + level * perLevel}.1.transformer_blocks.`;
    return new Set(keys.filter((k) => k.startsWith(prefix)).map((k) => k.slice(prefix.length).split(".")[0])).size || 1;
  });
  const admIn = shapeOf(shapes, "label_emb.0.0.weight", "the UNet's added embedding")[1]!;
  const timeIds = 6;
  const timeEmbedDim = (admIn - pooledWidth) / timeIds;
  if (!Number.isInteger(timeEmbedDim) || timeEmbedDim <= 0) {
    throw new Error(`the added embedding takes ${admIn} inputs, not text_encoder_2's ${pooledWidth} pooled values plus ${timeIds} time ids (a refiner or another model)`);
  }
  return {
    ...base,
    addition_embed_type: "text_time",
    addition_time_embed_dim: timeEmbedDim,
    projection_class_embeddings_input_dim: admIn,
    sample_size: 128,
    transformer_layers_per_block: depth,
  };
}

/** text_encoder (CLIP ViT-L) and text_encoder_2 (OpenCLIP ViT-bigG with projection) from their diffusers-named shapes. */
export function deriveSdxlTextEncoderConfigs(clip: ShapeIndex, openClip: ShapeIndex): { textEncoder: Record<string, unknown>; textEncoder2: Record<string, unknown> } {
  const projection = shapeOf(openClip, "text_projection.weight", "text_encoder_2")[0]!;
  return {
    textEncoder: deriveTextEncoderConfig(clip, "sd1"),
    textEncoder2: { ...deriveTextEncoderConfig(openClip, "sd2"), architectures: ["CLIPTextModelWithProjection"], projection_dim: projection },
  };
}

/** The VAE's config (LDM names): SD's VAE architecture with SDXL's scaling and fp32 upcast. */
export function deriveSdxlVaeConfig(shapes: ShapeIndex): Record<string, unknown> {
  return { ...deriveVaeConfig(shapes, "sd1"), force_upcast: true, sample_size: 1024, scaling_factor: 0.13025 };
}
