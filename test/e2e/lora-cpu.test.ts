/**
 * LoRAs on the CPU backend, end to end: the tiny SD 1.x checkpoint converted by
 * writeConvertedModel, loaded with `loras`, generates what diffusers' StableDiffusionPipeline
 * generates after `load_lora_weights` + `fuse_lora` (scripts/reference/gen_tiny_loras.py):
 * final latents within 1e-4 · max(1, max|x|) and pixels within ±1, for the base model, one kohya
 * LoRA at 0.8, and a kohya (0.8) + PEFT (0.5) pair. Merged graphs are cached per LoRA set, and
 * loading the base model again gives the base output bit for bit.
 */
import { afterAll, beforeAll, describe, expect, test } from "@jest/globals";
import { copyFile, mkdir, mkdtemp, readdir, readFile, rm } from "node:fs/promises";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { writeConvertedModel } from "../../lib/convert/graphs/folder.js";
import { mergedLoraGraphs } from "../../lib/convert/lora/merged-folder.js";
import type { LoraSpec } from "../../lib/convert/lora/set.js";
import { InvalidOptionError, ModelFileError } from "../../lib/errors.js";
import { batchKey } from "../../lib/pipeline/generation.js";
import { locateModelFolder } from "../../lib/model/folder.js";
import { readSafetensors } from "../../lib/model/safetensors.js";
import { Pipeline } from "../../lib/pipeline/pipeline.js";
import { tinyCheckpoint } from "../support/checkpoint-fixtures.js";

const loras = join(process.cwd(), "test", "fixtures", "loras");
const reference = JSON.parse(await readFile(join(loras, "reference.json"), "utf8")) as {
  addnet_hash: Record<string, string>;
  generation: { prompt: string; negative_prompt: string; height: number; width: number; num_inference_steps: number; guidance_scale: number; seed: number };
};
const goldens = await readSafetensors(join(loras, "generations.safetensors"));
const golden = (kase: string, what: "latents" | "pixels") => goldens.tensors.get(`${kase}/${what}`)!.toFloat32();
const KOHYA: LoraSpec = { path: join(loras, "kohya_sd1.safetensors"), scale: 0.8 };
const PEFT: LoraSpec = { path: join(loras, "peft_sd1.safetensors"), scale: 0.5 };

let work: string;
let model: string;
let cache: string;
beforeAll(async () => {
  work = await mkdtemp(join(tmpdir(), "sd-trt-lora-e2e-"));
  model = join(work, "sd1-fp32");
  cache = join(work, "cache");
  await writeConvertedModel(await tinyCheckpoint("sd1"), model, { dtype: "fp32" });
});
afterAll(async () => {
  await rm(work, { recursive: true, force: true });
});

function request(prompt = reference.generation.prompt) {
  const g = reference.generation;
  return { prompt, negativePrompt: g.negative_prompt, width: g.width, height: g.height, steps: g.num_inference_steps, guidance: g.guidance_scale, seed: g.seed, rng: "cpu", returnLatents: true } as const;
}

async function generate(set: readonly LoraSpec[]): Promise<{ latents: Float32Array; rgb: Uint8Array; infotext: string }> {
  const pipe = await Pipeline.load(model, { backend: "cpu", loras: set, loraCacheDir: cache });
  try {
    const g = reference.generation;
    const result = await pipe.generate({
      prompt: g.prompt,
      negativePrompt: g.negative_prompt,
      width: g.width,
      height: g.height,
      steps: g.num_inference_steps,
      guidance: g.guidance_scale,
      seed: g.seed,
      rng: "cpu",
      returnLatents: true,
    });
    return { latents: result.latents!, rgb: result.images[0]!.rgb, infotext: result.images[0]!.infotext };
  } finally {
    await pipe.dispose();
  }
}

function expectMatches(actual: { latents: Float32Array; rgb: Uint8Array }, kase: string): void {
  const latents = golden(kase, "latents");
  const scale = Math.max(1, ...latents.map(Math.abs));
  let worst = 0;
  for (let i = 0; i < latents.length; i++) worst = Math.max(worst, Math.abs(actual.latents[i]! - latents[i]!));
  expect(actual.latents.length).toBe(latents.length);
  if (worst > 1e-4 * scale) throw new Error(`${kase}: latents differ by up to ${worst} (limit ${1e-4 * scale})`);
  const pixels = golden(kase, "pixels");
  expect(actual.rgb.length).toBe(pixels.length);
  let off = 0;
  for (let i = 0; i < pixels.length; i++) off = Math.max(off, Math.abs(actual.rgb[i]! - pixels[i]!));
  if (off > 1) throw new Error(`${kase}: pixels differ by up to ${off} levels`);
}

describe("generations with LoRAs match diffusers' fuse_lora", () => {
  let base: { latents: Float32Array; rgb: Uint8Array; infotext: string };

  test("base model", async () => {
    base = await generate([]);
    expectMatches(base, "base");
  });

  test("one kohya LoRA at 0.8", async () => {
    const out = await generate([KOHYA]);
    expectMatches(out, "kohya_0.8");
    expect(Buffer.from(out.rgb).equals(Buffer.from(base.rgb))).toBe(false);
  });

  test("a kohya LoRA at 0.8 and a PEFT LoRA at 0.5, with A1111's Lora hashes in the infotext", async () => {
    const out = await generate([KOHYA, PEFT]);
    expectMatches(out, "kohya_0.8+peft_0.5");
    const short = (file: string) => reference.addnet_hash[file]!.slice(0, 12);
    expect(out.infotext).toContain(`, Lora hashes: "kohya_sd1: ${short("kohya_sd1.safetensors")}, peft_sd1: ${short("peft_sd1.safetensors")}"`);
    expect(base.infotext).not.toContain("Lora hashes");
  });

  test("unloading the LoRAs gives the base output bit for bit", async () => {
    const again = await generate([]);
    expect(Buffer.from(again.latents.buffer).equals(Buffer.from(base.latents.buffer))).toBe(true);
    expect(Buffer.from(again.rgb).equals(Buffer.from(base.rgb))).toBe(true);
    expectMatches(again, "unloaded");
  });
});

describe("the merged-graph cache", () => {
  test("the same set on the same model is found, not merged again; another set gets its own entry", async () => {
    const folder = await locateModelFolder(model);
    const first = await mergedLoraGraphs(folder, [KOHYA], cache);
    const second = await mergedLoraGraphs(folder, [KOHYA], cache);
    expect(second).toEqual({ ...first, written: false });
    const other = await mergedLoraGraphs(folder, [{ ...KOHYA, scale: 0.7 }], cache);
    expect(other.id).not.toBe(first.id);
  });

  test("a LoRA that does not fit the model is refused before anything is cached", async () => {
    const fresh = join(work, "fresh-cache");
    // models/tiny-sd is an optimum export: its weights are not named by diffusers keys.
    const folder = await locateModelFolder(join(process.cwd(), "models", "tiny-sd"));
    await expect(mergedLoraGraphs(folder, [KOHYA], fresh)).rejects.toThrow(ModelFileError);
    await expect(mergedLoraGraphs(folder, [KOHYA], fresh)).rejects.toThrow(`${KOHYA.path} does not fit this model: `);
    expect(await readdir(fresh).catch(() => [])).toEqual([]);
  });
});

describe("A1111's <lora:NAME:SCALE> prompt tags, resolved from loraDir", () => {
  let pipe: Pipeline;
  let base: Float32Array;
  beforeAll(async () => {
    const dir = join(work, "lora-dir");
    await mkdir(join(dir, "styles"), { recursive: true });
    await copyFile(KOHYA.path, join(dir, "kohya_sd1.safetensors"));
    await copyFile(PEFT.path, join(dir, "styles", "peft_sd1.safetensors"));
    pipe = await Pipeline.load(model, { backend: "cpu", loraDir: dir, loraCacheDir: cache });
    base = (await pipe.generate(request())).latents!;
  });
  afterAll(async () => {
    await pipe?.dispose();
  });

  test("the folder's LoRAs are listed as A1111 lists them (name, alias, path, metadata)", () => {
    expect(pipe.loraLibrary.map((e) => [e.name, e.alias])).toEqual([
      ["kohya_sd1", "kohya_sd1"],
      ["peft_sd1", "peft_sd1"],
    ]);
    expect(pipe.loraLibrary[0]!.metadata.ss_base_model_version).toBe("sd_v1");
  });

  test("tags switch the weights per request, as diffusers' fuse_lora does, and back to the base exactly", async () => {
    const one = await pipe.generate(request(`${reference.generation.prompt}<lora:kohya_sd1:0.8>`));
    expectMatches({ latents: one.latents!, rgb: one.images[0]!.rgb }, "kohya_0.8");
    expect(one.images[0]!.infotext.startsWith(`${reference.generation.prompt}<lora:kohya_sd1:0.8>\n`)).toBe(true);
    expect(one.images[0]!.infotext).toContain(`, Lora hashes: "kohya_sd1: ${reference.addnet_hash["kohya_sd1.safetensors"]!.slice(0, 12)}"`);
    const two = await pipe.generate(request(`${reference.generation.prompt}<lora:kohya_sd1:0.8><lora:peft_sd1:0.5>`));
    expectMatches({ latents: two.latents!, rgb: two.images[0]!.rgb }, "kohya_0.8+peft_0.5");
    const again = await pipe.generate(request());
    expect(Buffer.from(again.latents!.buffer).equals(Buffer.from(base.buffer))).toBe(true);
  });

  test("requests naming different LoRAs never share a batch", () => {
    const key = (prompt: string) => batchKey(pipe.resolveOptions(request(prompt)));
    expect(key("a cat <lora:kohya_sd1:0.8>")).toBe(key("a dog <lora:kohya_sd1:0.8>"));
    expect(key("a cat <lora:kohya_sd1:0.8>")).not.toBe(key("a cat <lora:kohya_sd1:0.7>"));
    expect(key("a cat <lora:kohya_sd1:0.8>")).not.toBe(key("a cat"));
  });

  test("an unknown name, a bad multiplier or differing TE/UNet multipliers are refused, naming the tag", () => {
    const refusal = (prompt: string) => {
      try {
        pipe.resolveOptions(request(prompt));
      } catch (error) {
        expect(error).toBeInstanceOf(InvalidOptionError);
        return (error as Error).message;
      }
      throw new Error("expected a refusal");
    };
    expect(refusal("a cat <lora:nope:1>")).toContain(`prompt has the tag <lora:nope:1>, but the LoRA folder ${join(work, "lora-dir")} has no LoRA named "nope"`);
    expect(refusal("a cat <lora:kohya_sd1:x>")).toContain("its multiplier must be a number");
    expect(refusal("a cat <lora:kohya_sd1:1:0.5>")).toContain("one multiplier to the text encoder and the UNet");
  });
});
