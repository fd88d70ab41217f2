/**
 * The diffusers configs of a single-file checkpoint, which carries none. What the tensors' shapes
 * say is read off them (channels, levels, layers per block, attention placement, cross-attention
 * width, linear or conv projections, text-encoder depth and width); what shapes cannot say (head
 * counts, group-norm groups, activation, the image size a model was trained at) is the family's,
 * as in the configs diffusers uses for these files when given no `config=` (its
 * DIFFUSERS_DEFAULT_PIPELINE_PATHS: stable-diffusion-v1-5 for SD 1.x, stabilityai/stable-diffusion-2-1
 * for SD 2.x). A model that departs from those (the tiny test models do) is read with
 * `configFolder`, as diffusers' `from_single_file(file, config=folder)`.
 */
import type { ModelFamily } from "../types.js";

/** Keys (component prefix removed) with their shapes: everything config derivation looks at. */
export type ShapeIndex = ReadonlyMap<string, readonly number[]>;

/** The family's conventions where shapes say nothing (SD 1.5's and SD 2.1's published configs). */
const FAMILY_DEFAULTS = {
  sd1: { headsOrHeadDim: { heads: 8 }, imageSize: 512, textAct: "quick_gelu", textProjection: 768 },
  sd2: { headsOrHeadDim: { headDim: 64 }, imageSize: 768, textAct: "gelu", textProjection: 512 },
} as const;

type SdFamily = Exclude<ModelFamily, "sdxl">;

function shapeOf(shapes: ShapeIndex, key: string, what: string): readonly number[] {
  const shape = shapes.get(key);
  if (shape === undefined) throw new Error(`${what}: ${key} is missing`);
  return shape;
}

/** The UNet's level structure, read off its keys (LDM names, `model.diffusion_model.` removed). */
export function unetLayersPerBlock(shapes: ShapeIndex): number {
  const inputs = new Set<number>();
  const downsamplers: number[] = [];
  for (const key of shapes.keys()) {
    const m = /^input_blocks\.(\d+)\./.exec(key);
    if (m) inputs.add(Number(m[1]));
    const op = /^input_blocks\.(\d+)\.0\.op\.weight$/.exec(key);
    if (op) downsamplers.push(Number(op[1]));
  }
  // input_blocks: conv_in, then per level `layers` resnets and (but the last level) a downsampler.
  return downsamplers.length > 0 ? Math.min(...downsamplers) - 1 : Math.max(0, ...inputs);
}

export function deriveUnetConfig(shapes: ShapeIndex, family: SdFamily, upcastAttention: boolean): Record<string, unknown> {
  const layers = unetLayersPerBlock(shapes);
  const perLevel = layers + 1;
  const levels = [...shapes.keys()].filter((k) => /^input_blocks\.\d+\.0\.op\.weight$/.test(k)).length + 1;
  const what = "the UNet";
  const blockOut: number[] = [];
  const downTypes: string[] = [];
  const upTypes: string[] = [];
  const hasPrefix = (prefix: string, except?: string) => [...shapes.keys()].some((k) => k.startsWith(prefix) && (except === undefined || !k.startsWith(except)));
  for (let level = 0; level < levels; level++) {
    const first = 1 + level * perLevel;
    blockOut.push(shapeOf(shapes, `input_blocks.${first}.0.out_layers.3.weight`, what)[0]!);
    downTypes.push(hasPrefix(`input_blocks.${first}.1.`) ? "CrossAttnDownBlock2D" : "DownBlock2D");
    const up = level * perLevel;
    upTypes.push(hasPrefix(`output_blocks.${up}.1.`, `output_blocks.${up}.1.conv.`) ? "CrossAttnUpBlock2D" : "UpBlock2D");
  }
  const keys = [...shapes.keys()];
  const toK = keys.find((k) => k.endsWith(".attn2.to_k.weight"));
  const projIn = keys.find((k) => /\.proj_in\.weight$/.test(k));
  const firstAttention = keys.find((k) => /^input_blocks\.\d+\.1\.transformer_blocks\./.test(k))?.replace(/transformer_blocks\..*$/, "");
  const transformerDepth = firstAttention === undefined ? 1 : new Set(keys.filter((k) => k.startsWith(`${firstAttention}transformer_blocks.`)).map((k) => k.split(".")[4])).size;
  const defaults = FAMILY_DEFAULTS[family];
  const attentionHeadDim = "heads" in defaults.headsOrHeadDim ? defaults.headsOrHeadDim.heads : blockOut.map((c) => c / (defaults.headsOrHeadDim as { headDim: number }).headDim);
  return {
    _class_name: "UNet2DConditionModel",
    act_fn: "silu",
    attention_head_dim: attentionHeadDim,
    block_out_channels: blockOut,
    center_input_sample: false,
    cross_attention_dim: toK === undefined ? null : shapes.get(toK)![1],
    down_block_types: downTypes,
    downsample_padding: 1,
    flip_sin_to_cos: true,
    freq_shift: 0,
    in_channels: shapeOf(shapes, "input_blocks.0.0.weight", what)[1],
    layers_per_block: layers,
    mid_block_scale_factor: 1,
    norm_eps: 1e-5,
    norm_num_groups: 32,
    out_channels: shapeOf(shapes, "out.2.weight", what)[0],
    sample_size: defaults.imageSize / 8,
    transformer_layers_per_block: transformerDepth,
    up_block_types: upTypes,
    upcast_attention: upcastAttention,
    use_linear_projection: projIn !== undefined && shapes.get(projIn)!.length === 2,
  };
}

/** The VAE's config (LDM names, `first_stage_model.` removed). */
export function deriveVaeConfig(shapes: ShapeIndex, family: SdFamily): Record<string, unknown> {
  const what = "the VAE";
  const levels = vaeLevels(shapes);
  const layers = new Set([...shapes.keys()].map((k) => /^encoder\.down\.0\.block\.(\d+)\./.exec(k)?.[1]).filter((x) => x !== undefined)).size;
  const blockOut = Array.from({ length: levels }, (_, i) => shapeOf(shapes, `encoder.down.${i}.block.0.conv2.weight`, what)[0]!);
  return {
    _class_name: "AutoencoderKL",
    act_fn: "silu",
    block_out_channels: blockOut,
    down_block_types: blockOut.map(() => "DownEncoderBlock2D"),
    in_channels: shapeOf(shapes, "encoder.conv_in.weight", what)[1],
    latent_channels: shapeOf(shapes, "post_quant_conv.weight", what)[0],
    layers_per_block: layers,
    norm_num_groups: 32,
    out_channels: shapeOf(shapes, "decoder.conv_out.weight", what)[0],
    sample_size: FAMILY_DEFAULTS[family].imageSize,
    // diffusers' LDM_VAE_DEFAULT_SCALING_FACTOR (SD 1.x and 2.x).
    scaling_factor: 0.18215,
    up_block_types: blockOut.map(() => "UpDecoderBlock2D"),
  };
}

/** The VAE decoder's level count (LDM numbers them bottom-up). */
export function vaeLevels(shapes: ShapeIndex): number {
  return new Set([...shapes.keys()].map((k) => /^decoder\.up\.(\d+)\./.exec(k)?.[1]).filter((x) => x !== undefined)).size;
}

/** The text encoder's config from its diffusers-named shapes (see ldm-keys.ts `clipKey`). */
export function deriveTextEncoderConfig(shapes: ShapeIndex, family: SdFamily): Record<string, unknown> {
  const what = "the text encoder";
  const [vocab, hidden] = shapeOf(shapes, "text_model.embeddings.token_embedding.weight", what) as [number, number];
  const layers = new Set([...shapes.keys()].map((k) => /^text_model\.encoder\.layers\.(\d+)\./.exec(k)?.[1]).filter((x) => x !== undefined)).size;
  const defaults = FAMILY_DEFAULTS[family];
  return {
    architectures: ["CLIPTextModel"],
    attention_dropout: 0,
    bos_token_id: 0,
    eos_token_id: 2,
    hidden_act: defaults.textAct,
    hidden_size: hidden,
    initializer_factor: 1,
    initializer_range: 0.02,
    intermediate_size: shapeOf(shapes, "text_model.encoder.layers.0.mlp.fc1.weight", what)[0],
    layer_norm_eps: 1e-5,
    max_position_embeddings: shapeOf(shapes, "text_model.embeddings.position_embedding.weight", what)[0],
    model_type: "clip_text_model",
    // CLIP ViT-L/14 and OpenCLIP ViT-H/14 both use 64-wide heads.
    num_attention_heads: hidden / 64,
    num_hidden_layers: layers,
    pad_token_id: 1,
    projection_dim: defaults.textProjection,
    vocab_size: vocab,
  };
}

/**
 * The scheduler settings SD 1.x, 2.x and SDXL share: the noise schedule they were trained with
 * (1000 scaled-linear betas from 0.00085 to 0.012) and the sampling defaults of their published
 * scheduler configs (leading timesteps offset by 1, no final alpha of one).
 */
export const SD_TRAINING_SCHEDULE: Readonly<Record<string, unknown>> = Object.freeze({
  beta_schedule: "scaled_linear",
  beta_start: 0.00085,
  beta_end: 0.012,
  interpolation_type: "linear",
  num_train_timesteps: 1000,
  sample_max_value: 1.0,
  set_alpha_to_one: false,
  skip_prk_steps: true,
  steps_offset: 1,
  timestep_spacing: "leading",
});

/**
 * The scheduler config: diffusers' SCHEDULER_DEFAULT_CONFIG for single files (the betas every SD
 * 1.x/2.x model was trained with), in the class of the family's published pipeline (PNDM for SD
 * 1.5, DDIM for 2.1).
 */
export function deriveSchedulerConfig(family: SdFamily, predictionType: string): Record<string, unknown> {
  return { _class_name: family === "sd1" ? "PNDMScheduler" : "DDIMScheduler", ...SD_TRAINING_SCHEDULE, prediction_type: predictionType };
}
