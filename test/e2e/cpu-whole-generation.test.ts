import { afterAll, beforeAll, describe, expect, test } from "@jest/globals";
import type { GenerationJob } from "../../lib/backends/backend.js";
import { CpuBackend, type RuntimeStats } from "../../lib/backends/cpu/backend.js";
import { setTimestep, timestepTensor } from "../../lib/backends/cpu/denoise-loop.js";
import { createScheduler } from "../../lib/schedulers/index.js";
import { lazyStepNoise } from "../../lib/sampler/step-noise.js";
import { ClipTokenizer } from "../../lib/tokenizer/index.js";
import { buildPromptBatch, type PromptBatch } from "../../lib/prompt/index.js";
import { TINY_MODEL_DIR } from "../fixtures/tiny-sd-cases/model-variants.js";

/** A deterministic pseudo-random array, so outputs are non-trivial. */
function values(count: number, phase = 0): Float32Array {
  const out = new Float32Array(count);
  for (let i = 0; i < count; i++) out[i] = Math.sin(i * 12.9898 + phase) * 2;
  return out;
}

function delta(after: RuntimeStats, before: RuntimeStats) {
  const calls = (k: keyof RuntimeStats) => ({ calls: after[k].calls - before[k].calls, rows: after[k].rows - before[k].rows });
  return { textEncoder: calls("textEncoder"), unet: calls("unet"), vaeDecoder: calls("vaeDecoder") };
}

describe("CpuBackend.generate: a whole txt2img generation in one worker request", () => {
  let backend: CpuBackend;
  let prompts: (texts: string[]) => PromptBatch;
  beforeAll(async () => {
    backend = await CpuBackend.load(TINY_MODEL_DIR);
    const tokenizer = await ClipTokenizer.default();
    prompts = (texts) => buildPromptBatch(tokenizer, texts, { syntax: "a1111", emphasis: "original", commaPaddingBacktrack: 20 }, "prompt").batch;
  });
  afterAll(async () => {
    await backend.dispose();
  });

  /** Euler a (noise every step), a batch of 2 with two prompts and one repeated negative prompt. */
  function request(steps: number, latentSize = 8): GenerationJob {
    const program = createScheduler("euler_a").compile(steps);
    const n = 2 * 4 * latentSize * latentSize;
    return {
      program,
      start: { latents: values(n) },
      batch: 2,
      latentHeight: latentSize,
      latentWidth: latentSize,
      guidance: Float64Array.of(7.5, 3),
      noise: program.evals.filter((e) => e.drawsNoise).map((_, k) => values(n, k + 1)),
      cond: prompts(["a red barn", "a lighthouse at night"]),
      uncond: prompts(["", ""]),
      emphasis: "original",
    };
  }

  test("encodes each distinct prompt row once, runs one UNet call per evaluation and one decode, and returns x_M only when asked", async () => {
    const r = request(5);
    const before = backend.runtimeStats;
    const plain = await backend.generate(r);
    const middle = backend.runtimeStats;
    const withLatents = await backend.generate({ ...r, returnLatents: true });
    const after = backend.runtimeStats;

    expect(plain.latents).toBeUndefined();
    expect(withLatents.latents).toHaveLength(2 * 4 * 8 * 8);
    expect(withLatents.images.map((i) => Buffer.from(i))).toEqual(plain.images.map((i) => Buffer.from(i)));
    expect(delta(after, middle)).toEqual(delta(middle, before));
    expect(delta(after, middle)).toEqual({ textEncoder: { calls: 2, rows: 3 }, unet: { calls: 5, rows: 20 }, vaeDecoder: { calls: 2, rows: 2 } }); // the empty negative prompt once; the decoder image by image
    expect(after.unet.ms - middle.unet.ms).toBeGreaterThan(0);
    expect(plain.timings.denoise).toBeGreaterThan(0);
    expect(plain.timings.imageEncode).toEqual([]);
  });

  test("without guidance the negative prompts are not encoded and the UNet batch is the image batch", async () => {
    const before = backend.runtimeStats;
    const result = await backend.generate({ ...request(3), uncond: null });
    expect(delta(backend.runtimeStats, before)).toEqual({ textEncoder: { calls: 1, rows: 2 }, unet: { calls: 3, rows: 6 }, vaeDecoder: { calls: 2, rows: 2 } });
    expect(result.images).toHaveLength(2);
  });

  test("reports the text encoding before the steps, every step in order, the decode last, and x_0 then each step's latents", async () => {
    const events: string[] = [];
    const latents: Float32Array[] = [];
    const job = request(4);
    const result = await backend.generate({
      ...job,
      returnLatents: true,
      onStage: (stage) => events.push(stage),
      onStep: (step) => events.push(`${step + 1}`),
      onLatents: (index, x) => (latents[index] = x),
    });
    expect(events).toEqual(["encode-text", "1", "2", "3", "4", "decode"]);
    expect(latents[0]).toBe((job.start as { latents: Float32Array }).latents);
    expect(Array.from(latents[4]!)).toEqual(Array.from(result.latents!));
  });

  test("an abort stops the worker between evaluations and rejects with the signal's reason", async () => {
    const controller = new AbortController();
    const reason = new Error("stop now");
    const before = backend.runtimeStats;
    const run = backend.generate({
      ...request(200, 32),
      signal: controller.signal,
      onStep: (step) => {
        if (step === 2) controller.abort(reason);
      },
    });
    await expect(run).rejects.toBe(reason);
    const calls = delta(backend.runtimeStats, before);
    expect(calls.unet.calls).toBeGreaterThanOrEqual(3);
    expect(calls.unet.calls).toBeLessThan(200);
    expect(calls.vaeDecoder.calls).toBe(0);
    await expect(backend.generate({ ...request(2), signal: AbortSignal.abort(reason) })).rejects.toBe(reason);
  });

  test("step noise given as a StepNoise is drawn while the worker runs, and gives the same images as the same draws given up front", async () => {
    const r = request(4);
    const draws = r.noise as Float32Array[];
    let taken = 0;
    const lazy = lazyStepNoise(draws.length, () => draws[taken++]!.slice());
    const run = backend.generate({ ...r, noise: lazy });
    // Nothing but the first draw is made before the request is on its way to the worker.
    expect(taken).toBeLessThanOrEqual(1);
    const streamed = await run;
    expect(taken).toBe(draws.length);
    expect(streamed.timings.stepNoise).toBeGreaterThanOrEqual(0);
    const upFront = await backend.generate(r);
    expect(streamed.images.map((i) => Buffer.from(i))).toEqual(upFront.images.map((i) => Buffer.from(i)));
    // The caller's arrays are copied to the worker, never moved: they can be used again.
    expect(draws.every((d) => d.length === 2 * 4 * 8 * 8)).toBe(true);
  });

  test("a step-noise draw that fails fails the generation with its own error, and the backend keeps working", async () => {
    const r = request(4);
    const failure = new Error("the generator broke");
    let taken = 0;
    const broken = lazyStepNoise((r.noise as Float32Array[]).length, () => {
      if (++taken === 3) throw failure;
      return (r.noise as Float32Array[])[taken - 1]!.slice();
    });
    await expect(backend.generate({ ...r, noise: broken })).rejects.toBe(failure);
    expect((await backend.generate(r)).images).toHaveLength(2);
  });

  test("a StepNoise with the wrong number of draws is refused before anything runs", async () => {
    const r = request(4);
    await expect(backend.generate({ ...r, noise: lazyStepNoise(1, () => new Float32Array(2 * 4 * 8 * 8)) })).rejects.toThrow(/the program draws noise 4 times, the job brings 1 draws/);
  });

  test("a model that fails in ONNX Runtime is named with its input shapes", async () => {
    // The tiny UNet downsamples once: an odd latent size cannot go through it.
    const r = request(2, 8);
    const odd = { ...r, latentHeight: 7, latentWidth: 9, start: { latents: values(2 * 4 * 63) }, noise: (r.noise as Float32Array[]).map(() => values(2 * 4 * 63)) };
    await expect(backend.generate(odd)).rejects.toThrow(/^unet\/model\.onnx failed in ONNX Runtime with inputs sample float32 \[4, 4, 7, 9\], encoder_hidden_states float32 \[4, 77, 32\]: /);
  });

  test("token ids that do not make 77 per chunk, or images without a prompt, are refused before anything runs", async () => {
    const r = request(2);
    await expect(backend.generate({ ...r, cond: { ...r.cond, ids: new Int32Array(76) } })).rejects.toThrow(/cond must hold \[2, 1, 77\] token ids and multipliers/);
    await expect(backend.generate({ ...r, cond: { ...r.cond, rowOf: Int32Array.of(0) } })).rejects.toMatchObject({ code: "ERR_INVALID_ARGUMENT" });
  });
});

describe("setTimestep: the denoise loop's timestep tensor, updated in place", () => {
  test("writes t in the graph's type and layout, truncating for integer graphs", () => {
    const float = timestepTensor({ timestepType: "float32", timestepLayout: "per-row" }, 999, 2);
    setTimestep({ timestepType: "float32" }, float, 946.42);
    expect(float).toEqual({ type: "float32", dims: [2], data: Float32Array.of(946.42, 946.42) });
    const int = timestepTensor({ timestepType: "int64", timestepLayout: "scalar" }, 999, 2);
    setTimestep({ timestepType: "int64" }, int, 946.9);
    expect(int).toEqual({ type: "int64", dims: [], data: BigInt64Array.of(946n) });
  });
});
