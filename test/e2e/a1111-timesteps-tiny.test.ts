/**
 * A1111's own timestep samplers end to end on the tiny model: its UniPC (a1111_unipc, with its
 * uni_pc_* settings), txt2img and img2img, and hires fix with DDIM, PLMS and UniPC (in both passes, or as
 * hr_sampler_name's second pass after a k-diffusion first pass, with p.eta and uni_pc_*) — A1111 v1.10.1's
 * own sd_samplers_timesteps_impl / uni_pc.py driving the tiny model's ONNX graphs
 * (test/fixtures/a1111/timesteps_tiny_e2e.json, scripts/reference/gen_a1111_unipc_goldens.py tiny),
 * against Pipeline.generate, the server and the CLI.
 * The bar (as test/e2e/a1111-tiny.test.ts): latents within 1e-4 · max(1, max|x|), pixels within ±1.
 */
import { afterAll, beforeAll, describe, expect, test } from "@jest/globals";
import { readFile } from "node:fs/promises";
import { join } from "node:path";
import sharp from "sharp";
import generate from "../../lib/cli/commands/generate.js";
import { Pipeline, type GenerateOptions } from "../../lib/pipeline/pipeline.js";
import { readPngText } from "../../lib/image/index.js";
import { latentError } from "../fixtures/tiny-sd-cases/compare.js";
import {
  base64PngPixels, caseBaseOptions, caseById, gradientImg2imgOptions, gradientInitPng, joinedRgb, maxPixelDiff, pngPixels, postA1111, readA1111Cases, regexLiteral, withA1111Server, type A1111GoldenCase,
} from "../support/a1111-goldens.js";
import { runCommand } from "../support/run-cli.js";
import { scratchFolder } from "../support/scratch-folder.js";

interface Case extends A1111GoldenCase {
  a1111_sampler: string;
  ensd?: number;
  eta?: number;
  /** A1111's uni_pc_* settings (shared.opts) for this case; A1111's defaults otherwise. */
  unipc?: { uni_pc_variant?: string; uni_pc_skip_type?: string; uni_pc_order?: number; uni_pc_lower_order_final?: boolean };
  enable_hr?: boolean;
  /** hr_sampler_name: the second pass's sampler (the first pass's when absent). */
  hr_sampler?: string;
  hr_scale?: number;
  hr_upscaler?: string;
  hr_second_pass_steps?: number;
  denoising_strength?: number;
  img2img?: boolean;
}

const golden = { cases: await readA1111Cases<Case>("timesteps_tiny_e2e.json") };
const byId = (id: string) => caseById(golden.cases, id);
const scratch = scratchFolder("sd-trt-a1111-ts-");
let pipe: Pipeline;

beforeAll(async () => {
  pipe = await Pipeline.load(undefined, { backend: "cpu" });
});
afterAll(async () => {
  await pipe?.dispose();
});

function uniPcOf(c: Case): GenerateOptions["uniPc"] {
  const u = c.unipc ?? {};
  return {
    ...(u.uni_pc_variant !== undefined ? { variant: u.uni_pc_variant } : {}),
    ...(u.uni_pc_skip_type !== undefined ? { skipType: u.uni_pc_skip_type } : {}),
    ...(u.uni_pc_order !== undefined ? { order: u.uni_pc_order } : {}),
    ...(u.uni_pc_lower_order_final !== undefined ? { lowerOrderFinal: u.uni_pc_lower_order_final } : {}),
  };
}

function optionsFor(c: Case): GenerateOptions {
  return {
    ...caseBaseOptions(c),
    ...(c.unipc ? { uniPc: uniPcOf(c) } : {}),
    ...(c.ensd ? { ensd: c.ensd } : {}),
    ...(c.eta !== undefined ? { eta: c.eta } : {}),
    ...(c.img2img ? gradientImg2imgOptions(c) : {}),
    ...(c.enable_hr
      ? {
          hires: {
            scale: c.hr_scale!,
            ...(c.hr_second_pass_steps !== undefined ? { steps: c.hr_second_pass_steps } : {}),
            upscaler: c.hr_upscaler!,
            strength: c.denoising_strength!,
            ...(c.hr_sampler !== undefined ? { scheduler: c.hr_sampler } : {}),
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
    if (c.enable_hr) expect(result.images[0]!.infotext).toMatch(new RegExp(`Size: ${c.width}x${c.height}, .*Denoising strength: ${c.denoising_strength}, .*Hires upscale: .*Hires upscaler: ${regexLiteral(c.hr_upscaler!)}`));
  });
});

test("a timestep sampler's second pass writes Hires sampler, and each pass's sampler its own eta field, as A1111's infotext does", async () => {
  const infotext = async (id: string) => (await pipe.generate(optionsFor(byId(id)))).images[0]!.infotext;
  // Sampler.initialize writes the eta field of each sampler that takes p.eta, when it is not that sampler's default.
  expect(await infotext("hires-dpmpp-2m-to-ddim-eta")).toMatch(/Sampler: DPM\+\+ 2M, .*Hires sampler: DDIM, .*Eta DDIM: 0\.4$/);
  expect(await infotext("hires-euler-a-eta-to-plms")).toMatch(/Sampler: Euler a, .*Hires sampler: PLMS, .*Eta: 0\.7$/);
  expect(await infotext("hires-euler-to-unipc-bh2-order2")).toMatch(/Sampler: Euler, .*Hires sampler: UniPC, /);
});

test("the server's hr_sampler_name DDIM with eta and UniPC with override_settings uni_pc_* give A1111's pixels", async () => {
  await withA1111Server(pipe, async (url) => {
    for (const [c, extra] of [
      [byId("hires-dpmpp-2m-to-ddim-eta"), { sampler_name: "DPM++ 2M", scheduler: "Automatic", hr_sampler_name: "DDIM", eta: 0.4 }],
      [byId("hires-euler-to-unipc-bh2-order2"), { sampler_name: "Euler", hr_sampler_name: "UniPC", override_settings: { randn_source: "CPU", ...byId("hires-euler-to-unipc-bh2-order2").unipc } }],
    ] as const) {
      const body = {
        prompt: c.prompt, negative_prompt: c.negative_prompt, width: c.width, height: c.height, steps: c.steps, cfg_scale: c.cfg_scale, seed: c.seeds[0],
        enable_hr: true, hr_scale: c.hr_scale, hr_upscaler: c.hr_upscaler, hr_second_pass_steps: c.hr_second_pass_steps, denoising_strength: c.denoising_strength,
        override_settings: { randn_source: "CPU" }, ...extra,
      };
      const response = await postA1111(url, "txt2img", body);
      expect(response.status).toBe(200);
      const json = (await response.json()) as { images: string[] };
      expect(maxPixelDiff(await base64PngPixels(json.images), c.pixels_hwc)).toBeLessThanOrEqual(1);
    }
  });
});

test("the CLI's --hires-scheduler UniPC with --unipc-* flags gives A1111's pixels after a k-diffusion first pass", async () => {
  const c = byId("hires-euler-to-unipc-bh2-order2");
  const out = join(scratch.dir, "hires-unipc-{i}.png");
  const run = await runCommand(generate, [
    "generate", "--backend", "cpu", "--prompt", c.prompt, "--negative-prompt", c.negative_prompt, "--width", String(c.width), "--height", String(c.height),
    "--steps", String(c.steps), "--guidance", String(c.cfg_scale), "--scheduler", "Euler", "--seeds", c.seeds.join(","), "--hires-scale", String(c.hr_scale),
    "--hires-steps", String(c.hr_second_pass_steps), "--hires-upscaler", c.hr_upscaler!, "--hires-strength", String(c.denoising_strength), "--hires-scheduler", "UniPC",
    "--unipc-variant", "bh2", "--unipc-order", "2", "--rng", "cpu", "--out", out, "--quiet",
  ]);
  expect(run.code).toBe(0);
  expect(maxPixelDiff(await pngPixels([await readFile(out.replace("{i}", "0"))]), c.pixels_hwc)).toBeLessThanOrEqual(1);
});

test("the CLI's --eta reaches the sampler that takes it: DPM++ 2M, then a DDIM second pass with A1111's eta, gives A1111's pixels", async () => {
  const c = byId("hires-dpmpp-2m-to-ddim-eta");
  const out = join(scratch.dir, "hires-ddim-eta-{i}.png");
  const args = [
    "generate", "--backend", "cpu", "--prompt", c.prompt, "--negative-prompt", c.negative_prompt, "--width", String(c.width), "--height", String(c.height),
    "--steps", String(c.steps), "--guidance", String(c.cfg_scale), "--scheduler", "DPM++ 2M", "--seeds", c.seeds.join(","), "--hires-scale", String(c.hr_scale),
    "--hires-steps", String(c.hr_second_pass_steps), "--hires-upscaler", c.hr_upscaler!, "--hires-strength", String(c.denoising_strength), "--hires-scheduler", "DDIM",
    "--rng", "cpu", "--out", out, "--quiet",
  ];
  const run = await runCommand(generate, [...args, "--eta", String(c.eta)]);
  expect(run.code).toBe(0);
  const file = await readFile(out.replace("{i}", "0"));
  expect(maxPixelDiff(await pngPixels([file]), c.pixels_hwc)).toBeLessThanOrEqual(1);
  expect((await readPngText(file)).find((t) => t.keyword === "parameters")?.text).toMatch(/Eta DDIM: 0\.4$/);
  // Without --eta the second pass runs DDIM's default (0): another image.
  const plain = await runCommand(generate, args);
  expect(plain.code).toBe(0);
  expect(maxPixelDiff(await pngPixels([await readFile(out.replace("{i}", "0"))]), c.pixels_hwc)).toBeGreaterThan(1);
  const refused = await runCommand(generate, ["generate", "--backend", "cpu", "--prompt", "x", "--width", "64", "--height", "64", "--steps", "2", "--scheduler", "Euler", "--seeds", "1", "--eta", "0.5", "--out", join(scratch.dir, "eta-refused.png")]);
  expect(refused.code).toBe(2);
  expect(refused.stderr).toMatch(/--eta: .*eta applies to A1111's ancestral and SDE samplers/);
});

test("a DDIM CFG++ second pass at guidance ≤ 1 is refused naming hires.scheduler (its step needs the uncond the first pass skips)", async () => {
  const base = { prompt: "x", width: 64, height: 64, steps: 4, seeds: [1], rng: "cpu" as const, scheduler: "k_euler" };
  await expect(pipe.generate({ ...base, guidance: 1, hires: { scale: 2, steps: 3, scheduler: "a1111_ddim_cfgpp" } })).rejects.toMatchObject({
    option: "hires.scheduler",
    message: expect.stringMatching(/a1111_ddim_cfgpp steps with the unconditional prediction, .*guidance 1 \(≤ 1\): raise guidance above 1, or run a1111_ddim_cfgpp in the first pass too/),
  });
  // Above 1 the first pass computes the uncond, and the second pass runs.
  const ran = await pipe.generate({ ...base, guidance: 3, hires: { scale: 2, steps: 3, scheduler: "a1111_ddim_cfgpp" } });
  expect(ran.images[0]!.infotext).toContain("Hires sampler: DDIM CFG++, ");
});

test("the server's sampler_name UniPC with override_settings uni_pc_* gives A1111's pixels", async () => {
  const c = byId("unipc-bh2-logsnr-order2-batch");
  await withA1111Server(pipe, async (url) => {
    const body = {
      prompt: c.prompt, negative_prompt: c.negative_prompt, width: c.width, height: c.height, steps: c.steps, cfg_scale: c.cfg_scale,
      sampler_name: "UniPC", seed: c.seeds[0], batch_size: c.seeds.length, override_settings: { randn_source: "CPU", ...c.unipc },
    };
    const response = await postA1111(url, "txt2img", body);
    expect(response.status).toBe(200);
    const json = (await response.json()) as { images: string[]; info: string };
    expect(maxPixelDiff(await base64PngPixels(json.images), c.pixels_hwc)).toBeLessThanOrEqual(1);
    expect((JSON.parse(json.info) as { sampler_name: string }).sampler_name).toBe("UniPC");
    // Fewer steps than uni_pc_order: A1111 fails its assertion; here a 422 naming steps.
    const refused = await postA1111(url, "txt2img", { ...body, steps: 2, override_settings: { uni_pc_order: 3 } });
    expect(refused.status).toBe(422);
    const error = (await refused.json()) as { field: string; detail: string };
    expect(error).toMatchObject({ field: "steps", detail: expect.stringMatching(/A1111's UniPC needs at least uni_pc_order \(3\) steps .*steps = 2 gives 2 UniPC steps/) });
  });
});

test("the CLI's --scheduler UniPC with --unipc-* flags gives A1111's pixels", async () => {
  const c = byId("unipc-vary-coeff-quadratic-7-steps");
  const out = join(scratch.dir, "unipc-{i}.png");
  const run = await runCommand(generate, [
    "generate", "--backend", "cpu", "--prompt", c.prompt, "--negative-prompt", c.negative_prompt, "--width", String(c.width), "--height", String(c.height),
    "--steps", String(c.steps), "--guidance", String(c.cfg_scale), "--scheduler", "UniPC", "--seeds", c.seeds.join(","), "--unipc-variant", "vary_coeff",
    "--unipc-skip-type", "time_quadratic", "--no-unipc-lower-order-final", "--rng", "cpu", "--out", out, "--quiet",
  ]);
  expect(run.code).toBe(0);
  const file = await readFile(out.replace("{i}", "0"));
  expect(maxPixelDiff(await pngPixels([file]), c.pixels_hwc)).toBeLessThanOrEqual(1);
  expect((await readPngText(file)).find((t) => t.keyword === "parameters")?.text).toContain("Sampler: UniPC, ");
});

test("the CLI's --hires-* flags with --scheduler PLMS give A1111's hires-fix pixels", async () => {
  const c = byId("hires-plms-bicubic-aa");
  const out = join(scratch.dir, "hires-plms-{i}.png");
  const run = await runCommand(generate, [
    "generate", "--backend", "cpu", "--prompt", c.prompt, "--negative-prompt", c.negative_prompt, "--width", String(c.width), "--height", String(c.height),
    "--steps", String(c.steps), "--guidance", String(c.cfg_scale), "--scheduler", "PLMS", "--seeds", c.seeds.join(","), "--hires-scale", String(c.hr_scale),
    "--hires-steps", String(c.hr_second_pass_steps), "--hires-upscaler", c.hr_upscaler!, "--hires-strength", String(c.denoising_strength), "--rng", "cpu", "--out", out, "--quiet",
  ]);
  expect(run.code).toBe(0);
  const file = await readFile(out.replace("{i}", "0"));
  expect(await sharp(file).metadata()).toMatchObject({ width: c.width * c.hr_scale!, height: c.height * c.hr_scale! });
  expect(maxPixelDiff(await pngPixels([file]), c.pixels_hwc)).toBeLessThanOrEqual(1);
});

test("a hires second pass too short for the sampler is refused naming hires.steps, before any model runs", async () => {
  const base = { prompt: "x", width: 64, height: 64, steps: 6, seeds: [1], rng: "cpu" as const };
  // UniPC: t_enc = hires steps − 1 = 2 steps, fewer than uni_pc_order 3 (A1111 fails its assertion).
  await expect(pipe.generate({ ...base, scheduler: "a1111_unipc", hires: { scale: 2, steps: 3, strength: 0.5 } })).rejects.toMatchObject({
    option: "hires.steps",
    message: expect.stringMatching(/^hires fix's second pass \(t_enc = hires steps − 1 = 2\): A1111's UniPC needs at least uni_pc_order \(3\) steps/),
  });
  // DDIM: t_enc = 1 leaves it no iteration.
  await expect(pipe.generate({ ...base, scheduler: "a1111_ddim", hires: { scale: 2, steps: 2, strength: 0.5 } })).rejects.toMatchObject({ option: "hires.steps" });
});

test("the server's /sdapi/v1/img2img with sampler_name UniPC gives A1111's pixels", async () => {
  const c = byId("img2img-unipc");
  await withA1111Server(pipe, async (url) => {
    const init = await gradientInitPng(c);
    const body = {
      init_images: [init.toString("base64")], denoising_strength: c.denoising_strength, prompt: c.prompt, negative_prompt: c.negative_prompt,
      width: c.width, height: c.height, steps: c.steps, cfg_scale: c.cfg_scale, sampler_name: "UniPC", seed: c.seeds[0], override_settings: { randn_source: "CPU" },
    };
    const response = await postA1111(url, "img2img", body);
    expect(response.status).toBe(200);
    const json = (await response.json()) as { images: string[]; info: string };
    expect(maxPixelDiff(await base64PngPixels(json.images), c.pixels_hwc)).toBeLessThanOrEqual(1);
    expect((JSON.parse(json.info) as { infotexts: string[] }).infotexts[0]).toMatch(new RegExp(`Sampler: UniPC, .*Denoising strength: ${c.denoising_strength}`));
  });
});
