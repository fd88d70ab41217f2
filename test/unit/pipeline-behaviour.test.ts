/**
 * `Pipeline` behaviour beyond the reference cases, on the tiny model: seeds, cancellation,
 * progress, queueing, model layouts, loading errors, lifecycle.
 */
import { afterAll, beforeAll, describe, expect, test } from "@jest/globals";
import { mkdtemp, rm } from "node:fs/promises";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { AbortError, DisposedError, InvalidOptionError, ModelFileError } from "../../lib/errors.js";
import { Pipeline, type ProgressEvent } from "../../lib/pipeline.js";
import type { CpuBackend } from "../../lib/backends/cpu.js";
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
    expect(steps).toEqual([1, 2, 3]);
    expect(backend.runtimeStats.unet.calls - before).toBe(3);
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

  test("a prompt longer than 77 tokens is truncated with a warning", async () => {
    const result = await pipe.generate({ ...base, steps: 2, seed: 1, prompt: Array.from({ length: 90 }, (_, i) => `word${i}`).join(" ") });
    expect(result.warnings).toEqual([expect.stringMatching(/prompt is longer than CLIP's 77 tokens; the last \d+ tokens are ignored/)]);
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
    const { TensorRtBackend } = await import("../../lib/backends/tensorrt.js");
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
