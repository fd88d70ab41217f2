/**
 * `Pipeline` behaviour beyond the reference cases, on the tiny model: seeds, cancellation,
 * progress, queueing, model layouts, loading errors, lifecycle; and the one generation
 * implementation (pipeline/generation.ts) behind `generate` and `PipelineService`: a batch of
 * requests makes one text-encoder call per prompt list, one denoise and one decode, and each
 * request gets exactly what it gets alone; requests are prepared before they queue; sampler
 * programs are compiled once; sizes follow the UNet's downsampling multiple; load options reach
 * the backend.
 */
import { afterAll, beforeAll, describe, expect, test } from "@jest/globals";
import { mkdtemp, rm } from "node:fs/promises";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { AbortError, DisposedError, InvalidOptionError, ModelFileError } from "../../lib/errors.js";
import { Pipeline, type GenerateOptions, type GenerateResult, type ProgressEvent } from "../../lib/pipeline/pipeline.js";
import type { CpuBackend, RuntimeStats } from "../../lib/backends/cpu/backend.js";
import { limitsForModel } from "../../lib/pipeline/options.js";
import { ProgramCache } from "../../lib/pipeline/program-cache.js";
import { SD1_SCHEDULER_CONFIG } from "../../lib/schedulers/index.js";
import { copyTinyModel, moveWeightsToExternalData, renameGraphName, toTensorRtDemoLayout } from "../fixtures/tiny-sd-cases/model-variants.js";
import { latentError } from "../fixtures/tiny-sd-cases/compare.js";

let pipe: Pipeline;
let scratch: string;
beforeAll(async () => {
  pipe = await Pipeline.load(undefined, { backend: "cpu" });
  scratch = await mkdtemp(join(tmpdir(), "sd-trt-pipeline-"));
});
afterAll(async () => {
  await pipe?.dispose();
  await rm(scratch, { recursive: true, force: true });
});

const base = { prompt: "a lighthouse at dusk", width: 64, height: 64, steps: 8 } as const;

describe("seeds", () => {
  test("without a seed a random one is drawn, reported, and reproduces the image", async () => {
    const first = await pipe.generate({ ...base });
    expect(first.randomSeed).toBe(true);
    expect(first.seeds).toHaveLength(1);
    expect(first.images[0]!.seed).toBe(first.seeds[0]);
    const again = await pipe.generate({ ...base, seed: first.seeds[0]! });
    expect(again.randomSeed).toBe(false);
    expect(Buffer.compare(Buffer.from(again.images[0]!.rgb), Buffer.from(first.images[0]!.rgb))).toBe(0);
  });

  test("seeds: [s, s + 1] gives image 1 the latents a batch of one with seed s + 1 gets (A1111's per-image seeds)", async () => {
    const pair = await pipe.generate({ ...base, seeds: [700, 701], returnLatents: true });
    const single = await pipe.generate({ ...base, seed: 701, returnLatents: true });
    const perImage = pair.latents!.length / 2;
    expect(latentError(pair.latents!.subarray(perImage), single.latents!)).toBeLessThan(1e-5);
    expect(pair.images.map((i) => i.seed)).toEqual([700n, 701n]);
  });

  test("one seed with batch 2 draws both images from one generator (diffusers), so image 1 differs from seed + 1 alone", async () => {
    const batch = await pipe.generate({ ...base, seed: 700, batch: 2, returnLatents: true });
    const single = await pipe.generate({ ...base, seed: 701, returnLatents: true });
    const perImage = batch.latents!.length / 2;
    expect(latentError(batch.latents!.subarray(perImage), single.latents!)).toBeGreaterThan(0.1);
    expect(batch.seeds).toEqual([700n]);
    expect(batch.images.map((i) => i.seed)).toEqual([700n, 701n]); // as A1111's infotext writes them
  });
});

describe("progress and cancellation", () => {
  test("reports every stage and every model evaluation in order", async () => {
    const events: ProgressEvent[] = [];
    const result = await pipe.generate({ ...base, seed: 1, onProgress: (e) => events.push(e) });
    const denoise = events.filter((e) => e.stage === "denoise");
    expect(denoise.map((e) => e.step)).toEqual(Array.from({ length: result.evaluations }, (_, i) => i + 1));
    expect(denoise.every((e) => e.total === result.evaluations && typeof e.timestep === "number")).toBe(true);
    expect(events[0]!.stage).toBe("encode-text");
    expect(events[events.length - 1]!.stage).toBe("decode");
    expect(result.timings.total).toBeGreaterThanOrEqual(result.timings.denoise);
  });

  test("an abort between steps rejects with the signal's reason, and the pipeline stays usable", async () => {
    const controller = new AbortController();
    const reason = new AbortError("stop now");
    const steps: number[] = [];
    const backend = pipe.backend as CpuBackend;
    const before = backend.runtimeStats.unet.calls;
    const run = pipe.generate({
      ...base,
      steps: 30,
      seed: 3,
      signal: controller.signal,
      onProgress: (e) => {
        if (e.stage !== "denoise") return;
        steps.push(e.step);
        if (e.step === 3) controller.abort(reason);
      },
    });
    await expect(run).rejects.toBe(reason);
    expect(steps).toEqual([1, 2, 3]); // no progress after the abort
    // The loop runs on the worker and posts progress without waiting for it, so it may be a few
    // (tiny) evaluations ahead of the progress when the abort arrives; it stops at the next one.
    expect(backend.runtimeStats.unet.calls - before).toBeGreaterThanOrEqual(3);
    expect(backend.runtimeStats.unet.calls - before).toBeLessThan(30);
    const after = await pipe.generate({ ...base, seed: 3 });
    expect(after.images).toHaveLength(1);
  });

  test("an already aborted signal rejects before any model runs", async () => {
    const backend = pipe.backend as CpuBackend;
    const before = backend.runtimeStats.textEncoder.calls;
    await expect(pipe.generate({ ...base, signal: AbortSignal.abort() })).rejects.toMatchObject({ name: "AbortError" });
    expect(backend.runtimeStats.textEncoder.calls).toBe(before);
  });

  test("invalid options reject before any model runs", async () => {
    const backend = pipe.backend as CpuBackend;
    const before = backend.runtimeStats.textEncoder.calls;
    await expect(pipe.generate({ ...base, width: 60 })).rejects.toBeInstanceOf(InvalidOptionError);
    await expect(pipe.generate({ ...base, scheduler: "nope" })).rejects.toThrow(/scheduler must be one of/);
    expect(backend.runtimeStats.textEncoder.calls).toBe(before);
  });
});

describe("concurrency", () => {
  test("concurrent generate() calls queue and give the same results as sequential ones", async () => {
    const [a, b] = await Promise.all([pipe.generate({ ...base, seed: 11, scheduler: "euler_a" }), pipe.generate({ ...base, seed: 12, scheduler: "dpmpp_2m" })]);
    const a2 = await pipe.generate({ ...base, seed: 11, scheduler: "euler_a" });
    const b2 = await pipe.generate({ ...base, seed: 12, scheduler: "dpmpp_2m" });
    expect(Buffer.compare(Buffer.from(a.images[0]!.rgb), Buffer.from(a2.images[0]!.rgb))).toBe(0);
    expect(Buffer.compare(Buffer.from(b.images[0]!.rgb), Buffer.from(b2.images[0]!.rgb))).toBe(0);
  });
});

describe("requests beyond the reference cases", () => {
  test("guidance 0 and 1 turn classifier-free guidance off (no negative prompt encoded, UNet batch 1)", async () => {
    const backend = pipe.backend as CpuBackend;
    const before = backend.runtimeStats;
    const result = await pipe.generate({ ...base, seed: 4, guidance: 0, negativePrompt: "ignored" });
    const after = backend.runtimeStats;
    expect(after.textEncoder.calls - before.textEncoder.calls).toBe(1);
    expect((after.unet.rows - before.unet.rows) / (after.unet.calls - before.unet.calls)).toBe(1);
    expect(result.images[0]!.infotext).not.toContain("Negative prompt");
  });

  test("a prompt longer than 77 tokens is truncated with a warning with promptSyntax plain, and read whole (two chunks) by default", async () => {
    const prompt = Array.from({ length: 90 }, (_, i) => `word${i}`).join(" ");
    const plain = await pipe.generate({ ...base, steps: 2, seed: 1, prompt, promptSyntax: "plain" });
    expect(plain.warnings).toEqual([expect.stringMatching(/prompt is longer than CLIP's 77 tokens; the last \d+ tokens are ignored \(promptSyntax "plain"\)/)]);
    const whole = await pipe.generate({ ...base, steps: 2, seed: 1, prompt });
    expect(whole.warnings).toEqual([]);
    expect(Buffer.from(whole.images[0]!.rgb).equals(Buffer.from(plain.images[0]!.rgb))).toBe(false);
  });

  test("img2img at strength 1 and with a resize to an explicit size", async () => {
    const rgb = new Uint8Array(64 * 64 * 3).map((_, i) => (i * 37) % 256);
    const full = await pipe.generate({ ...base, width: undefined, height: undefined, seed: 2, initImage: { data: rgb, width: 64, height: 64, channels: 3 }, strength: 1 });
    expect([full.width, full.height, full.evaluations]).toEqual([64, 64, 9]); // PNDM: steps + 1 calls
    const resized = await pipe.generate({ ...base, width: 128, height: 96, seed: 2, initImage: { data: rgb, width: 64, height: 64, channels: 3 }, strength: 0.5 });
    expect([resized.width, resized.height, resized.images[0]!.rgb.length]).toEqual([128, 96, 128 * 96 * 3]);
    expect(resized.images[0]!.infotext).toContain("Size: 128x96, Model hash: ");
    expect(resized.images[0]!.infotext).toContain(", Denoising strength: 0.5, RNG: CPU");
  });

  test("an unreadable init image is an error naming the file, before any model runs", async () => {
    const missing = join(scratch, "nope.png");
    const backend = pipe.backend as CpuBackend;
    const before = backend.runtimeStats.textEncoder.calls;
    await expect(pipe.generate({ ...base, initImage: missing })).rejects.toMatchObject({ name: "ModelFileError", file: missing });
    expect(backend.runtimeStats.textEncoder.calls).toBe(before);
  });

  test("every scheduler runs on the pipeline", async () => {
    for (const scheduler of ["lms", "euler", "euler_a", "ddim", "pndm", "dpmpp_2m", "dpmpp_2m_karras", "heun", "ddpm", "unipc"]) {
      const result = await pipe.generate({ ...base, steps: 4, seed: 9, scheduler });
      expect(result.scheduler).toBe(scheduler);
      expect(result.images[0]!.rgb.some((v) => v !== result.images[0]!.rgb[0])).toBe(true);
    }
  });
});

describe("model folders", () => {
  const request = { ...base, seed: 2024, returnLatents: true } as const;

  test("the TensorRT demo layout and an external-data UNet give the optimum layout's result", async () => {
    const expected = await pipe.generate(request);
    const demoDir = await toTensorRtDemoLayout(await copyTinyModel(join(scratch, "demo")));
    const externalDir = await copyTinyModel(join(scratch, "external"));
    await moveWeightsToExternalData(join(externalDir, "unet", "model.onnx"), "model.onnx_data");
    for (const dir of [demoDir, externalDir]) {
      const other = await Pipeline.load(dir, { backend: "cpu" });
      try {
        const result = await other.generate(request);
        expect(Array.from(result.latents!)).toEqual(Array.from(expected.latents!));
      } finally {
        await other.dispose();
      }
    }
  });

  test("a missing folder and a UNet without encoder_hidden_states fail to load, naming the file", async () => {
    const missing = join(scratch, "missing-model");
    await expect(Pipeline.load(missing, { backend: "cpu" })).rejects.toMatchObject({ name: "ModelFileError", file: missing });
    const dir = await copyTinyModel(join(scratch, "renamed"));
    const unet = join(dir, "unet", "model.onnx");
    await renameGraphName(unet, "encoder_hidden_states", "context_hidden_states");
    const error = await Pipeline.load(dir, { backend: "cpu" }).catch((e: unknown) => e);
    expect(error).toBeInstanceOf(ModelFileError);
    expect((error as ModelFileError).file).toBe(unet);
    expect((error as Error).message).toMatch(/no text embeddings input \(expected an input named "encoder_hidden_states"\)/);
  });

  test("backend auto falls back to the CPU here and says why; engines with the CPU backend is refused", async () => {
    const auto = await Pipeline.load(undefined, { backend: "auto" });
    try {
      expect(auto.backendName).toBe("cpu");
      expect(auto.backendReason).toMatch(/^auto: .*using the CPU$/);
    } finally {
      await auto.dispose();
    }
    await expect(Pipeline.load(undefined, { backend: "cpu", engines: "/tmp/engines" })).rejects.toThrow(/engines applies to the TensorRT backend/);
    const { TensorRtBackend } = await import("../../lib/backends/tensorrt/backend.js");
    const { usable } = await TensorRtBackend.isUsable();
    if (!usable) {
      // Asking for TensorRT where it cannot run is an error that says why, never a silent CPU run.
      await expect(Pipeline.load(undefined, { backend: "tensorrt" })).rejects.toThrow(/^the TensorRT backend cannot run here: /);
    }
    await expect(Pipeline.load(undefined, { backend: "gpu" as "cpu" })).rejects.toThrow(/backend must be one of "cpu", "tensorrt", "auto"/);
  });
});

describe("lifecycle", () => {
  test("dispose is idempotent, waits for a running generation, and later calls are refused", async () => {
    const own = await Pipeline.load(undefined, { backend: "cpu" });
    const running = own.generate({ ...base, seed: 5 });
    await Promise.all([own.dispose(), own.dispose()]);
    expect((await running).images).toHaveLength(1);
    expect(own.disposed).toBe(true);
    await expect(own.generate({ ...base })).rejects.toBeInstanceOf(DisposedError);
  });

  test("await using disposes at the end of the scope", async () => {
    let escaped: Pipeline;
    {
      await using scoped = await Pipeline.load(undefined, { backend: "cpu" });
      escaped = scoped;
      expect(scoped.disposed).toBe(false);
    }
    expect(escaped.disposed).toBe(true);
  });
});

const small = { width: 64, height: 64, steps: 5, scheduler: "euler_a" } as const;

function expectSameImages(a: GenerateResult, b: GenerateResult): void {
  expect(a.images.map((i) => [i.seed, i.infotext])).toEqual(b.images.map((i) => [i.seed, i.infotext]));
  for (const [i, image] of a.images.entries()) expect(Buffer.compare(Buffer.from(image.rgb), Buffer.from(b.images[i]!.rgb))).toBe(0);
}

function delta(after: RuntimeStats, before: RuntimeStats) {
  const d = (k: keyof RuntimeStats) => ({ calls: after[k].calls - before[k].calls, rows: after[k].rows - before[k].rows });
  return { textEncoder: d("textEncoder"), unet: d("unet"), vaeDecoder: d("vaeDecoder") };
}

describe("generateBatch: one implementation for one request or several", () => {
  test("merged requests make one text-encoder call per prompt list and one denoise, and each gets its own images", async () => {
    const options: GenerateOptions[] = [
      { ...small, prompt: "a red barn", seeds: [31, 32], guidance: 5 },
      { ...small, prompt: "a lighthouse", negativePrompt: "fog", seed: 7, guidance: 9, returnLatents: true },
    ];
    const backend = pipe.backend as CpuBackend;
    const before = backend.runtimeStats;
    const merged = await pipe.generateBatch(options.map((o) => pipe.resolveOptions(o)));
    const calls = delta(backend.runtimeStats, before);
    expect(calls.textEncoder.calls).toBe(2); // the prompts of all 3 images, then their negative prompts
    expect(calls.unet).toEqual({ calls: merged[0]!.evaluations, rows: 2 * 3 * merged[0]!.evaluations }); // one loop, CFG batch 2 × 3
    expect(calls.vaeDecoder).toEqual({ calls: 3, rows: 3 }); // image by image
    for (let i = 0; i < options.length; i++) expectSameImages(merged[i]!, await pipe.generate(options[i]!));
    expect(merged[1]!.latents).toHaveLength(4 * 8 * 8); // its own row only
  });

  test("requests that cannot share a batch are refused, not mixed", async () => {
    const a = pipe.resolveOptions({ ...small, prompt: "a" });
    const b = pipe.resolveOptions({ ...small, prompt: "b", width: 96 });
    await expect(pipe.generateBatch([a, b])).rejects.toThrow(/cannot share a batch/);
    const watched = pipe.resolveOptions({ ...small, prompt: "c", onLatents: () => undefined });
    await expect(pipe.generateBatch([watched, a])).rejects.toThrow(/observes its latents \(onLatents\) must run alone/);
  });

  test("a request that cannot be prepared fails at once, without waiting for the generation ahead of it", async () => {
    const long = pipe.generate({ ...small, prompt: "slow", steps: 1000, seed: 1 });
    let longDone = false;
    void long.then(() => (longDone = true));
    await expect(pipe.generate({ ...small, prompt: "x", initImage: new Uint8Array([1, 2, 3, 4]) })).rejects.toBeInstanceOf(InvalidOptionError);
    expect(longDone).toBe(false);
    await long;
  });
});

describe("compiled sampler programs", () => {
  test("one program per scheduler, step count and img2img start, shared and frozen", () => {
    const cache = new ProgramCache(SD1_SCHEDULER_CONFIG, 2);
    const a = cache.get("euler", 10);
    expect(cache.get("euler", 10).program).toBe(a.program);
    expect(Object.isFrozen(a.program) && Object.isFrozen(a.program.evals[0]) && Object.isFrozen(a.program.evals[0]!.a)).toBe(true);
    expect(() => {
      (a.program.evals[0]!.a as number[])[0] = 2;
    }).toThrow(TypeError);
    const img2img = cache.get("euler", 10, 0.5);
    expect(img2img.key).not.toBe(a.key);
    expect(img2img.program.startIndex).toBe(5);
    expect(img2img.program.addNoise).toBeDefined();
    expect(cache.get("euler", 10, 0.55).key).toBe(img2img.key); // floor(10 · 0.55) = 5 as well
    cache.get("ddim", 10); // capacity 2: the least recently used (euler 10) goes
    expect(cache.get("euler", 10).program).not.toBe(a.program);
  });
});

describe("image sizes the UNet can take", () => {
  test("width 72 on the tiny model (one downsampling: multiples of 16) is refused before any model runs", async () => {
    expect(pipe.limits).toMatchObject({ sizeMultiple: 16, minWidth: 64, maxWidth: 2048 });
    const backend = pipe.backend as CpuBackend;
    const before = backend.runtimeStats.textEncoder.calls;
    const error = await pipe.generate({ ...small, prompt: "x", width: 72 }).catch((e: unknown) => e);
    expect(error).toBeInstanceOf(InvalidOptionError);
    expect(error).toMatchObject({ option: "width", message: "width must be a multiple of 16 from 64 to 2048 for this model, got 72 (number)" });
    await expect(pipe.generate({ ...small, prompt: "x", height: 88 })).rejects.toMatchObject({ option: "height" });
    expect(backend.runtimeStats.textEncoder.calls).toBe(before);
    expect((await pipe.generate({ ...small, prompt: "x", width: 80, seed: 1 })).images[0]!.rgb).toHaveLength(80 * 64 * 3);
  });

  test("an init image without an explicit size is rounded down to the multiple", async () => {
    const rgb = new Uint8Array(72 * 72 * 3).map((_, i) => (i * 13) % 256);
    const result = await pipe.generate({ ...small, width: undefined, height: undefined, prompt: "x", seed: 3, initImage: { data: rgb, width: 72, height: 72, channels: 3 } });
    expect([result.width, result.height]).toEqual([64, 64]);
  });

  test("a backend's limits narrowed to a model's multiple", () => {
    const backend = { maxBatch: 4, minWidth: 64, maxWidth: 2040, minHeight: 200, maxHeight: 1000, sizeMultiple: 8, canEncodeImages: true, canObserveLatents: true, maxPromptChunks: 3 };
    expect(limitsForModel(backend, 64)).toEqual({ ...backend, sizeMultiple: 64, maxWidth: 1984, minHeight: 256, maxHeight: 960 });
    expect(limitsForModel(backend, 8)).toEqual(backend);
    expect(limitsForModel({ ...backend, sizeMultiple: 24 }, 16).sizeMultiple).toBe(48);
  });
});

describe("load options", () => {
  test("useGraphs must be true or false (it goes to the TensorRT backend)", async () => {
    await expect(Pipeline.load(undefined, { backend: "cpu", useGraphs: "no" as unknown as boolean })).rejects.toMatchObject({
      option: "useGraphs",
      message: 'useGraphs must be true or false, got "no" (string)',
    });
  });
});

describe("memory: a request that cannot fit is refused before any model runs", () => {
  test("2048×2048 × 4 images on the CPU backend: refused with the estimate and the limit, no model call made", async () => {
    const events: ProgressEvent[] = [];
    const error = await pipe.generate({ prompt: "x", width: 2048, height: 2048, seeds: [1n, 2n, 3n, 4n], onProgress: (e) => events.push(e) }).catch((e: unknown) => e);
    expect(error).toBeInstanceOf(InvalidOptionError);
    expect((error as Error).message).toMatch(/^2048x2048 × 4 images needs about [\d.]+ TiB of memory on the CPU backend \(UNet attention scores 8 × 8 heads × 65536² floats = [\d.]+ TiB, VAE decoder [\d.]+ GiB\), more than the limit of [\d.]+ [GT]iB; use a smaller size or batch/);
    expect(events).toEqual([]);
  });

  test("a configured limit refuses what the machine would allow, and lets smaller requests through", async () => {
    const small = await Pipeline.load(undefined, { backend: "cpu", memoryLimit: 256 * 2 ** 20 });
    try {
      await expect(small.generate({ prompt: "x", width: 512, height: 512, seed: 1n, steps: 1 })).rejects.toThrow(/512x512 × 1 image needs about 1\.0 GiB .* more than the limit of 256 MiB/);
      expect((await small.generate({ prompt: "x", width: 64, height: 64, seed: 1n, steps: 1 })).images).toHaveLength(1);
    } finally {
      await small.dispose();
    }
  });
});
