/**
 * An SDXL refiner checkpoint finishing a base checkpoint's generation on the CPU backend, against
 * diffusers running StableDiffusionXLPipeline.from_single_file (denoising_end) then
 * StableDiffusionXLImg2ImgPipeline.from_single_file (denoising_start) on one generator
 * (test/fixtures/checkpoints/sdxl-refiner/pipeline_goldens.json, scripts/reference/gen_tiny_sdxl_refiner_single_file.py):
 * final latents within 1e-4 · max(1, max|x|), pixels ±1. Through the library (convertCheckpoint, then
 * Pipeline.load with the converted refiner) and through `generate --refiner <checkpoint>` (the same
 * SHA-256-keyed model cache as `--model <checkpoint>`). And refiners and bases given in each other's
 * place, refused with the reason.
 */
import { createHash } from "node:crypto";
import { readdirSync, readFileSync } from "node:fs";
import { mkdtemp, readFile, rm } from "node:fs/promises";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { afterAll, beforeAll, describe, expect, test } from "@jest/globals";
import sharp from "sharp";
import generate from "../../lib/cli/commands/generate.js";
import { decodeNpyFloat32 } from "../../lib/cli/shared/npy.js";
import { convertCheckpoint } from "../../lib/convert/index.js";
import { type GenerateOptions, Pipeline } from "../../lib/pipeline/pipeline.js";
import { TINY_SDXL_DIR } from "../fixtures/sdxl/reference.js";
import { imageDiff, LATENT_TOLERANCE, latentError } from "../fixtures/tiny-sd-cases/compare.js";
import { runCommand } from "../support/run-cli.js";

const CHECKPOINTS = new URL("../fixtures/checkpoints/", import.meta.url).pathname;
const BASE_FILE = join(CHECKPOINTS, "sdxl", "single_file.fp16.safetensors");
const BASE_CONFIG = join(CHECKPOINTS, "sdxl", "diffusers");
const REFINER_FILE = join(CHECKPOINTS, "sdxl-refiner", "single_file.safetensors");
const REFINER_CONFIG = join(CHECKPOINTS, "sdxl-refiner", "diffusers");

interface RefinerCase {
  id: string;
  scheduler_class: "EulerDiscreteScheduler" | "EulerAncestralDiscreteScheduler";
  prompt: string;
  negative_prompt?: string;
  seed: number;
  steps: number;
  split: number;
  guidance_scale: number;
  aesthetic_score?: number;
  negative_aesthetic_score?: number;
  base_timesteps: number[];
  refiner_timesteps: number[];
  latent_shape: number[];
  final_latents: number[];
  image_uint8_hwc_b64: string;
}
const { cases } = JSON.parse(readFileSync(join(CHECKPOINTS, "sdxl-refiner", "pipeline_goldens.json"), "utf8")) as { cases: RefinerCase[] };
const SCHEDULERS = { EulerDiscreteScheduler: "euler", EulerAncestralDiscreteScheduler: "euler_a" } as const;

function expectMatches(id: string, latents: ArrayLike<number>, rgb: ArrayLike<number>, c: RefinerCase): void {
  const err = latentError(latents, c.final_latents);
  expect({ id, ok: err <= LATENT_TOLERANCE, err }).toEqual({ id, ok: true, err });
  const diff = imageDiff(rgb, Buffer.from(c.image_uint8_hwc_b64, "base64"));
  expect({ id, maxDiff: diff.maxDiff <= 1 ? "≤1" : diff.maxDiff }).toEqual({ id, maxDiff: "≤1" });
}

let scratch: string;
let baseDir: string;
let refinerDir: string;
beforeAll(async () => {
  scratch = await mkdtemp(join(tmpdir(), "sd-trt-convert-sdxl-refiner-"));
  baseDir = join(scratch, "base");
  refinerDir = join(scratch, "refiner");
  await convertCheckpoint(BASE_FILE, baseDir, { dtype: "fp32", configFolder: BASE_CONFIG });
  await convertCheckpoint(REFINER_FILE, refinerDir, { dtype: "fp32", configFolder: REFINER_CONFIG });
});
afterAll(async () => {
  await rm(scratch, { recursive: true, force: true });
});

describe("a converted SDXL refiner single file matches diffusers' from_single_file refiner (library)", () => {
  let pipe: Pipeline;
  beforeAll(async () => {
    pipe = await Pipeline.load(baseDir, { backend: "cpu", refiner: refinerDir });
  });
  afterAll(async () => {
    await pipe?.dispose();
  });

  test("the converted folder is a refiner's: text_encoder_2 and tokenizer_2 alone, aesthetic-score time ids", () => {
    expect(readdirSync(refinerDir).sort()).toEqual(["model_index.json", "scheduler", "source_checkpoint.json", "text_encoder_2", "tokenizer_2", "unet", "vae_decoder", "vae_encoder"]);
    const index = JSON.parse(readFileSync(join(refinerDir, "model_index.json"), "utf8")) as Record<string, unknown>;
    expect([index["requires_aesthetics_score"], index["force_zeros_for_empty_prompt"], index["text_encoder"]]).toEqual([true, false, [null, null]]);
  });

  test.each(cases.map((c) => [c.id, c] as const))("%s: latents within 1e-4, pixels ±1", async (id, c) => {
    const refiner: NonNullable<GenerateOptions["refiner"]> = { switchAt: c.split };
    if (c.aesthetic_score !== undefined) refiner.aestheticScore = c.aesthetic_score;
    if (c.negative_aesthetic_score !== undefined) refiner.negativeAestheticScore = c.negative_aesthetic_score;
    const options: GenerateOptions = { prompt: c.prompt, promptSyntax: "plain", seed: c.seed, steps: c.steps, guidance: c.guidance_scale, scheduler: SCHEDULERS[c.scheduler_class], width: 64, height: 64, refiner, returnLatents: true };
    if (c.negative_prompt !== undefined) options.negativePrompt = c.negative_prompt;
    const result = await pipe.generate(options);
    expect(result.evaluations).toBe(c.base_timesteps.length + c.refiner_timesteps.length);
    expectMatches(id, result.latents!, result.images[0]!.rgb, c);
  });
});

describe("generate --refiner <checkpoint>", () => {
  const c = cases[0]!;
  const args = (refiner: string[], out: string) => [
    "generate", "--prompt", c.prompt, "--negative-prompt", c.negative_prompt!, "--prompt-syntax", "plain", "--backend", "cpu",
    "--width", "64", "--height", "64", "--steps", String(c.steps), "--guidance", String(c.guidance_scale), "--scheduler", "euler", "--seed", String(c.seed),
    "--model", BASE_FILE, "--model-config", BASE_CONFIG, ...refiner, "--refiner-switch-at", String(c.split), "--cache-dir", join(scratch, "cache"),
    "--out", join(out, "image.png"), "--latents-out", join(out, "latents.npy"), "--json",
  ];
  const expectRun = async (refiner: string[], label: string) => {
    const out = await mkdtemp(join(scratch, "out-"));
    const run = await runCommand(generate, args(refiner, out));
    expect({ code: run.code, stderr: run.code === 0 ? "" : run.stderr }).toEqual({ code: 0, stderr: "" });
    const latents = decodeNpyFloat32(await readFile(join(out, "latents.npy")));
    expect(latents.shape).toEqual(c.latent_shape);
    const { data } = await sharp(await readFile(join(out, "image.png"))).raw().toBuffer({ resolveWithObject: true });
    expectMatches(label, latents.data, data, c);
  };

  test("a single file with --refiner-config: converted into the model cache under its SHA-256, latents and pixels match", async () => {
    await expectRun(["--refiner", REFINER_FILE, "--refiner-config", REFINER_CONFIG], "single file");
    const sha = createHash("sha256").update(readFileSync(REFINER_FILE)).digest("hex");
    const entries = readdirSync(join(scratch, "cache")).filter((name) => !name.startsWith(".") && name !== "hashes.json");
    expect(entries.filter((name) => name.startsWith(`single_file-${sha.slice(0, 10)}-fp32-`))).toHaveLength(1);
    expect(entries).toHaveLength(2); // the base's and the refiner's
  });

  test("the refiner's diffusers folder (configs and weights) gives the same generation", async () => {
    await expectRun(["--refiner", REFINER_CONFIG], "diffusers folder");
  });
});

describe("bases and refiners in each other's place are refused with the reason", () => {
  test("a refiner checkpoint as --model, before anything is converted", async () => {
    const cache = join(scratch, "cache-refused");
    const run = await runCommand(generate, ["generate", "--model", REFINER_FILE, "--model-config", REFINER_CONFIG, "--backend", "cpu", "--prompt", "x", "--steps", "1", "--cache-dir", cache, "--out", join(scratch, "refused.png")]);
    expect(run.code).not.toBe(0);
    expect(run.stderr).toMatch(/--model .*single_file\.safetensors is an SDXL refiner checkpoint \(text_encoder_2 alone, aesthetic-score time ids\): it finishes a base model's generation; pass an SDXL base as --model and this one as --refiner/);
    expect(readdirSync(scratch)).not.toContain("cache-refused");
  });

  test("a base checkpoint as --refiner", async () => {
    const run = await runCommand(generate, ["generate", "--model", TINY_SDXL_DIR, "--refiner", BASE_FILE, "--refiner-config", BASE_CONFIG, "--refiner-switch-at", "0.5", "--backend", "cpu", "--prompt", "x", "--steps", "2", "--cache-dir", join(scratch, "cache-refused"), "--out", join(scratch, "refused.png")]);
    expect(run.code).not.toBe(0);
    expect(run.stderr).toMatch(/--refiner .*single_file\.fp16\.safetensors is an SDXL base checkpoint, not an SDXL refiner/);
  });

  test("--refiner-config without --refiner names both flags", async () => {
    const run = await runCommand(generate, ["generate", "--model", TINY_SDXL_DIR, "--refiner-config", REFINER_CONFIG, "--backend", "cpu", "--prompt", "x", "--steps", "1", "--out", join(scratch, "refused.png")]);
    expect(run.code).not.toBe(0);
    expect(run.stderr).toMatch(/--refiner-config needs --refiner/);
  });

  test("a converted refiner folder loaded as the model says to use it as the refiner", async () => {
    await expect(Pipeline.load(refinerDir, { backend: "cpu" })).rejects.toThrow(/is an SDXL refiner \(model_index\.json says requires_aesthetics_score: its time ids carry an aesthetic score\); it finishes a base model's generation: load an SDXL base model with this one as its refiner/);
  });

  test("a converted base folder as the refiner is refused for its time-id layout (the existing check covers converted single files)", async () => {
    await expect(Pipeline.load(baseDir, { backend: "cpu", refiner: baseDir })).rejects.toThrow(/does not match the base .*: its time-id layout is the base's/);
  });
});
