/**
 * SDXL textual inversion together with a LoRA (CPU backend): a prompt's `<lora:…>` tag makes the
 * backend switch to LoRA-merged text encoders (`setLoras`), and those must be edited for the
 * embeddings' vectors as the model's own were — clip_l's to text_encoder, clip_g's to
 * text_encoder_2. The tiny converted SDXL of test/fixtures/checkpoints/sdxl (widths 4 and 6).
 */
import { afterAll, beforeAll, describe, expect, test } from "@jest/globals";
import { copyFile, mkdir, mkdtemp, rm } from "node:fs/promises";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { readCheckpoint } from "../../lib/convert/checkpoint/index.js";
import { writeConvertedModel } from "../../lib/convert/graphs/folder.js";
import { Pipeline } from "../../lib/pipeline/pipeline.js";
import { writeF32Safetensors } from "../support/checkpoint-fixtures.js";

const SDXL_FOLDER = join(process.cwd(), "test", "fixtures", "checkpoints", "sdxl", "diffusers");
const KOHYA = join(process.cwd(), "test", "fixtures", "loras", "sdxl", "kohya_sdxl.safetensors");

let work: string;
let model: string;
let embeddingsDir: string;
let loraDir: string;
beforeAll(async () => {
  work = await mkdtemp(join(tmpdir(), "sd-trt-lora-ti-sdxl-"));
  model = join(work, "sdxl-fp32");
  await writeConvertedModel(await readCheckpoint(SDXL_FOLDER), model, { dtype: "fp32" });
  embeddingsDir = join(work, "embeddings");
  loraDir = join(work, "loras");
  await mkdir(embeddingsDir);
  await mkdir(loraDir);
  const values = (n: number, scale: number) => Array.from({ length: n }, (_, i) => Math.sin(i + 1) * scale);
  writeF32Safetensors(join(embeddingsDir, "lowpoly.safetensors"), { clip_l: { shape: [2, 4], values: values(8, 2) }, clip_g: { shape: [2, 6], values: values(12, 3) } });
  await copyFile(KOHYA, join(loraDir, "style.safetensors"));
});
afterAll(async () => {
  await rm(work, { recursive: true, force: true });
});

describe("SDXL textual inversion with a LoRA", () => {
  test("the LoRA-merged encoders take the embedding's vectors: the embedding changes the LoRA image, and the LoRA the embedding's", async () => {
    const options = { negativePrompt: "blurry", width: 64, height: 64, steps: 2, seed: 9, guidance: 5, returnLatents: true } as const;
    const withTi = await Pipeline.load(model, { backend: "cpu", embeddingsDir, loraDir, loraCacheDir: join(work, "cache") });
    const withoutTi = await Pipeline.load(model, { backend: "cpu", loraDir, loraCacheDir: join(work, "cache") });
    try {
      const latents = async (pipe: Pipeline, prompt: string) => Buffer.from((await pipe.generate({ ...options, prompt })).latents!.buffer);
      const tiLora = await latents(withTi, "a lowpoly castle <lora:style:0.8>");
      const tiOnly = await latents(withTi, "a lowpoly castle");
      const loraOnly = await latents(withoutTi, "a lowpoly castle <lora:style:0.8>");
      expect(tiLora.equals(tiOnly)).toBe(false);
      expect(tiLora.equals(loraOnly)).toBe(false);
      // Back to the model's own encoders (an empty set): the embedding's image again, bit for bit.
      expect((await latents(withTi, "a lowpoly castle")).equals(tiOnly)).toBe(true);
    } finally {
      await withTi.dispose();
      await withoutTi.dispose();
    }
  });
});
