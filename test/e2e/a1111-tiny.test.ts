/**
 * A1111's txt2img and img2img end to end on the tiny model: k-diffusion's samplers and A1111's
 * ImageRNG, schedule types, variation seeds, seed resize, ENSD, hires fix and img2img's
 * denoising-strength rule, driving the tiny model's ONNX graphs the way A1111 v1.10.1 drives them (test/fixtures/a1111/tiny_e2e.json, made by
 * scripts/reference/gen_a1111_tiny_e2e.py; the SDE samplers' sde_tiny_e2e.json by gen_a1111_sde_goldens.py), against Pipeline.generate, the server and the CLI.
 * The bar: latents within 1e-4 · max(1, max|x|), pixels within ±1 (A1111 truncates to uint8).
 */
import { afterAll, beforeAll, describe, expect, test } from "@jest/globals";
import { readFile, writeFile } from "node:fs/promises";
import { join } from "node:path";
import sharp from "sharp";
import generate from "../../lib/cli/commands/generate.js";
import { Pipeline, type GenerateOptions } from "../../lib/pipeline/pipeline.js";
import { readPngText } from "../../lib/image/index.js";
import { latentError } from "../fixtures/tiny-sd-cases/compare.js";
import {
  base64PngPixels, caseBaseOptions, caseById, expectMergedBatchAsAlone, gradientImg2imgOptions, gradientInitPng, joinedRgb, maxPixelDiff, pngPixels, postA1111, readA1111Cases, regexLiteral, withA1111Server, type A1111GoldenCase,
} from "../support/a1111-goldens.js";
import { runCommand } from "../support/run-cli.js";
import { scratchFolder } from "../support/scratch-folder.js";

interface Case extends A1111GoldenCase {
  a1111_sampler: string;
  /** k-diffusion samplers only (A1111's DDIM and PLMS take no schedule type). */
  schedule?: string;
  subseeds?: number[];
  subseed_strength?: number;
  seed_resize_from_w?: number;
  seed_resize_from_h?: number;
  ensd?: number;
  /** A1111's eta (its DDIM: "Eta DDIM"). */
  eta?: number;
  enable_hr?: boolean;
  hr_scale?: number;
  hr_resize_x?: number;
  hr_resize_y?: number;
  hr_upscaler?: string;
  hr_second_pass_steps?: number;
  denoising_strength?: number;
  /** img2img from gradientInitImage() at denoising_strength. */
  img2img?: boolean;
}

// The SDE samplers' cases (Brownian noise seeded per image) come from scripts/reference/gen_a1111_sde_goldens.py tiny-e2e.
const golden = { cases: [...(await readA1111Cases<Case>("tiny_e2e.json")), ...(await readA1111Cases<Case>("sde_tiny_e2e.json"))] };
const scratch = scratchFolder("sd-trt-a1111-");
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
    ...(c.schedule !== undefined ? { sigmaSchedule: c.schedule } : {}),
    ...(c.subseeds ? { subseeds: c.subseeds, subseedStrength: c.subseed_strength! } : {}),
    ...(c.seed_resize_from_w ? { seedResizeFrom: { width: c.seed_resize_from_w, height: c.seed_resize_from_h! } } : {}),
    ...(c.ensd ? { ensd: c.ensd } : {}),
    ...(c.eta !== undefined ? { eta: c.eta } : {}),
    ...(c.img2img ? gradientImg2imgOptions(c) : {}),
    ...(c.enable_hr
      ? {
          hires: {
            ...(c.hr_scale !== undefined ? { scale: c.hr_scale } : {}),
            ...(c.hr_resize_x !== undefined ? { resizeWidth: c.hr_resize_x, resizeHeight: c.hr_resize_y! } : {}),
            ...(c.hr_second_pass_steps !== undefined ? { steps: c.hr_second_pass_steps } : {}),
            upscaler: c.hr_upscaler!,
            strength: c.denoising_strength!,
          },
        }
      : {}),
  };
}

describe.each(golden.cases.map((c) => [c.id, c] as const))("A1111 on the tiny model, %s", (_id, c) => {
  test("Pipeline.generate gives A1111's latents (1e-4) and pixels (±1)", async () => {
    const result = await pipe.generate(optionsFor(c));
    expect(latentError(result.latents!, c.final_latents)).toBeLessThan(1e-4);
    expect(maxPixelDiff(joinedRgb(result.images), c.pixels_hwc)).toBeLessThanOrEqual(1);
    expect(result.images[0]!.infotext).toContain(`Sampler: ${c.a1111_sampler}, `);
    if (c.img2img) expect(result.images[0]!.infotext).toContain(`, Denoising strength: ${c.denoising_strength}`);
    if (c.sampler === "a1111_ddim" && c.eta) expect(result.images[0]!.infotext).toMatch(new RegExp(`, Eta DDIM: ${c.eta}$`));
    if (c.sampler !== "a1111_ddim" && c.eta !== undefined) expect(result.images[0]!.infotext).toContain(`, Eta: ${c.eta}`);
    if (c.sampler.endsWith("_sde") || c.sampler.endsWith("_sde_heun")) expect(result.images[0]!.infotext).not.toContain("ENSD");
    if (c.enable_hr) expect(result.images[0]!.infotext).toMatch(new RegExp(`Size: ${c.width}x${c.height}, .*Denoising strength: ${c.denoising_strength}, .*Hires (upscale|resize): .*Hires upscaler: ${regexLiteral(c.hr_upscaler!)}`));
  });
});

test("ENSD leaves the SDE samplers alone (their Brownian trees are seeded by the image seeds) and stays out of their infotext", async () => {
  const c = caseById(golden.cases, "sde-2m-automatic-batch");
  const result = await pipe.generate({ ...optionsFor(c), ensd: 31337 });
  expect(latentError(result.latents!, c.final_latents)).toBeLessThan(1e-4);
  expect(result.images[0]!.infotext).not.toContain("ENSD");
});

test("the server runs DPM++ 2M SDE Heun img2img by A1111's name with A1111's pixels", async () => {
  const c = caseById(golden.cases, "img2img-sde-2m-heun");
  await withA1111Server(pipe, async (url) => {
    const body = {
      init_images: [(await gradientInitPng(c)).toString("base64")], denoising_strength: c.denoising_strength,
      prompt: c.prompt, negative_prompt: c.negative_prompt, width: c.width, height: c.height, steps: c.steps, cfg_scale: c.cfg_scale,
      sampler_name: c.a1111_sampler, scheduler: "Karras", seed: c.seeds[0], override_settings: { randn_source: "CPU", no_dpmpp_sde_batch_determinism: false },
    };
    const response = await postA1111(url, "img2img", body);
    expect(response.status).toBe(200);
    const json = (await response.json()) as { images: string[]; info: string };
    expect(maxPixelDiff(await base64PngPixels(json.images.slice(0, 1)), c.pixels_hwc)).toBeLessThanOrEqual(1);
    expect(JSON.parse(json.info).infotexts[0]).toContain("Sampler: DPM++ 2M SDE Heun, Schedule type: Karras");
  });
});

test("the server gives A1111's pixels for A1111's request (variation seed, seed resize, schedule type)", async () => {
  const c = caseById(golden.cases, "dpm2-a-variation-resize");
  await withA1111Server(pipe, async (url) => {
    const body = {
      prompt: c.prompt, negative_prompt: c.negative_prompt, width: c.width, height: c.height, steps: c.steps, cfg_scale: c.cfg_scale,
      sampler_name: c.a1111_sampler, scheduler: "Automatic", seed: c.seeds[0], batch_size: c.seeds.length,
      subseed: c.subseeds![0], subseed_strength: c.subseed_strength, seed_resize_from_w: c.seed_resize_from_w, seed_resize_from_h: c.seed_resize_from_h,
      override_settings: { randn_source: "CPU" },
    };
    const response = await postA1111(url, "txt2img", body);
    expect(response.status).toBe(200);
    const json = (await response.json()) as { images: string[] };
    expect(maxPixelDiff(await base64PngPixels(json.images), c.pixels_hwc)).toBeLessThanOrEqual(1);
  });
});

test("the CLI gives A1111's pixels for A1111's sampler name, ENSD and seeds", async () => {
  const c = caseById(golden.cases, "euler-a-ensd");
  const out = join(scratch.dir, "euler-a-{i}.png");
  const run = await runCommand(generate, [
    "generate", "--backend", "cpu", "--prompt", c.prompt, "--negative-prompt", c.negative_prompt, "--width", String(c.width), "--height", String(c.height),
    "--steps", String(c.steps), "--guidance", String(c.cfg_scale), "--scheduler", c.a1111_sampler, "--seeds", c.seeds.join(","), "--ensd", String(c.ensd),
    "--rng", "cpu", "--out", out, "--quiet",
  ]);
  expect(run.code).toBe(0);
  const files = await Promise.all(c.seeds.map((_s, i) => readFile(out.replace("{i}", String(i)))));
  expect(maxPixelDiff(await pngPixels(files), c.pixels_hwc)).toBeLessThanOrEqual(1);
});

test("the CLI's --hires-* flags give A1111's hires-fix pixels (truncating resize, variation seed)", async () => {
  const c = caseById(golden.cases, "hires-nearest-exact-resize-variation");
  const out = join(scratch.dir, "hires-{i}.png");
  const run = await runCommand(generate, [
    "generate", "--backend", "cpu", "--prompt", c.prompt, "--negative-prompt", c.negative_prompt, "--width", String(c.width), "--height", String(c.height),
    "--steps", String(c.steps), "--guidance", String(c.cfg_scale), "--scheduler", c.a1111_sampler, "--schedule", c.schedule!, "--seeds", c.seeds.join(","),
    "--subseed", String(c.subseeds![0]), "--subseed-strength", String(c.subseed_strength), "--hires-resize", `${c.hr_resize_x}x${c.hr_resize_y}`,
    "--hires-upscaler", c.hr_upscaler!, "--hires-strength", String(c.denoising_strength), "--rng", "cpu", "--out", out, "--quiet",
  ]);
  expect(run.code).toBe(0);
  const file = await readFile(out.replace("{i}", "0"));
  expect(await sharp(file).metadata()).toMatchObject({ width: c.hr_resize_x, height: c.hr_resize_y });
  expect(maxPixelDiff(await pngPixels([file]), c.pixels_hwc)).toBeLessThanOrEqual(1);
});

test("hires requests batched by the service give each image what it gets alone", async () => {
  const c = caseById(golden.cases, "hires-bicubic-aa-dpmpp-2m");
  const a = { ...optionsFor(c), seeds: [40], returnLatents: false };
  const b = { ...optionsFor(c), seeds: [41, 42], returnLatents: false };
  await expectMergedBatchAsAlone(pipe, [a, b], 3);
});

test("the server's /sdapi/v1/img2img gives A1111's pixels for an A1111 sampler name, with its Denoising strength in the infotext", async () => {
  const c = caseById(golden.cases, "img2img-euler-a-batch");
  await withA1111Server(pipe, async (url) => {
    const body = {
      init_images: [`data:image/png;base64,${(await gradientInitPng(c)).toString("base64")}`], denoising_strength: c.denoising_strength,
      prompt: c.prompt, negative_prompt: c.negative_prompt, width: c.width, height: c.height, steps: c.steps, cfg_scale: c.cfg_scale,
      sampler_name: c.a1111_sampler, scheduler: "Automatic", seed: c.seeds[0], batch_size: c.seeds.length, override_settings: { randn_source: "CPU" },
    };
    const response = await postA1111(url, "img2img", body);
    expect(response.status).toBe(200);
    const json = (await response.json()) as { images: string[]; info: string };
    expect(maxPixelDiff(await base64PngPixels(json.images), c.pixels_hwc)).toBeLessThanOrEqual(1);
    const info = JSON.parse(json.info) as { infotexts: string[]; denoising_strength: number };
    expect(info.denoising_strength).toBe(c.denoising_strength);
    for (const text of info.infotexts) expect(text).toMatch(new RegExp(`Sampler: ${c.a1111_sampler}, .*Denoising strength: ${c.denoising_strength}`));
  });
});

test("the CLI's --init-image with an A1111 sampler name, variation seed and ENSD gives A1111's img2img pixels", async () => {
  const c = caseById(golden.cases, "img2img-dpm2-a-variation-ensd");
  const init = join(scratch.dir, "init.png");
  await writeFile(init, await gradientInitPng(c));
  const out = join(scratch.dir, "img2img-{i}.png");
  const run = await runCommand(generate, [
    "generate", "--backend", "cpu", "--prompt", c.prompt, "--negative-prompt", c.negative_prompt, "--init-image", init, "--strength", String(c.denoising_strength),
    "--steps", String(c.steps), "--guidance", String(c.cfg_scale), "--scheduler", c.a1111_sampler, "--seeds", c.seeds.join(","),
    "--subseed", String(c.subseeds![0]), "--subseed-strength", String(c.subseed_strength), "--ensd", String(c.ensd), "--rng", "cpu", "--out", out, "--quiet",
  ]);
  expect(run.code).toBe(0);
  const file = await readFile(out.replace("{i}", "0"));
  expect(maxPixelDiff(await pngPixels([file]), c.pixels_hwc)).toBeLessThanOrEqual(1);
  expect((await readPngText(file)).find((t) => t.keyword === "parameters")?.text).toContain(`Denoising strength: ${c.denoising_strength}`);
});

test("the CLI's --scheduler DDIM runs A1111's own DDIM (variation seed, ENSD): A1111's pixels", async () => {
  const c = caseById(golden.cases, "ddim-variation-ensd");
  const out = join(scratch.dir, "ddim-{i}.png");
  const run = await runCommand(generate, [
    "generate", "--backend", "cpu", "--prompt", c.prompt, "--negative-prompt", c.negative_prompt, "--width", String(c.width), "--height", String(c.height),
    "--steps", String(c.steps), "--guidance", String(c.cfg_scale), "--scheduler", "DDIM", "--seeds", c.seeds.join(","),
    "--subseed", String(c.subseeds![0]), "--subseed-strength", String(c.subseed_strength), "--ensd", String(c.ensd), "--rng", "cpu", "--out", out, "--quiet",
  ]);
  expect(run.code).toBe(0);
  const file = await readFile(out.replace("{i}", "0"));
  expect(maxPixelDiff(await pngPixels([file]), c.pixels_hwc)).toBeLessThanOrEqual(1);
  // A1111 writes no ENSD for DDIM (no uses_ensd option; at eta 0 its draws are scaled by 0).
  expect((await readPngText(file)).find((t) => t.keyword === "parameters")?.text).toMatch(/Sampler: DDIM, (?!.*ENSD)/);
});
