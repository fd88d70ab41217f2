import { afterAll, beforeAll, describe, expect, test } from "@jest/globals";
import { execFile } from "node:child_process";
import { mkdtemp, rm } from "node:fs/promises";
import { createRequire } from "node:module";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { promisify } from "node:util";
import { SdTrtError, ModelFileError, DisposedError, UnetOverflowError } from "../../lib/errors.js";
import { OrtHost, type HostTensor } from "../../lib/backends/cpu/ort-host.js";
import { runCpuDenoise, type CpuDenoiseJob } from "../../lib/backends/cpu/denoise-loop.js";
import { decodedToRgb } from "../../lib/image/pixels.js";
import { createScheduler } from "../../lib/schedulers/index.js";
import { TINY_MODEL_DIR, copyTinyModel, moveWeightsToExternalData } from "../fixtures/tiny-sd-cases/model-variants.js";

/** A deterministic pseudo-random latent, so outputs are non-trivial. */
function latent(count: number): Float32Array {
  const out = new Float32Array(count);
  for (let i = 0; i < count; i++) out[i] = Math.sin(i * 12.9898) * 2;
  return out;
}

/**
 * Counts event-loop turns: each setImmediate schedules the next. onnxruntime-node's own run()
 * on the main thread is synchronous inside a setImmediate queued before ours, and its result
 * is delivered in the same turn, so there not one of our turns could run before the call
 * resolves. On the worker, the event loop keeps turning while the model computes.
 */
function countTurns(): { turns: () => number; stop: () => void } {
  let turns = 0;
  let handle = setImmediate(function turn() {
    turns++;
    handle = setImmediate(turn);
  });
  return { turns: () => turns, stop: () => clearImmediate(handle) };
}

describe("OrtHost: ONNX Runtime on a worker thread", () => {
  let host: OrtHost;
  let scratch: string;
  beforeAll(async () => {
    host = new OrtHost();
    scratch = await mkdtemp(join(tmpdir(), "sd-trt-ort-host-"));
  });
  afterAll(async () => {
    await host.dispose();
    await rm(scratch, { recursive: true, force: true });
  });

  test("keeps the event loop running while a model computes", async () => {
    const { handle } = await host.load(join(TINY_MODEL_DIR, "vae_decoder/model.onnx"), { intraOpThreads: 1 });
    const feeds = { latent_sample: { type: "float32" as const, dims: [1, 4, 128, 128], data: latent(4 * 128 * 128) } };
    const loop = countTurns();
    try {
      const { outputs } = await host.run(handle, "vae_decoder", feeds, ["sample"]);
      expect(loop.turns()).toBeGreaterThan(0);
      expect(outputs["sample"]!.dims).toEqual([1, 3, 1024, 1024]);
    } finally {
      loop.stop();
    }
  });

  test("a model whose weights live in an external-data file gives the same output as the original", async () => {
    const dir = await copyTinyModel(join(scratch, "external"));
    const path = join(dir, "unet", "model.onnx");
    expect(await moveWeightsToExternalData(path, "model.onnx_data")).toBeGreaterThan(5);
    const original = await host.load(join(TINY_MODEL_DIR, "unet/model.onnx"));
    const external = await host.load(path);
    const feeds = () => ({
      sample: { type: "float32" as const, dims: [2, 4, 8, 8], data: latent(2 * 256) },
      timestep: { type: "float32" as const, dims: [1], data: new Float32Array([601]) },
      encoder_hidden_states: { type: "float32" as const, dims: [2, 77, 32], data: latent(2 * 77 * 32) },
    });
    const a = (await host.run(original.handle, "unet", feeds(), ["out_sample"])).outputs["out_sample"]!;
    const b = (await host.run(external.handle, "unet (external data)", feeds(), ["out_sample"])).outputs["out_sample"]!;
    expect(a.dims).toEqual([2, 4, 8, 8]);
    expect(Array.from(b.data as Float32Array)).toEqual(Array.from(a.data as Float32Array));
  });

  test("a failed run names the model and the input shapes", async () => {
    const { handle } = await host.load(join(TINY_MODEL_DIR, "unet/model.onnx"));
    const bad = { sample: { type: "float32" as const, dims: [1, 4, 8, 8], data: latent(256) } };
    await expect(host.run(handle, "unet/model.onnx", bad, ["out_sample"])).rejects.toThrow(/unet\/model\.onnx failed in ONNX Runtime with inputs sample float32 \[1, 4, 8, 8\]/);
    await expect(host.run(handle, "unet/model.onnx", bad, ["out_sample"])).rejects.toBeInstanceOf(SdTrtError);
  });

  test("a file ONNX Runtime cannot load is a ModelFileError naming it", async () => {
    const path = join(TINY_MODEL_DIR, "README.md");
    const error = await host.load(path).catch((e: unknown) => e);
    expect(error).toBeInstanceOf(ModelFileError);
    expect((error as ModelFileError).file).toBe(path);
    expect((error as Error).message).toContain(`ONNX Runtime cannot load ${path}`);
  });

  test("calls after dispose are refused", async () => {
    const other = new OrtHost();
    await other.dispose();
    await other.dispose(); // idempotent
    await expect(other.load(join(TINY_MODEL_DIR, "unet/model.onnx"))).rejects.toBeInstanceOf(DisposedError);
  });
});

describe("OrtHost.denoise: the whole loop on the worker", () => {
  let host: OrtHost;
  let unet: number;
  beforeAll(async () => {
    host = new OrtHost();
    unet = (await host.load(join(TINY_MODEL_DIR, "unet/model.onnx"))).handle;
  });
  afterAll(async () => {
    await host.dispose();
  });

  const io = { sampleName: "sample", timestepName: "timestep", timestepType: "float32", timestepLayout: "single", contextName: "encoder_hidden_states", outputName: "out_sample" } as const;
  /** Euler a (it draws noise every step) on a batch of 2 with guidance, at latent size h × w. */
  function job(steps: number, h = 8, w = 8): CpuDenoiseJob {
    const program = createScheduler("euler_a").compile(steps);
    const n = 2 * 4 * h * w;
    return {
      program,
      latents: latent(n),
      noise: program.evals.filter((e) => e.drawsNoise).map((_, k) => latent(n).map((v) => v * Math.cos(k))),
      batch: 2,
      latentHeight: h,
      latentWidth: w,
      context: latent(4 * 77 * 32),
      condTokens: 77,
      uncondTokens: 77,
      hiddenSize: 32,
      guidance: Float64Array.of(7.5, 3),
      io,
    };
  }

  test("gives exactly what the same loop gives on this thread with ONNX Runtime called directly", async () => {
    const ort = createRequire(import.meta.url)("onnxruntime-node") as typeof import("onnxruntime-node");
    const session = await ort.InferenceSession.create(join(TINY_MODEL_DIR, "unet/model.onnx"), { executionProviders: ["cpu"], graphOptimizationLevel: "all" });
    const j = job(6);
    const steps: number[] = [];
    const seen: Float32Array[] = [];
    const remote = await host.denoise(unet, "unet", j, { onStep: (s) => steps.push(s), onLatents: (s, x) => (seen[s] = x) });
    const local = await runCpuDenoise(j, async (feeds: Record<string, HostTensor>) => {
      const tensors = Object.fromEntries(Object.entries(feeds).map(([name, t]) => [name, new ort.Tensor(t.type, t.data, t.dims)]));
      return (await session.run(tensors))["out_sample"]!.data as Float32Array;
    });
    await session.release();
    expect(remote.calls).toBe(6);
    expect(remote.ms).toBeGreaterThan(0);
    expect(Array.from(remote.latents!)).toEqual(Array.from(local));
    expect(steps).toEqual([0, 1, 2, 3, 4, 5]);
    expect(Array.from(seen[5]!)).toEqual(Array.from(local)); // each step's latents are a copy the caller keeps
  });

  test("an abort stops the loop between evaluations through the shared flag, and no progress follows it", async () => {
    const controller = new AbortController();
    const steps: number[] = [];
    const result = await host.denoise(unet, "unet", job(200, 32, 32), {
      signal: controller.signal,
      onStep: (s) => {
        steps.push(s);
        if (s === 2) controller.abort();
      },
    });
    expect(result.latents).toBeNull();
    expect(steps).toEqual([0, 1, 2]);
    // The worker runs ahead of the progress it posts, by as many evaluations as the main thread
    // takes to react; the evaluation running when the flag is set completes, and none starts after.
    expect(result.calls).toBeGreaterThanOrEqual(3);
    expect(result.calls).toBeLessThan(200);
    const stopped = await host.denoise(unet, "unet", job(5), { signal: AbortSignal.abort() });
    expect(stopped).toMatchObject({ latents: null, calls: 0 });
  });

  test("keeps the event loop running for the whole loop", async () => {
    // Progress arrives as the loop runs, and the event loop turns after the first step's and
    // before the result: nothing on this thread waits for the loop.
    const loop = countTurns();
    let turnsAtFirstStep = -1;
    try {
      const result = await host.denoise(unet, "unet", job(10, 64, 64), {
        onStep: (s) => {
          if (s === 0) turnsAtFirstStep = loop.turns();
        },
      });
      expect(result.calls).toBe(10);
      expect(turnsAtFirstStep).toBeGreaterThan(0);
      expect(loop.turns()).toBeGreaterThan(turnsAtFirstStep);
    } finally {
      loop.stop();
    }
  });

  test("a UNet output with NaN stops the loop as a UnetOverflowError naming the evaluation, before any VAE runs", async () => {
    const bad = job(4);
    // A NaN in one uncond embedding row: the real tiny UNet then outputs NaN for that image, as an
    // overflowing fp16 UNet would; the loop must blame the UNet, not let the VAE report it.
    bad.context[3] = Number.NaN;
    const steps: number[] = [];
    const error = await host.denoise(unet, "unet", bad, { onStep: (s) => steps.push(s) }).catch((e: unknown) => e);
    expect(error).toBeInstanceOf(UnetOverflowError);
    expect(error).toMatchObject({ code: "ERR_UNET_NAN", evaluation: 0 });
    expect((error as UnetOverflowError).count).toBeGreaterThan(0);
    expect((error as Error).message).toMatch(/the UNet produced NaN\/Inf: \d+ non-finite output values, first at evaluation 1 of 4\. This is the UNet, not the VAE/);
    expect(steps).toEqual([]);
  });

  test("a job whose shapes do not match is refused, naming what is off", async () => {
    const bad = { ...job(3), guidance: Float64Array.of(7.5) };
    await expect(host.denoise(unet, "unet/model.onnx", bad)).rejects.toThrow(/unet\/model\.onnx failed in ONNX Runtime with inputs sample float32 \[4, 4, 8, 8\].*1 guidance scales for a batch of 2/);
  });
});

describe("OrtHost.decode: the VAE decoder and the RGB conversion on the worker", () => {
  test("gives diffusers' uint8 image, and a NaN output is refused naming the model", async () => {
    const host = new OrtHost();
    try {
      const { handle } = await host.load(join(TINY_MODEL_DIR, "vae_decoder/model.onnx"));
      const latents = { type: "float32" as const, dims: [2, 4, 8, 8], data: latent(2 * 256) };
      const decoded = await host.decode(handle, "vae_decoder/model.onnx", { latentName: "latent_sample", imageName: "sample", latents });
      const raw = (await host.run(handle, "vae_decoder", { latent_sample: latents }, ["sample"])).outputs["sample"]!;
      expect(decoded.dims).toEqual([2, 3, 64, 64]);
      expect(decoded.images.map((i) => Buffer.from(i))).toEqual(decodedToRgb(raw.data as Float32Array, 2, 64, 64).map((i) => Buffer.from(i)));
      const nan = { ...latents, data: latent(2 * 256).fill(Number.NaN, 300, 301) };
      const error = await host.decode(handle, "vae_decoder/model.onnx", { latentName: "latent_sample", imageName: "sample", latents: nan }).catch((e: unknown) => e);
      expect(error).toMatchObject({ code: "ERR_VAE_NAN", message: expect.stringMatching(/^vae_decoder\/model\.onnx produced NaN in image 1/) });
    } finally {
      await host.dispose();
    }
  });
});

describe("the worker in a process started with flags for its own entry", () => {
  test("`node --input-type=module -e …` can generate (the worker does not inherit execArgv)", async () => {
    const dist = join(process.cwd(), "dist", "index.js");
    const script = `import { Pipeline } from ${JSON.stringify(dist)};
const pipe = await Pipeline.load(undefined, { backend: "cpu" });
const result = await pipe.generate({ prompt: "a boat", steps: 2, seed: 1 });
console.log(result.images.length, result.images[0].rgb.length);
await pipe.dispose();`;
    const { stdout } = await promisify(execFile)(process.execPath, ["--input-type=module", "-e", script], { timeout: 60_000 });
    expect(stdout.trim()).toBe(`1 ${64 * 64 * 3}`);
  });
});

