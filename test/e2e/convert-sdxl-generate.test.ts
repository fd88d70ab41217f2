/**
 * `generate --model <SDXL checkpoint>` end to end on the CPU backend: the tiny SDXL base of
 * test/fixtures/checkpoints/sdxl as single files (fp32, fp16) and a diffusers folder, converted into the
 * model cache and run by `sd-trt generate`, against diffusers' StableDiffusionXLPipeline on the same
 * weights (pipeline_goldens.json, scripts/reference/gen_tiny_sdxl_single_file.py): final latents within
 * 1e-4 · max(1, max|x|), pixels within ±1 (tiny-sd-cases/compare.ts).

 */
import { readFileSync } from "node:fs";
import { mkdtemp, readFile, rm } from "node:fs/promises";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { afterAll, beforeAll, describe, expect, test } from "@jest/globals";
import sharp from "sharp";
import generate from "../../lib/cli/commands/generate.js";
import { decodeNpyFloat32 } from "../../lib/cli/shared/npy.js";
import { expectImageClose, expectLatentsClose } from "../fixtures/tiny-sd-cases/compare.js";
import { runCommand } from "../support/run-cli.js";

const SDXL = new URL("../fixtures/checkpoints/sdxl/", import.meta.url).pathname;

interface PipelineCase {
  id: string;
  prompt: string;
  negative_prompt: string;
  seed: number;
  steps: number;
  guidance_scale: number;
  height: number;
  width: number;
  latents: { shape: number[]; values: number[] };
  image_uint8_hwc: { shape: number[]; values: number[] };
}
const { cases } = JSON.parse(readFileSync(join(SDXL, "pipeline_goldens.json"), "utf8")) as { cases: PipelineCase[] };

let scratch: string;
beforeAll(async () => {
  scratch = await mkdtemp(join(tmpdir(), "sd-trt-convert-sdxl-generate-"));
});
afterAll(async () => {
  await rm(scratch, { recursive: true, force: true });
});

describe.each(["single_file.safetensors", "single_file.fp16.safetensors", "diffusers"])("generate --model sdxl/%s matches StableDiffusionXLPipeline", (name) => {
  const model = join(SDXL, name);
  test.each(cases.map((c) => [c.id, c] as const))("%s: latents and pixels", async (_id, c) => {
    const out = await mkdtemp(join(scratch, "out-"));
    const run = await runCommand(generate, [
      "generate", "--prompt", c.prompt, "--negative-prompt", c.negative_prompt, "--prompt-syntax", "plain",
      "--backend", "cpu", "--width", String(c.width), "--height", String(c.height), "--steps", String(c.steps), "--guidance", String(c.guidance_scale),
      "--scheduler", "euler", "--seed", String(c.seed),
      // The tiny model's head counts cannot be derived from shapes: its folder gives the configs (diffusers' `config=`).
      "--model", model, ...(name.endsWith(".safetensors") ? ["--model-config", join(SDXL, "diffusers")] : []), "--cache-dir", join(scratch, "cache"),
      "--out", join(out, "image.png"), "--latents-out", join(out, "latents.npy"), "--json",
    ]);
    expect({ code: run.code, stderr: run.code === 0 ? "" : run.stderr }).toEqual({ code: 0, stderr: "" });
    const latents = decodeNpyFloat32(await readFile(join(out, "latents.npy")));
    expect(latents.shape).toEqual([1, ...c.latents.shape]);
    expectLatentsClose(latents.data, c.latents.values, `sdxl/${name} ${c.id} latents`);
    const { data } = await sharp(await readFile(join(out, "image.png"))).raw().toBuffer({ resolveWithObject: true });
    expectImageClose(data, c.image_uint8_hwc.values, `sdxl/${name} ${c.id} pixels`);
  });
});
