/**
 * GPU tests run only where the addon is built with CUDA and sees a GPU (engine tests: and TensorRT
 * can build engines); everywhere else they are skipped with the reason (normal `npm test`). `npm run test:gpu` (scripts/test-gpu.mjs) runs them
 * on a GPU machine and fails instead when there is no GPU.
 */
import { afterAll, beforeAll, describe, test } from "@jest/globals";
import { mkdtemp, rm } from "node:fs/promises";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { checkTensorRt } from "../../lib/backends/tensorrt/availability.js";
import { buildEngines } from "../../lib/backends/tensorrt/build.js";
import { parseShapeOptions, type ShapeOptions } from "../../lib/backends/tensorrt/profiles.js";
import { Pipeline, type GenerateOptions, type PipelineLoadOptions } from "../../lib/pipeline/pipeline.js";
import { loadNativeBinding } from "../../lib/native/load.js";
import type { NativeBinding, NativeInfo } from "../../lib/native/types.js";
import type { DenoiseRunOptions } from "../../lib/native/denoiser.js";
import { packProgram, type SamplerProgram } from "../../lib/sampler/index.js";
import { pseudoNormal } from "../fixtures/schedulers/goldens.js";

export type GpuContext = { ok: true; addon: NativeBinding; info: NativeInfo } | { ok: false; reason: string };

export function detectGpu(): GpuContext {
  const load = loadNativeBinding();
  if (!load.loaded) return { ok: false, reason: `the addon did not load (run \`npm run build:native\`): ${load.attempts.map((a) => a.error).join("; ")}` };
  const info = load.binding.info();
  if (!info.cudaCompiledIn) return { ok: false, reason: "the addon was built without CUDA" };
  if (info.devices.length === 0) return { ok: false, reason: `no GPU: ${info.deviceError ?? "CUDA reports no device"}` };
  return { ok: true, addon: load.binding, info };
}

/** One skipped test whose name says why, plus a console note. */
function skipWithReason(name: string, reason: string): void {
  console.info(`GPU tests skipped (${name}): ${reason}`);
  test.skip(`${name} — skipped: ${reason}`, () => undefined);
}

/** No GPU: skipped with the reason, except under `npm run test:gpu`, where it is a failure. */
function noGpu(name: string, reason: string): void {
  if (process.env.SDTRT_REQUIRE_GPU === "1") {
    test(`${name} — needs a GPU`, () => {
      throw new Error(`GPU required (SDTRT_REQUIRE_GPU=1) but ${reason}`);
    });
    return;
  }
  skipWithReason(name, reason);
}

/** `describe` on a GPU machine; else one skipped test whose name says why, plus a console note. */
export function describeGpu(name: string, body: (gpu: { addon: NativeBinding; info: NativeInfo }) => void): void {
  const gpu = detectGpu();
  if (gpu.ok) describe(name, () => body(gpu));
  else noGpu(name, gpu.reason);
}

/**
 * `describe` where TensorRT can build and run engines. Without a GPU it is handled as in
 * describeGpu; on a GPU machine without a usable TensorRT it is skipped with the reason even under
 * `npm run test:gpu` (TensorRT is optional there: the self-test says the engine tests will skip).
 */
export function describeTensorRt(name: string, body: () => void): void {
  const gpu = detectGpu();
  if (!gpu.ok) {
    noGpu(name, gpu.reason);
    return;
  }
  const availability = checkTensorRt("build");
  if (availability.usable) describe(name, body);
  else skipWithReason(name, availability.reason);
}

/** How many noise draws a program consumes. */
export function drawsOf(program: SamplerProgram): number {
  return program.evals.filter((e) => e.drawsNoise).length;
}

/** A request for `batch` images of h×w latents with pseudo-random x_0 and noise. */
export function syntheticRequest(program: SamplerProgram, batch: number, h: number, w: number, seed = 1): DenoiseRunOptions {
  const n = batch * 4 * h * w;
  return {
    program: packProgram(program),
    latents: Float32Array.from(pseudoNormal(n, seed), (v) => v * program.initNoiseSigma),
    noise: Float32Array.from(pseudoNormal(drawsOf(program) * n, seed + 1)),
    batch,
    latentHeight: h,
    latentWidth: w,
  };
}

/** ‖a − b‖ / ‖a‖: how far a backend's latents are from another's (the engine tests' measure). */
export function l2RelativeError(a: ArrayLike<number>, b: ArrayLike<number>): number {
  let num = 0;
  let den = 0;
  for (let i = 0; i < a.length; i++) {
    num += (a[i]! - b[i]!) ** 2;
    den += a[i]! ** 2;
  }
  return Math.sqrt(num / den);
}

/** The largest element difference over the largest |a| (a's scale, at least 1e-6). */
export function maxRelativeError(a: ArrayLike<number>, b: ArrayLike<number>): number {
  let diff = 0;
  let scale = 0;
  for (let i = 0; i < a.length; i++) {
    diff = Math.max(diff, Math.abs(a[i]! - b[i]!));
    scale = Math.max(scale, Math.abs(a[i]!));
  }
  return diff / Math.max(scale, 1e-6);
}

/** The bundled tiny SD model (models/tiny-sd), the one the engine tests build from. */
export const TINY_SD = join(process.cwd(), "models", "tiny-sd");

/** What cpuAndTensorRtPipelines loads; its fields are set in beforeAll, so read them inside tests. */
export interface CpuAndTensorRt {
  /** The scratch folder (engines, a prepared model), removed in afterAll. */
  root: string;
  /** The model folder both pipelines load. */
  model: string;
  /** The engine folder built for it. */
  engines: string;
  trt: Pipeline;
  cpu: Pipeline;
}

/**
 * Inside describeTensorRt: builds engines of `model` (tiny-sd by default, or what `prepareModel`
 * writes into the scratch folder) for `shapes` in a fresh scratch folder, and loads that model on
 * the TensorRT backend over them and on the CPU backend, both with `load`; afterAll disposes both
 * and removes the folder. The engine tests compare the two.
 */
export function cpuAndTensorRtPipelines(setup: {
  scratchPrefix: string;
  shapes: ShapeOptions;
  prepareModel?: (root: string) => Promise<string>;
  load?: Omit<PipelineLoadOptions, "backend" | "engines">;
}): CpuAndTensorRt {
  const pipes = {} as CpuAndTensorRt;
  beforeAll(async () => {
    pipes.root = await mkdtemp(join(tmpdir(), setup.scratchPrefix));
    pipes.model = setup.prepareModel ? await setup.prepareModel(pipes.root) : TINY_SD;
    pipes.engines = join(pipes.root, "engines");
    await buildEngines({ model: pipes.model, out: pipes.engines, shapes: parseShapeOptions(setup.shapes) });
    pipes.trt = await Pipeline.load(pipes.model, { ...setup.load, backend: "tensorrt", engines: pipes.engines });
    pipes.cpu = await Pipeline.load(pipes.model, { ...setup.load, backend: "cpu" });
  }, 600_000);
  afterAll(async () => {
    await pipes.trt?.dispose();
    await pipes.cpu?.dispose();
    if (pipes.root) await rm(pipes.root, { recursive: true, force: true });
  });
  return pipes;
}

/** `(pipe, options)` → the latents `pipe` generates for `base` with `options` over it (`base` must ask for returnLatents). */
export function latentsOver(base: GenerateOptions): (pipe: Pipeline, options: Partial<GenerateOptions>) => Promise<Float32Array> {
  return async (pipe, options) => (await pipe.generate({ ...base, ...options })).latents!;
}
