/**
 * diffusers' UNet2DConditionModel as an ONNX graph, driven by its config.json.
 *
 * I/O (the SD export contract lib/model/graph-io.ts reads, see ../shared tiny-sd README):
 * `sample` float32 [batch_size, C, height, width], `timestep` float32 [steps] (fractional timesteps
 * of LMS/Euler stay exact; [1] broadcasts over the batch), `encoder_hidden_states` float32
 * [batch_size, sequence_length, cross_attention_dim] → `out_sample` float32 [batch_size, C, height, width].
 *
 * Blocks: CrossAttnDownBlock2D / DownBlock2D, UNetMidBlock2DCrossAttn, UpBlock2D / CrossAttnUpBlock2D,
 * ResnetBlock2D with the time embedding, Transformer2DModel (conv or linear proj_in/out,
 * `transformer_layers_per_block` BasicTransformerBlocks: attn1, attn2, GEGLU feed-forward).
 * `attention_head_dim`, `num_attention_heads` and `transformer_layers_per_block` may be numbers or
 * per-block lists (SD 2.x, SDXL). The forward pass is UNet2DConditionModel.forward's; config values
 * this file does not implement are refused by name (and any weight the graph does not read is an
 * error, so an unknown part cannot be dropped silently).
 *
 * SDXL's `addition_embed_type: "text_time"` adds the inputs `text_embeds` float32 [batch_size, D] (the
 * second text encoder's projection) and `time_ids` float32 [batch_size, n] (optimum's names).
 *
 * Not handled: latent sizes not divisible by 2^(number of upsamplers) (diffusers then passes
 * `upsample_size`; the pipeline only asks for multiples of 8 latent pixels, which are).
 */
import type { GraphBuilder, Value } from "../../onnx/builder.js";
import { ATTENTION_SCORES_KEY } from "../../onnx/sd-trt-metadata.js";
import type { ComponentSource } from "../types.js";
import { ComponentConfig } from "./config.js";
import { type GraphDtype, Layers } from "./layers.js";

export interface UnetGraphOptions {
  dtype: GraphDtype;
  /** For messages: "<checkpoint> unet". */
  origin: string;
  /**
   * SDXL: the pooled width (text_encoder_2's projection_dim). With it `text_embeds` [batch_size, P] and
   * `time_ids` [batch_size, T] get the static widths optimum's export declares, T = (projection_class_embeddings_input_dim − P) / addition_time_embed_dim.
   */
  textEmbedsWidth?: number;
}

/** diffusers' Transformer2DModel GroupNorm epsilon and BasicTransformerBlock LayerNorm epsilon. */
const TRANSFORMER_GROUP_NORM_EPS = 1e-6;
const TRANSFORMER_LAYER_NORM_EPS = 1e-5;

/**
 * diffusers' get_timestep_embedding on float32 timesteps [N] → [N, dim], computed in float32 as
 * torch does: exp(−ln(10000)·i / (half − shift)) · t, then [sin | cos] (or [cos | sin]).
 */
function timestepEmbedding(layers: Layers, timesteps: Value, dim: number, flipSinToCos: boolean, freqShift: number): Value {
  const g = layers.g;
  const half = Math.floor(dim / 2);
  const steps = g.op("Range", [g.scalar(0, "float32"), g.scalar(half, "float32"), g.scalar(1, "float32")]);
  const exponent = g.op("Div", [g.op("Mul", [steps, g.scalar(-Math.log(10000), "float32")]), g.scalar(half - freqShift, "float32")]);
  const angles = g.op("Mul", [g.op("Unsqueeze", [timesteps, g.constant([1], "int64")]), g.op("Unsqueeze", [g.op("Exp", [exponent]), g.constant([0], "int64")])]);
  const sin = g.op("Sin", [angles]);
  const cos = g.op("Cos", [angles]);
  return g.op("Concat", flipSinToCos ? [cos, sin] : [sin, cos], { axis: -1 });
}

class UnetBuilder {
  readonly g: GraphBuilder;
  constructor(
    readonly layers: Layers,
    readonly groups: number,
    readonly epsilon: number,
    readonly useLinearProjection: boolean,
    readonly upcastAttention: boolean,
  ) {
    this.g = layers.g;
  }

  /** ResnetBlock2D (time_embedding_norm "default", output_scale_factor 1). */
  async resnet(x: Value, prefix: string, timeEmbedding: Value): Promise<Value> {
    const { g, layers } = this;
    return g.scope(prefix, async () => {
      let h = layers.silu(await layers.groupNorm(x, `${prefix}.norm1`, this.groups, this.epsilon));
      h = await layers.conv(h, `${prefix}.conv1`);
      const t = await layers.linear(layers.silu(timeEmbedding), `${prefix}.time_emb_proj`);
      h = g.op("Add", [h, g.op("Unsqueeze", [t, g.constant([2, 3], "int64")])]);
      h = layers.silu(await layers.groupNorm(h, `${prefix}.norm2`, this.groups, this.epsilon));
      h = await layers.conv(h, `${prefix}.conv2`);
      const shortcut = layers.has(`${prefix}.conv_shortcut.weight`) ? await layers.conv(x, `${prefix}.conv_shortcut`, { padding: 0 }) : x;
      return g.op("Add", [shortcut, h]);
    });
  }

  /** diffusers' Attention (AttnProcessor2_0): to_q/to_k/to_v without bias, to_out.0 with. */
  async attention(x: Value, context: Value, prefix: string, heads: number, headDim: number): Promise<Value> {
    const { layers } = this;
    const q = await layers.linear(x, `${prefix}.to_q`);
    const k = await layers.linear(context, `${prefix}.to_k`);
    const v = await layers.linear(context, `${prefix}.to_v`);
    return layers.linear(layers.attention(q, k, v, heads, headDim, { upcast: this.upcastAttention }), `${prefix}.to_out.0`);
  }

  /** BasicTransformerBlock: self-attention, cross-attention, GEGLU feed-forward, each pre-LN with a residual. */
  async transformerBlock(h: Value, context: Value, prefix: string, heads: number, headDim: number): Promise<Value> {
    const { g, layers } = this;
    return g.scope(prefix, async () => {
      let x = await layers.layerNorm(h, `${prefix}.norm1`, TRANSFORMER_LAYER_NORM_EPS);
      h = g.op("Add", [await this.attention(x, x, `${prefix}.attn1`, heads, headDim), h]);
      x = await layers.layerNorm(h, `${prefix}.norm2`, TRANSFORMER_LAYER_NORM_EPS);
      h = g.op("Add", [await this.attention(x, context, `${prefix}.attn2`, heads, headDim), h]);
      x = await layers.layerNorm(h, `${prefix}.norm3`, TRANSFORMER_LAYER_NORM_EPS);
      const projected = await layers.linear(x, `${prefix}.ff.net.0.proj`);
      const inner = layers.shape(`${prefix}.ff.net.0.proj.weight`)[0]! / 2;
      const [value, gate] = g.opMulti("Split", [projected, g.constant([inner, inner], "int64")], 2, { axis: -1 });
      const ff = await layers.linear(g.op("Mul", [value!, layers.gelu(gate!)]), `${prefix}.ff.net.2`);
      return g.op("Add", [ff, h]);
    });
  }

  /** Transformer2DModel (continuous input): GroupNorm, proj_in, the blocks, proj_out, + the input. */
  async transformer(x: Value, context: Value, prefix: string, heads: number, depth: number): Promise<Value> {
    const { g, layers } = this;
    return g.scope(prefix, async () => {
      const channels = layers.shape(`${prefix}.norm.weight`)[0]!;
      const inner = layers.shape(`${prefix}.proj_in.weight`)[0]!;
      if (inner !== channels) layers.fail(`${prefix}.proj_in changes the channel count (${channels} → ${inner}), which the converter does not handle`);
      const toTokens = (v: Value) => g.op("Reshape", [g.op("Transpose", [v], { perm: [0, 2, 3, 1] }), g.constant([0, -1, channels], "int64")]);
      const shape = g.op("Shape", [x], {}, { type: "int64" });
      const toImage = (v: Value) => g.op("Reshape", [g.op("Transpose", [v], { perm: [0, 2, 1] }), shape]);
      const normed = await layers.groupNorm(x, `${prefix}.norm`, this.groups, TRANSFORMER_GROUP_NORM_EPS);
      let h = this.useLinearProjection ? await layers.linear(toTokens(normed), `${prefix}.proj_in`) : toTokens(await layers.conv(normed, `${prefix}.proj_in`, { padding: 0 }));
      for (let i = 0; i < depth; i++) h = await this.transformerBlock(h, context, `${prefix}.transformer_blocks.${i}`, heads, inner / heads);
      const out = this.useLinearProjection ? toImage(await layers.linear(h, `${prefix}.proj_out`)) : await layers.conv(toImage(h), `${prefix}.proj_out`, { padding: 0 });
      return g.op("Add", [out, x]);
    });
  }
}

const DOWN_BLOCKS = ["CrossAttnDownBlock2D", "DownBlock2D"];
const UP_BLOCKS = ["CrossAttnUpBlock2D", "UpBlock2D"];

/** The widths of SDXL's `text_embeds` and `time_ids` inputs: static when the pooled width is known, else named axes. */
function addedInputWidths(config: ComponentConfig, timeEmbedDim: number, pooled: number | undefined): { textEmbeds: number | string; timeIds: number | string } {
  if (pooled === undefined) return { textEmbeds: "text_embeds_size", timeIds: "time_ids_size" };
  const timeIds = (config.integer("projection_class_embeddings_input_dim") - pooled) / timeEmbedDim;
  if (!Number.isInteger(timeIds) || timeIds <= 0) config.fail("projection_class_embeddings_input_dim", `${pooled} (the pooled text embedding) plus a whole number of ${timeEmbedDim}-wide time-id embeddings`);
  return { textEmbeds: pooled, timeIds };
}

export async function buildUnetGraph(g: GraphBuilder, source: ComponentSource, options: UnetGraphOptions): Promise<void> {
  const config = new ComponentConfig(source.config, options.origin);
  const layers = new Layers(g, source.weights, options.origin, options.dtype);
  // What the graph implements; anything else is refused by name rather than computed wrongly.
  config.require("act_fn", ["silu"], "silu");
  config.require("addition_embed_type", [undefined, "text_time"], undefined);
  config.require("class_embed_type", [undefined], undefined);
  config.require("encoder_hid_dim_type", [undefined], undefined);
  config.require("time_cond_proj_dim", [undefined], undefined);
  config.require("time_embedding_type", ["positional"], "positional");
  config.require("time_embedding_act_fn", [undefined], undefined);
  config.require("timestep_post_act", [undefined], undefined);
  config.require("resnet_time_scale_shift", ["default"], "default");
  config.require("resnet_skip_time_act", [false], false);
  config.require("resnet_out_scale_factor", [1], 1);
  config.require("mid_block_scale_factor", [1], 1);
  config.require("mid_block_type", ["UNetMidBlock2DCrossAttn"], "UNetMidBlock2DCrossAttn");
  config.require("only_cross_attention", [false], false);
  config.require("dual_cross_attention", [false], false);
  config.require("center_input_sample", [false], false);
  config.require("attention_type", ["default"], "default");
  config.require("cross_attention_norm", [undefined], undefined);
  config.require("downsample_padding", [1], 1);

  const down = config.strings("down_block_types");
  const up = config.strings("up_block_types");
  const blocks = down.length;
  for (const [key, list, known] of [["down_block_types", down, DOWN_BLOCKS], ["up_block_types", up, UP_BLOCKS]] as const) {
    if (list.length !== blocks || !list.every((b) => known.includes(b))) config.fail(key, `${blocks} of ${known.join(", ")}`);
  }
  const channels = config.perBlock("block_out_channels", blocks);
  const layersPerBlock = config.perBlock("layers_per_block", blocks, 2);
  const depth = config.perBlock("transformer_layers_per_block", blocks, 1);
  // diffusers' naming quirk: without num_attention_heads, attention_head_dim is the head count.
  const heads = config.values["num_attention_heads"] != null ? config.perBlock("num_attention_heads", blocks) : config.perBlock("attention_head_dim", blocks, 8);
  const crossDim = config.integer("cross_attention_dim");
  const inChannels = config.integer("in_channels", 4);
  const outChannels = config.integer("out_channels", 4);
  const upcastAttention = config.boolean("upcast_attention", false);
  const unet = new UnetBuilder(layers, config.integer("norm_num_groups", 32), config.number("norm_eps", 1e-5), config.boolean("use_linear_projection", false), upcastAttention);
  // The engine builder cannot see that Q·Kᵀ and the softmax stay fp32 in an fp16 graph: say so.
  g.metadata(ATTENTION_SCORES_KEY, upcastAttention || options.dtype === "fp32" ? "float32" : "float16");

  const sample = g.input("sample", "float32", ["batch_size", inChannels, "height", "width"]);
  const timestep = g.input("timestep", "float32", ["steps"]);
  const context = layers.toCompute(g.input("encoder_hidden_states", "float32", ["batch_size", "sequence_length", crossDim]));
  const flipSinToCos = config.boolean("flip_sin_to_cos", true);
  const freqShift = config.number("freq_shift", 0);

  // Time embedding: sinusoids in float32 (fractional timesteps), then the MLP in the compute type.
  let emb = await g.scope("time_embedding", async () => {
    const sinusoid = timestepEmbedding(layers, timestep, channels[0]!, flipSinToCos, freqShift);
    const hidden = layers.silu(await layers.linear(layers.toCompute(sinusoid), "time_embedding.linear_1"));
    return layers.linear(hidden, "time_embedding.linear_2");
  });
  if (config.optionalString("addition_embed_type") === "text_time") {
    // SDXL: emb += add_embedding([text_embeds | sinusoids of each time id]) (UNet2DConditionModel.get_aug_embed).
    const aug = await g.scope("add_embedding", async () => {
      const timeEmbedDim = config.integer("addition_time_embed_dim");
      const widths = addedInputWidths(config, timeEmbedDim, options.textEmbedsWidth);
      const textEmbeds = g.input("text_embeds", "float32", ["batch_size", widths.textEmbeds]);
      const timeIds = g.input("time_ids", "float32", ["batch_size", widths.timeIds]);
      const flat = g.op("Reshape", [timeIds, g.constant([-1], "int64")]);
      const sinusoids = timestepEmbedding(layers, flat, timeEmbedDim, flipSinToCos, freqShift);
      const batch = g.op("Slice", [g.op("Shape", [timeIds], {}, { type: "int64" }), g.constant([0], "int64"), g.constant([1], "int64")]);
      const perRow = g.op("Reshape", [sinusoids, g.op("Concat", [batch, g.constant([-1], "int64")], { axis: 0 })]);
      const added = layers.toCompute(g.op("Concat", [textEmbeds, perRow], { axis: -1 }));
      return layers.linear(layers.silu(await layers.linear(added, "add_embedding.linear_1")), "add_embedding.linear_2");
    });
    emb = g.op("Add", [emb, aug]);
  }

  let h = await layers.conv(layers.toCompute(sample), "conv_in");
  const skips: Value[] = [h];
  for (let i = 0; i < blocks; i++) {
    const cross = down[i] === "CrossAttnDownBlock2D";
    for (let j = 0; j < layersPerBlock[i]!; j++) {
      h = await unet.resnet(h, `down_blocks.${i}.resnets.${j}`, emb);
      if (cross) h = await unet.transformer(h, context, `down_blocks.${i}.attentions.${j}`, heads[i]!, depth[i]!);
      skips.push(h);
    }
    if (i < blocks - 1) {
      h = await layers.conv(h, `down_blocks.${i}.downsamplers.0.conv`, { stride: 2, padding: 1 });
      skips.push(h);
    }
  }

  h = await unet.resnet(h, "mid_block.resnets.0", emb);
  h = await unet.transformer(h, context, "mid_block.attentions.0", heads[blocks - 1]!, depth[blocks - 1]!);
  h = await unet.resnet(h, "mid_block.resnets.1", emb);

  for (let i = 0; i < blocks; i++) {
    const level = blocks - 1 - i; // up block i mirrors down block `level`
    const cross = up[i] === "CrossAttnUpBlock2D";
    for (let j = 0; j <= layersPerBlock[level]!; j++) {
      h = g.op("Concat", [h, skips.pop()!], { axis: 1 });
      h = await unet.resnet(h, `up_blocks.${i}.resnets.${j}`, emb);
      if (cross) h = await unet.transformer(h, context, `up_blocks.${i}.attentions.${j}`, heads[level]!, depth[level]!);
    }
    if (i < blocks - 1) {
      const doubled = g.op("Resize", [h, undefined, g.constant([1, 1, 2, 2], "float32")], { mode: "nearest", coordinate_transformation_mode: "asymmetric", nearest_mode: "floor" });
      h = await layers.conv(doubled, `up_blocks.${i}.upsamplers.0.conv`);
    }
  }

  h = layers.silu(await layers.groupNorm(h, "conv_norm_out", unet.groups, unet.epsilon));
  h = await layers.conv(h, "conv_out");
  g.output(g.cast(h, "float32"), "out_sample", ["batch_size", outChannels, "height", "width"]);
  layers.checkAllRead();
}
