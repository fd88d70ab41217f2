import { describe, expect, test } from "@jest/globals";
import { join } from "node:path";
import { InvalidOptionError } from "../../lib/errors.js";
import { OnnxModel } from "../../lib/onnx/model.js";
import { parseShapeOptions, profilesFor, shapeArguments, type ShapeOptions } from "../../lib/backends/tensorrt/profiles.js";
import { declaredShapes, describeForEngine, onnxSignature } from "../../lib/backends/tensorrt/roles.js";
import type { ModelRole } from "../../lib/model/graph-io.js";

const TINY = join(process.cwd(), "models", "tiny-sd");

function rejects(options: ShapeOptions, option: string, message: RegExp): void {
  let error: unknown;
  try {
    parseShapeOptions(options);
  } catch (e) {
    error = e;
  }
  expect(error).toBeInstanceOf(InvalidOptionError);
  expect((error as InvalidOptionError).option).toBe(option);
  expect((error as Error).message).toMatch(message);
}

describe("shape options", () => {
  test("defaults to one static 512x512 image", () => {
    expect(parseShapeOptions({})).toEqual({
      batch: { min: 1, opt: 1, max: 1 },
      width: { min: 512, opt: 512, max: 512 },
      height: { min: 512, opt: 512, max: 512 },
      dynamic: false,
      promptChunks: { min: 1, opt: 1, max: 3 },
    });
  });

  test("--max-prompt-chunks sets the longest prompt (1 … 32 chunks of 75 tokens), named when out of range", () => {
    expect(parseShapeOptions({ maxPromptChunks: 1 }).promptChunks).toEqual({ min: 1, opt: 1, max: 1 });
    expect(parseShapeOptions({ maxPromptChunks: "8" }).promptChunks).toEqual({ min: 1, opt: 1, max: 8 });
    rejects({ maxPromptChunks: 0 }, "--max-prompt-chunks", /--max-prompt-chunks must be between 1 and 32/);
    rejects({ maxPromptChunks: 33 }, "--max-prompt-chunks", /--max-prompt-chunks must be between 1 and 32/);
    rejects({ maxPromptChunks: "1-3" }, "--max-prompt-chunks", /--max-prompt-chunks must be one number from 1 to 32/);
  });

  test("a batch range with one size is static (one profile per batch size)", () => {
    const shapes = parseShapeOptions({ batch: "1-4", size: "768x512" });
    expect(shapes.batch).toEqual({ min: 1, opt: 4, max: 4 });
    expect(shapes.width).toEqual({ min: 768, opt: 768, max: 768 });
    expect(shapes.height).toEqual({ min: 512, opt: 512, max: 512 });
    expect(shapes.dynamic).toBe(false);
  });

  test("size ranges need --dynamic; the first size of a range is the one optimised for", () => {
    rejects({ size: "512x512-768x768" }, "--size", /static unless --dynamic is given/);
    rejects({ width: "512-768", height: "512" }, "--width", /--dynamic/);
    const shapes = parseShapeOptions({ batch: "1-2", size: "512x512-768x640", dynamic: true });
    expect(shapes.width).toEqual({ min: 512, opt: 512, max: 768 });
    expect(shapes.height).toEqual({ min: 512, opt: 512, max: 640 });
    expect(parseShapeOptions({ width: "512-1024", height: 512, dynamic: true }).width).toEqual({ min: 512, opt: 512, max: 1024 });
  });

  test("every malformed option is named in its message", () => {
    rejects({ batch: "0" }, "--batch", /--batch must be between 1 and 64, got "0"/);
    rejects({ batch: "4-1" }, "--batch", /from low to high/);
    rejects({ batch: "two" }, "--batch", /a batch size like "4" or a range like "1-4"/);
    rejects({ batch: "1-16" }, "--batch", /16 static profiles \(at most 8\).*--dynamic/);
    rejects({ size: "512" }, "--size", /WIDTHxHEIGHT/);
    rejects({ size: "500x512" }, "--size", /multiples of 8/);
    rejects({ size: "8192x512" }, "--size", /from 64 to 4096/);
    rejects({ size: "768x768-512x512", dynamic: true }, "--size", /smaller size to the larger/);
    rejects({ size: "512x512", width: "512" }, "--size", /cannot be combined with --width/);
    rejects({ width: "512" }, "--height", /--height is needed with --width/);
    rejects({ height: "512" }, "--width", /--width is needed with --height/);
    rejects({ width: "512", height: "100" }, "--height", /multiples of 8/);
  });

  test("a wide dynamic batch range is allowed (one profile)", () => {
    expect(parseShapeOptions({ batch: "1-32", dynamic: true }).batch).toEqual({ min: 1, opt: 32, max: 32 });
  });

  test("the command-line form round-trips", () => {
    for (const options of [{ batch: "1-4", size: "512x512" }, { batch: "2", size: "512x768-1024x1024", dynamic: true }]) {
      const shapes = parseShapeOptions(options);
      const text = shapeArguments(shapes);
      const m = /--batch (\S+) --size (\S+)( --dynamic)?/.exec(text)!;
      expect(parseShapeOptions({ batch: m[1], size: m[2], dynamic: m[3] !== undefined })).toEqual(shapes);
    }
  });
});

async function contractOf(role: ModelRole) {
  const file = join(TINY, role, "model.onnx");
  const model = await OnnxModel.read(file);
  const signature = onnxSignature(model);
  return { file, contract: describeForEngine(role, signature, file), declared: declaredShapes(signature) };
}

describe("optimization profiles of the tiny-sd models", () => {
  test("static: one profile per batch size, CFG doubles the text encoder and UNet batch", async () => {
    const shapes = parseShapeOptions({ batch: "1-2", size: "64x128" });
    const unet = await contractOf("unet");
    expect(profilesFor(unet.contract, shapes, { file: unet.file, declared: unet.declared, hiddenSize: 32 })).toEqual([
      {
        sample: { min: [2, 4, 16, 8], opt: [2, 4, 16, 8], max: [2, 4, 16, 8] },
        timestep: { min: [1], opt: [1], max: [1] },
        encoder_hidden_states: { min: [2, 77, 32], opt: [2, 77, 32], max: [2, 231, 32] }, // up to 3 chunks of 77
      },
      {
        sample: { min: [4, 4, 16, 8], opt: [4, 4, 16, 8], max: [4, 4, 16, 8] },
        timestep: { min: [1], opt: [1], max: [1] },
        encoder_hidden_states: { min: [4, 77, 32], opt: [4, 77, 32], max: [4, 231, 32] },
      },
    ]);
    const text = await contractOf("text_encoder");
    expect(profilesFor(text.contract, shapes, { file: text.file, declared: text.declared, hiddenSize: 32 }).map((p) => p.input_ids)).toEqual([
      { min: [2, 77], opt: [2, 77], max: [6, 77] }, // every chunk of 2B prompts
      { min: [4, 77], opt: [4, 77], max: [12, 77] },
    ]);
    const decoder = await contractOf("vae_decoder");
    expect(profilesFor(decoder.contract, shapes, { file: decoder.file, declared: decoder.declared, hiddenSize: 32 })[1]).toEqual({
      latent_sample: { min: [2, 4, 16, 8], opt: [2, 4, 16, 8], max: [2, 4, 16, 8] },
    });
    const encoder = await contractOf("vae_encoder");
    expect(profilesFor(encoder.contract, shapes, { file: encoder.file, declared: encoder.declared, hiddenSize: 32 })[0]).toEqual({
      sample: { min: [1, 3, 128, 64], opt: [1, 3, 128, 64], max: [1, 3, 128, 64] },
    });
  });

  test("dynamic: one profile over the ranges; without guidance the UNet may run at batch B", async () => {
    const shapes = parseShapeOptions({ batch: "1-4", size: "512x512-768x1024", dynamic: true });
    const unet = await contractOf("unet");
    const [profile, ...rest] = profilesFor(unet.contract, shapes, { file: unet.file, declared: unet.declared, hiddenSize: 32 });
    expect(rest).toEqual([]);
    expect(profile!.sample).toEqual({ min: [1, 4, 64, 64], opt: [8, 4, 64, 64], max: [8, 4, 128, 96] });
    expect(profile!.encoder_hidden_states).toEqual({ min: [1, 77, 32], opt: [8, 77, 32], max: [8, 231, 32] });
  });

  test("a fixed axis of the export that the shapes contradict names the option to change", async () => {
    const unet = await contractOf("unet");
    const declared = { ...unet.declared, sample: ["batch_size", 4, 64, 64] };
    const shapes = parseShapeOptions({ size: "768x768" });
    let error: unknown;
    try {
      profilesFor(unet.contract, shapes, { file: "unet/model.onnx", declared, hiddenSize: 32 });
    } catch (e) {
      error = e;
    }
    expect(error).toBeInstanceOf(InvalidOptionError);
    expect((error as InvalidOptionError).option).toBe("--height");
    expect((error as Error).message).toMatch(/unet\/model\.onnx: input sample has a fixed latent height of 64, but the engine would need 96 \(8× for pixels\): change --size \(or --height\)/);
    // The export's own hidden size is checked too.
    expect(() => profilesFor(unet.contract, parseShapeOptions({}), { file: "unet/model.onnx", declared: unet.declared, hiddenSize: 768 })).toThrow(
      /fixed hidden size of 32, but the engine would need 768/,
    );
  });

  test("inputs whose every axis is fixed get no profile entry", async () => {
    const unet = await contractOf("unet");
    const declared = { sample: [2, 4, 8, 8], timestep: [1], encoder_hidden_states: [2, 77, 32] };
    const profiles = profilesFor(unet.contract, parseShapeOptions({ size: "64x64", maxPromptChunks: 1 }), { file: unet.file, declared, hiddenSize: 32 });
    expect(profiles).toEqual([{}]);
  });

  test("an export whose text length is fixed at 77 takes long prompts only after a re-export: --max-prompt-chunks is named", async () => {
    const unet = await contractOf("unet");
    const declared = { ...unet.declared, encoder_hidden_states: ["batch", 77, 32] };
    let error: unknown;
    try {
      profilesFor(unet.contract, parseShapeOptions({ size: "64x64" }), { file: "unet/model.onnx", declared, hiddenSize: 32 });
    } catch (e) {
      error = e;
    }
    expect(error).toMatchObject({ option: "--max-prompt-chunks" });
    expect((error as Error).message).toBe(
      "unet/model.onnx: input encoder_hidden_states has a fixed sequence length of 77, but the engine would need 77-231: change --max-prompt-chunks or export the model with a dynamic sequence length",
    );
  });
});
