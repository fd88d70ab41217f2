/**
 * TensorRT engines of the tiny-sd fixture against the CPU backend, on a machine with an NVIDIA GPU
 * and TensorRT (the engine half of `npm run test:gpu`). Builds fp16 engines for 64×64 into a temporary
 * folder, then runs text encoding, the whole denoise loop (CUDA graphs) and the VAE on both backends
 * with the same inputs. Skipped, with the reason, where TensorRT cannot build engines.
 */
import { describe, expect, test, beforeAll, afterAll } from "@jest/globals";
import { mkdtemp, rm } from "node:fs/promises";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { CpuBackend } from "../../lib/backends/cpu/backend.js";
import { TensorRtBackend } from "../../lib/backends/tensorrt/backend.js";
import type { Backend } from "../../lib/backends/backend.js";
import { checkTensorRt } from "../../lib/backends/tensorrt/availability.js";
import { buildEngines } from "../../lib/backends/tensorrt/build.js";
import { parseShapeOptions } from "../../lib/backends/tensorrt/profiles.js";
import { createScheduler } from "../../lib/schedulers/index.js";

const TINY = join(process.cwd(), "models", "tiny-sd");
const availability = checkTensorRt("build");
const gpuDescribe = availability.usable ? describe : describe.skip;

function ids(words: number[]): Int32Array {
  const out = new Int32Array(77).fill(49407);
  out[0] = 49406;
  out.set(words, 1);
  return out;
}

function seeded(n: number, seed: number): Float32Array {
  // Box–Muller on a small LCG: a fixed pseudo-normal draw, identical for both backends.
  const out = new Float32Array(n);
  let s = seed >>> 0;
  const next = () => {
    s = (Math.imul(s, 1664525) + 1013904223) >>> 0;
    return (s + 1) / 4294967297;
  };
  for (let i = 0; i < n; i++) out[i] = Math.sqrt(-2 * Math.log(next())) * Math.cos(2 * Math.PI * next());
  return out;
}

function relativeError(a: ArrayLike<number>, b: ArrayLike<number>): number {
  let diff = 0;
  let scale = 0;
  for (let i = 0; i < a.length; i++) {
    diff = Math.max(diff, Math.abs(a[i]! - b[i]!));
    scale = Math.max(scale, Math.abs(a[i]!));
  }
  return diff / Math.max(scale, 1e-6);
}

gpuDescribe(`TensorRT engines vs the CPU backend on tiny-sd${availability.usable ? "" : ` (skipped: ${availability.reason})`}`, () => {
  let root: string;
  let trt: TensorRtBackend;
  let cpu: CpuBackend;

  beforeAll(async () => {
    root = await mkdtemp(join(tmpdir(), "sd-trt-gpu-"));
    await buildEngines({ model: TINY, out: join(root, "tiny-sd"), shapes: parseShapeOptions({ batch: "1-2", size: "64x64" }) });
    trt = await TensorRtBackend.load(TINY, { engines: join(root, "tiny-sd") });
    cpu = await CpuBackend.load(TINY);
  }, 600_000);

  afterAll(async () => {
    await trt?.dispose();
    await cpu?.dispose();
    await rm(root, { recursive: true, force: true });
  });

  test("limits come from the engines' profiles", () => {
    expect(trt.limits).toMatchObject({ maxBatch: 2, minWidth: 64, maxWidth: 64, minHeight: 64, maxHeight: 64, canEncodeImages: true });
    expect(trt.hiddenSize).toBe(32);
  });

  async function generate(backend: Backend, batch: number): Promise<{ latents: Float32Array; images: Uint8Array[] }> {
    const scheduler = createScheduler("euler");
    const program = scheduler.compile(6);
    const prompt = ids([320, 1125, 539, 320, 2368]);
    const rowOf = new Int32Array(batch);
    const z = seeded(batch * 4 * 8 * 8, 42).map((v) => v * program.initNoiseSigma);
    const out = await backend.generate({
      program,
      start: { latents: z },
      batch,
      latentHeight: 8,
      latentWidth: 8,
      cond: { chunks: 1, prompts: 1, ids: prompt, multipliers: new Float32Array(77).fill(1), rowOf, groupOf: new Int32Array(1) },
      uncond: { chunks: 1, prompts: 1, ids: ids([]), multipliers: new Float32Array(77).fill(1), rowOf, groupOf: new Int32Array(1) },
      emphasis: "original" as const,
      guidance: new Float64Array(batch).fill(7.5),
      noise: [],
      returnLatents: true,
    });
    return { latents: out.latents!, images: out.images };
  }

  test("denoise (CUDA graphs) and decode match the CPU backend within fp16 tolerance", async () => {
    for (const batch of [1, 2]) {
      const a = await generate(cpu, batch);
      const b = await generate(trt, batch);
      expect(relativeError(a.latents, b.latents)).toBeLessThan(3e-2);
      for (let i = 0; i < batch; i++) {
        let max = 0;
        let sum = 0;
        for (let p = 0; p < a.images[i]!.length; p++) {
          const d = Math.abs(a.images[i]![p]! - b.images[i]![p]!);
          max = Math.max(max, d);
          sum += d;
        }
        expect(max).toBeLessThanOrEqual(12);
        expect(sum / a.images[i]!.length).toBeLessThan(2);
      }
      expect(["captured", "replayed"]).toContain(trt.lastDenoise?.graph);
    }
  });

  test("img2img (the VAE encoder, then add_noise) matches the CPU backend", async () => {
    const pixels = seeded(3 * 64 * 64, 7).map((v) => Math.max(-1, Math.min(1, v * 0.5)));
    const program = createScheduler("euler").compile(6, { startIndex: 3 });
    const job = {
      program,
      start: { images: [{ pixels, rows: 1, eps: [seeded(4 * 8 * 8, 3)], noise: seeded(4 * 8 * 8, 5) }] },
      batch: 1,
      latentHeight: 8,
      latentWidth: 8,
      cond: { chunks: 1, prompts: 1, ids: ids([320, 1125]), multipliers: new Float32Array(77).fill(1), rowOf: new Int32Array(1), groupOf: new Int32Array(1) },
      uncond: null,
      emphasis: "original" as const,
      guidance: Float64Array.of(1),
      noise: [],
      returnLatents: true,
    };
    const a = await cpu.generate(job);
    const b = await trt.generate(job);
    expect(relativeError(a.latents!, b.latents!)).toBeLessThan(3e-2);
  });
});
