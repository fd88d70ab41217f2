/**
 * A1111's hires fix with an SDXL model, on the tiny SDXL (CPU backend): the second pass is
 * conditioned anew as A1111 v1.10.1's calculate_hr_conds does it — the same texts, the time ids
 * (original size, crop 0/0, target size) of the upscale size hr_upscale_to_x/y, which for a resize
 * with both sizes is larger than the final image. test/fixtures/a1111/tiny_sdxl_hires.json is made by
 * scripts/reference/gen_a1111_tiny_sdxl_hires.py (A1111's sd_models_xl.get_learned_conditioning and
 * prompt_parser, k-diffusion, A1111's hires glue on the tiny SDXL's ONNX graphs).
 * The bar: latents within 1e-4 · max(1, max|x|), pixels within ±1 (A1111 truncates to uint8).
 */
import { afterAll, beforeAll, describe, expect, test } from "@jest/globals";
import { Pipeline, type GenerateOptions } from "../../lib/pipeline/pipeline.js";
import { latentError, LATENT_TOLERANCE } from "../fixtures/tiny-sd-cases/compare.js";
import { TINY_SDXL_DIR } from "../fixtures/sdxl/reference.js";
import { base64PngPixels, expectMergedBatchAsAlone, joinedRgb, maxPixelDiff, postA1111, readA1111Cases, regexLiteral, withA1111Server, type A1111GoldenCase } from "../support/a1111-goldens.js";

interface Case extends A1111GoldenCase {
  a1111_sampler: string;
  schedule: string;
  hr_scale?: number;
  hr_resize_x?: number;
  hr_resize_y?: number;
  hr_upscaler: string;
  hr_second_pass_steps?: number;
  denoising_strength: number;
  /** A1111's hr_upscale_to_x/y. */
  hr_upscale_to: [number, number];
  /** What A1111's get_learned_conditioning handed the conditioner in each pass (negative prompt first). */
  conditioner_calls: Record<"first_pass" | "hires_pass", { texts: string[]; time_ids: number[][]; zeroed: boolean }[]>;
}

const golden = { cases: await readA1111Cases<Case>("tiny_sdxl_hires.json") };
let pipe: Pipeline;

beforeAll(async () => {
  pipe = await Pipeline.load(TINY_SDXL_DIR, { backend: "cpu" });
});
afterAll(async () => {
  await pipe?.dispose();
});

function optionsFor(c: Case): GenerateOptions {
  return {
    prompt: c.prompt,
    // A1111 zeroes an empty negative prompt's text conditioning: sd-trt's zero-uncond path, taken
    // when no negative prompt is given (an explicit "" is encoded, as diffusers does).
    ...(c.negative_prompt !== "" ? { negativePrompt: c.negative_prompt } : {}),
    width: c.width,
    height: c.height,
    steps: c.steps,
    guidance: c.cfg_scale,
    scheduler: c.sampler,
    sigmaSchedule: c.schedule,
    seeds: c.seeds,
    rng: "cpu",
    returnLatents: true,
    hires: {
      ...(c.hr_scale !== undefined ? { scale: c.hr_scale } : {}),
      ...(c.hr_resize_x !== undefined ? { resizeWidth: c.hr_resize_x, resizeHeight: c.hr_resize_y! } : {}),
      ...(c.hr_second_pass_steps !== undefined ? { steps: c.hr_second_pass_steps } : {}),
      upscaler: c.hr_upscaler,
      strength: c.denoising_strength,
    },
  };
}

/** A1111's infotext for these cases from the size on: the first pass's size, then its hires fields, in its order. */
function infotextPattern(c: Case): RegExp {
  const hires = c.hr_scale !== undefined ? `Hires upscale: ${c.hr_scale}` : `Hires resize: ${c.hr_resize_x}x${c.hr_resize_y}`;
  const steps = c.hr_second_pass_steps !== undefined ? `, Hires steps: ${c.hr_second_pass_steps}` : "";
  const tail = `Denoising strength: ${c.denoising_strength}, RNG: CPU, ${hires}${steps}, Hires upscaler: ${c.hr_upscaler}`;
  return new RegExp(`, Sampler: ${regexLiteral(c.a1111_sampler)}, .*Size: ${c.width}x${c.height}, .*${regexLiteral(tail)}$`);
}

describe.each(golden.cases.map((c) => [c.id, c] as const))("A1111's hires fix on the tiny SDXL, %s", (_id, c) => {
  test("the reference's second pass was conditioned at A1111's upscale size (what this case checks)", () => {
    const [toX, toY] = c.hr_upscale_to;
    const firstPass = c.conditioner_calls.first_pass.flatMap((call) => call.time_ids);
    const hiresPass = c.conditioner_calls.hires_pass.flatMap((call) => call.time_ids);
    expect(firstPass.every((ids) => ids.join() === [c.height, c.width, 0, 0, c.height, c.width].join())).toBe(true);
    expect(hiresPass.every((ids) => ids.join() === [toY, toX, 0, 0, toY, toX].join())).toBe(true);
    expect(c.conditioner_calls.hires_pass.map((call) => call.texts)).toEqual(c.conditioner_calls.first_pass.map((call) => call.texts));
  });

  test("Pipeline.generate gives A1111's latents (1e-4), pixels (±1) and infotext", async () => {
    const result = await pipe.generate(optionsFor(c));
    expect(latentError(result.latents!, c.final_latents)).toBeLessThanOrEqual(LATENT_TOLERANCE);
    expect(maxPixelDiff(joinedRgb(result.images), c.pixels_hwc)).toBeLessThanOrEqual(1);
    const final = result.images[0]!;
    expect(final.width * final.height * 3 * c.seeds.length).toBe(c.pixels_hwc.length);
    expect(final.infotext).toMatch(infotextPattern(c));
  });
});

test("originalSize and targetSize given by the caller hold in the second pass too (only sizes left out follow the upscale size)", async () => {
  const c = golden.cases.find((x) => x.hr_scale !== undefined)!;
  // The first pass's own sizes, given: the first pass is unchanged, the second keeps (64, 64) instead of A1111's (96, 96).
  const given = await pipe.generate({ ...optionsFor(c), originalSize: { width: 64, height: 64 }, targetSize: { width: 64, height: 64 } });
  expect(latentError(given.latents!, c.final_latents)).toBeGreaterThan(1e-3);
});

test("SDXL hires requests batched by the service give each image what it gets alone (each request's own time ids in both passes)", async () => {
  const c = golden.cases.find((x) => x.hr_resize_x !== undefined)!;
  const a = { ...optionsFor(c), seeds: [40], returnLatents: false };
  const b = { ...optionsFor(c), seeds: [41, 42], originalSize: { width: 200, height: 300 }, returnLatents: false };
  await expectMergedBatchAsAlone(pipe, [a, b], 3);
});

test("the server runs enable_hr on an SDXL model as A1111 does (empty negative prompt, resize, A1111's infotext)", async () => {
  const c = golden.cases.find((x) => x.negative_prompt === "" && x.hr_resize_x !== undefined)!;
  await withA1111Server(pipe, async (url) => {
    const body = {
      prompt: c.prompt, negative_prompt: "", width: c.width, height: c.height, steps: c.steps, cfg_scale: c.cfg_scale,
      sampler_name: c.a1111_sampler, scheduler: "Automatic", seed: c.seeds[0], batch_size: c.seeds.length,
      enable_hr: true, hr_resize_x: c.hr_resize_x, hr_resize_y: c.hr_resize_y, hr_upscaler: c.hr_upscaler,
      hr_second_pass_steps: c.hr_second_pass_steps ?? 0, denoising_strength: c.denoising_strength,
      override_settings: { randn_source: "CPU" },
    };
    const response = await postA1111(url, "txt2img", body);
    expect(response.status).toBe(200);
    const json = (await response.json()) as { images: string[]; info: string };
    expect(maxPixelDiff(await base64PngPixels(json.images), c.pixels_hwc)).toBeLessThanOrEqual(1);
    const infotext = (JSON.parse(json.info) as { infotexts: string[] }).infotexts[0]!;
    expect(infotext.startsWith(`${c.prompt}\nSteps: ${c.steps}, `)).toBe(true);
    expect(infotext).toMatch(infotextPattern(c));
  });
});

test("second-pass prompts are refused on SDXL, naming hires.prompt / hires.negativePrompt, before any model runs", async () => {
  const c = golden.cases[0]!;
  const base = optionsFor(c);
  await expect(pipe.generate({ ...base, hires: { ...base.hires, prompt: "a castle" } })).rejects.toMatchObject({ option: "hires.prompt", message: expect.stringMatching(/supported for SD models only/) });
  await expect(pipe.generate({ ...base, hires: { ...base.hires, negativePrompt: "fog" } })).rejects.toMatchObject({ option: "hires.negativePrompt" });
});
