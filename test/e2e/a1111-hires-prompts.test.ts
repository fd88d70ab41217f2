/**
 * A1111's hires fix with what changes in its second pass: prompt editing and alternation there
 * (schedules made for the second pass's steps after the first pass's), hr_prompt /
 * hr_negative_prompt, and hr_sampler_name / hr_scheduler; on the tiny model against A1111's own
 * prompt_parser and CFG denoiser (test/fixtures/a1111/tiny_e2e_hires_prompts.json, made by
 * scripts/reference/gen_a1111_tiny_e2e.py hires-prompts), through Pipeline.generate, the service
 * (merged batches) and the A1111 server. The bar: latents within 1e-4 · max(1, max|x|), pixels ±1.
 */
import { afterAll, beforeAll, describe, expect, test } from "@jest/globals";
import { readFile } from "node:fs/promises";
import { join } from "node:path";
import { Pipeline, type GenerateOptions } from "../../lib/pipeline/pipeline.js";
import { PipelineService } from "../../lib/service/pipeline-service.js";
import { promptSchedule } from "../../lib/prompt/index.js";
import { kdiffusionTotalSteps, type KDiffusionSamplerName } from "../../lib/schedulers/index.js";
import { InvalidOptionError } from "../../lib/errors.js";
import generate from "../../lib/cli/commands/generate.js";
import { readPngText } from "../../lib/image/index.js";
import { latentError } from "../fixtures/tiny-sd-cases/compare.js";
import { base64PngPixels, caseBaseOptions, caseById, joinedRgb, maxPixelDiff, pngPixels, postA1111, readA1111Cases, withA1111Server, type A1111GoldenCase } from "../support/a1111-goldens.js";
import { runCommand } from "../support/run-cli.js";
import { scratchFolder } from "../support/scratch-folder.js";

interface Case extends A1111GoldenCase {
  sampler: KDiffusionSamplerName;
  schedule: string;
  hr_scale: number;
  hr_upscaler: string;
  hr_second_pass_steps?: number;
  denoising_strength: number;
  hr_prompt?: string;
  hr_negative_prompt?: string;
  hr_sampler?: KDiffusionSamplerName;
  hr_schedule?: string;
  /** A1111's get_learned_conditioning_prompt_schedules of [prompt, negative prompt] in each pass. */
  prompt_schedules: { first: [number, string][][]; hires: [number, string][][] };
}

const golden = { cases: await readA1111Cases<Case>("tiny_e2e_hires_prompts.json") };
const byId = (id: string) => caseById(golden.cases, id);
const scratch = scratchFolder("sd-trt-hires-prompts-");
let pipe: Pipeline;

beforeAll(async () => {
  pipe = await Pipeline.load(undefined, { backend: "cpu" });
});
afterAll(async () => {
  await pipe?.dispose();
});

function optionsFor(c: Case, seeds = c.seeds): GenerateOptions {
  return {
    ...caseBaseOptions(c, seeds),
    sigmaSchedule: c.schedule,
    hires: {
      scale: c.hr_scale,
      upscaler: c.hr_upscaler,
      strength: c.denoising_strength,
      ...(c.hr_second_pass_steps !== undefined ? { steps: c.hr_second_pass_steps } : {}),
      ...(c.hr_prompt !== undefined ? { prompt: c.hr_prompt } : {}),
      ...(c.hr_negative_prompt !== undefined ? { negativePrompt: c.hr_negative_prompt } : {}),
      ...(c.hr_sampler !== undefined ? { scheduler: c.hr_sampler } : {}),
      ...(c.hr_schedule !== undefined ? { sigmaSchedule: c.hr_schedule } : {}),
    },
  };
}

/** The hires fields A1111's create_infotext writes for the case (processing.py's init order). */
function hiresInfotext(c: Case): string {
  const fields: string[] = [];
  if (c.hr_sampler) fields.push(`Hires sampler: ${{ k_dpmpp_2m: "DPM++ 2M", k_dpm_2_a: "DPM2 a" }[c.hr_sampler as string]}`);
  if (c.hr_prompt) fields.push(`Hires prompt: ${/[,:"]/.test(c.hr_prompt) ? JSON.stringify(c.hr_prompt) : c.hr_prompt}`);
  if (c.hr_negative_prompt) fields.push(`Hires negative prompt: ${c.hr_negative_prompt}`);
  if (c.hr_schedule) fields.push(`Hires schedule type: ${{ exponential: "Exponential" }[c.hr_schedule]}`);
  // Automatic in both passes: Euler a has no schedule, DPM++ 2M's is Karras, which get_sigmas writes as "Hires schedule type".
  else if (c.hr_sampler === "k_dpmpp_2m" && c.sampler === "k_euler_a") fields.push("Hires schedule type: Karras");
  fields.push(`Hires upscale: ${c.hr_scale}`);
  if (c.hr_second_pass_steps) fields.push(`Hires steps: ${c.hr_second_pass_steps}`);
  fields.push(`Hires upscaler: ${c.hr_upscaler}`);
  return `RNG: CPU, ${fields.join(", ")}`;
}

describe.each(golden.cases.map((c) => [c.id, c] as const))("A1111's hires second pass on the tiny model, %s", (_id, c) => {
  test("each pass's prompt schedules are A1111's (the second pass's steps after the first pass's, as its CFG denoiser counts them)", () => {
    const firstSteps = kdiffusionTotalSteps(c.sampler, c.steps);
    const hiresSteps = kdiffusionTotalSteps(c.hr_sampler ?? c.sampler, c.hr_second_pass_steps || c.steps);
    const [prompt, negative] = [c.prompt, c.negative_prompt];
    expect([promptSchedule(prompt, firstSteps), promptSchedule(negative, firstSteps)]).toEqual(c.prompt_schedules.first);
    expect([promptSchedule(c.hr_prompt ?? prompt, firstSteps, hiresSteps), promptSchedule(c.hr_negative_prompt ?? negative, firstSteps, hiresSteps)]).toEqual(c.prompt_schedules.hires);
  });

  test("Pipeline.generate gives A1111's latents (1e-4), pixels (±1) and hires infotext", async () => {
    const result = await pipe.generate(optionsFor(c));
    expect(latentError(result.latents!, c.final_latents)).toBeLessThan(1e-4);
    expect(maxPixelDiff(joinedRgb(result.images), c.pixels_hwc)).toBeLessThanOrEqual(1);
    expect(result.images[0]!.infotext.endsWith(hiresInfotext(c))).toBe(true);
  });
});

test("requests with edited hires prompts merged into one batch each get A1111's images", async () => {
  const c = byId("hires-editing-integer-heun-batch");
  const service = await PipelineService.create(pipe, { batchWindowMs: 10_000, maxBatch: 2 });
  try {
    const results = await Promise.all(c.seeds.map((seed) => service.generate(optionsFor(c, [seed]))));
    expect(service.counters()).toMatchObject({ batches: 1, batchedRequests: 2 });
    expect(maxPixelDiff(joinedRgb(results.flatMap((r) => r.images)), c.pixels_hwc)).toBeLessThanOrEqual(1);
  } finally {
    await service.dispose();
  }
});

test("requests whose second passes differ (hires prompt, sampler) never share a batch", async () => {
  const c = byId("hires-prompt-negative-dpmpp-2m");
  const service = await PipelineService.create(pipe, { batchWindowMs: 200, maxBatch: 4 });
  try {
    const base = optionsFor(c);
    const [a, b, d] = await Promise.all([
      service.generate(base),
      service.generate({ ...base, hires: { ...base.hires, prompt: "a windmill" } }),
      service.generate({ ...base, hires: { ...base.hires, scheduler: "k_euler" } }),
    ]);
    expect(service.counters()).toMatchObject({ batches: 3, batchedRequests: 0 });
    expect(maxPixelDiff(joinedRgb(a.images), c.pixels_hwc)).toBeLessThanOrEqual(1);
    expect(b.images[0]!.infotext).toContain("Hires prompt: a windmill, ");
    expect(d.images[0]!.infotext).toContain("Hires sampler: Euler, ");
  } finally {
    await service.dispose();
  }
});

test("the A1111 server runs hr_prompt, hr_negative_prompt, hr_sampler_name and hr_scheduler as A1111 does", async () => {
  await withA1111Server(pipe, async (url) => {
    const post = async (body: Record<string, unknown>) => {
      const response = await postA1111(url, "txt2img", body);
      return { status: response.status, json: (await response.json()) as { images: string[]; info: string; detail?: string } };
    };
    const request = (c: Case) => ({
      prompt: c.prompt, negative_prompt: c.negative_prompt, width: c.width, height: c.height, steps: c.steps, cfg_scale: c.cfg_scale,
      sampler_name: { k_dpmpp_2m: "DPM++ 2M", k_euler_a: "Euler a" }[c.sampler as string], scheduler: "Automatic", seed: c.seeds[0], batch_size: c.seeds.length,
      enable_hr: true, hr_scale: c.hr_scale, hr_upscaler: c.hr_upscaler, hr_second_pass_steps: c.hr_second_pass_steps ?? 0, denoising_strength: c.denoising_strength,
      override_settings: { randn_source: "CPU" },
    });
    for (const [c, extra] of [
      [byId("hires-prompt-negative-dpmpp-2m"), { hr_prompt: byId("hires-prompt-negative-dpmpp-2m").hr_prompt, hr_negative_prompt: "blur", hr_sampler_name: "Use same sampler", hr_scheduler: "Use same scheduler" }],
      [byId("hires-sampler-schedule-dpmpp-2m-to-dpm2-a-exponential"), { hr_sampler_name: "DPM2 a", hr_scheduler: "Exponential", hr_prompt: "" }],
    ] as const) {
      const response = await post({ ...request(c), ...extra });
      expect(response.status).toBe(200);
      expect(maxPixelDiff(await base64PngPixels(response.json.images.slice(0, 1)), c.pixels_hwc)).toBeLessThanOrEqual(1);
      expect(JSON.parse(response.json.info).infotexts[0].endsWith(hiresInfotext(c))).toBe(true);
    }
    const refused = await post({ ...request(byId("hires-prompt-negative-dpmpp-2m")), hr_sampler_name: "DPM adaptive" });
    expect(refused.status).toBe(422);
    expect(JSON.stringify(refused.json)).toContain("hr_sampler_name");
    const unknown = await post({ ...request(byId("hires-prompt-negative-dpmpp-2m")), hr_sampler_name: "DPM++ 2M", hr_scheduler: "Sideways" });
    expect(unknown.status).toBe(422);
    expect(JSON.stringify(unknown.json)).toContain("hr_scheduler");
  });
});

test("the CLI's --hires-prompt, --hires-negative-prompt, --hires-scheduler and --hires-schedule give A1111's images", async () => {
  for (const c of [byId("hires-prompt-negative-dpmpp-2m"), byId("hires-sampler-schedule-dpmpp-2m-to-dpm2-a-exponential")]) {
    const out = join(scratch.dir, `${c.id}-{i}.png`);
    const hires = [
      ...(c.hr_prompt ? ["--hires-prompt", c.hr_prompt] : []),
      ...(c.hr_negative_prompt ? ["--hires-negative-prompt", c.hr_negative_prompt] : []),
      ...(c.hr_sampler ? ["--hires-scheduler", { k_dpm_2_a: "DPM2 a" }[c.hr_sampler as string]!] : []),
      ...(c.hr_schedule ? ["--hires-schedule", c.hr_schedule] : []),
      ...(c.hr_second_pass_steps ? ["--hires-steps", String(c.hr_second_pass_steps)] : []),
    ];
    const run = await runCommand(generate, [
      "generate", "--backend", "cpu", "--prompt", c.prompt, "--negative-prompt", c.negative_prompt, "--width", String(c.width), "--height", String(c.height),
      "--steps", String(c.steps), "--guidance", String(c.cfg_scale), "--scheduler", c.sampler, "--seeds", c.seeds.join(","),
      "--hires-scale", String(c.hr_scale), "--hires-upscaler", c.hr_upscaler, "--hires-strength", String(c.denoising_strength), ...hires,
      "--rng", "cpu", "--out", out, "--quiet",
    ]);
    expect(run.code).toBe(0);
    const file = await readFile(out.replace("{i}", "0"));
    expect(maxPixelDiff(await pngPixels([file]), c.pixels_hwc)).toBeLessThanOrEqual(1);
    const parameters = (await readPngText(file)).find((t) => t.keyword === "parameters")?.text;
    expect(parameters?.endsWith(hiresInfotext(c))).toBe(true);
  }
  const bad = await runCommand(generate, ["generate", "--backend", "cpu", "--prompt", "x", "--width", "64", "--height", "64", "--steps", "2", "--scheduler", "k_euler", "--seeds", "1", "--hires-scheduler", "DPM adaptive", "--out", join(scratch.dir, "bad.png")]);
  expect(bad.code).toBe(2);
  expect(bad.stderr).toMatch(/--hires-scheduler "DPM adaptive" is not supported/);
});

test("bad second-pass options are refused naming the option", async () => {
  const c = byId("hires-prompt-negative-dpmpp-2m");
  const base = optionsFor(c);
  const refusal = async (hires: Record<string, unknown>) => {
    try {
      await pipe.generate({ ...base, hires: { ...base.hires, ...hires } });
    } catch (error) {
      return error;
    }
    throw new Error("not refused");
  };
  await expect(refusal({ scheduler: "euler" })).resolves.toMatchObject({ name: InvalidOptionError.name, option: "hires.scheduler" });
  await expect(refusal({ sigmaSchedule: "sideways" })).resolves.toMatchObject({ option: "hires.sigmaSchedule" });
  await expect(refusal({ prompt: 3 })).resolves.toMatchObject({ option: "hires.prompt" });
  await expect(refusal({ prompt: "a <lora:none:1> castle" })).resolves.toMatchObject({ option: "hires.prompt" });
});
