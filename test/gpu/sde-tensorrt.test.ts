/**
 * A1111's SDE samplers on TensorRT engines of tiny-sd, against the CPU backend, on a machine with
 * an NVIDIA GPU and TensorRT (skipped elsewhere, with the reason). Their step noise comes from
 * per-image Brownian trees on the host (lib/rng/brownian-tree.ts), drawn all at once before the
 * TensorRT backend's upload: the device loop must use those draws exactly where the CPU backend
 * does — close to it, and far from the same sampler without noise (eta = 0).
 */
import { expect, test } from "@jest/globals";
import type { GenerateOptions } from "../../lib/pipeline/pipeline.js";
import { cpuAndTensorRtPipelines, describeTensorRt, latentsOver, l2RelativeError as relativeError } from "./support.js";

describeTensorRt("A1111's SDE samplers on TensorRT vs the CPU backend (tiny-sd)", () => {
  const pipes = cpuAndTensorRtPipelines({ scratchPrefix: "sd-trt-gpu-sde-", shapes: { batch: "1-2", size: "64x64" } });

  const base: GenerateOptions = { prompt: "a lighthouse on a cliff", negativePrompt: "fog", width: 64, height: 64, steps: 6, seeds: [61, 62], rng: "cpu", returnLatents: true };
  const latents = latentsOver(base);

  test.each(["k_dpmpp_sde", "k_dpmpp_2m_sde", "k_dpmpp_2m_sde_heun", "k_dpmpp_3m_sde"])("%s: two images with their own trees follow the CPU backend", async (scheduler) => {
    const onTrt = await latents(pipes.trt, { scheduler });
    const same = relativeError(await latents(pipes.cpu, { scheduler }), onTrt);
    const noiseless = relativeError(await latents(pipes.cpu, { scheduler, eta: 0 }), onTrt);
    expect(same).toBeLessThan(3e-2);
    expect(noiseless).toBeGreaterThan(5 * same);
  });
});
