/**
 * SDXL LoRAs on the CPU backend, end to end: the tiny SDXL base (test/fixtures/checkpoints/sdxl/diffusers)
 * converted by writeConvertedModel, loaded with `loras`, generates what diffusers' StableDiffusionXLPipeline
 * generates after `load_lora_weights` + `fuse_lora` (scripts/reference/gen_tiny_sdxl_loras.py): final
 * latents within 1e-4 · max(1, max|x|) and pixels within ±1, for the base model, the kohya SDXL LoRA
 * (SGM names, both text encoders) at 0.8 and kohya (0.8) + PEFT (0.5). Switching LoRAs per request
 * (`<lora:NAME:SCALE>`, `CpuBackend.setLoras`) merges all three graphs, and going back to the base
 * gives the base output bit for bit. `sd-trt generate --model <SDXL folder> --lora` does the same through
 * the model cache. An SD 1.x LoRA is refused naming the file.
 */
import { afterAll, beforeAll, describe, expect, test } from "@jest/globals";
import { copyFile, mkdir, mkdtemp, readdir, readFile, rm } from "node:fs/promises";
import { tmpdir } from "node:os";
import { join } from "node:path";
import sharp from "sharp";
import generateCommand from "../../lib/cli/commands/generate.js";
import { decodeNpyFloat32 } from "../../lib/cli/shared/npy.js";
import { readCheckpoint } from "../../lib/convert/checkpoint/index.js";
import { writeConvertedModel } from "../../lib/convert/graphs/folder.js";
import type { LoraSpec } from "../../lib/convert/lora/set.js";
import { ModelFileError } from "../../lib/errors.js";
import { readSafetensors } from "../../lib/model/safetensors.js";
import { Pipeline } from "../../lib/pipeline/pipeline.js";
import { runCommand } from "../support/run-cli.js";

const loras = join(process.cwd(), "test", "fixtures", "loras");
const SDXL_FOLDER = join(process.cwd(), "test", "fixtures", "checkpoints", "sdxl", "diffusers");
const dir = join(loras, "sdxl");
const reference = JSON.parse(await readFile(join(dir, "reference.json"), "utf8")) as {
  generation: { prompt: string; negative_prompt: string; height: number; width: number; steps: number; guidance_scale: number; seed: number };
};
const goldens = await readSafetensors(join(dir, "generations.safetensors"));
const golden = (kase: string, what: "latents" | "pixels") => goldens.tensors.get(`${kase}/${what}`)!.toFloat32();
const KOHYA: LoraSpec = { path: join(dir, "kohya_sdxl.safetensors"), scale: 0.8 };
const PEFT: LoraSpec = { path: join(dir, "peft_sdxl.safetensors"), scale: 0.5 };

let work: string;
let model: string;
let cache: string;
beforeAll(async () => {
  work = await mkdtemp(join(tmpdir(), "sd-trt-lora-sdxl-e2e-"));
  model = join(work, "sdxl-fp32");
  cache = join(work, "cache");
  await writeConvertedModel(await readCheckpoint(SDXL_FOLDER), model, { dtype: "fp32" });
});
afterAll(async () => {
  await rm(work, { recursive: true, force: true });
});

function request(prompt = reference.generation.prompt) {
  const g = reference.generation;
  return {
    prompt,
    negativePrompt: g.negative_prompt,
    width: g.width,
    height: g.height,
    steps: g.steps,
    guidance: g.guidance_scale,
    seed: g.seed,
    rng: "cpu",
    scheduler: "euler",
    returnLatents: true,
  } as const;
}

type Output = { latents: Float32Array; rgb: Uint8Array };

async function generate(set: readonly LoraSpec[]): Promise<Output> {
  const pipe = await Pipeline.load(model, { backend: "cpu", loras: set, loraCacheDir: cache });
  try {
    const result = await pipe.generate(request());
    return { latents: result.latents!, rgb: result.images[0]!.rgb };
  } finally {
    await pipe.dispose();
  }
}

function expectMatches(actual: Output, kase: string): void {
  const latents = golden(kase, "latents");
  const scale = Math.max(1, ...latents.map(Math.abs));
  let worst = 0;
  expect(actual.latents.length).toBe(latents.length);
  for (let i = 0; i < latents.length; i++) worst = Math.max(worst, Math.abs(actual.latents[i]! - latents[i]!));
  if (worst > 1e-4 * scale) throw new Error(`${kase}: latents differ by up to ${worst} (limit ${1e-4 * scale})`);
  const pixels = golden(kase, "pixels");
  expect(actual.rgb.length).toBe(pixels.length);
  let off = 0;
  for (let i = 0; i < pixels.length; i++) off = Math.max(off, Math.abs(actual.rgb[i]! - pixels[i]!));
  if (off > 1) throw new Error(`${kase}: pixels differ by up to ${off} levels`);
}

describe("SDXL generations with LoRAs match StableDiffusionXLPipeline's fuse_lora", () => {
  test("base model", async () => {
    expectMatches(await generate([]), "base");
  });

  test("the kohya SDXL LoRA at 0.8 (UNet, text_encoder, text_encoder_2)", async () => {
    expectMatches(await generate([KOHYA]), "kohya_0.8");
  });

  test("the kohya LoRA at 0.8 and the PEFT LoRA at 0.5", async () => {
    expectMatches(await generate([KOHYA, PEFT]), "kohya_0.8+peft_0.5");
  });

  test("the merged set caches all three graphs", async () => {
    const entries = await readdir(cache);
    expect(entries.length).toBeGreaterThan(0);
    for (const entry of entries) expect((await readdir(join(cache, entry))).sort()).toEqual(["text_encoder", "text_encoder_2", "unet"]);
  });

  test("an SD 1.x LoRA is refused, naming the file, before anything is cached", async () => {
    const sd1 = join(loras, "kohya_sd1.safetensors");
    const fresh = join(work, "fresh-cache");
    const load = Pipeline.load(model, { backend: "cpu", loras: [{ path: sd1, scale: 1 }], loraCacheDir: fresh });
    await expect(load).rejects.toThrow(ModelFileError);
    await expect(Pipeline.load(model, { backend: "cpu", loras: [{ path: sd1, scale: 1 }], loraCacheDir: fresh })).rejects.toThrow(`${sd1} is a LoRA for SD 1.x`);
    expect(await readdir(fresh).catch(() => [])).toEqual([]);
  });
});

test("sd-trt generate --model <SDXL diffusers folder> --lora FILE:0.8 (converted into the model cache) matches diffusers", async () => {
  const g = reference.generation;
  const out = await mkdtemp(join(work, "cli-"));
  const run = await runCommand(generateCommand, [
    "generate", "--prompt", g.prompt, "--negative-prompt", g.negative_prompt, "--prompt-syntax", "plain",
    "--backend", "cpu", "--width", String(g.width), "--height", String(g.height), "--steps", String(g.steps), "--guidance", String(g.guidance_scale),
    "--scheduler", "euler", "--seed", String(g.seed), "--model", SDXL_FOLDER, "--cache-dir", join(work, "model-cache"),
    "--lora", `${KOHYA.path}:0.8`, "--lora-cache-dir", cache, "--out", join(out, "image.png"), "--latents-out", join(out, "latents.npy"),
  ]);
  expect({ code: run.code, stderr: run.code === 0 ? "" : run.stderr }).toEqual({ code: 0, stderr: "" });
  const latents = decodeNpyFloat32(await readFile(join(out, "latents.npy")));
  const { data } = await sharp(await readFile(join(out, "image.png"))).raw().toBuffer({ resolveWithObject: true });
  expectMatches({ latents: latents.data, rgb: new Uint8Array(data) }, "kohya_0.8");
});

describe("SDXL LoRAs switched per request by <lora:NAME:SCALE> tags", () => {
  let pipe: Pipeline;
  let base: Output;
  beforeAll(async () => {
    const library = join(work, "lora-dir");
    await mkdir(library, { recursive: true });
    await copyFile(KOHYA.path, join(library, "kohya_sdxl.safetensors"));
    await copyFile(PEFT.path, join(library, "peft_sdxl.safetensors"));
    pipe = await Pipeline.load(model, { backend: "cpu", loraDir: library, loraCacheDir: cache });
    const result = await pipe.generate(request());
    base = { latents: result.latents!, rgb: result.images[0]!.rgb };
  });
  afterAll(async () => {
    await pipe?.dispose();
  });

  test("tags switch the three graphs as diffusers' fuse_lora does, and back to the base bit for bit", async () => {
    expectMatches(base, "base");
    const one = await pipe.generate(request(`${reference.generation.prompt}<lora:kohya_sdxl:0.8>`));
    expectMatches({ latents: one.latents!, rgb: one.images[0]!.rgb }, "kohya_0.8");
    const two = await pipe.generate(request(`${reference.generation.prompt}<lora:kohya_sdxl:0.8><lora:peft_sdxl:0.5>`));
    expectMatches({ latents: two.latents!, rgb: two.images[0]!.rgb }, "kohya_0.8+peft_0.5");
    const again = await pipe.generate(request());
    expect(Buffer.from(again.latents!.buffer).equals(Buffer.from(base.latents.buffer))).toBe(true);
    expect(Buffer.from(again.images[0]!.rgb).equals(Buffer.from(base.rgb))).toBe(true);
    // diffusers' own unfuse + unload is the base too (to its rounding).
    expectMatches({ latents: again.latents!, rgb: again.images[0]!.rgb }, "unloaded");
  });
});
