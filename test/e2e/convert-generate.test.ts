/**
 * `--model <checkpoint>` end to end on the CPU backend: the tiny sd1/sd2 checkpoints as single
 * files (fp32, fp16) and diffusers folders, converted once into the model cache and run by
 * `sd-trt generate`, against diffusers' StableDiffusionPipeline on the same models
 * (test/fixtures/checkpoints/<family>/pipeline_goldens.json, scripts/reference/gen_tiny_single_file.py):
 * final latents within 1e-4 · max(1, max|x|), pixels within ±1 (tiny-sd-cases/compare.ts).
 * The fp16 single files hold exactly the fp32 files' values (the tiny weights are fp16 numbers), so
 * the same tolerance applies. A1111's `Model hash` and `Model` of the checkpoint file are in the
 * infotext.
 *
 * Converted to fp16 graphs (`sd-trt convert --dtype fp16`, what TensorRT builds take), the same
 * generations are checked within FP16_LATENT_TOLERANCE · max(1, max|x|) and ±FP16_PIXEL_TOLERANCE:
 * measured at most 2.9e-3 (sd2 Euler, v-prediction) and ±1, fp16 arithmetic through 3–4 steps of a
 * guided UNet.
 */
import { createHash } from "node:crypto";
import { readFileSync } from "node:fs";
import { mkdtemp, readdir, readFile, rm } from "node:fs/promises";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { afterAll, beforeAll, describe, expect, test } from "@jest/globals";
import sharp from "sharp";
import generate from "../../lib/cli/commands/generate.js";
import { decodeNpyFloat32 } from "../../lib/cli/shared/npy.js";
import { readPngText } from "../../lib/image/png-text.js";
import { cachedConversion } from "../../lib/convert/cache.js";
import { Pipeline } from "../../lib/pipeline/pipeline.js";
import { expectImageClose, expectLatentsClose, imageDiff, latentError } from "../fixtures/tiny-sd-cases/compare.js";
import { runCommand } from "../support/run-cli.js";

const fixtures = new URL("../fixtures/checkpoints/", import.meta.url).pathname;

interface PipelineCase {
  id: string;
  scheduler: string;
  prompt: string;
  negative_prompt: string;
  seed: number;
  steps: number;
  guidance_scale: number;
  latents: { shape: number[]; values: number[] };
  image_uint8_hwc: { shape: number[]; values: number[] };
}
const goldens = (family: string) => JSON.parse(readFileSync(join(fixtures, family, "pipeline_goldens.json"), "utf8")) as { cases: PipelineCase[] };
const SCHEDULER_FLAG: Record<string, string> = { PNDMScheduler: "pndm", EulerDiscreteScheduler: "euler", DDIMScheduler: "ddim" };

let scratch: string;
beforeAll(async () => {
  scratch = await mkdtemp(join(tmpdir(), "sd-trt-convert-generate-"));
});
afterAll(async () => {
  await rm(scratch, { recursive: true, force: true });
});

/** The tiny models' configs cannot be derived from shapes (2 heads, 8 groups): diffusers needs `config=` for them too. */
const modelFlags = (family: string, model: string, cacheDir: string) => [
  "--model", model, ...(model.endsWith(".safetensors") ? ["--model-config", join(fixtures, family, "diffusers")] : []), "--cache-dir", cacheDir,
];

async function generateCase(family: string, model: string, c: PipelineCase, cacheDir: string, out: string) {
  const run = await runCommand(generate, [
    "generate", "--prompt", c.prompt, "--negative-prompt", c.negative_prompt, "--prompt-syntax", "plain",
    "--backend", "cpu", "--width", "64", "--height", "64", "--steps", String(c.steps), "--guidance", String(c.guidance_scale),
    "--scheduler", SCHEDULER_FLAG[c.scheduler]!, "--seed", String(c.seed),
    ...modelFlags(family, model, cacheDir), "--out", join(out, `${c.id}.png`), "--latents-out", join(out, `${c.id}.npy`), "--json",
  ]);
  expect({ code: run.code, stderr: run.code === 0 ? "" : run.stderr }).toEqual({ code: 0, stderr: "" });
  return run;
}

describe.each([
  ["sd1", "single_file.safetensors"],
  ["sd1", "single_file.fp16.safetensors"],
  ["sd1", "diffusers"],
  ["sd2", "single_file.fp16.safetensors"],
  ["sd2", "diffusers"],
])("generate --model %s/%s matches diffusers' pipeline", (family, name) => {
  const model = join(fixtures, family, name);
  let cacheDir: string;
  let out: string;
  beforeAll(async () => {
    cacheDir = await mkdtemp(join(scratch, "cache-"));
    out = await mkdtemp(join(scratch, "out-"));
  });

  test.each(goldens(family).cases.map((c) => [c.id, c] as const))("%s: latents and pixels", async (_id, c) => {
    await generateCase(family, model, c, cacheDir, out);
    const latents = decodeNpyFloat32(await readFile(join(out, `${c.id}.npy`)));
    expect(latents.shape).toEqual([1, ...c.latents.shape]);
    expectLatentsClose(latents.data, c.latents.values, `${family}/${name} ${c.id} latents`);
    const png = await readFile(join(out, `${c.id}.png`));
    const { data } = await sharp(png).raw().toBuffer({ resolveWithObject: true });
    expectImageClose(data, c.image_uint8_hwc.values, `${family}/${name} ${c.id} pixels`);
    const infotext = (await readPngText(png))[0]!.text;
    if (name.endsWith(".safetensors")) {
      const sha256 = createHash("sha256").update(await readFile(model)).digest("hex");
      expect(infotext).toContain(`, Model hash: ${sha256.slice(0, 10)}, Model: ${name.replace(/\.safetensors$/, "")},`);
    } else {
      expect(infotext).toMatch(/, Model hash: [0-9a-f]{10}, Model: diffusers,/);
    }
  });

  test("the checkpoint was converted once: one cache entry, reused by the second case", async () => {
    const entries = (await readdir(cacheDir)).filter((e) => e !== "hashes.json");
    expect(entries).toHaveLength(1);
    expect(entries[0]).toMatch(new RegExp(`^${name.endsWith(".safetensors") ? name.replace(/\.safetensors$/, "").replace(/\./g, "\\.") : "diffusers"}-[0-9a-f]{10}-fp32-[0-9a-f]{8}$`));
  });
});

const FP16_LATENT_TOLERANCE = 5e-3;
const FP16_PIXEL_TOLERANCE = 2;

describe.each(["sd1", "sd2"])("%s converted to fp16 graphs stays within the fp16 tolerance of diffusers", (family) => {
  test.each(goldens(family).cases.map((c) => [c.id, c] as const))("%s", async (_id, c) => {
    const cacheDir = await mkdtemp(join(scratch, "fp16-"));
    const { dir } = await cachedConversion(join(fixtures, family, "single_file.fp16.safetensors"), cacheDir, { dtype: "fp16", configFolder: join(fixtures, family, "diffusers") });
    const pipeline = await Pipeline.load(dir, { backend: "cpu" });
    try {
      const result = await pipeline.generate({
        prompt: c.prompt, negativePrompt: c.negative_prompt, promptSyntax: "plain", width: 64, height: 64, steps: c.steps,
        guidance: c.guidance_scale, scheduler: SCHEDULER_FLAG[c.scheduler]!, seed: c.seed, returnLatents: true,
      });
      const error = latentError(result.latents!, c.latents.values);
      expect({ id: c.id, withinTolerance: error <= FP16_LATENT_TOLERANCE, error }).toEqual({ id: c.id, withinTolerance: true, error });
      expect(imageDiff(result.images[0]!.rgb, c.image_uint8_hwc.values).maxDiff).toBeLessThanOrEqual(FP16_PIXEL_TOLERANCE);
    } finally {
      await pipeline.dispose();
    }
  });
});
