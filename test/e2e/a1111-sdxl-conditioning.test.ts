/**
 * SDXL's text conditioning against A1111's own code: test/fixtures/a1111/sdxl-conditioning is what
 * A1111 v1.10.1's `prompt_parser.get_learned_conditioning` gives on the tiny SDXL (sgm's
 * GeneralConditioner with A1111's FrozenCLIPEmbedderForSDXLWithCustomWords and
 * FrozenOpenCLIPEmbedder2WithCustomWords; scripts/reference/a1111_sdxl_conditioning.py): per
 * schedule entry, `crossattn` [77 · chunks, h1 + h2] and `vector` [pooled, embed(original size),
 * embed(crop), embed(target size)]. sd-trt feeds the UNet the crossattn, the pooled text_embeds and
 * the time ids that diffusers' UNet embeds into the rest of `vector` (the generator checks that
 * diffusers' add_time_proj equals sgm's size embedder); each is compared here within 1e-5.
 */
import { readFileSync } from "node:fs";
import { afterAll, beforeAll, describe, expect, test } from "@jest/globals";
import { InvalidOptionError } from "../../lib/errors.js";
import { Pipeline, type PromptConditioningOptions } from "../../lib/pipeline/pipeline.js";
import { runTokenize } from "../../lib/cli/commands/tokenize.js";
import { TINY_SDXL_DIR } from "../fixtures/sdxl/reference.js";

interface Stored {
  offset: number;
  shape: number[];
}
interface GoldenCase {
  id: string;
  side: "prompt" | "negative";
  text: string;
  note: string;
  width: number;
  height: number;
  steps: number;
  opts: { sdxl_clip_l_skip?: boolean; CLIP_stop_at_last_layers?: number };
  texts: string[];
  sdxl_conds: { original_size_as_tuple: [number, number]; crop_coords_top_left: [number, number]; target_size_as_tuple: [number, number] };
  ti_hashes: string | null;
  schedule: { end_at_step: number; crossattn: Stored; vector: Stored }[];
}
interface Golden {
  layout: { hidden: [number, number]; pooled: number; size_embedding: number };
  cases: GoldenCase[];
}

const FIXTURE = new URL("../fixtures/a1111/sdxl-conditioning/", import.meta.url);
const golden = JSON.parse(readFileSync(new URL("goldens.json", FIXTURE), "utf8")) as Golden;
const bin = readFileSync(new URL("goldens.bin", FIXTURE));
const floats = new Float32Array(bin.buffer, bin.byteOffset, bin.byteLength / 4);
const stored = (s: Stored) => floats.subarray(s.offset, s.offset + s.shape.reduce((a, b) => a * b, 1));
const caseById = (id: string) => golden.cases.find((c) => c.id === id)!;

/** Worst |a − b| / max(1, |b|). */
function worstError(actual: ArrayLike<number>, expected: ArrayLike<number>): number {
  expect(actual.length).toBe(expected.length);
  let worst = 0;
  for (let i = 0; i < expected.length; i++) worst = Math.max(worst, Math.abs(actual[i]! - expected[i]!) / Math.max(1, Math.abs(expected[i]!)));
  return worst;
}

/**
 * What diffusers' UNet (and sgm's ConcatTimestepEmbedderND) makes of time ids: each id's
 * sinusoidal embedding [cos(id · f), sin(id · f)], f_i = 10000^(−i / half), side by side.
 */
function sizeEmbeddings(timeIds: ArrayLike<number>, dim: number): Float64Array {
  const half = dim / 2;
  const out = new Float64Array(timeIds.length * dim);
  Array.from(timeIds).forEach((id, k) => {
    for (let i = 0; i < half; i++) {
      const arg = id * Math.exp((-Math.log(10000) * i) / half);
      out[k * dim + i] = Math.cos(arg);
      out[k * dim + half + i] = Math.sin(arg);
    }
  });
  return out;
}

function optionsOf(c: GoldenCase): PromptConditioningOptions {
  const options: PromptConditioningOptions = { steps: c.steps, width: c.width, height: c.height };
  if (c.side === "negative") options.negative = true;
  if (c.opts.sdxl_clip_l_skip) {
    options.sdxlClipLSkip = true;
    options.clipSkip = c.opts.CLIP_stop_at_last_layers!;
  }
  return options;
}

let pipe: Pipeline;
beforeAll(async () => {
  pipe = await Pipeline.load(TINY_SDXL_DIR, { backend: "cpu" });
});
afterAll(async () => {
  await pipe?.dispose();
});

/** Checks every schedule entry of a case: crossattn, the pooled part of vector, the time ids and their embedding. */
async function expectA1111(c: GoldenCase, options = optionsOf(c)): Promise<void> {
  const { shape, sdxl } = await pipe.promptConditioning(c.text, options);
  const pooledSize = golden.layout.pooled;
  const { original_size_as_tuple: original, crop_coords_top_left: crop, target_size_as_tuple: target } = c.sdxl_conds;
  expect(Array.from(sdxl!.timeIds)).toEqual([...original, ...crop, ...target]);
  expect(sdxl!.schedule.map((s) => s.endAtStep)).toEqual(c.schedule.map((s) => s.end_at_step));
  c.schedule.forEach((entry, i) => {
    const mine = sdxl!.schedule[i]!;
    expect(shape).toEqual(entry.crossattn.shape);
    const vector = stored(entry.vector);
    const errors = {
      crossattn: worstError(mine.values, stored(entry.crossattn)) < 1e-5,
      pooled: worstError(mine.pooled, vector.subarray(0, pooledSize)) < 1e-5,
      sizes: worstError(sizeEmbeddings(sdxl!.timeIds, golden.layout.size_embedding), vector.subarray(pooledSize)) < 1e-5,
    };
    expect([c.id, i, errors]).toEqual([c.id, i, { crossattn: true, pooled: true, sizes: true }]);
  });
}

describe("SDXL conditioning, as A1111 computes it (crossattn and vector within 1e-5)", () => {
  test.each(["p01", "p02", "p03", "p04", "p05"])("prompt %s: weights, BREAK and prompts over 75 tokens on both encoders", async (id) => {
    await expectA1111(caseById(id));
  });

  test.each(["n01", "n02", "n03"])("negative prompt %s: an empty one is zeros except the size embeddings", async (id) => {
    await expectA1111(caseById(id));
  });

  test("an empty negative prompt gives zero crossattn and pooled, and a non-empty one does not", async () => {
    const empty = await pipe.promptConditioning("", { negative: true });
    expect(empty.values.every((v) => v === 0) && empty.sdxl!.pooled.every((v) => v === 0)).toBe(true);
    const asPrompt = await pipe.promptConditioning("", {});
    expect(asPrompt.values.some((v) => v !== 0)).toBe(true);
  });
});

describe("SDXL prompt editing and alternation, as A1111 conditions each step", () => {
  test.each(["s01", "s02", "s03"])("%s: every text of the schedule, crossattn and vector", async (id) => {
    const c = caseById(id);
    expect(c.schedule.length).toBeGreaterThan(1);
    await expectA1111(c);
  });
});

describe("clip skip on SDXL, as A1111 takes it (CLIP-L only, with sdxl_clip_l_skip)", () => {
  test.each(["k01", "k02", "k03"])("%s: sdxlClipLSkip with clipSkip takes text_encoder's hidden_states[-clipSkip]", async (id) => {
    await expectA1111(caseById(id));
  });

  test("clip skip 1 with sdxlClipLSkip differs from the default, clip skip 2 is the default", async () => {
    const plain = await pipe.promptConditioning(caseById("k01").text, {});
    const skip1 = await pipe.promptConditioning(caseById("k01").text, { sdxlClipLSkip: true, clipSkip: 1 });
    const skip2 = await pipe.promptConditioning(caseById("k01").text, { sdxlClipLSkip: true, clipSkip: 2 });
    expect(worstError(skip1.values, plain.values)).toBeGreaterThan(1e-3);
    expect(Array.from(skip2.values)).toEqual(Array.from(plain.values));
    // text_encoder_2 is never skipped: its half of every token and the pooled embedding are unchanged.
    const [h1, h2] = golden.layout.hidden;
    for (let t = 0; t < 77; t++) {
      const at = t * (h1 + h2) + h1;
      expect(Array.from(skip1.values.subarray(at, at + h2))).toEqual(Array.from(plain.values.subarray(at, at + h2)));
    }
    expect(Array.from(skip1.sdxl!.pooled)).toEqual(Array.from(plain.sdxl!.pooled));
  });

  test("without sdxlClipLSkip A1111 ignores clip skip (k04 is the default conditioning); sd-trt refuses it rather than ignore it", async () => {
    const c = caseById("k04");
    await expectA1111(c, { steps: c.steps, width: c.width, height: c.height });
    const refusal = pipe.promptConditioning(c.text, { clipSkip: 3 });
    await expect(refusal).rejects.toThrow(InvalidOptionError);
    await expect(refusal).rejects.toThrow(/sdxlClipLSkip/);
  });

  test("clipSkip beyond text_encoder's hidden states is refused naming the limit", async () => {
    await expect(pipe.promptConditioning("a cat", { sdxlClipLSkip: true, clipSkip: 4 })).rejects.toThrow(/clipSkip must be an integer from 1 to 3/);
  });
});

describe("SDXL textual inversion, as A1111 applies it (clip_l to text_encoder, clip_g to text_encoder_2)", () => {
  let withEmbeddings: Pipeline;
  beforeAll(async () => {
    withEmbeddings = await Pipeline.load(TINY_SDXL_DIR, { backend: "cpu", embeddingsDir: new URL("embeddings", FIXTURE).pathname });
  });
  afterAll(async () => {
    await withEmbeddings?.dispose();
  });

  test("the embeddings load with A1111's vector counts and hashes", () => {
    const byName = Object.fromEntries(withEmbeddings.embeddings.map((e) => [e.name, { count: e.count, hash: e.hash }]));
    expect(byName).toEqual({ lowpoly: { count: 1, hash: expect.stringMatching(/^cea397fa928c/) }, "neg-style": { count: 3, hash: expect.stringMatching(/^f338238b567c/) } });
  });

  test.each(["t01", "t02", "t03"])("%s: crossattn and vector with the embedding's vectors in both encoders", async (id) => {
    const saved = pipe;
    pipe = withEmbeddings;
    try {
      await expectA1111(caseById(id));
    } finally {
      pipe = saved;
    }
  });

  test("without the embeddings the same prompt reads the name as words (the goldens need the vectors)", async () => {
    const c = caseById("t01");
    const { values } = await pipe.promptConditioning(c.text, optionsOf(c));
    expect(worstError(values, stored(c.schedule[0]!.crossattn))).toBeGreaterThan(1e-3);
  });
});

describe("SDXL textual inversion in a generation", () => {
  test("generate uses both encoders' vectors and writes A1111's SDXL TI hashes (each embedder adds them)", async () => {
    const c = caseById("t02");
    const withEmbeddings = await Pipeline.load(TINY_SDXL_DIR, { backend: "cpu", embeddingsDir: new URL("embeddings", FIXTURE).pathname });
    try {
      const options = { prompt: c.text, negativePrompt: "", steps: 2, seed: 5, guidance: 5, width: 64, height: 64, returnLatents: true };
      const result = await withEmbeddings.generate(options);
      expect(result.images[0]!.infotext).toContain(`TI hashes: "${c.ti_hashes}"`);
      // The names read as plain words give another picture.
      const plain = await pipe.generate(options);
      expect(Buffer.from(plain.latents!.buffer).equals(Buffer.from(result.latents!.buffer))).toBe(false);
    } finally {
      await withEmbeddings.dispose();
    }
  });
});

describe("sd-trt tokenize --json --model <SDXL folder> --embeddings", () => {
  test("prints A1111's SDXL conditioning: crossattn, the pooled part of vector and the time ids", async () => {
    const c = caseById("t02");
    const out = JSON.parse(await runTokenize({ words: [c.text], json: true, model: TINY_SDXL_DIR, embeddings: true, embeddingsDir: new URL("embeddings", FIXTURE).pathname })) as {
      cond: { shape: number[]; values: number[]; pooled: number[]; timeIds: number[] };
    };
    const entry = c.schedule[0]!;
    expect(out.cond.shape).toEqual(entry.crossattn.shape);
    expect(worstError(out.cond.values, stored(entry.crossattn))).toBeLessThan(1e-5);
    expect(worstError(out.cond.pooled, stored(entry.vector).subarray(0, golden.layout.pooled))).toBeLessThan(1e-5);
    // The model's default size (the tiny SDXL's 64 × 64), as A1111 takes width and height.
    expect(out.cond.timeIds).toEqual([64, 64, 0, 0, 64, 64]);
  });
});

describe("A1111's empty negative prompt in a generation", () => {
  test("negativePrompt \"\" gives the zero-uncond image (diffusers' force_zeros_for_empty_prompt), a non-empty one another", async () => {
    const options = { prompt: "a lighthouse", steps: 3, seed: 4, guidance: 5, width: 64, height: 64, returnLatents: true };
    const noNegative = await pipe.generate(options);
    const empty = await pipe.generate({ ...options, negativePrompt: "" });
    const editedToEmpty = await pipe.generate({ ...options, negativePrompt: "[|]" });
    const blurry = await pipe.generate({ ...options, negativePrompt: "blurry" });
    const bytes = (r: { latents?: Float32Array }) => Buffer.from(r.latents!.buffer);
    expect(bytes(empty).equals(bytes(noNegative))).toBe(true);
    expect(bytes(editedToEmpty).equals(bytes(noNegative))).toBe(true);
    expect(bytes(blurry).equals(bytes(noNegative))).toBe(false);
    // With prompt syntax "plain" (diffusers) "" is encoded like any negative prompt.
    const plain = await pipe.generate({ ...options, negativePrompt: "", promptSyntax: "plain" });
    expect(bytes(plain).equals(bytes(noNegative))).toBe(false);
  });
});
