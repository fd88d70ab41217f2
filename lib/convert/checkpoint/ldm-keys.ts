/**
 * The original single-file layout (CompVis/Stability "LDM" checkpoints, what A1111 and civitai
 * users have) → diffusers state-dict keys, mapped as diffusers' own loader maps them
 * (`diffusers/loaders/single_file_utils.py` at 58eb52c: `convert_ldm_unet_checkpoint`,
 * `convert_ldm_vae_checkpoint`, `convert_ldm_clip_checkpoint`, `convert_open_clip_checkpoint`).
 * Each function takes one key with its component prefix removed and says which diffusers
 * tensor(s) it becomes; a key it does not know maps to nothing and is left out, as diffusers
 * leaves it out. The tests check the result against diffusers' `from_single_file` on the tiny
 * checkpoints (test/unit/convert-checkpoint-single-file.test.ts).
 */
import type { MappedKey } from "./tensors.js";

export type { MappedKey } from "./tensors.js";

/** The component prefixes of the single-file layout. */
export const LDM_PREFIX = {
  unet: "model.diffusion_model.",
  /** diffusers also takes "vae." (`LDM_VAE_KEYS`). */
  vae: ["first_stage_model.", "vae."],
  /** SD 1.x: transformers' CLIPTextModel under this prefix. */
  clip: "cond_stage_model.transformer.",
  /** SD 2.x: OpenCLIP ViT-H's text tower. */
  openClip: "cond_stage_model.model.",
} as const;

const UNET_DIRECT: Record<string, string> = {
  "time_embed.0.weight": "time_embedding.linear_1.weight",
  "time_embed.0.bias": "time_embedding.linear_1.bias",
  "time_embed.2.weight": "time_embedding.linear_2.weight",
  "time_embed.2.bias": "time_embedding.linear_2.bias",
  "input_blocks.0.0.weight": "conv_in.weight",
  "input_blocks.0.0.bias": "conv_in.bias",
  "out.0.weight": "conv_norm_out.weight",
  "out.0.bias": "conv_norm_out.bias",
  "out.2.weight": "conv_out.weight",
  "out.2.bias": "conv_out.bias",
};

/** `update_unet_resnet_ldm_to_diffusers`'s renames inside a ResBlock. */
function unetResnet(rest: string): string {
  return rest
    .replace("in_layers.0", "norm1")
    .replace("in_layers.2", "conv1")
    .replace("out_layers.0", "norm2")
    .replace("out_layers.3", "conv2")
    .replace("emb_layers.1", "time_emb_proj")
    .replace("skip_connection", "conv_shortcut");
}

/**
 * A UNet key (after `model.diffusion_model.`). `layersPerBlock` numbers the blocks: LDM counts
 * input/output blocks flat, layersPerBlock + 1 per level (the last of each input level is the
 * downsampler, and each output level has one resnet more).
 */
export function mapUnetKey(key: string, layersPerBlock: number): MappedKey | undefined {
  const direct = UNET_DIRECT[key];
  if (direct !== undefined) return { key: direct };
  const perLevel = layersPerBlock + 1;
  let m = /^input_blocks\.(\d+)\.(\d+)\.(.+)$/.exec(key);
  if (m) {
    const i = Number(m[1]);
    if (i === 0) return undefined;
    const [level, layer, sub, rest] = [Math.floor((i - 1) / perLevel), (i - 1) % perLevel, m[2], m[3]!];
    if (sub === "0" && rest.startsWith("op.")) return { key: `down_blocks.${level}.downsamplers.0.conv.${rest.slice(3)}` };
    if (sub === "0") return { key: `down_blocks.${level}.resnets.${layer}.${unetResnet(rest)}` };
    if (sub === "1") return { key: `down_blocks.${level}.attentions.${layer}.${rest}` };
    return undefined;
  }
  m = /^middle_block\.(\d+)\.(.+)$/.exec(key);
  if (m) {
    const k = Number(m[1]);
    // LDM's middle block is [resnet, attention, resnet].
    return k % 2 === 0 ? { key: `mid_block.resnets.${Math.max(k - 1, 0)}.${unetResnet(m[2]!)}` } : { key: `mid_block.attentions.${k - 1}.${m[2]}` };
  }
  m = /^output_blocks\.(\d+)\.(\d+)\.(.+)$/.exec(key);
  if (m) {
    const i = Number(m[1]);
    const [level, layer, sub, rest] = [Math.floor(i / perLevel), i % perLevel, m[2], m[3]!];
    if (sub === "0") return { key: `up_blocks.${level}.resnets.${layer}.${unetResnet(rest)}` };
    // The upsampler is sub-module 1 of a level's last block without attention, 2 with it.
    if ((sub === "1" || sub === "2") && rest.startsWith("conv.")) return { key: `up_blocks.${level}.upsamplers.0.conv.${rest.slice(5)}` };
    if (sub === "1") return { key: `up_blocks.${level}.attentions.${layer}.${rest}` };
    return undefined;
  }
  return undefined;
}

const VAE_DIRECT: Record<string, string> = {
  "encoder.conv_in.weight": "encoder.conv_in.weight",
  "encoder.conv_in.bias": "encoder.conv_in.bias",
  "encoder.conv_out.weight": "encoder.conv_out.weight",
  "encoder.conv_out.bias": "encoder.conv_out.bias",
  "encoder.norm_out.weight": "encoder.conv_norm_out.weight",
  "encoder.norm_out.bias": "encoder.conv_norm_out.bias",
  "decoder.conv_in.weight": "decoder.conv_in.weight",
  "decoder.conv_in.bias": "decoder.conv_in.bias",
  "decoder.conv_out.weight": "decoder.conv_out.weight",
  "decoder.conv_out.bias": "decoder.conv_out.bias",
  "decoder.norm_out.weight": "decoder.conv_norm_out.weight",
  "decoder.norm_out.bias": "decoder.conv_norm_out.bias",
  "quant_conv.weight": "quant_conv.weight",
  "quant_conv.bias": "quant_conv.bias",
  "post_quant_conv.weight": "post_quant_conv.weight",
  "post_quant_conv.bias": "post_quant_conv.bias",
};

const VAE_ATTENTION: Record<string, string> = { norm: "group_norm", q: "to_q", k: "to_k", v: "to_v", proj_out: "to_out.0" };

/**
 * A VAE key (after `first_stage_model.`). `upBlocks` is the decoder's level count: LDM numbers the
 * decoder's levels from the bottom, diffusers from the top. `shape` is the stored tensor's: the
 * mid-block attention's q/k/v/proj_out are 1×1 convs in LDM and linear layers in diffusers.
 */
export function mapVaeKey(key: string, upBlocks: number, shape: readonly number[]): MappedKey | undefined {
  const direct = VAE_DIRECT[key];
  if (direct !== undefined) return { key: direct };
  let m = /^(encoder|decoder)\.mid\.block_([12])\.(.+)$/.exec(key);
  if (m) return { key: `${m[1]}.mid_block.resnets.${Number(m[2]) - 1}.${m[3]!.replace("nin_shortcut", "conv_shortcut")}` };
  m = /^(encoder|decoder)\.mid\.attn_1\.(norm|q|k|v|proj_out)\.(weight|bias)$/.exec(key);
  if (m) {
    const mapped = `${m[1]}.mid_block.attentions.0.${VAE_ATTENTION[m[2]!]}.${m[3]}`;
    const linear = m[2] !== "norm" && m[3] === "weight" && shape.length > 2;
    return linear ? { key: mapped, transform: { kind: "reshape", shape: shape.slice(0, 2) } } : { key: mapped };
  }
  m = /^encoder\.down\.(\d+)\.block\.(\d+)\.(.+)$/.exec(key);
  if (m) return { key: `encoder.down_blocks.${m[1]}.resnets.${m[2]}.${m[3]!.replace("nin_shortcut", "conv_shortcut")}` };
  m = /^encoder\.down\.(\d+)\.downsample\.conv\.(.+)$/.exec(key);
  if (m) return { key: `encoder.down_blocks.${m[1]}.downsamplers.0.conv.${m[2]}` };
  m = /^decoder\.up\.(\d+)\.block\.(\d+)\.(.+)$/.exec(key);
  if (m) return { key: `decoder.up_blocks.${upBlocks - 1 - Number(m[1])}.resnets.${m[2]}.${m[3]!.replace("nin_shortcut", "conv_shortcut")}` };
  m = /^decoder\.up\.(\d+)\.upsample\.conv\.(.+)$/.exec(key);
  if (m) return { key: `decoder.up_blocks.${upBlocks - 1 - Number(m[1])}.upsamplers.0.conv.${m[2]}` };
  return undefined;
}

/**
 * The text encoder's keys as real SD folders, single files and transformers 4 name CLIPTextModel's
 * weights (`text_model.embeddings.…`, `text_model.encoder.layers.…`): transformers 5 saves them
 * without the `text_model.` prefix, which is put back so that every source names a weight one way
 * (the graph builder's names, lib/convert/graphs/clip.ts).
 */
export function clipKey(key: string): string {
  // CLIPTextModelWithProjection's projection (SDXL's text_encoder_2) sits beside text_model in every version.
  return key.startsWith("text_model.") || key.startsWith("text_projection.") ? key : `text_model.${key}`;
}

/** An SD 1.x text-encoder key (after `cond_stage_model.transformer.`): transformers' own names. */
export function mapClipKey(key: string): MappedKey {
  return { key: clipKey(key) };
}

const OPEN_CLIP_DIRECT: Record<string, string> = {
  positional_embedding: "text_model.embeddings.position_embedding.weight",
  "token_embedding.weight": "text_model.embeddings.token_embedding.weight",
  "ln_final.weight": "text_model.final_layer_norm.weight",
  "ln_final.bias": "text_model.final_layer_norm.bias",
};

/**
 * An SD 2.x text-encoder key (after `cond_stage_model.model.`), OpenCLIP → CLIPTextModel. The joined
 * `in_proj` (rows q, k, v) becomes three tensors. Left out as diffusers leaves them out
 * (`SD_2_TEXT_ENCODER_KEYS_TO_IGNORE`): `text_projection`, and layer 23, the last of ViT-H's 24,
 * which SD 2 does not use (it conditions on the penultimate layer). SDXL's OpenCLIP ViT-bigG keeps
 * every layer (`keepEveryLayer`; its projection is mapped by sdxl-single-file.ts).
 */
export function mapOpenClipKey(key: string, shape: readonly number[], keepEveryLayer = false): MappedKey[] {
  const direct = OPEN_CLIP_DIRECT[key];
  if (direct !== undefined) return [{ key: direct }];
  const m = /^transformer\.resblocks\.(\d+)\.(.+)$/.exec(key);
  if (!m || (m[1] === "23" && !keepEveryLayer)) return [];
  const layer = `text_model.encoder.layers.${m[1]}`;
  const rest = m[2]!;
  const inProj = /^attn\.in_proj_(weight|bias)$/.exec(rest);
  if (inProj) {
    const width = shape[0]! / 3;
    return (["q", "k", "v"] as const).map((name, index) => ({
      key: `${layer}.self_attn.${name}_proj.${inProj[1]}`,
      transform: { kind: "rows", start: index * width, count: width },
    }));
  }
  const renamed = rest
    .replace("ln_1", "layer_norm1")
    .replace("ln_2", "layer_norm2")
    .replace("mlp.c_fc.", "mlp.fc1.")
    .replace("mlp.c_proj.", "mlp.fc2.")
    .replace(/^attn\./, "self_attn.");
  return [{ key: `${layer}.${renamed}` }];
}
