/**
 * writeConvertedModel (lib/convert/graphs/folder.ts): a tiny reference checkpoint becomes an
 * optimum-layout folder that Pipeline.load reads and the CPU backend runs (txt2img and img2img);
 * the folder appears whole or not at all. The comparison of whole generations with diffusers'
 * pipeline is the checkpoint converter's test (issue 12); each graph is checked against torch in
 * convert-graphs-components.test.ts.
 */
import { afterAll, beforeAll, describe, expect, test } from "@jest/globals";
import { mkdir, mkdtemp, readdir, readFile, rm } from "node:fs/promises";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { type ConvertProgress, writeConvertedModel } from "../../lib/convert/graphs/folder.js";
import type { CheckpointSource } from "../../lib/convert/types.js";
import { ModelFileError, OutputFileError } from "../../lib/errors.js";
import { Pipeline } from "../../lib/pipeline/pipeline.js";
import { ClipTokenizer } from "../../lib/tokenizer/clip-tokenizer.js";
import { tinyCheckpoint } from "../support/checkpoint-fixtures.js";

let work: string;
beforeAll(async () => {
  work = await mkdtemp(join(tmpdir(), "sd-trt-convert-"));
});
afterAll(async () => {
  await rm(work, { recursive: true, force: true });
});

describe.each([
  ["sd1", "fp32", "<|endoftext|>", "PNDMScheduler"],
  ["sd2", "fp16", "!", "DDIMScheduler"],
] as const)("the %s checkpoint converted in %s", (family, dtype, padToken, schedulerClass) => {
  let dir: string;
  const progress: ConvertProgress[] = [];
  beforeAll(async () => {
    dir = join(work, `${family}-${dtype}`);
    await writeConvertedModel(await tinyCheckpoint(family), dir, { dtype, onProgress: (p) => progress.push(p) });
  });

  test("is an optimum-layout folder with each component's config, the scheduler config and the family's tokenizer", async () => {
    expect((await readdir(dir)).sort()).toEqual(["model_index.json", "scheduler", "text_encoder", "tokenizer", "unet", "vae_decoder", "vae_encoder"]);
    for (const graph of ["text_encoder", "unet", "vae_decoder", "vae_encoder"]) {
      expect((await readdir(join(dir, graph))).sort()).toEqual(["config.json", "model.onnx", "model.onnx_data"]);
    }
    expect(progress.map((p) => `${p.index + 1}/${p.count} ${p.graph}`)).toEqual(["1/4 text_encoder", "2/4 unet", "3/4 vae_decoder", "4/4 vae_encoder"]);
    const source = join(process.cwd(), "test", "fixtures", "checkpoints", family, "diffusers");
    const json = async (path: string) => JSON.parse(await readFile(path, "utf8")) as Record<string, unknown>;
    expect(await json(join(dir, "unet", "config.json"))).toEqual(await json(join(source, "unet", "config.json")));
    expect(await json(join(dir, "vae_decoder", "config.json"))).toEqual(await json(join(source, "vae", "config.json")));
    expect(await json(join(dir, "scheduler", "scheduler_config.json"))).toEqual(await json(join(source, "scheduler", "scheduler_config.json")));
    expect((await json(join(dir, "model_index.json")))["scheduler"]).toEqual(["diffusers", schedulerClass]);
    // The tokenizer pads as the family's own tokenizer folder says (SD 2.x: "!", id 0).
    const converted = await ClipTokenizer.fromDirectory(join(dir, "tokenizer"));
    const original = await ClipTokenizer.fromDirectory(join(source, "tokenizer"));
    expect(converted.padTokenId).toBe(original.padTokenId);
    expect(converted.padTokenId).toBe(padToken === "!" ? 0 : 49407);
  });

  test("loads with Pipeline.load and generates on the CPU backend, txt2img then img2img", async () => {
    const pipe = await Pipeline.load(dir, { backend: "cpu" });
    try {
      const base = { prompt: "a red fox in the snow", width: 80, height: 64, steps: 3, seed: 7 } as const;
      const first = await pipe.generate(base);
      const image = first.images[0]!;
      expect([image.width, image.height, image.rgb.length]).toEqual([80, 64, 80 * 64 * 3]);
      expect(new Set(image.rgb).size).toBeGreaterThan(16); // a picture, not a constant
      const again = await pipe.generate(base);
      expect(Buffer.from(again.images[0]!.rgb).equals(Buffer.from(image.rgb))).toBe(true);
      const img2img = await pipe.generate({ ...base, initImage: { data: image.rgb, width: 80, height: 64, channels: 3 }, strength: 0.5 });
      expect(img2img.images[0]!.rgb.length).toBe(80 * 64 * 3);
      expect(Buffer.from(img2img.images[0]!.rgb).equals(Buffer.from(image.rgb))).toBe(false);
    } finally {
      await pipe.dispose();
    }
  });
});

describe("writing the folder", () => {
  test("an existing output folder is refused before anything is written", async () => {
    const dir = join(work, "exists");
    await mkdir(dir);
    await expect(writeConvertedModel(await tinyCheckpoint("sd1"), dir, { dtype: "fp32" })).rejects.toThrow(
      new OutputFileError(dir, `${dir} already exists; choose a new folder for the converted model or remove it first`),
    );
    expect(await readdir(dir)).toEqual([]);
  });

  test("a checkpoint that fails half-way leaves neither the folder nor a temporary one", async () => {
    const parent = join(work, "half");
    await mkdir(parent);
    const checkpoint = await tinyCheckpoint("sd1");
    const vae = checkpoint.components.vae!;
    const broken: CheckpointSource = {
      ...checkpoint,
      components: { ...checkpoint.components, vae: { config: { ...vae.config, norm_num_groups: "four" }, weights: vae.weights } },
    };
    const seen: string[] = [];
    await expect(writeConvertedModel(broken, join(parent, "model"), { dtype: "fp32", onProgress: (p) => seen.push(p.graph) })).rejects.toThrow(ModelFileError);
    expect(seen).toEqual(["text_encoder", "unet", "vae_decoder"]); // it failed after two graphs were written
    expect(await readdir(parent)).toEqual([]);
  });
});
