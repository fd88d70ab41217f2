import { afterAll, beforeAll, describe, expect, test } from "@jest/globals";
import { mkdtemp, rename, rm, unlink, writeFile } from "node:fs/promises";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { ModelFileError } from "../../lib/errors.js";
import { locateModelFolder } from "../../lib/model/folder.js";
import { readExternalTensorRefs } from "../../lib/onnx/external-refs.js";
import { TINY_MODEL_DIR, copyTinyModel, moveWeightsToExternalData, toTensorRtDemoLayout } from "../fixtures/tiny-sd-cases/model-variants.js";

let scratch: string;
let counter = 0;
beforeAll(async () => {
  scratch = await mkdtemp(join(tmpdir(), "sd-trt-model-folder-"));
});
afterAll(async () => {
  await rm(scratch, { recursive: true, force: true });
});
const freshCopy = () => copyTinyModel(join(scratch, `copy-${counter++}`));

async function expectModelFileError(promise: Promise<unknown>, file: string | RegExp, message: RegExp): Promise<void> {
  const error = await promise.then(
    () => undefined,
    (e: unknown) => e,
  );
  expect(error).toBeInstanceOf(ModelFileError);
  const e = error as ModelFileError;
  if (typeof file === "string") expect(e.file).toBe(file);
  else expect(e.file).toMatch(file);
  expect(e.message).toMatch(message);
}

describe("locateModelFolder on the optimum layout", () => {
  test("finds every graph, the tokenizer, the scheduler config and the VAE scaling factor", async () => {
    const folder = await locateModelFolder(TINY_MODEL_DIR);
    expect(folder.layout).toBe("optimum");
    expect(folder.textEncoder.path).toBe(join(folder.dir, "text_encoder", "model.onnx"));
    expect(folder.unet.path).toBe(join(folder.dir, "unet", "model.onnx"));
    expect(folder.vaeDecoder.path).toBe(join(folder.dir, "vae_decoder", "model.onnx"));
    expect(folder.vaeEncoder?.path).toBe(join(folder.dir, "vae_encoder", "model.onnx"));
    expect(folder.unet.externalData).toEqual([]);
    expect(folder.tokenizer).toEqual({ vocab: join(folder.dir, "tokenizer", "vocab.json"), merges: join(folder.dir, "tokenizer", "merges.txt") });
    expect(folder.schedulerClass).toBe("PNDMScheduler");
    expect(folder.schedulerConfig["steps_offset"]).toBe(1);
    expect(folder.scalingFactor).toBe(0.18215);
    expect(folder.nativeSize).toBe(64); // unet sample_size 8 × 8
  });

  test("a folder that does not exist is named in the error", async () => {
    const missing = join(scratch, "no-such-model");
    await expectModelFileError(locateModelFolder(missing), missing, /model folder .*no-such-model does not exist/);
  });

  test("a missing UNet names the file it expected", async () => {
    const dir = await freshCopy();
    await unlink(join(dir, "unet", "model.onnx"));
    await expectModelFileError(locateModelFolder(dir), join(dir, "unet", "model.onnx"), /has no unet model: expected unet\/model\.onnx/);
  });

  test("a missing tokenizer file is named", async () => {
    const dir = await freshCopy();
    await unlink(join(dir, "tokenizer", "merges.txt"));
    await expectModelFileError(locateModelFolder(dir), join(dir, "tokenizer", "merges.txt"), /missing the tokenizer file .*merges\.txt/);
  });

  test("a missing scheduler config is named", async () => {
    const dir = await freshCopy();
    await unlink(join(dir, "scheduler", "scheduler_config.json"));
    await expectModelFileError(locateModelFolder(dir), /scheduler_config\.json$/, /missing .*scheduler_config\.json/);
  });

  test("a scheduler config that is not JSON is named", async () => {
    const dir = await freshCopy();
    await writeFile(join(dir, "scheduler", "scheduler_config.json"), "{ not json");
    await expectModelFileError(locateModelFolder(dir), /scheduler_config\.json$/, /is not valid JSON/);
  });

  test("a VAE config with a bad scaling_factor is named", async () => {
    const dir = await freshCopy();
    await writeFile(join(dir, "vae_decoder", "config.json"), JSON.stringify({ scaling_factor: "big" }));
    await expectModelFileError(locateModelFolder(dir), /vae_decoder[/\\]config\.json$/, /scaling_factor must be a positive number/);
  });

  test("the scaling factor defaults to 0.18215 without a VAE config", async () => {
    const dir = await freshCopy();
    await unlink(join(dir, "vae_decoder", "config.json"));
    expect((await locateModelFolder(dir)).scalingFactor).toBe(0.18215);
  });

  test("the VAE encoder is optional", async () => {
    const dir = await freshCopy();
    await rm(join(dir, "vae_encoder"), { recursive: true });
    expect((await locateModelFolder(dir)).vaeEncoder).toBeUndefined();
  });
});

describe("locateModelFolder on the TensorRT demo layout", () => {
  test("finds clip/unet/vae by their demo names and falls back to the bundled tokenizer and SD 1.x scheduler", async () => {
    const dir = await toTensorRtDemoLayout(await freshCopy());
    const folder = await locateModelFolder(dir);
    expect(folder.layout).toBe("tensorrt-demo");
    expect(folder.textEncoder.path).toBe(join(dir, "clip.opt", "model.onnx"));
    expect(folder.unet.path).toBe(join(dir, "unet.opt", "model.onnx"));
    expect(folder.vaeDecoder.path).toBe(join(dir, "vae.opt", "model.onnx"));
    expect(folder.vaeEncoder?.path).toBe(join(dir, "vae_encoder.opt", "model.onnx"));
    expect(folder.tokenizer).toBeNull();
    expect(folder.schedulerClass).toBe("PNDMScheduler");
    expect(folder.schedulerConfigFile).toBeNull();
    expect(folder.nativeSize).toBe(512);
  });

  test("plain <name>.onnx files are found too", async () => {
    const dir = await toTensorRtDemoLayout(await freshCopy());
    await rename(join(dir, "unet.opt", "model.onnx"), join(dir, "unet.onnx"));
    expect((await locateModelFolder(dir)).unet.path).toBe(join(dir, "unet.onnx"));
  });
});

describe("external data", () => {
  test("readExternalTensorRefs lists the initializers moved to a data file", async () => {
    const dir = await freshCopy();
    const unet = join(dir, "unet", "model.onnx");
    expect(await readExternalTensorRefs(unet)).toEqual([]);
    const moved = await moveWeightsToExternalData(unet, "model.onnx_data");
    expect(moved).toBeGreaterThan(5);
    const refs = await readExternalTensorRefs(unet);
    expect(refs).toHaveLength(moved);
    expect(new Set(refs.map((r) => r.location))).toEqual(new Set(["model.onnx_data"]));
    expect(refs[0]).toMatchObject({ offset: 0 });
    expect(refs.every((r) => typeof r.tensor === "string" && r.tensor.length > 0 && (r.length ?? 0) >= 1024)).toBe(true);
    const folder = await locateModelFolder(dir);
    expect(folder.unet.externalData).toEqual([join(dir, "unet", "model.onnx_data")]);
  });

  test("a missing external-data file is named, with the graph that needs it", async () => {
    const dir = await freshCopy();
    const unet = join(dir, "unet", "model.onnx");
    await moveWeightsToExternalData(unet, "weights.pb");
    await unlink(join(dir, "unet", "weights.pb"));
    await expectModelFileError(locateModelFolder(dir), join(dir, "unet", "weights.pb"), /unet[/\\]model\.onnx keeps \d+ weight tensors in "weights\.pb", but .*weights\.pb does not exist/);
  });

  test("a file that is not an ONNX protobuf is named", async () => {
    const dir = await freshCopy();
    await writeFile(join(dir, "unet", "model.onnx"), "this is not a protobuf at all");
    await expectModelFileError(locateModelFolder(dir), join(dir, "unet", "model.onnx"), /is not a valid ONNX model/);
  });
});

describe("the image size multiple the UNet needs", () => {
  async function withUnetConfig(config: Record<string, unknown> | null): Promise<string> {
    const dir = await freshCopy();
    const path = join(dir, "unet", "config.json");
    if (config === null) await unlink(path);
    else await writeFile(path, JSON.stringify(config));
    return dir;
  }

  test("8 · 2^(n−1) for n block_out_channels: 16 for the tiny model, 64 for SD 1.x", async () => {
    expect((await locateModelFolder(TINY_MODEL_DIR)).sizeMultiple).toBe(16); // [24, 32]: one downsampling
    const sd15 = await withUnetConfig({ _class_name: "UNet2DConditionModel", sample_size: 64, block_out_channels: [320, 640, 1280, 1280] });
    expect((await locateModelFolder(sd15)).sizeMultiple).toBe(64);
    expect((await locateModelFolder(await withUnetConfig({ block_out_channels: [32] }))).sizeMultiple).toBe(8);
  });

  test("8 px when the UNet config is missing or does not say (the TensorRT demo layout has none)", async () => {
    expect((await locateModelFolder(await withUnetConfig(null))).sizeMultiple).toBe(8);
    expect((await locateModelFolder(await withUnetConfig({ sample_size: 8 }))).sizeMultiple).toBe(8);
    expect((await locateModelFolder(await toTensorRtDemoLayout(await freshCopy()))).sizeMultiple).toBe(8);
  });

  test("a malformed block_out_channels is an error naming the config file", async () => {
    const dir = await withUnetConfig({ block_out_channels: "320,640" });
    await expectModelFileError(locateModelFolder(dir), join(dir, "unet", "config.json"), /block_out_channels must be a list of 1 to 8 positive integers, got "320,640"/);
  });
});
