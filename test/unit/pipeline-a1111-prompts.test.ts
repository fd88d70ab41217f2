/**
 * A1111 prompts through the pipeline on the tiny model (CPU backend): long prompts become 77 · k
 * tokens of conditioning; a prompt and a negative prompt of different lengths are evaluated as A1111
 * evaluates them (two UNet calls, or one after `padCondUncond` pads the shorter with empty-prompt
 * chunks); the text length is part of the batch key; bad prompt options are named.
 */
import { afterAll, beforeAll, describe, expect, test } from "@jest/globals";
import { InvalidOptionError } from "../../lib/errors.js";
import { Pipeline, type GenerateResult } from "../../lib/pipeline/pipeline.js";
import { batchKey } from "../../lib/pipeline/generation.js";
import type { CpuBackend, RuntimeStats } from "../../lib/backends/cpu/backend.js";
import { CPU_MAX_PROMPT_CHUNKS } from "../../lib/backends/cpu/backend.js";

let pipe: Pipeline;
beforeAll(async () => {
  pipe = await Pipeline.load(undefined, { backend: "cpu" });
});
afterAll(async () => {
  await pipe?.dispose();
});

const base = { width: 64, height: 64, steps: 3, seed: 5, scheduler: "euler" } as const;
/** Two chunks: BREAK closes the first. */
const LONG = "a lighthouse at dusk BREAK stormy sea, dramatic clouds";

function unetCalls(run: () => Promise<GenerateResult>): Promise<{ result: GenerateResult; calls: number; rows: number }> {
  const backend = pipe.backend as CpuBackend;
  const before: RuntimeStats = backend.runtimeStats;
  return run().then((result) => {
    const after = backend.runtimeStats;
    return { result, calls: after.unet.calls - before.unet.calls, rows: after.unet.rows - before.unet.rows };
  });
}

const same = (a: GenerateResult, b: GenerateResult) => Buffer.from(a.images[0]!.rgb).equals(Buffer.from(b.images[0]!.rgb));

describe("prompt and negative prompt of different lengths", () => {
  test("run as two UNet evaluations per step (A1111's default), one for each half", async () => {
    const { calls, rows } = await unetCalls(() => pipe.generate({ ...base, prompt: LONG, batch: 2 }));
    expect({ calls, rows }).toEqual({ calls: 2 * 3, rows: 2 * 3 * 2 });
  });

  test("with padCondUncond the shorter is padded with empty-prompt chunks and both run in one call: exactly a negative prompt of two empty chunks", async () => {
    const padded = await unetCalls(() => pipe.generate({ ...base, prompt: LONG, padCondUncond: true }));
    expect({ calls: padded.calls, rows: padded.rows }).toEqual({ calls: 3, rows: 2 * 3 });
    // "BREAK BREAK" is two chunks of padding: A1111's empty chunk twice.
    const explicit = await pipe.generate({ ...base, prompt: LONG, negativePrompt: "BREAK BREAK" });
    expect(same(padded.result, explicit)).toBe(true);
    const separate = await pipe.generate({ ...base, prompt: LONG });
    expect(same(padded.result, separate)).toBe(false);
  });

  test("the same lengths run in one call whatever padCondUncond says", async () => {
    const { calls } = await unetCalls(() => pipe.generate({ ...base, prompt: "a cat", negativePrompt: "blurry" }));
    expect(calls).toBe(3);
  });
});

describe("prompt editing and alternation change the conditioning at the evaluation A1111 changes it", () => {
  /** x_1 … x_M of a run. */
  async function trajectory(options: Record<string, unknown>): Promise<Float32Array[]> {
    const seen: Float32Array[] = [];
    await pipe.generate({ ...base, steps: 4, prompt: "", ...options, onLatents: (i, x) => (seen[i] = x.slice()) });
    return seen.slice(1);
  }
  const equal = (a: Float32Array, b: Float32Array) => Buffer.from(a.buffer).equals(Buffer.from(b.buffer));

  test("[a red barn:a lighthouse:2]: evaluations 0, 1, 2 read a red barn (j ≤ 2), later ones a lighthouse", async () => {
    const edited = await trajectory({ prompt: "[a red barn:a lighthouse:2]" });
    const barn = await trajectory({ prompt: "a red barn" });
    expect([0, 1, 2].map((j) => equal(edited[j]!, barn[j]!))).toEqual([true, true, true]);
    expect(equal(edited[3]!, barn[3]!)).toBe(false);
  });

  test("[a red barn|a lighthouse] alternates from evaluation 2 on (step 1 covers j = 0 and 1); the negative prompt can be edited too", async () => {
    const alternating = await trajectory({ prompt: "[a red barn|a lighthouse]" });
    const barn = await trajectory({ prompt: "a red barn" });
    expect([0, 1, 2].map((j) => equal(alternating[j]!, barn[j]!))).toEqual([true, true, false]);
    const negative = await trajectory({ prompt: "a cat", negativePrompt: "[blurry::1]" });
    const blurry = await trajectory({ prompt: "a cat", negativePrompt: "blurry" });
    expect([equal(negative[1]!, blurry[1]!), equal(negative[2]!, blurry[2]!)]).toEqual([true, false]);
  });

  test("the texts of one schedule share emphasis Original's means, as A1111 encodes them in one call", async () => {
    const edited = await pipe.promptConditioning("[(a cat:1.5):a dog:1]");
    const alone = await pipe.promptConditioning("(a cat:1.5)");
    expect(edited.shape).toEqual(alone.shape);
    // Both weight the same tokens, but the means come from different sets of vectors.
    expect(Buffer.from(edited.values.buffer).equals(Buffer.from(alone.values.buffer))).toBe(false);
    // Without weights applied the group does not matter: the text's own encoding.
    const ignored = await pipe.promptConditioning("[(a cat:1.5):a dog:1]", { emphasis: "ignore" });
    expect(Buffer.from(ignored.values.buffer).equals(Buffer.from((await pipe.promptConditioning("(a cat:1.5)", { emphasis: "ignore" })).values.buffer))).toBe(true);
  });

  test("with hires fix the second pass follows A1111's second-pass schedule: an edit done in the first pass holds through the second", async () => {
    // Hires follows A1111's noise: one generator per image (seeds). 3 steps: [..:2] switches in the first pass (2 − 3 < 1 in the second).
    const hires = (prompt?: string) => ({ width: 64, height: 64, steps: 3, seeds: [5], scheduler: "k_euler", hires: { scale: 2, ...(prompt ? { prompt } : {}) } });
    const edited = await pipe.generate({ ...hires(), prompt: "[a red barn:a lighthouse:2]" });
    const secondPassGiven = await pipe.generate({ ...hires("a lighthouse"), prompt: "[a red barn:a lighthouse:2]" });
    const secondPassUnedited = await pipe.generate({ ...hires("a red barn"), prompt: "[a red barn:a lighthouse:2]" });
    expect(edited.images[0]!.width).toBe(128);
    expect(same(edited, secondPassGiven)).toBe(true);
    expect(same(edited, secondPassUnedited)).toBe(false);
    expect(secondPassGiven.images[0]!.infotext).toContain("Hires prompt: a lighthouse, ");
    expect(edited.images[0]!.infotext).not.toContain("Hires prompt");
  });
});

describe("syntax", () => {
  test("weights change the image; promptSyntax plain and emphasis none read the brackets as text", async () => {
    const weighted = await pipe.generate({ ...base, prompt: "a (lighthouse:1.6) at dusk" });
    const bare = await pipe.generate({ ...base, prompt: "a lighthouse at dusk" });
    const ignored = await pipe.generate({ ...base, prompt: "a (lighthouse:1.6) at dusk", emphasis: "ignore" });
    const plain = await pipe.generate({ ...base, prompt: "a (lighthouse:1.6) at dusk", promptSyntax: "plain" });
    expect(same(weighted, bare)).toBe(false);
    // "Ignore" drops the brackets and the weight: the tokens of "a lighthouse at dusk", split where the spans were.
    expect(same(plain, bare)).toBe(false);
    expect(same(ignored, weighted)).toBe(false);
  });

  test("a prompt without syntax gives diffusers' image with either syntax", async () => {
    const a1111 = await pipe.generate({ ...base, prompt: "a lighthouse at dusk", negativePrompt: "fog" });
    const plain = await pipe.generate({ ...base, prompt: "a lighthouse at dusk", negativePrompt: "fog", promptSyntax: "plain" });
    expect(same(a1111, plain)).toBe(true);
  });
});

describe("infotext", () => {
  test("records the emphasis as A1111 does: only when not Original and a prompt has ( or [", async () => {
    const infotext = async (options: Record<string, unknown>) => (await pipe.generate({ ...base, steps: 1, prompt: "a cat", ...options })).images[0]!.infotext;
    expect(await infotext({ prompt: "a (cat)", emphasis: "no-norm" })).toMatch(/, RNG: CPU, Emphasis: No norm$/);
    expect(await infotext({ negativePrompt: "[blurry]", emphasis: "ignore" })).toMatch(/Emphasis: Ignore$/);
    expect(await infotext({ emphasis: "none" })).not.toContain("Emphasis");
    expect(await infotext({ prompt: "a (cat)" })).not.toContain("Emphasis");
  });
});

describe("the batch key holds the text lengths and the emphasis", () => {
  test("requests of different chunk counts or emphasis never share a batch", () => {
    const key = (options: Parameters<Pipeline["resolveOptions"]>[0]) => batchKey(pipe.resolveOptions(options));
    const short = key({ ...base, prompt: "a cat" });
    expect(key({ ...base, prompt: "a dog" })).toBe(short);
    expect(key({ ...base, prompt: LONG })).not.toBe(short);
    expect(key({ ...base, prompt: "a cat", negativePrompt: LONG })).not.toBe(short);
    expect(key({ ...base, prompt: "a cat", emphasis: "no-norm" })).not.toBe(short);
  });
});

describe("prompt options are validated with the option's name", () => {
  function rejects(options: Record<string, unknown>, option: string, message: RegExp): void {
    let error: unknown;
    try {
      pipe.resolveOptions({ ...base, prompt: "a cat", ...options });
    } catch (e) {
      error = e;
    }
    expect(error).toBeInstanceOf(InvalidOptionError);
    expect({ option: (error as InvalidOptionError).option, message: (error as Error).message }).toEqual({ option, message: expect.stringMatching(message) });
  }

  test("promptSyntax, emphasis, commaPaddingBacktrack, padCondUncond", () => {
    rejects({ promptSyntax: "comfy" }, "promptSyntax", /promptSyntax must be one of "a1111", "plain", got "comfy"/);
    rejects({ emphasis: "Original" }, "emphasis", /emphasis must be one of "original", "no-norm", "ignore", "none", got "Original"/);
    rejects({ commaPaddingBacktrack: 75 }, "commaPaddingBacktrack", /commaPaddingBacktrack must be an integer from 0 to 74, got 75/);
    rejects({ padCondUncond: 1 }, "padCondUncond", /padCondUncond must be true or false/);
  });

  test("a weight that is not a number (A1111 raises there too), in the prompt or the negative prompt", () => {
    rejects({ prompt: "a (cat:1.2.3)" }, "prompt", /prompt has the weight "1\.2\.3", which is not a number/);
    rejects({ negativePrompt: "(x:.)" }, "negativePrompt", /negativePrompt has the weight "\.", which is not a number/);
  });

  test("an extra-network tag sd-trt cannot apply (a LoRA without a LoRA folder, a hypernetwork) is refused, naming the tag; plain syntax reads it as text", () => {
    rejects({ prompt: "a cat <lora:detail:0.8>, sharp" }, "prompt", /prompt has the tag <lora:detail:0\.8>, but no LoRA folder was given \(loraDir, --lora-dir\)/);
    rejects({ negativePrompt: "<hypernet:anime:1>" }, "negativePrompt", /negativePrompt has the extra-network tag <hypernet:anime:1>/);
    expect(pipe.resolveOptions({ ...base, prompt: "a cat <lora:detail:0.8>", promptSyntax: "plain" }).prompts).toEqual(["a cat <lora:detail:0.8>"]);
  });

  test("a prompt longer than the backend takes names the chunk count and the limit", () => {
    const prompt = "a " + "BREAK a ".repeat(CPU_MAX_PROMPT_CHUNKS);
    rejects({ prompt }, "prompt", new RegExp(`prompt needs ${CPU_MAX_PROMPT_CHUNKS + 1} chunks of 75 tokens .*at most ${CPU_MAX_PROMPT_CHUNKS} \\(${CPU_MAX_PROMPT_CHUNKS * 75} tokens\\)`));
  });
});
