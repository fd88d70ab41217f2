import { afterAll, beforeAll, describe, expect, test } from "@jest/globals";
import { mkdtemp, rm } from "node:fs/promises";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { ModelFileError } from "../../lib/errors.js";
import {
  describeTextEncoder,
  describeUnet,
  describeVaeDecoder,
  describeVaeEncoder,
  type GraphSignature,
  type TensorSpec,
} from "../../lib/model/graph-io.js";
import { OrtHost } from "../../lib/backends/cpu/ort-host.js";
import { TINY_MODEL_DIR, copyTinyModel, renameGraphName } from "../fixtures/tiny-sd-cases/model-variants.js";

const spec = (name: string, type: string, shape: (number | string)[]): TensorSpec => ({ name, type, shape });
const sig = (inputs: TensorSpec[], outputs: TensorSpec[]): GraphSignature => ({ inputs, outputs });

function expectUnsupported(fn: () => unknown, message: RegExp): void {
  let error: unknown;
  try {
    fn();
  } catch (e) {
    error = e;
  }
  expect(error).toBeInstanceOf(ModelFileError);
  expect((error as ModelFileError).file).toBe("x/model.onnx");
  expect((error as Error).message).toMatch(message);
}

describe("the tiny model's graphs as ONNX Runtime reports them", () => {
  let host: OrtHost;
  let scratch: string;
  beforeAll(async () => {
    host = new OrtHost();
    scratch = await mkdtemp(join(tmpdir(), "sd-trt-graph-io-"));
  });
  afterAll(async () => {
    await host.dispose();
    await rm(scratch, { recursive: true, force: true });
  });
  const signatureOf = async (path: string) => (await host.load(path)).signature;

  test("text encoder: int32 input_ids, last_hidden_state of size 32, 77 tokens dynamic", async () => {
    const io = describeTextEncoder(await signatureOf(join(TINY_MODEL_DIR, "text_encoder/model.onnx")), "te");
    expect(io).toEqual({ role: "text_encoder", idsName: "input_ids", idsType: "int32", hiddenName: "last_hidden_state", hiddenSize: 32 });
  });

  test("UNet: float32 timestep of rank 1 on its own axis is fed as [t] and broadcast", async () => {
    const io = describeUnet(await signatureOf(join(TINY_MODEL_DIR, "unet/model.onnx")), "unet");
    expect(io).toEqual({
      role: "unet",
      sampleName: "sample",
      timestepName: "timestep",
      timestepType: "float32",
      timestepLayout: "single",
      contextName: "encoder_hidden_states",
      outputName: "out_sample",
      contextSize: 32,
    });
  });

  test("VAE decoder and encoder", async () => {
    expect(describeVaeDecoder(await signatureOf(join(TINY_MODEL_DIR, "vae_decoder/model.onnx")), "d")).toEqual({ role: "vae_decoder", latentName: "latent_sample", imageName: "sample" });
    expect(describeVaeEncoder(await signatureOf(join(TINY_MODEL_DIR, "vae_encoder/model.onnx")), "e")).toEqual({
      role: "vae_encoder",
      imageName: "sample",
      outputName: "latent_sample",
      outputKind: "sample",
    });
  });

  test("a UNet whose encoder_hidden_states input was renamed is refused, naming the file and the missing input", async () => {
    const dir = await copyTinyModel(join(scratch, "renamed"));
    const path = join(dir, "unet", "model.onnx");
    expect(await renameGraphName(path, "encoder_hidden_states", "context_hidden_states")).toBeGreaterThan(1);
    const signature = await signatureOf(path); // ONNX Runtime loads it: it is a valid graph with another input name
    expect(signature.inputs.map((i) => i.name)).toEqual(["sample", "timestep", "context_hidden_states"]);
    let error: unknown;
    try {
      describeUnet(signature, path);
    } catch (e) {
      error = e;
    }
    expect(error).toBeInstanceOf(ModelFileError);
    expect((error as ModelFileError).file).toBe(path);
    expect((error as Error).message).toContain(path);
    expect((error as Error).message).toMatch(/no text embeddings input \(expected an input named "encoder_hidden_states"\)/);
  });
});

describe("I/O contracts of other exports", () => {
  const unetInputs = (timestep: TensorSpec) => [spec("sample", "float32", ["batch", 4, "h", "w"]), timestep, spec("encoder_hidden_states", "float32", ["batch", "seq", 768])];
  const unetOut = [spec("out_sample", "float32", ["batch", 4, "h", "w"])];

  test("optimum ≥ 1.24: a float32 scalar timestep", () => {
    expect(describeUnet(sig(unetInputs(spec("timestep", "float32", [])), unetOut), "u").timestepLayout).toBe("scalar");
  });

  test("optimum ≤ 1.22: an int64 timestep on its own axis", () => {
    const io = describeUnet(sig(unetInputs(spec("timestep", "int64", ["steps"])), unetOut), "u");
    expect([io.timestepType, io.timestepLayout]).toEqual(["int64", "single"]);
  });

  test("a timestep on the sample's batch axis takes one value per row", () => {
    expect(describeUnet(sig(unetInputs(spec("timestep", "float32", ["batch"])), unetOut), "u").timestepLayout).toBe("per-row");
    expect(describeUnet(sig(unetInputs(spec("timestep", "float32", [1])), unetOut), "u").timestepLayout).toBe("single");
  });

  test("TensorRT demo names: latent output, static shapes become limits", () => {
    const io = describeUnet(
      sig([spec("sample", "float32", [2, 4, 64, 64]), spec("timestep", "float32", [1]), spec("encoder_hidden_states", "float32", [2, 77, 768])], [spec("latent", "float32", [2, 4, 64, 64])]),
      "u",
    );
    expect(io).toMatchObject({ outputName: "latent", staticBatch: 2, staticHeight: 64, staticWidth: 64, contextSize: 768 });
    expect(describeVaeDecoder(sig([spec("latent", "float32", ["B", 4, "H", "W"])], [spec("images", "float32", ["B", 3, "8H", "8W"])]), "v")).toEqual({ role: "vae_decoder", latentName: "latent", imageName: "images" });
  });

  test("int64 input_ids and a text_embeddings output", () => {
    const io = describeTextEncoder(sig([spec("input_ids", "int64", ["B", 77])], [spec("text_embeddings", "float32", ["B", 77, 768])]), "t");
    expect(io).toEqual({ role: "text_encoder", idsName: "input_ids", idsType: "int64", hiddenName: "text_embeddings", hiddenSize: 768, sequenceLength: 77 });
  });

  test("current optimum's VAE encoder returns latent_parameters (mean and log-variance)", () => {
    const io = describeVaeEncoder(sig([spec("sample", "float32", ["B", 3, "H", "W"])], [spec("latent_parameters", "float32", ["B", 8, "h", "w"])]), "e");
    expect(io.outputKind).toBe("parameters");
  });

  test("unsupported graphs are refused with the file and what is wrong", () => {
    expectUnsupported(() => describeUnet(sig(unetInputs(spec("timestep", "float16", [1])), unetOut), "x/model.onnx"), /timestep.* is float16.*TensorRT backend/);
    expectUnsupported(
      () => describeUnet(sig([...unetInputs(spec("timestep", "float32", [1])), spec("text_embeds", "float32", ["B", 1280])], unetOut), "x/model.onnx"),
      /input "text_embeds" not used by a SD 1\.x\/2\.x pipeline/,
    );
    expectUnsupported(() => describeTextEncoder(sig([spec("input_ids", "int32", ["B", 77]), spec("attention_mask", "int64", ["B", 77])], [spec("last_hidden_state", "float32", ["B", 77, 768])]), "x/model.onnx"), /"attention_mask"/);
    expectUnsupported(() => describeTextEncoder(sig([spec("input_ids", "float32", ["B", 77])], [spec("last_hidden_state", "float32", ["B", 77, 768])]), "x/model.onnx"), /"input_ids" is float32, expected int32 or int64/);
    expectUnsupported(() => describeVaeDecoder(sig([spec("latent_sample", "float32", ["B", 16, "h", "w"])], [spec("sample", "float32", ["B", 3, "H", "W"])]), "x/model.onnx"), /16 channels, expected 4/);
    expectUnsupported(() => describeUnet(sig([spec("sample", "float32", ["B", 4, "h", "w"])], unetOut), "x/model.onnx"), /no timestep input/);
  });
});
