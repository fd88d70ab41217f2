/**
 * kohya's SDXL UNet module names → diffusers module paths.
 *
 * kohya trains SDXL on its own copy of the original (SGM/LDM) UNet, so an SDXL LoRA names UNet
 * modules by that layout, "." written "_": `input_blocks_4_1_transformer_blocks_0_attn1_to_q`,
 * `middle_block_0_in_layers_2`, `output_blocks_2_2_conv`, `time_embed_0`, `label_emb_0_0`. diffusers'
 * `lora_conversion_utils.py` (`_maybe_map_sgm_blocks_to_diffusers`, `_convert_unet_lora_key`) renames
 * them to its UNet's; this does the same by reusing the single-file checkpoint reader's LDM → diffusers
 * key mapping (checkpoint/ldm-keys.ts), which numbers the blocks by the UNet's layers_per_block as
 * diffusers does. Only the block part of a name is restored to dots: what follows it inside an
 * attention block (`transformer_blocks_0_attn1_to_q`) stays flattened and is matched against the
 * model's keys written the same way (deltas.ts).
 */
import { mapUnetKey } from "../checkpoint/ldm-keys.js";
import { SDXL_UNET_DIRECT } from "../checkpoint/sdxl.js";

/** Whether a kohya UNet module name (after `lora_unet_`) is in the SGM layout. */
export function isSgmModule(module: string): boolean {
  return /^(input_blocks|middle_block|output_blocks|time_embed|label_emb|out)_\d/.test(module);
}

/** A ResBlock's or sampler's module name inside a block, dotted as the LDM key has it. */
function dottedInner(rest: string): string {
  return rest.replace(/^(in_layers|out_layers|emb_layers)_(\d+)$/, "$1.$2");
}

/**
 * The diffusers module path of an SGM-layout kohya UNet module, flattened ("_" for "."), or
 * undefined when the name is not one the LDM layout has.
 * @param layersPerBlock the UNet's layers_per_block (how the flat block numbers split into levels).
 */
export function sgmModuleToDiffusersFlat(module: string, layersPerBlock: number): string | undefined {
  let ldm: string | undefined;
  const block = /^(input_blocks|output_blocks)_(\d+)_(\d+)(?:_(.+))?$/.exec(module);
  const middle = /^middle_block_(\d+)_(.+)$/.exec(module);
  const direct = /^(time_embed|out)_(\d+)$/.exec(module);
  const label = /^label_emb_(\d+)_(\d+)$/.exec(module);
  if (block) ldm = `${block[1]}.${block[2]}.${block[3]}${block[4] ? `.${dottedInner(block[4])}` : ""}`;
  else if (middle) ldm = `middle_block.${middle[1]}.${dottedInner(middle[2]!)}`;
  else if (direct) ldm = `${direct[1]}.${direct[2]}`;
  else if (label) ldm = `label_emb.${label[1]}.${label[2]}`;
  if (ldm === undefined) return undefined;
  const key = `${ldm}.weight`;
  const mapped = SDXL_UNET_DIRECT[key] ?? mapUnetKey(key, layersPerBlock)?.key;
  return mapped?.slice(0, -".weight".length).replaceAll(".", "_");
}
