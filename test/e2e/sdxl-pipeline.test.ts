/**
 * SDXL through `Pipeline.generate` on the CPU backend, from the optimum-layout ONNX folder of the
 * tiny SDXL (test/fixtures/sdxl), against diffusers' own StableDiffusionXLPipeline and
 * StableDiffusionXLImg2ImgPipeline on the same weights: final latents within 1e-4 · max(1, max|x|),
 * pixels within ±1, and what the UNet was fed (time ids, pooled embeddings, batch, timesteps).
 */
import { afterAll, beforeAll, describe, expect, test } from "@jest/globals";
import { Pipeline } from "../../lib/pipeline/pipeline.js";
import type { CpuBackend } from "../../lib/backends/cpu/backend.js";
import { InvalidOptionError } from "../../lib/errors.js";
import { imageDiff, latentError, LATENT_TOLERANCE } from "../fixtures/tiny-sd-cases/compare.js";
import { caseSize, expectedPixels, loadSdxlReference, optionsForCase, TINY_SDXL_DIR, type SdxlCase } from "../fixtures/sdxl/reference.js";

const reference = loadSdxlReference();
const caseById = (id: string): SdxlCase => reference.cases.find((c) => c.id === id)!;

let pipe: Pipeline;
beforeAll(async () => {
  pipe = await Pipeline.load(TINY_SDXL_DIR, { backend: "cpu" });
});
afterAll(async () => {
  await pipe?.dispose();
});

describe("SDXL from the optimum ONNX layout matches diffusers", () => {
  test("the model's defaults: 64×64 (sample_size × 8), EulerDiscrete with leading spacing", () => {
    expect(pipe.defaultSize).toEqual({ width: 64, height: 64 });
    expect(pipe.defaultScheduler).toBe("euler");
  });

  test.each(reference.cases.map((c) => [c.id, c] as const))("%s", async (_id, c) => {
    const backend = pipe.backend as CpuBackend;
    const before = backend.runtimeStats;
    const result = await pipe.generate({ ...optionsForCase(reference, c), returnLatents: true });
    const after = backend.runtimeStats;
    const unetCalls = after.unet.calls - before.unet.calls;
    expect({ calls: unetCalls, rowsPerCall: (after.unet.rows - before.unet.rows) / unetCalls }).toEqual({ calls: c.unet_timesteps.length, rowsPerCall: c.unet_batch });

    const latentErr = latentError(result.latents!, c.final_latents);
    expect({ case: c.id, length: result.latents!.length, ok: latentErr <= LATENT_TOLERANCE, latentErr }).toEqual({ case: c.id, length: c.final_latents.length, ok: true, latentErr });

    const { width, height } = caseSize(c);
    const pixels = Buffer.concat(result.images.map((image) => {
      expect([image.width, image.height]).toEqual([width, height]);
      return image.rgb;
    }));
    const diff = imageDiff(pixels, expectedPixels(c));
    expect({ case: c.id, length: pixels.length, maxDiff: diff.maxDiff <= 1 }).toEqual({ case: c.id, length: c.image_uint8_hwc_b64.length * width * height * 3, maxDiff: true });
  });
});

describe("SDXL options", () => {
  const base = { prompt: "a castle", steps: 1, seed: 1, promptSyntax: "plain" as const };

  test("negativeOriginalSize without negativeTargetSize is refused, naming the missing one", async () => {
    await expect(pipe.generate({ ...base, negativeOriginalSize: { width: 64, height: 64 } })).rejects.toThrow(InvalidOptionError);
    await expect(pipe.generate({ ...base, negativeOriginalSize: { width: 64, height: 64 } })).rejects.toThrow(/negativeTargetSize is missing/);
  });

  test("a size that is not { width, height } names the option and the key", async () => {
    await expect(pipe.generate({ ...base, originalSize: { width: 64, height: 0 } })).rejects.toThrow(/originalSize\.height/);
    await expect(pipe.generate({ ...base, cropsCoordsTopLeft: { top: 1, x: 2 } as never })).rejects.toThrow(/cropsCoordsTopLeft takes top and left, got the key "x"/);
  });

  test("prompt2 defaults to prompt: giving it equal to prompt changes nothing", async () => {
    const c = caseById("euler_zeros_negative");
    const plain = await pipe.generate({ ...optionsForCase(reference, c), returnLatents: true });
    const same = await pipe.generate({ ...optionsForCase(reference, c), prompt2: c.prompt as string, returnLatents: true });
    expect(Buffer.from(same.latents!.buffer).equals(Buffer.from(plain.latents!.buffer))).toBe(true);
  });

  test("img2img without width and height takes the time ids from the init image's size", async () => {
    const c = caseById("img2img_euler");
    const { width: _w, height: _h, ...options } = optionsForCase(reference, c);
    const result = await pipe.generate({ ...options, returnLatents: true });
    expect(latentError(result.latents!, c.final_latents)).toBeLessThanOrEqual(LATENT_TOLERANCE);
  });

  test("negative size conditioning with img2img is refused, naming the option", async () => {
    const c = caseById("img2img_euler");
    await expect(pipe.generate({ ...optionsForCase(reference, c), negativeTargetSize: { width: 64, height: 64 }, negativeOriginalSize: { width: 64, height: 64 } })).rejects.toThrow(
      /negativeOriginalSize is not supported with initImage yet/,
    );
  });

  test("hires fix with the refiner is refused, naming hires", async () => {
    const options = { prompt: "a castle", steps: 1, scheduler: "k_euler", seeds: [1], hires: { scale: 2 }, refiner: { switchAt: 0.5 } };
    await expect(pipe.generate(options)).rejects.toMatchObject({ option: "hires", message: expect.stringMatching(/hires fix with the refiner is not supported yet/) });
  });

  test("prompt editing with hires fix is refused, naming hires (text_encoder_2's second-pass schedules are not rebuilt)", async () => {
    const options = { prompt: "a [cat:dog:2] on a roof", steps: 4, scheduler: "k_euler", seeds: [1], hires: { scale: 1.5 } };
    await expect(pipe.generate(options)).rejects.toMatchObject({ option: "hires", message: expect.stringMatching(/prompt editing and alternation .* with hires fix are not supported with SDXL models yet/) });
  });

  test("prompt editing switches the conditioning per step: the first text's steps, then another run", async () => {
    // [cat:dog:2] at 4 steps: evaluations 0-2 take "a cat …", evaluation 3 "a dog …" (both the
    // embeddings and the pooled text_embeds; per-step values: a1111-sdxl-conditioning.test.ts).
    const run = async (prompt: string) => {
      const seen: Float32Array[] = [];
      await pipe.generate({ prompt, negativePrompt: "blurry", steps: 4, seed: 3, guidance: 5, width: 64, height: 64, onLatents: (i, x) => (seen[i] = x.slice()) });
      return seen;
    };
    const edited = await run("a [cat:dog:2] in the snow");
    const cat = await run("a cat in the snow");
    const dog = await run("a dog in the snow");
    for (let i = 1; i <= 3; i++) expect(latentError(edited[i]!, Array.from(cat[i]!))).toBeLessThan(1e-6);
    // The last step changes a little on this tiny model, far above float noise (the steps above agree to 1e-6).
    expect(latentError(edited[4]!, Array.from(cat[4]!))).toBeGreaterThan(1e-5);
    expect(latentError(edited[4]!, Array.from(dog[4]!))).toBeGreaterThan(1e-5);
  });
});

describe("SDXL options on an SD 1.x model", () => {
  test("prompt2 is refused, naming the option", async () => {
    const sd = await Pipeline.load(undefined, { backend: "cpu" });
    try {
      await expect(sd.generate({ prompt: "x", prompt2: "y", steps: 1 })).rejects.toThrow(/prompt2 is an SDXL option, and this model is not SDXL/);
    } finally {
      await sd.dispose();
    }
  });
});
