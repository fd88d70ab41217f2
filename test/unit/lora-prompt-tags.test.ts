/**
 * A1111's `<lora:NAME:MULTIPLIER>` prompt tags (modules/extra_networks.py parse_prompts and the Lora
 * extension's arguments): every tag is removed from every prompt (replaced by ""), the first
 * prompt's LoRAs apply to the batch, tags of other kinds stay for the prompt reader to refuse,
 * and arguments sd-trt cannot honour are refused naming the tag.
 */
import { describe, expect, test } from "@jest/globals";
import { InvalidOptionError } from "../../lib/errors.js";
import { takeLoraTags } from "../../lib/prompt/extra-networks.js";

describe("takeLoraTags", () => {
  test("tags leave every prompt; the first prompt's LoRAs are the batch's, in order, multiplier 1 by default", () => {
    const { texts, loras } = takeLoraTags(["a cat <lora:detail:0.8>, <lora:style>sharp", "a dog <lora:other:0.3>"], "prompt");
    expect(texts).toEqual(["a cat , sharp", "a dog "]);
    expect(loras).toEqual([
      { name: "detail", multiplier: 0.8, tag: "<lora:detail:0.8>" },
      { name: "style", multiplier: 1, tag: "<lora:style>" },
    ]);
  });

  test("equal text-encoder and UNet multipliers are one multiplier; other extra networks are left in place", () => {
    expect(takeLoraTags(["x <lora:a:0.5:0.5> <hypernet:h:1>"], "prompt")).toEqual({ texts: ["x  <hypernet:h:1>"], loras: [{ name: "a", multiplier: 0.5, tag: "<lora:a:0.5:0.5>" }] });
  });

  test("a multiplier that is not a number, differing TE/UNet multipliers and named arguments are refused", () => {
    for (const [prompt, message] of [
      ["<lora:a:x>", "prompt has the tag <lora:a:x>: its multiplier must be a number"],
      ["<lora:a:1:0.5>", "sd-trt applies one multiplier to the text encoder and the UNet, got 1 and 0.5"],
      ["<lora:a:te=1>", "named LoRA arguments (te=, unet=, dyn=) are not supported"],
    ] as const) {
      expect(() => takeLoraTags([prompt], "prompt")).toThrow(InvalidOptionError);
      expect(() => takeLoraTags([prompt], "prompt")).toThrow(message);
    }
  });
});
