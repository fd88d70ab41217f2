/**
 * `sd-trt generate --lora FILE[:SCALE]` (repeatable) on a converted model: the images are the ones
 * Pipeline.load({ loras }) makes (test/e2e/lora-cpu.test.ts checks those against diffusers), the
 * infotext carries A1111's Lora hashes, and a LoRA that is missing, malformed or for another
 * model is an error naming the file, with nothing written. `sd-trt convert --lora` writes the
 * merged weights into the model folder: it generates what diffusers' fuse_lora generates.
 */
import { afterAll, beforeAll, describe, expect, test } from "@jest/globals";
import { mkdir, mkdtemp, readdir, readFile, rm } from "node:fs/promises";
import { tmpdir } from "node:os";
import { join } from "node:path";
import convert from "../../lib/cli/commands/convert.js";
import generate from "../../lib/cli/commands/generate.js";
import { readSafetensors } from "../../lib/model/safetensors.js";
import { Pipeline } from "../../lib/pipeline/pipeline.js";
import { writeConvertedModel } from "../../lib/convert/graphs/folder.js";
import { tinyCheckpoint } from "../support/checkpoint-fixtures.js";
import { runCommand } from "../support/run-cli.js";

const loras = join(process.cwd(), "test", "fixtures", "loras");
const reference = JSON.parse(await readFile(join(loras, "reference.json"), "utf8")) as { addnet_hash: Record<string, string> };
let work: string;
let model: string;
beforeAll(async () => {
  work = await mkdtemp(join(tmpdir(), "sd-trt-lora-cli-"));
  model = join(work, "sd1");
  await writeConvertedModel(await tinyCheckpoint("sd1"), model, { dtype: "fp32" });
});
afterAll(async () => {
  await rm(work, { recursive: true, force: true });
});

const common = () => ["generate", "a photo of a cat", "--model", model, "--backend", "cpu", "--steps", "2", "--seed", "3", "--width", "64", "--height", "64", "--lora-cache-dir", join(work, "cache"), "--json"];

describe("generate --lora", () => {
  test("two LoRAs with scales: the image changes and its infotext has their A1111 hashes", async () => {
    const out = join(work, "out");
    await mkdir(out);
    const base = await runCommand(generate, [...common(), "--out", join(out, "base.png")]);
    const lora = await runCommand(generate, [...common(), "--lora", `${join(loras, "kohya_sd1.safetensors")}:0.8`, "--lora", join(loras, "peft_sd1.safetensors"), "--out", join(out, "lora.png")]);
    expect([base.code, lora.code, lora.stderr.includes("Error")]).toEqual([0, 0, false]);
    const infotext = (JSON.parse(lora.stdout) as { images: { infotext: string }[] }).images[0]!.infotext;
    const short = (file: string) => reference.addnet_hash[file]!.slice(0, 12);
    expect(infotext).toContain(`Lora hashes: "kohya_sd1: ${short("kohya_sd1.safetensors")}, peft_sd1: ${short("peft_sd1.safetensors")}"`);
    expect(await readFile(join(out, "lora.png"))).not.toEqual(await readFile(join(out, "base.png")));
  });

  test("a missing file, a bad scale and a LoRA for another model are errors naming them, and write nothing", async () => {
    const out = join(work, "refused");
    await mkdir(out);
    const missing = join(work, "nope.safetensors");
    const cases: [string, string][] = [
      [missing, `${missing} cannot be read`],
      [`${join(loras, "kohya_sd1.safetensors")}:1e9`, "--lora scale must be a number from -100 to 100"],
      [join(process.cwd(), "test", "fixtures", "safetensors", "embedding.safetensors"), "is not a LoRA sd-trt can apply: key emb_params"],
    ];
    for (const [value, message] of cases) {
      const run = await runCommand(generate, [...common(), "--lora", value, "--out", join(out, "x.png")]);
      expect(run.code).not.toBe(0);
      expect(run.stderr).toContain(message);
    }
    expect(await readdir(out)).toEqual([]);
  });
});

describe("convert --lora", () => {
  test("the converted folder holds the merged weights: it generates diffusers' fused output", async () => {
    const out = join(work, "merged");
    const checkpoint = join(process.cwd(), "test", "fixtures", "checkpoints", "sd1", "diffusers");
    const run = await runCommand(convert, ["convert", checkpoint, "--out", out, "--dtype", "fp32", "--quiet", "--lora", `${join(loras, "kohya_sd1.safetensors")}:0.8`, "--lora", `${join(loras, "peft_sd1.safetensors")}:0.5`]);
    expect({ code: run.code, stderr: run.stderr }).toEqual({ code: 0, stderr: "" });
    const g = JSON.parse(await readFile(join(loras, "reference.json"), "utf8")).generation as { prompt: string; negative_prompt: string; height: number; width: number; num_inference_steps: number; guidance_scale: number; seed: number };
    const pipe = await Pipeline.load(out, { backend: "cpu" });
    try {
      const result = await pipe.generate({ prompt: g.prompt, negativePrompt: g.negative_prompt, width: g.width, height: g.height, steps: g.num_inference_steps, guidance: g.guidance_scale, seed: g.seed, rng: "cpu", returnLatents: true });
      const golden = (await readSafetensors(join(loras, "generations.safetensors"))).tensors;
      const latents = golden.get("kohya_0.8+peft_0.5/latents")!.toFloat32();
      const scale = Math.max(1, ...latents.map(Math.abs));
      expect(Math.max(...latents.map((v, i) => Math.abs(v - result.latents![i]!)))).toBeLessThanOrEqual(1e-4 * scale);
      const pixels = golden.get("kohya_0.8+peft_0.5/pixels")!.toFloat32();
      expect(Math.max(...pixels.map((v, i) => Math.abs(v - result.images[0]!.rgb[i]!)))).toBeLessThanOrEqual(1);
    } finally {
      await pipe.dispose();
    }
  });

  test("a LoRA for another model leaves no folder", async () => {
    const out = join(work, "not-written");
    const checkpoint = join(process.cwd(), "test", "fixtures", "checkpoints", "sd2", "diffusers");
    const run = await runCommand(convert, ["convert", checkpoint, "--out", out, "--quiet", "--lora", join(loras, "kohya_sd1.safetensors")]);
    expect(run.code).not.toBe(0);
    expect(run.stderr).toContain(`${join(loras, "kohya_sd1.safetensors")} is a LoRA for SD 1.x (its metadata says ss_base_model_version = sd_v1); the model is SD 2.x`);
    expect(await readdir(work)).not.toContain("not-written");
  });
});
