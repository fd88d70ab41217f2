/**
 * A1111's extra-network tags (`modules/extra_networks.py`): `<kind:arg1:arg2…>` anywhere in a
 * prompt. `parse_prompts` removes every tag from every prompt and applies the networks the
 * FIRST prompt names to the whole batch; the Lora extension reads `<lora:NAME>`,
 * `<lora:NAME:MULTIPLIER>` (text encoder and UNet alike) and `<lora:NAME:TE:UNET>`. sd-trt applies
 * one multiplier to both, so differing TE/UNet multipliers and named arguments (`te=`, `unet=`,
 * `dyn=`) are refused, as are tags of other kinds (hypernetworks), which stay in the prompt for
 * `buildPromptBatch` to refuse.
 */
import { InvalidOptionError } from "../errors.js";

/** A LoRA a prompt names. */
export interface LoraTag {
  /** The name as written (a file name or alias in the LoRA folder). */
  name: string;
  multiplier: number;
  /** The tag as written, for messages. */
  tag: string;
}

// A1111's `re_extra_net`, `\w` being Unicode; only `lora` tags are taken here.
const LORA_TAG = /<lora:([^>]+)>/gu;

/**
 * The prompts without their `<lora:…>` tags, and the LoRAs of the first prompt (A1111 applies
 * those to the batch). Nothing is trimmed: A1111 replaces each tag with "".
 * @throws InvalidOptionError naming `option` for a multiplier that is not a number, differing
 *   text-encoder and UNet multipliers, or named arguments.
 */
export function takeLoraTags(texts: readonly string[], option: string): { texts: string[]; loras: LoraTag[] } {
  const loras: LoraTag[] = [];
  const stripped = texts.map((text, index) =>
    text.replace(LORA_TAG, (tag: string, args: string) => {
      const [name = "", ...multipliers] = args.split(":");
      if (multipliers.some((m) => m.includes("="))) {
        throw new InvalidOptionError(option, `${option} has the tag ${tag}: named LoRA arguments (te=, unet=, dyn=) are not supported; write <lora:${name}:MULTIPLIER>`);
      }
      const values = multipliers.map((m) => Number(m));
      if (multipliers.some((m, i) => m.trim() === "" || !Number.isFinite(values[i]))) {
        throw new InvalidOptionError(option, `${option} has the tag ${tag}: its multiplier must be a number`);
      }
      if (values.length > 1 && values[0] !== values[1]) {
        throw new InvalidOptionError(option, `${option} has the tag ${tag}: sd-trt applies one multiplier to the text encoder and the UNet, got ${values[0]} and ${values[1]}`);
      }
      if (index === 0) loras.push({ name, multiplier: values[0] ?? 1, tag });
      return "";
    }),
  );
  return { texts: stripped, loras };
}
