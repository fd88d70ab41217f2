/**
 * SDXL on TensorRT engines, on a machine with an NVIDIA GPU and TensorRT (skipped elsewhere, with
 * the reason; `npm run test:gpu` fails instead): `sd-trt build` makes the tiny SDXL's engine set
 * (both text encoders, the UNet with text_embeds/time_ids, the fp32 VAE its force_upcast asks for),
 * and every case of the diffusers reference (test/fixtures/sdxl) generated through the TensorRT
 * backend matches the CPU backend — which matches diffusers — within the fp16 tolerance the SD 1.x
 * GPU tests use (test/gpu/tensorrt.test.ts): latents 3e-2 relative, pixels within 12 levels and
 * under 2 on average. The denoise loop must have run under a CUDA graph, with text_embeds and
 * time_ids bound in it. A size outside the built range is refused with the range.
 */
import { afterAll, beforeAll, expect, test } from "@jest/globals";
import { mkdtemp, rm } from "node:fs/promises";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { InvalidOptionError } from "../../lib/errors.js";
import { Pipeline } from "../../lib/pipeline/pipeline.js";
import type { TensorRtBackend } from "../../lib/backends/tensorrt/backend.js";
import { buildEngines } from "../../lib/backends/tensorrt/build.js";
import { parseShapeOptions } from "../../lib/backends/tensorrt/profiles.js";
import { loadSdxlReference, optionsForCase, TINY_SDXL_DIR } from "../fixtures/sdxl/reference.js";
import { describeTensorRt, maxRelativeError } from "./support.js";

describeTensorRt("SDXL on TensorRT engines of the tiny SDXL", () => {
  let root: string;
  let engines: string;
  let trt: Pipeline;
  let cpu: Pipeline;
  const reference = loadSdxlReference();

  beforeAll(async () => {
    root = await mkdtemp(join(tmpdir(), "sd-trt-sdxl-trt-"));
    engines = join(root, "tiny-sdxl");
    // 64² and the 96×64 size-conditioning case: one dynamic profile over 64…96.
    const built = await buildEngines({ model: TINY_SDXL_DIR, out: engines, shapes: parseShapeOptions({ batch: "1-2", size: "64x64-96x96", dynamic: true }) });
    expect(Object.keys(built.manifest.engines).sort()).toEqual(["text_encoder", "text_encoder_2", "unet", "vae_decoder", "vae_encoder"]);
    expect(built.manifest.engines.vae_decoder!.precision).toBe("fp32");
    trt = await Pipeline.load(TINY_SDXL_DIR, { backend: "tensorrt", engines });
    cpu = await Pipeline.load(TINY_SDXL_DIR, { backend: "cpu" });
  }, 600_000);

  afterAll(async () => {
    await trt?.dispose();
    await cpu?.dispose();
    await rm(root, { recursive: true, force: true });
  });

  test.each(reference.cases.map((c) => [c.id, c] as const))("%s matches the CPU backend within fp16 tolerance", async (_id, c) => {
    const options = { ...optionsForCase(reference, c), returnLatents: true };
    const a = await cpu.generate(options);
    const b = await trt.generate(options);
    expect(b.latents).toHaveLength(a.latents!.length);
    expect(maxRelativeError(a.latents!, b.latents!)).toBeLessThan(3e-2);
    expect(b.images).toHaveLength(a.images.length);
    a.images.forEach((image, i) => {
      let max = 0;
      let sum = 0;
      for (let p = 0; p < image.rgb.length; p++) {
        const d = Math.abs(image.rgb[p]! - b.images[i]!.rgb[p]!);
        max = Math.max(max, d);
        sum += d;
      }
      expect(max).toBeLessThanOrEqual(12);
      expect(sum / image.rgb.length).toBeLessThan(2);
    });
    expect(["captured", "replayed"]).toContain((trt.backend as TensorRtBackend).lastDenoise?.graph);
  });

  test("A1111's hires fix (second pass at 96², its own time ids) matches the CPU backend within fp16 tolerance", async () => {
    // 64² → 96² with two images: inside the built profile. The CPU backend matches A1111 (test/e2e/a1111-sdxl-hires.test.ts).
    const options = {
      prompt: "a lighthouse on a cliff", negativePrompt: "fog", width: 64, height: 64, steps: 4, guidance: 7, scheduler: "k_euler_a", seeds: [21, 22],
      rng: "cpu" as const, returnLatents: true, hires: { scale: 1.5, upscaler: "Latent", steps: 6, strength: 0.8 },
    };
    const a = await cpu.generate(options);
    const b = await trt.generate(options);
    expect([b.width, b.height, b.latents?.length]).toEqual([96, 96, a.latents!.length]);
    expect(maxRelativeError(a.latents!, b.latents!)).toBeLessThan(3e-2);
    a.images.forEach((image, i) => {
      let max = 0;
      for (let p = 0; p < image.rgb.length; p++) max = Math.max(max, Math.abs(image.rgb[p]! - b.images[i]!.rgb[p]!));
      expect(max).toBeLessThanOrEqual(12);
    });
    expect(["captured", "replayed"]).toContain((trt.backend as TensorRtBackend).lastDenoise?.graph);
  });

  test("a long prompt and a short negative prompt run unpadded as two UNet calls, each with its text_embeds and time_ids, like the CPU backend", async () => {
    // 95 tokens (two chunks) against one chunk: A1111's default (pad_cond_uncond off).
    const prompt = Array.from({ length: 16 }, (_, i) => `a red barn ${i % 2 ? "at dusk" : "in snow"}`).join(", ");
    const options = { prompt, negativePrompt: "blurry", width: 64, height: 64, steps: 4, seed: 5, returnLatents: true };
    const a = await cpu.generate(options);
    for (let run = 0; run < 2; run++) {
      const b = await trt.generate(options);
      expect(maxRelativeError(a.latents!, b.latents!)).toBeLessThan(3e-2);
    }
    expect((trt.backend as TensorRtBackend).lastDenoise?.graph).toBe("replayed");
  });

  test("a size outside the built range is refused with the range", async () => {
    const error = await trt.generate({ prompt: "a cat", width: 128, height: 64, steps: 2, seed: 1 }).catch((e: unknown) => e);
    expect(error).toBeInstanceOf(InvalidOptionError);
    expect((error as Error).message).toMatch(/width must be a multiple of \d+ from 64 to 96 for this model, got 128/);
  });

  // A1111's SDXL features that run on the CPU backend only (issue 13): each refused before any model runs, naming the option.
  test("prompt editing, clip skip on CLIP-L and SDXL embeddings are refused by name; an empty negative prompt matches the CPU backend", async () => {
    const refusal = (options: Parameters<Pipeline["generate"]>[0]) => trt.generate({ width: 64, height: 64, steps: 2, seed: 1, ...options }).catch((e: unknown) => e);
    const editing = await refusal({ prompt: "a [cat:dog:1]" });
    expect(editing).toBeInstanceOf(InvalidOptionError);
    expect(editing).toMatchObject({ option: "prompt", message: expect.stringMatching(/cannot switch them per step \(use the CPU backend\)/) });
    const skip = await refusal({ prompt: "a cat", sdxlClipLSkip: true, clipSkip: 2 });
    expect(skip).toMatchObject({ option: "sdxlClipLSkip", message: expect.stringMatching(/penultimate hidden state only/) });
    const embeddings = await Pipeline.load(TINY_SDXL_DIR, { backend: "tensorrt", engines, embeddingsDir: new URL("../fixtures/a1111/sdxl-conditioning/embeddings", import.meta.url).pathname }).catch((e: unknown) => e);
    expect(embeddings).toMatchObject({ option: "embeddingsDir", message: expect.stringMatching(/on SDXL runs on the CPU backend only/) });
    // A1111's zeros for an explicit empty negative prompt (zeroUncondRows) on the engines.
    const options = { prompt: ["a lighthouse", "a lighthouse"], negativePrompt: ["", "blurry"], width: 64, height: 64, steps: 3, seed: 4, guidance: 5, returnLatents: true };
    const a = await cpu.generate(options);
    const b = await trt.generate(options);
    expect(maxRelativeError(b.latents!, a.latents!)).toBeLessThan(3e-2);
  });
  test("a refiner runs on its own engines (refinerEngines), not in the base's engine folder, like the CPU backend", async () => {
    const refinerDir = join(TINY_SDXL_DIR, "..", "tiny-sdxl-refiner");
    const refinerEngines = join(root, "tiny-sdxl-refiner");
    await buildEngines({ model: refinerDir, out: refinerEngines, shapes: parseShapeOptions({ batch: "1-2", size: "64x64-96x96", dynamic: true }) });
    const options = { prompt: "a lighthouse on a cliff", width: 64, height: 64, steps: 6, seed: 3, scheduler: "euler", refiner: { switchAt: 0.5 }, returnLatents: true };
    const cpuWithRefiner = await Pipeline.load(TINY_SDXL_DIR, { backend: "cpu", refiner: refinerDir });
    const trtWithRefiner = await Pipeline.load(TINY_SDXL_DIR, { backend: "tensorrt", engines, refiner: refinerDir, refinerEngines });
    try {
      const a = await cpuWithRefiner.generate(options);
      const b = await trtWithRefiner.generate(options);
      expect(maxRelativeError(a.latents!, b.latents!)).toBeLessThan(3e-2);
    } finally {
      await trtWithRefiner.dispose();
      await cpuWithRefiner.dispose();
    }
  }, 600_000);
});
