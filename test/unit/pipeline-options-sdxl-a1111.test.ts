/**
 * SDXL's A1111 options resolved before any model runs: A1111's empty negative prompt (per image,
 * every text of its schedule), clip skip only with sdxlClipLSkip, and the refusals a backend's
 * limits give (the TensorRT backend cannot switch SDXL's pooled text_embeds per step, nor take
 * another CLIP-L layer) — each naming the option.
 */
import { describe, expect, test } from "@jest/globals";
import { resolveGenerateOptions, type ValidationContext } from "../../lib/pipeline/options.js";
import { a1111ZeroUncondRows } from "../../lib/pipeline/sdxl-options.js";
import { canonicalSchedulerName, SCHEDULER_NAMES } from "../../lib/schedulers/index.js";
import { ClipTokenizer } from "../../lib/tokenizer/index.js";
import { expectOptionRefused as rejects } from "../support/option-refusals.js";

const tokenizer = await ClipTokenizer.default();
const cpu: ValidationContext = {
  limits: { maxBatch: 4, minWidth: 64, maxWidth: 1024, minHeight: 64, maxHeight: 1024, sizeMultiple: 8, canEncodeImages: true, canObserveLatents: true, maxPromptChunks: 3, maxClipSkip: 13 },
  defaultWidth: 1024,
  defaultHeight: 1024,
  defaultScheduler: "euler",
  schedulerNames: SCHEDULER_NAMES,
  canonicalScheduler: (name) => canonicalSchedulerName(name),
  hostLatents: true,
  tokenizer,
  sdxl: { tokenizer2: tokenizer, forceZerosForEmptyPrompt: true },
};
const tensorrt: ValidationContext = {
  ...cpu,
  limits: { ...cpu.limits, maxClipSkip: 1, sdxlClipLSkipUnavailable: "the TensorRT backend binds text_encoder's penultimate hidden state only", sdxlPromptEditingUnavailable: "the TensorRT backend binds SDXL's pooled text_embeds once per run" },
};

describe("A1111's empty negative prompt on SDXL", () => {
  test("per image: zero where every text of the negative prompt's schedule is empty", () => {
    expect(Array.from(a1111ZeroUncondRows(["", "blurry", "[:blurry:2]", "[|]"], ["", "blurry", "[:blurry:2]", ""], 4))).toEqual([1, 0, 0, 1]);
    // negativePrompt2 (which A1111 does not have) must be empty too.
    expect(Array.from(a1111ZeroUncondRows([""], ["grainy"], 4))).toEqual([0]);
  });

  test("an explicit \"\" gives zero rows with syntax a1111, and is encoded with syntax plain (diffusers)", () => {
    const a1111 = resolveGenerateOptions({ prompt: ["a cat", "a dog"], negativePrompt: ["", "blurry"], steps: 4 }, cpu);
    expect(Array.from(a1111.sdxl!.zeroUncondRows!)).toEqual([1, 0]);
    expect(a1111.sdxl!.zeroUncond).toBe(false);
    const plain = resolveGenerateOptions({ prompt: "a cat", negativePrompt: "", promptSyntax: "plain" }, cpu);
    expect(plain.sdxl!.zeroUncondRows).toBeUndefined();
    // No negative prompt at all: diffusers' force_zeros_for_empty_prompt, as before.
    expect(resolveGenerateOptions({ prompt: "a cat" }, cpu).sdxl!.zeroUncond).toBe(true);
  });
});

describe("clip skip on SDXL", () => {
  test("sdxlClipLSkip takes clipSkip to CLIP-L; false ignores it as A1111 does; left out it is refused", () => {
    expect(resolveGenerateOptions({ prompt: "x", clipSkip: 3, sdxlClipLSkip: true }, cpu).sdxl!.clipLSkip).toBe(3);
    expect(resolveGenerateOptions({ prompt: "x", clipSkip: 3, sdxlClipLSkip: false }, cpu).sdxl!.clipLSkip).toBeUndefined();
    rejects({ clipSkip: 2 }, "clipSkip", /no effect on SDXL unless sdxlClipLSkip is true/, cpu);
    rejects({ sdxlClipLSkip: "yes" as never }, "sdxlClipLSkip", /true or false/, cpu);
  });

  test("on a backend that cannot take another CLIP-L layer, sdxlClipLSkip is refused naming why", () => {
    rejects({ sdxlClipLSkip: true }, "sdxlClipLSkip", /binds text_encoder's penultimate hidden state only/, tensorrt);
    expect(resolveGenerateOptions({ prompt: "x", sdxlClipLSkip: false }, tensorrt).sdxl!.clipLSkip).toBeUndefined();
  });

  test("an SD model accepts sdxlClipLSkip (A1111's setting has no effect there)", () => {
    const { sdxl: _sdxl, ...sd } = cpu;
    expect(resolveGenerateOptions({ prompt: "x", sdxlClipLSkip: true }, sd).sdxl).toBeUndefined();
  });
});

describe("prompt editing on SDXL", () => {
  test("resolves on the CPU backend: both encoders' texts follow the schedule", () => {
    const r = resolveGenerateOptions({ prompt: "a [cat:dog:2]", steps: 4 }, cpu);
    expect(r.cond.batch.schedules).toEqual([[[2, 0], [4, 1]]]);
    expect(r.sdxl!.cond2.batch.schedules).toEqual([[[2, 0], [4, 1]]]);
  });

  test.each([
    [{ prompt: "a [cat:dog:2]" }, "prompt"],
    [{ negativePrompt: "[blurry|grainy]" }, "negativePrompt"],
    [{ prompt2: "a [cat:dog:2]" }, "prompt2"],
  ])("a backend that cannot switch text_embeds refuses %j, naming %s", (options, option) => {
    rejects({ steps: 4, ...options }, option, /on SDXL: the TensorRT backend binds SDXL's pooled text_embeds once per run/, tensorrt);
  });
});
