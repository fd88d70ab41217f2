/**
 * diffusers' AutoencoderKL as two ONNX graphs, driven by its config.json:
 *
 * - decoder: `latent_sample` float32 [batch_size, latent_channels, latent_height, latent_width] →
 *   post_quant_conv → Decoder → `sample` float32 [batch_size, 3, height, width]. The 1/scaling_factor
 *   is not in the graph (the pipeline applies it), as in optimum's export.
 * - encoder: `sample` float32 [batch_size, 3, height, width] → Encoder → quant_conv →
 *   `latent_parameters` float32 [batch_size, 2·latent_channels, latent_height, latent_width]: the
 *   posterior's mean and log-variance (unclamped) stacked on the channel axis, as current optimum
 *   exports it; the pipeline builds DiagonalGaussianDistribution from it (lib/sampler/latents.ts).
 *
 * Blocks: DownEncoderBlock2D (resnets, then Downsample2D: pad right/bottom by 1, conv stride 2),
 * UNetMidBlock2D (resnet, single-head attention with its own GroupNorm, resnet), UpDecoderBlock2D
 * (resnets, then nearest ×2 and conv). ResnetBlock2D here has no time embedding; every norm has
 * `norm_num_groups` groups and epsilon 1e-6.
 */
import type { GraphBuilder, Value } from "../../onnx/builder.js";
import type { ComponentSource } from "../types.js";
import { ComponentConfig } from "./config.js";
import { type GraphDtype, Layers } from "./layers.js";

export interface VaeGraphOptions {
  dtype: GraphDtype;
  /** For messages: "<checkpoint> vae". */
  origin: string;
}

/** diffusers' Encoder/Decoder build every norm with eps 1e-6. */
const VAE_EPS = 1e-6;

class VaeBuilder {
  readonly config: ComponentConfig;
  readonly layers: Layers;
  readonly groups: number;
  readonly blocks: number;
  readonly layersPerBlock: number;
  readonly latentChannels: number;

  constructor(
    readonly g: GraphBuilder,
    source: ComponentSource,
    options: VaeGraphOptions,
  ) {
    this.config = new ComponentConfig(source.config, options.origin);
    this.layers = new Layers(g, source.weights, options.origin, options.dtype);
    this.config.require("act_fn", ["silu"], "silu");
    this.config.require("mid_block_add_attention", [true], true);
    for (const key of ["down_block_types", "up_block_types"] as const) {
      const known = key === "down_block_types" ? "DownEncoderBlock2D" : "UpDecoderBlock2D";
      if (!this.config.strings(key).every((b) => b === known)) this.config.fail(key, `a list of "${known}"`);
    }
    this.blocks = this.config.strings("down_block_types").length;
    this.config.perBlock("block_out_channels", this.blocks);
    this.groups = this.config.integer("norm_num_groups", 32);
    this.layersPerBlock = this.config.integer("layers_per_block", 1);
    this.latentChannels = this.config.integer("latent_channels", 4);
  }

  async resnet(x: Value, prefix: string): Promise<Value> {
    const { g, layers } = this;
    return g.scope(prefix, async () => {
      let h = layers.silu(await layers.groupNorm(x, `${prefix}.norm1`, this.groups, VAE_EPS));
      h = await layers.conv(h, `${prefix}.conv1`);
      h = layers.silu(await layers.groupNorm(h, `${prefix}.norm2`, this.groups, VAE_EPS));
      h = await layers.conv(h, `${prefix}.conv2`);
      const shortcut = layers.has(`${prefix}.conv_shortcut.weight`) ? await layers.conv(x, `${prefix}.conv_shortcut`, { padding: 0 }) : x;
      return g.op("Add", [shortcut, h]);
    });
  }

  /** The mid block's Attention: GroupNorm, one head over all channels, to_out.0, + the input. */
  async attention(x: Value, prefix: string): Promise<Value> {
    const { g, layers } = this;
    return g.scope(prefix, async () => {
      const channels = layers.shape(`${prefix}.group_norm.weight`)[0]!;
      const normed = await layers.groupNorm(x, `${prefix}.group_norm`, this.groups, VAE_EPS);
      const tokens = g.op("Reshape", [g.op("Transpose", [normed], { perm: [0, 2, 3, 1] }), g.constant([0, -1, channels], "int64")]);
      const q = await layers.linear(tokens, `${prefix}.to_q`);
      const k = await layers.linear(tokens, `${prefix}.to_k`);
      const v = await layers.linear(tokens, `${prefix}.to_v`);
      const out = await layers.linear(layers.attention(q, k, v, 1, channels), `${prefix}.to_out.0`);
      const image = g.op("Reshape", [g.op("Transpose", [out], { perm: [0, 2, 1] }), g.op("Shape", [x], {}, { type: "int64" })]);
      return g.op("Add", [image, x]);
    });
  }

  async midBlock(h: Value, prefix: string): Promise<Value> {
    h = await this.resnet(h, `${prefix}.resnets.0`);
    h = await this.attention(h, `${prefix}.attentions.0`);
    return this.resnet(h, `${prefix}.resnets.1`);
  }

  async outputHead(h: Value, prefix: string): Promise<Value> {
    const { layers } = this;
    return layers.conv(layers.silu(await layers.groupNorm(h, `${prefix}.conv_norm_out`, this.groups, VAE_EPS)), `${prefix}.conv_out`);
  }
}

export async function buildVaeDecoderGraph(g: GraphBuilder, source: ComponentSource, options: VaeGraphOptions): Promise<void> {
  const vae = new VaeBuilder(g, source, options);
  const { layers } = vae;
  let h = layers.toCompute(g.input("latent_sample", "float32", ["batch_size", vae.latentChannels, "latent_height", "latent_width"]));
  if (layers.has("post_quant_conv.weight")) h = await layers.conv(h, "post_quant_conv", { padding: 0 });
  h = await layers.conv(h, "decoder.conv_in");
  h = await vae.midBlock(h, "decoder.mid_block");
  for (let i = 0; i < vae.blocks; i++) {
    for (let j = 0; j <= vae.layersPerBlock; j++) h = await vae.resnet(h, `decoder.up_blocks.${i}.resnets.${j}`);
    if (i < vae.blocks - 1) {
      const doubled = g.op("Resize", [h, undefined, g.constant([1, 1, 2, 2], "float32")], { mode: "nearest", coordinate_transformation_mode: "asymmetric", nearest_mode: "floor" });
      h = await layers.conv(doubled, `decoder.up_blocks.${i}.upsamplers.0.conv`);
    }
  }
  h = await vae.outputHead(h, "decoder");
  g.output(g.cast(h, "float32"), "sample", ["batch_size", vae.config.integer("out_channels", 3), "height", "width"]);
  layers.checkAllRead((k) => k.startsWith("decoder.") || k.startsWith("post_quant_conv."));
}

export async function buildVaeEncoderGraph(g: GraphBuilder, source: ComponentSource, options: VaeGraphOptions): Promise<void> {
  const vae = new VaeBuilder(g, source, options);
  const { layers } = vae;
  let h = layers.toCompute(g.input("sample", "float32", ["batch_size", vae.config.integer("in_channels", 3), "height", "width"]));
  h = await layers.conv(h, "encoder.conv_in");
  for (let i = 0; i < vae.blocks; i++) {
    for (let j = 0; j < vae.layersPerBlock; j++) h = await vae.resnet(h, `encoder.down_blocks.${i}.resnets.${j}`);
    // Downsample2D with padding 0 pads one column/row on the right/bottom, then convolves with stride 2.
    if (i < vae.blocks - 1) h = await layers.conv(h, `encoder.down_blocks.${i}.downsamplers.0.conv`, { stride: 2, padding: [0, 0, 1, 1] });
  }
  h = await vae.midBlock(h, "encoder.mid_block");
  h = await vae.outputHead(h, "encoder");
  if (layers.has("quant_conv.weight")) h = await layers.conv(h, "quant_conv", { padding: 0 });
  // optimum's VaeEncoderOnnxConfig names these axes height_latent/width_latent (its decoder's input: latent_height/latent_width).
  g.output(g.cast(h, "float32"), "latent_parameters", ["batch_size", 2 * vae.latentChannels, "height_latent", "width_latent"]);
  layers.checkAllRead((k) => k.startsWith("encoder.") || k.startsWith("quant_conv."));
}
