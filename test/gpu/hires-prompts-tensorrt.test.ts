/**
 * Hires fix's second pass with its own prompts, prompt editing and sampler on TensorRT engines of
 * tiny-sd, against the CPU backend (which matches A1111: test/e2e/a1111-hires-prompts.test.ts), on a
 * machine with an NVIDIA GPU and TensorRT (skipped elsewhere, with the reason). The second pass is
 * a second denoise job with its own program and conditioning: the engines must follow the CPU
 * backend's run and be far from the run whose second pass keeps the first pass's prompt.
 */
import { expect, test } from "@jest/globals";
import type { GenerateOptions } from "../../lib/pipeline/pipeline.js";
import { cpuAndTensorRtPipelines, describeTensorRt, l2RelativeError as relativeError } from "./support.js";

describeTensorRt("hires fix's second-pass prompts, editing and sampler on TensorRT vs the CPU backend (tiny-sd)", () => {
  const pipes = cpuAndTensorRtPipelines({ scratchPrefix: "sd-trt-gpu-hires-prompts-", shapes: { batch: "1-2", size: "64x64-96x96", dynamic: true } });

  const options: GenerateOptions = {
    prompt: "a [lighthouse:castle:0.5] on a [red|blue] cliff", negativePrompt: "fog", width: 64, height: 64, steps: 4, guidance: 7,
    scheduler: "k_euler_a", seeds: [71, 72], rng: "cpu", returnLatents: true,
    hires: { scale: 1.5, upscaler: "Latent", steps: 4, strength: 0.7, prompt: "a castle [at night:at dawn:1.5]", negativePrompt: "blur", scheduler: "k_dpmpp_2m", sigmaSchedule: "exponential" },
  };

  test("the second pass's prompts, their editing and its own sampler follow the CPU backend", async () => {
    const a = await pipes.cpu.generate(options);
    const b = await pipes.trt.generate(options);
    expect([b.width, b.height, b.latents?.length]).toEqual([96, 96, a.latents!.length]);
    const same = relativeError(a.latents!, b.latents!);
    expect(same).toBeLessThan(3e-2);
    const firstPassPrompts = await pipes.cpu.generate({ ...options, hires: { ...options.hires, prompt: "", negativePrompt: "" } });
    expect(relativeError(firstPassPrompts.latents!, b.latents!)).toBeGreaterThan(5 * same);
    expect(b.images[0]!.infotext).toBe(a.images[0]!.infotext);
  });
});
