/**
 * A1111's SDE samplers on TensorRT engines of tiny-sd, against the CPU backend, on a machine with
 * an NVIDIA GPU and TensorRT (skipped elsewhere, with the reason). Their step noise comes from
 * per-image Brownian trees on the host (lib/rng/brownian-tree.ts), drawn all at once before the
 * TensorRT backend's upload: the device loop must use those draws exactly where the CPU backend
 * does — close to it, and far from the same sampler without noise (eta = 0).
 */
import { afterAll, beforeAll, expect, test } from "@jest/globals";
import { mkdtemp, rm } from "node:fs/promises";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { Pipeline, type GenerateOptions } from "../../lib/pipeline/pipeline.js";
import { buildEngines } from "../../lib/backends/tensorrt/build.js";
import { parseShapeOptions } from "../../lib/backends/tensorrt/profiles.js";
import { describeTensorRt } from "./support.js";

const TINY = join(process.cwd(), "models", "tiny-sd");

function relativeError(a: Float32Array, b: Float32Array): number {
  let num = 0;
  let den = 0;
  for (let i = 0; i < a.length; i++) {
    num += (a[i]! - b[i]!) ** 2;
    den += a[i]! ** 2;
  }
  return Math.sqrt(num / den);
}

describeTensorRt("A1111's SDE samplers on TensorRT vs the CPU backend (tiny-sd)", () => {
  let root: string;
  let trt: Pipeline;
  let cpu: Pipeline;
  beforeAll(async () => {
    root = await mkdtemp(join(tmpdir(), "sd-trt-gpu-sde-"));
    const engines = join(root, "engines");
    await buildEngines({ model: TINY, out: engines, shapes: parseShapeOptions({ batch: "1-2", size: "64x64" }) });
    trt = await Pipeline.load(TINY, { backend: "tensorrt", engines });
    cpu = await Pipeline.load(TINY, { backend: "cpu" });
  }, 600_000);
  afterAll(async () => {
    await trt?.dispose();
    await cpu?.dispose();
    await rm(root, { recursive: true, force: true });
  });

  const base: GenerateOptions = { prompt: "a lighthouse on a cliff", negativePrompt: "fog", width: 64, height: 64, steps: 6, seeds: [61, 62], rng: "cpu", returnLatents: true };
  const latents = async (pipe: Pipeline, options: Partial<GenerateOptions>) => (await pipe.generate({ ...base, ...options })).latents!;

  test.each(["k_dpmpp_sde", "k_dpmpp_2m_sde", "k_dpmpp_2m_sde_heun", "k_dpmpp_3m_sde"])("%s: two images with their own trees follow the CPU backend", async (scheduler) => {
    const onTrt = await latents(trt, { scheduler });
    const same = relativeError(await latents(cpu, { scheduler }), onTrt);
    const noiseless = relativeError(await latents(cpu, { scheduler, eta: 0 }), onTrt);
    expect(same).toBeLessThan(3e-2);
    expect(noiseless).toBeGreaterThan(5 * same);
  });
});
