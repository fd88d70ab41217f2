/**
 * A1111's DDIM CFG++ end to end on the tiny model: A1111's own ddim_cfgpp through its own
 * CFGDenoiserTimesteps, driving the tiny model's ONNX graphs as its txt2img and img2img do
 * (test/fixtures/a1111/tiny_e2e_ddim_cfgpp.json, scripts/reference/gen_a1111_ddim_cfgpp.py tiny),
 * against Pipeline.generate and the server. The bar: latents within 1e-4 · max(1, max|x|), pixels
 * within ±1 (A1111 truncates to uint8).
 */
import { afterAll, beforeAll, describe, expect, test } from "@jest/globals";
import { Pipeline, type GenerateOptions } from "../../lib/pipeline/pipeline.js";
import { latentError } from "../fixtures/tiny-sd-cases/compare.js";
import { base64PngPixels, caseBaseOptions, caseById, gradientImg2imgOptions, joinedRgb, maxPixelDiff, postA1111, readA1111Cases, withA1111Server, type A1111GoldenCase } from "../support/a1111-goldens.js";

interface Case extends A1111GoldenCase {
  a1111_sampler: string;
  eta?: number;
  img2img?: boolean;
  denoising_strength?: number;
}

const golden = { cases: await readA1111Cases<Case>("tiny_e2e_ddim_cfgpp.json") };
let pipe: Pipeline;

beforeAll(async () => {
  pipe = await Pipeline.load(undefined, { backend: "cpu" });
});
afterAll(async () => {
  await pipe?.dispose();
});

function optionsFor(c: Case): GenerateOptions {
  return {
    ...caseBaseOptions(c),
    ...(c.eta !== undefined ? { eta: c.eta } : {}),
    ...(c.img2img ? gradientImg2imgOptions(c) : {}),
  };
}

describe.each(golden.cases.map((c) => [c.id, c] as const))("A1111's DDIM CFG++ on the tiny model, %s", (_id, c) => {
  test("Pipeline.generate gives A1111's latents (1e-4) and pixels (±1), with its infotext", async () => {
    const result = await pipe.generate(optionsFor(c));
    expect(latentError(result.latents!, c.final_latents)).toBeLessThan(1e-4);
    expect(maxPixelDiff(joinedRgb(result.images), c.pixels_hwc)).toBeLessThanOrEqual(1);
    const infotext = result.images[0]!.infotext;
    expect(infotext).toContain(`Sampler: DDIM CFG++, CFG scale: ${c.cfg_scale}, `);
    if (c.img2img) expect(infotext).toContain(`, Denoising strength: ${c.denoising_strength}`);
    if (c.eta) expect(infotext).toMatch(new RegExp(`, Eta DDIM: ${c.eta}$`));
    else expect(infotext).not.toContain("Eta");
  });
});

test("at CFG scale 1 the negative prompt still steers (A1111 runs the uncond at every scale for CFG++)", async () => {
  const c = caseById(golden.cases, "ddim-cfgpp-cfg-1");
  const other = await pipe.generate({ ...optionsFor(c), negativePrompt: "a storm" });
  expect(latentError(other.latents!, c.final_latents)).toBeGreaterThan(1e-3);
});

test("the server runs sampler_name DDIM CFG++ as A1111 does, lists it, and writes it in the infotext", async () => {
  const c = caseById(golden.cases, "ddim-cfgpp-batch");
  await withA1111Server(pipe, async (url) => {
    const samplers = (await (await fetch(`${url}/sdapi/v1/samplers`)).json()) as { name: string; aliases: string[] }[];
    const names = samplers.map((s) => s.name);
    expect(samplers.find((s) => s.name === "DDIM CFG++")).toEqual({ name: "DDIM CFG++", aliases: ["ddim_cfgpp"], options: {} });
    expect(names.indexOf("DDIM CFG++")).toBe(names.indexOf("DDIM") + 1);
    const body = {
      prompt: c.prompt, negative_prompt: c.negative_prompt, width: c.width, height: c.height, steps: c.steps, cfg_scale: c.cfg_scale,
      sampler_name: "DDIM CFG++", seed: c.seeds[0], batch_size: c.seeds.length, override_settings: { randn_source: "CPU" },
    };
    const response = await postA1111(url, "txt2img", body);
    expect(response.status).toBe(200);
    const json = (await response.json()) as { images: string[]; info: string };
    expect(maxPixelDiff(await base64PngPixels(json.images), c.pixels_hwc)).toBeLessThanOrEqual(1);
    const info = JSON.parse(json.info) as { sampler_name: string; infotexts: string[] };
    expect(info.sampler_name).toBe("DDIM CFG++");
    for (const text of info.infotexts) expect(text).toContain("Sampler: DDIM CFG++, ");
  });
});
