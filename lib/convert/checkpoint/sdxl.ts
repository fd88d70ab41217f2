/**
 * SDXL's facts shared by its two sources (the single-file reader, sdxl-single-file.ts, and the diffusers
 * folder reader): the configs of a base or refiner checkpoint derived from tensor shapes, and its scheduler.
 *
 * Shapes say the UNet's levels, widths and transformer depths, the cross-attention width and the
 * added-embedding input (`label_emb.0.0.weight` [time_embed_dim, adm_in]: adm_in = pooled width +
 * n · addition_time_embed_dim, the pooled width being text_encoder_2's projection and n the time ids: 6 for
 * the base (original size, crop, target size), 5 for the refiner (original size, crop, aesthetic score)).
 * What they do not say is SDXL's (stabilityai/stable-diffusion-xl-base-1.0's and -refiner-1.0's configs,
 * which diffusers loads for every "xl_base" / "xl_refiner" file given no `config=`): 64-wide attention
 * heads everywhere, 1024² images, the VAE's scaling_factor 0.13025 with force_upcast (its fp16 activations
 * overflow), EulerDiscrete with "leading" timesteps (the refiner's scheduler config is the base's). Its text
 * encoders are CLIP ViT-L (SD 1.x's, quick_gelu) and OpenCLIP ViT-bigG (gelu, as SD 2.x's ViT-H), so their
 * configs follow those families' rules; the refiner has the OpenCLIP one alone.
 */
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

/** The time ids of SDXL's UNets: the base's (original size, crop, target size) and the refiner's (original size, crop, aesthetic score). */
export const SDXL_TIME_IDS = { base: 6, refiner: 5 } as const;

function shapeOf(shapes: ShapeIndex, key: string, what: string): readonly number[] {
  const shape = shapes.get(key);
  if (shape === undefined) throw new Error(`${what}: ${key} is missing`);
  return shape;
}

/**
 * The UNet's config (LDM names, `model.diffusion_model.` removed); `pooledWidth` is text_encoder_2's
 * projection width, `timeIds` how many time ids the added embedding takes (SDXL_TIME_IDS).
 */
export function deriveSdxlUnetConfig(shapes: ShapeIndex, pooledWidth: number, upcastAttention: boolean, timeIds: number = SDXL_TIME_IDS.base): Record<string, unknown> {
  // SD 2.x's rule for heads (64 wide) is SDXL's; the rest is read off the shapes below.
  const base = deriveUnetConfig(shapes, "sd2", upcastAttention);
  const admIn = shapeOf(shapes, "label_emb.0.0.weight", "the UNet's added embedding")[1]!;
  const timeEmbedDim = (admIn - pooledWidth) / timeIds;
  if (!Number.isInteger(timeEmbedDim) || timeEmbedDim <= 0) {
    const other = timeIds === SDXL_TIME_IDS.base ? "a refiner or another model" : "a base model or another model";
    throw new Error(`the added embedding takes ${admIn} inputs, not text_encoder_2's ${pooledWidth} pooled values plus ${timeIds} time ids (${other})`);
  }
  return {
    ...base,
    addition_embed_type: "text_time",
    addition_time_embed_dim: timeEmbedDim,
    projection_class_embeddings_input_dim: admIn,
    sample_size: 128,
    transformer_layers_per_block: sdxlTransformerDepth(shapes, (base["block_out_channels"] as number[]).length),
  };
}

/**
 * `transformer_layers_per_block` from the transformer blocks of each level's first attention and of the
 * mid block. Levels without attention carry 1 (diffusers' placeholder, as in SDXL base's [1, 2, 10]).
 * diffusers' UNet2DConditionModel gives the mid block the last entry, so when the last level has no
 * attention (the refiner's) that entry is the mid block's depth, and when every attention has that same
 * depth it is one number, as the refiner's published config writes it (4).
 */
function sdxlTransformerDepth(shapes: ShapeIndex, levels: number): number | number[] {
  const perLevel = unetLayersPerBlock(shapes) + 1;
  const keys = [...shapes.keys()];
  const blocksUnder = (prefix: string) => new Set(keys.filter((k) => k.startsWith(prefix)).map((k) => k.slice(prefix.length).split(".")[0])).size;
  const attention = Array.from({ length: levels }, (_, level) => blocksUnder(`input_blocks.${1 + level * perLevel}.1.transformer_blocks.`));
  const mid = blocksUnder("middle_block.1.transformer_blocks.");
  const last = attention[levels - 1]!;
  if (last > 0 && last !== mid) throw new Error(`the mid block has ${mid} transformer blocks and the last level ${last}; diffusers' UNet gives both the same`);
  if (last === 0 && attention.every((depth) => depth === 0 || depth === mid)) return mid;
  return attention.map((depth, level) => (depth > 0 ? depth : level === levels - 1 ? mid : 1));
}

/** text_encoder_2 (OpenCLIP ViT-bigG with projection, the base's second encoder and the refiner's only one) from its diffusers-named shapes. */
export function deriveSdxlOpenClipConfig(openClip: ShapeIndex): Record<string, unknown> {
  const projection = shapeOf(openClip, "text_projection.weight", "text_encoder_2")[0]!;
  return { ...deriveTextEncoderConfig(openClip, "sd2"), architectures: ["CLIPTextModelWithProjection"], projection_dim: projection };
}

/** The base's text_encoder (CLIP ViT-L: SD 1.x's rules) from its diffusers-named shapes. */
export function deriveSdxlClipConfig(clip: ShapeIndex): Record<string, unknown> {
  return deriveTextEncoderConfig(clip, "sd1");
}

/** The VAE's config (LDM names): SD's VAE architecture with SDXL's scaling and fp32 upcast. */
export function deriveSdxlVaeConfig(shapes: ShapeIndex): Record<string, unknown> {
  return { ...deriveVaeConfig(shapes, "sd1"), force_upcast: true, sample_size: 1024, scaling_factor: 0.13025 };
}
