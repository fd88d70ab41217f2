/**
 * SDXL base + refiner in one `Pipeline.generate` (CPU backend) against diffusers running
 * StableDiffusionXLPipeline(denoising_end) then StableDiffusionXLImg2ImgPipeline(denoising_start)
 * on the same generator (tiny_sdxl_reference.json `refiner_cases`): final latents within
 * 1e-4 · max(1, max|x|), pixels ±1. And refiners that do not fit the base, refused with the reason.
 */
import { afterAll, beforeAll, describe, expect, test } from "@jest/globals";
import { join } from "node:path";
import { Pipeline, type GenerateOptions } from "../../lib/pipeline/pipeline.js";
import { imageDiff, latentError, LATENT_TOLERANCE } from "../fixtures/tiny-sd-cases/compare.js";
import { loadSdxlReference, TINY_SDXL_DIR } from "../fixtures/sdxl/reference.js";

const REFINER_DIR = join(TINY_SDXL_DIR, "..", "tiny-sdxl-refiner");

interface RefinerCase {
  id: string;
  scheduler_class: string;
  prompt: string;
  negative_prompt?: string;
  seed: number;
  steps: number;
  split: number;
  aesthetic_score?: number;
  negative_aesthetic_score?: number;
  guidance_scale: number;
  base_timesteps: number[];
  refiner_timesteps: number[];
  final_latents: number[];
  image_uint8_hwc_b64: string[];
}

const reference = loadSdxlReference() as unknown as { refiner_cases: RefinerCase[] };
const SCHEDULERS: Record<string, string> = { EulerDiscreteScheduler: "euler", EulerAncestralDiscreteScheduler: "euler_a" };

let pipe: Pipeline;
beforeAll(async () => {
  pipe = await Pipeline.load(TINY_SDXL_DIR, { backend: "cpu", refiner: REFINER_DIR });
});
afterAll(async () => {
  await pipe?.dispose();
});

describe("SDXL base + refiner matches diffusers' two pipelines", () => {
  test.each(reference.refiner_cases.map((c) => [c.id, c] as const))("%s", async (_id, c) => {
    const refiner: NonNullable<GenerateOptions["refiner"]> = { switchAt: c.split };
    if (c.aesthetic_score !== undefined) refiner.aestheticScore = c.aesthetic_score;
    if (c.negative_aesthetic_score !== undefined) refiner.negativeAestheticScore = c.negative_aesthetic_score;
    const options: GenerateOptions = {
      prompt: c.prompt,
      promptSyntax: "plain",
      seed: c.seed,
      steps: c.steps,
      guidance: c.guidance_scale,
      scheduler: SCHEDULERS[c.scheduler_class]!,
      width: 64,
      height: 64,
      refiner,
      returnLatents: true,
    };
    if (c.negative_prompt !== undefined) options.negativePrompt = c.negative_prompt;
    const result = await pipe.generate(options);
    expect(result.evaluations).toBe(c.base_timesteps.length + c.refiner_timesteps.length);
    const err = latentError(result.latents!, c.final_latents);
    expect({ case: c.id, ok: err <= LATENT_TOLERANCE, err }).toEqual({ case: c.id, ok: true, err });
    const diff = imageDiff(result.images[0]!.rgb, Buffer.from(c.image_uint8_hwc_b64[0]!, "base64"));
    expect({ case: c.id, atMostOne: diff.maxDiff <= 1 }).toEqual({ case: c.id, atMostOne: true });
  });

  test("a switch point that leaves one model no step names the cutoff", async () => {
    await expect(pipe.generate({ prompt: "x", steps: 4, seed: 1, refiner: { switchAt: 0.1 } })).rejects.toThrow(/refiner\.switchAt 0\.1 puts all 4 steps on the refiner \(timestep cutoff 900\)/);
  });

  test("prompt editing with a refiner is refused, naming the refiner (its evaluations are counted from its own start)", async () => {
    await expect(pipe.generate({ prompt: "a [cat:dog:2]", steps: 4, seed: 1, refiner: { switchAt: 0.5 } })).rejects.toThrow(/prompt editing .* not supported with a refiner yet/);
  });

  test("textual-inversion embeddings with a refiner are refused at load", async () => {
    await expect(Pipeline.load(TINY_SDXL_DIR, { backend: "cpu", refiner: REFINER_DIR, embeddingsDir: new URL("../fixtures/a1111/sdxl-conditioning/embeddings", import.meta.url).pathname })).rejects.toThrow(
      /embeddingsDir\) are not supported with a refiner yet/,
    );
  });

  test("a scheduler with two evaluations per step is refused for the split", async () => {
    await expect(pipe.generate({ prompt: "x", steps: 4, seed: 1, scheduler: "heun", refiner: { switchAt: 0.5 } })).rejects.toThrow(/one model evaluation per step; heun makes/);
  });
});

describe("refiners that do not fit", () => {
  test("the base model given as its own refiner is refused for its time-id layout", async () => {
    await expect(Pipeline.load(TINY_SDXL_DIR, { backend: "cpu", refiner: TINY_SDXL_DIR })).rejects.toThrow(/does not match the base .*: its time-id layout is the base's/);
  });

  test("an SD 1.x model cannot take a refiner", async () => {
    await expect(Pipeline.load(undefined, { backend: "cpu", refiner: REFINER_DIR })).rejects.toThrow(/the base is not an SDXL base model/);
  });

  test("refinerEngines needs a refiner and the TensorRT backend, and says so by name", async () => {
    await expect(Pipeline.load(TINY_SDXL_DIR, { backend: "cpu", refinerEngines: "/nonexistent" })).rejects.toMatchObject({ option: "refinerEngines", message: expect.stringMatching(/refinerEngines needs refiner/) });
    await expect(Pipeline.load(TINY_SDXL_DIR, { backend: "cpu", refiner: REFINER_DIR, refinerEngines: "/nonexistent" })).rejects.toMatchObject({
      option: "refinerEngines",
      message: expect.stringMatching(/refinerEngines applies to the TensorRT backend/),
    });
  });

  test("the refiner option without a loaded refiner is refused", async () => {
    const base = await Pipeline.load(TINY_SDXL_DIR, { backend: "cpu" });
    try {
      await expect(base.generate({ prompt: "x", steps: 4, refiner: { switchAt: 0.5 } })).rejects.toThrow(/refiner needs a pipeline loaded with a refiner model/);
    } finally {
      await base.dispose();
    }
  });
});
