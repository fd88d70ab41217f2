/**
 * The converter's graphs (lib/convert/graphs) built from the tiny reference checkpoints
 * (test/fixtures/checkpoints, real CLIPTextModel/UNet2DConditionModel/AutoencoderKL classes with
 * random weights) and run in ONNX Runtime against what torch computed on the same inputs
 * (component_goldens, scripts/reference/gen_tiny_checkpoints.py).
 *
 * Error measure: max |onnx − torch| / max |torch| over each output tensor.
 * - fp32 graphs: ≤ 1e-4 (measured worst: 2.2e-6, the sd1 VAE decoder; the rest ≤ 1.2e-6).
 * - fp16 graphs (fp16 weights and activations, norms and softmax in fp32, fp32 I/O): ≤ 2e-3
 *   (measured worst: 7.3e-4, the sd1 VAE decoder; CLIP ≤ 5.7e-4, UNet ≤ 4.2e-4, the deep UNet
 *   6.2e-4, SDXL's text encoder 2 5.2e-4 and UNet 3.6e-4). ORT's CPU
 *   provider runs fp16 nodes without an fp16 kernel in fp32 between casts, so this measures fp16
 *   storage of weights and activations; a GPU adds fp16 arithmetic (test/gpu covers engines).
 */
import { afterAll, beforeAll, describe, expect, test } from "@jest/globals";
import { mkdir, mkdtemp, readdir, rm } from "node:fs/promises";
import { tmpdir } from "node:os";
import { join } from "node:path";
import ort from "onnxruntime-node";
import { buildClipTextGraph } from "../../lib/convert/graphs/clip.js";
import { writeGraphFile } from "../../lib/convert/graphs/graph-file.js";
import type { GraphDtype } from "../../lib/convert/graphs/layers.js";
import { buildUnetGraph } from "../../lib/convert/graphs/unet.js";
import { buildVaeDecoderGraph, buildVaeEncoderGraph } from "../../lib/convert/graphs/vae.js";
import type { CheckpointSource } from "../../lib/convert/types.js";
import { ModelFileError } from "../../lib/errors.js";
import { readExternalTensorRefs } from "../../lib/onnx/external-refs.js";
import { ExternalDataReader, isExternal, OnnxModel, readFloat32Tensor, tensorHeader } from "../../lib/onnx/model.js";
import { DataType } from "../../lib/onnx/schema.js";
import { fixtureComponent, type GoldenArray, relativeError, tinyCheckpoint, tinyGoldens } from "../support/checkpoint-fixtures.js";

const FAMILIES = ["sd1", "sd2"] as const;
const BOUND: Record<GraphDtype, number> = { fp32: 1e-4, fp16: 2e-3 };

let work: string;
beforeAll(async () => {
  work = await mkdtemp(join(tmpdir(), "sd-trt-graphs-"));
});
afterAll(async () => {
  await rm(work, { recursive: true, force: true });
});

function feed(goldens: Map<string, GoldenArray>, name: string): ort.Tensor {
  const g = goldens.get(name)!;
  return g.data instanceof Int32Array ? new ort.Tensor("int32", g.data, [...g.shape]) : new ort.Tensor("float32", g.data, [...g.shape]);
}

function expectClose(output: ort.Tensor, golden: GoldenArray, bound: number): number {
  expect(output.type).toBe("float32");
  expect([...output.dims]).toEqual([...golden.shape]);
  const error = relativeError(output.data as Float32Array, golden.data);
  expect(error).toBeLessThanOrEqual(bound);
  return error;
}

type Build = typeof buildUnetGraph;

async function session(name: string, checkpoint: CheckpointSource, component: "text_encoder" | "unet" | "vae", build: Build, dtype: GraphDtype, extra: object = {}): Promise<ort.InferenceSession> {
  const path = join(work, `${checkpoint.family}-${name}-${dtype}.onnx`);
  await writeGraphFile(path, name, (g) => build(g, checkpoint.components[component]!, { dtype, origin: `${checkpoint.family} ${component}`, ...extra }));
  return ort.InferenceSession.create(path);
}

describe.each(FAMILIES)("%s checkpoint", (family) => {
  let checkpoint: CheckpointSource;
  let goldens: Map<string, GoldenArray>;
  beforeAll(async () => {
    checkpoint = await tinyCheckpoint(family);
    goldens = await tinyGoldens(family);
  });

  describe.each(["fp32", "fp16"] as const)("%s graph", (dtype) => {
    test("the text encoder computes CLIPTextModel's last_hidden_state, pooler_output and every hidden state", async () => {
      const s = await session("text_encoder", checkpoint, "text_encoder", buildClipTextGraph as Build, dtype, { hiddenStates: true });
      const out = await s.run({ input_ids: feed(goldens, "text_encoder.input_ids") });
      for (const name of ["last_hidden_state", "pooler_output", "hidden_states.0", "hidden_states.1", "hidden_states.2"]) {
        expectClose(out[name]!, goldens.get(`text_encoder.${name}`)!, BOUND[dtype]);
      }
    });

    test("the UNet computes UNet2DConditionModel's output at an integer and a fractional timestep", async () => {
      const s = await session("unet", checkpoint, "unet", buildUnetGraph, dtype);
      for (const k of [0, 1]) {
        const out = await s.run({ sample: feed(goldens, "unet.sample"), timestep: feed(goldens, `unet.timestep.${k}`), encoder_hidden_states: feed(goldens, "unet.encoder_hidden_states") });
        expectClose(out["out_sample"]!, goldens.get(`unet.out_sample.${k}`)!, BOUND[dtype]);
      }
      // The two timesteps really give different outputs (the time embedding is in the graph).
      expect(relativeError(goldens.get("unet.out_sample.0")!.data, goldens.get("unet.out_sample.1")!.data)).toBeGreaterThan(10 * BOUND[dtype]);
    });

    test("the VAE decoder computes post_quant_conv + Decoder, the encoder Encoder + quant_conv (the posterior's moments)", async () => {
      const decoder = await session("vae_decoder", checkpoint, "vae", buildVaeDecoderGraph, dtype);
      const decoded = await decoder.run({ latent_sample: feed(goldens, "vae.decoder.latent_sample") });
      expectClose(decoded["sample"]!, goldens.get("vae.decoder.sample")!, BOUND[dtype]);
      const encoder = await session("vae_encoder", checkpoint, "vae", buildVaeEncoderGraph, dtype);
      const encoded = await encoder.run({ sample: feed(goldens, "vae.encoder.sample") });
      expectClose(encoded["latent_parameters"]!, goldens.get("vae.encoder.moments")!, BOUND[dtype]);
    });
  });
});

describe("a UNet with SD 1.5's block layout (4 levels, 2 layers per block, a 2-deep transformer at level 1)", () => {
  test.each(["fp32", "fp16"] as const)("the %s graph computes UNet2DConditionModel's output", async (dtype) => {
    const unet = await fixtureComponent("deep-unet", "unet");
    const goldens = await tinyGoldens("deep-unet");
    const path = join(work, `deep-unet-${dtype}.onnx`);
    await writeGraphFile(path, "unet", (g) => buildUnetGraph(g, unet, { dtype, origin: "deep-unet" }));
    const s = await ort.InferenceSession.create(path);
    const out = await s.run({ sample: feed(goldens, "unet.sample"), timestep: feed(goldens, "unet.timestep.0"), encoder_hidden_states: feed(goldens, "unet.encoder_hidden_states") });
    expectClose(out["out_sample"]!, goldens.get("unet.out_sample.0")!, BOUND[dtype]);
  });
});

describe("SDXL's parts: CLIPTextModelWithProjection and a UNet with the text_time embedding", () => {
  test.each(["fp32", "fp16"] as const)("the %s second text encoder computes text_embeds, last_hidden_state and every hidden state", async (dtype) => {
    const encoder = await fixtureComponent("sdxl-parts", "text_encoder_2");
    const goldens = await tinyGoldens("sdxl-parts");
    const path = join(work, `sdxl-te2-${dtype}.onnx`);
    await writeGraphFile(path, "text_encoder_2", (g) => buildClipTextGraph(g, encoder, { dtype, hiddenStates: true, origin: "te2" }));
    const s = await ort.InferenceSession.create(path);
    expect(s.outputNames).toEqual(["last_hidden_state", "text_embeds", "hidden_states.0", "hidden_states.1", "hidden_states.2"]);
    const out = await s.run({ input_ids: feed(goldens, "text_encoder_2.input_ids") });
    for (const name of ["text_embeds", "last_hidden_state", "hidden_states.0", "hidden_states.1", "hidden_states.2"]) {
      expectClose(out[name]!, goldens.get(`text_encoder_2.${name}`)!, BOUND[dtype]);
    }
  });

  test("with an eos_token_id other than 2 the pooled row is the first position holding that id", async () => {
    const encoder = await fixtureComponent("sdxl-parts", "text_encoder_2");
    const goldens = await tinyGoldens("sdxl-parts");
    const path = join(work, "sdxl-te2-eos.onnx");
    const firstA = { config: { ...encoder.config, eos_token_id: 320 }, weights: encoder.weights };
    await writeGraphFile(path, "text_encoder_2", (g) => buildClipTextGraph(g, firstA, { dtype: "fp32", origin: "te2" }));
    const out = await (await ort.InferenceSession.create(path)).run({ input_ids: feed(goldens, "text_encoder_2.input_ids") });
    const expected = goldens.get("text_encoder_2.text_embeds.eos_token_id_320")!;
    expectClose(out["text_embeds"]!, expected, BOUND.fp32);
    expect(relativeError(expected.data, goldens.get("text_encoder_2.text_embeds")!.data)).toBeGreaterThan(0.1); // a different row than argmax's
  });

  test.each(["fp32", "fp16"] as const)("the %s UNet takes text_embeds and time_ids and computes UNet2DConditionModel's output", async (dtype) => {
    const unet = await fixtureComponent("sdxl-parts", "unet");
    const goldens = await tinyGoldens("sdxl-parts");
    const path = join(work, `sdxl-unet-${dtype}.onnx`);
    await writeGraphFile(path, "unet", (g) => buildUnetGraph(g, unet, { dtype, origin: "sdxl unet" }));
    const s = await ort.InferenceSession.create(path);
    const inputs = Object.fromEntries(["sample", "timestep", "encoder_hidden_states", "text_embeds", "time_ids"].map((n) => [n, feed(goldens, n === "timestep" ? "unet.timestep.0" : `unet.${n}`)]));
    const out = await s.run(inputs);
    expectClose(out["out_sample"]!, goldens.get("unet.out_sample.0")!, BOUND[dtype]);
  });
});

describe("weights in the converted graphs", () => {
  test("every weight is one initializer named by its diffusers key, Linear weights transposed, read back from model.onnx_data", async () => {
    const checkpoint = await tinyCheckpoint("sd1");
    const unet = checkpoint.components.unet!;
    const path = join(work, "naming", "model.onnx");
    await mkdir(join(work, "naming"));
    await writeGraphFile(path, "unet", (g) => buildUnetGraph(g, unet, { dtype: "fp32", origin: "unet" }));
    expect((await readdir(join(work, "naming"))).sort()).toEqual(["model.onnx", "model.onnx_data"]);
    const model = await OnnxModel.read(path);
    expect(model.opsetVersion()).toBe(17);
    const byName = new Map(model.initializers().map((t) => [tensorHeader(t).name, t]));
    const reader = new ExternalDataReader();
    let external = 0;
    try {
      for (const key of unet.weights.keys()) {
        const t = byName.get(key);
        expect(t).toBeDefined();
        const source = unet.weights.get(key)!;
        const { dims, dataType } = tensorHeader(t!);
        expect(dataType).toBe(DataType.FLOAT);
        const stored = await readFloat32Tensor(t!, model, reader);
        const values = await source.read();
        // Linear weights (to_q, ff.net.0.proj, time_emb_proj, …) are [in, out]; convs, norms and biases keep torch's layout.
        if (source.shape.length === 2) {
          const [rows, cols] = source.shape as [number, number];
          expect(dims).toEqual([cols, rows]);
          const transposed = new Float32Array(values.length);
          for (let r = 0; r < rows; r++) for (let c = 0; c < cols; c++) transposed[c * rows + r] = values[r * cols + c]!;
          expect(stored).toEqual(transposed);
        } else {
          expect(dims).toEqual([...source.shape]);
          expect(stored).toEqual(values);
        }
        if (isExternal(t!)) external++;
      }
    } finally {
      await reader.close();
    }
    expect(external).toBeGreaterThan(10); // the large ones live in model.onnx_data
    // The scanner engine manifests and TensorRT refits use finds them by the same names, all in one file.
    const refs = await readExternalTensorRefs(path);
    expect(refs.length).toBe(external);
    expect(new Set(refs.map((r) => r.location))).toEqual(new Set(["model.onnx_data"]));
    expect(refs.every((r) => unet.weights.get(r.tensor) !== undefined && r.offset! % 64 === 0)).toBe(true);
  });

  test("an fp16 graph stores Linear/Conv weights in fp16 and norm parameters in fp32", async () => {
    const checkpoint = await tinyCheckpoint("sd1");
    const path = join(work, "sd1-te-types.onnx");
    await writeGraphFile(path, "text_encoder", (g) => buildClipTextGraph(g, checkpoint.components.text_encoder!, { dtype: "fp16", origin: "te" }));
    const types = new Map((await OnnxModel.read(path)).initializers().map((t) => [tensorHeader(t).name, tensorHeader(t).dataType]));
    expect(types.get("text_model.encoder.layers.0.self_attn.q_proj.weight")).toBe(DataType.FLOAT16);
    expect(types.get("text_model.embeddings.token_embedding.weight")).toBe(DataType.FLOAT16);
    expect(types.get("text_model.encoder.layers.0.layer_norm1.weight")).toBe(DataType.FLOAT);
    expect(types.get("text_model.final_layer_norm.bias")).toBe(DataType.FLOAT);
  });

  test("a missing weight is refused naming the key; a weight the graph does not read is refused too; no partial files stay", async () => {
    const checkpoint = await tinyCheckpoint("sd1");
    const unet = checkpoint.components.unet!;
    const dir = join(work, "refused");
    await mkdir(dir);
    const without = { config: unet.config, weights: { keys: () => [...unet.weights.keys()].filter((k) => k !== "mid_block.resnets.1.conv2.weight"), get: (k: string) => (k === "mid_block.resnets.1.conv2.weight" ? undefined : unet.weights.get(k)) } };
    await expect(writeGraphFile(join(dir, "model.onnx"), "unet", (g) => buildUnetGraph(g, without, { dtype: "fp32", origin: "x.safetensors unet" }))).rejects.toThrow(
      new ModelFileError("x.safetensors unet", 'x.safetensors unet: the checkpoint has no weight "mid_block.resnets.1.conv2.weight", which this model\'s config needs'),
    );
    const extra = { ...unet.weights.get("conv_in.bias")!, key: "add_embedding.linear_1.bias" };
    const withExtra = { config: unet.config, weights: { keys: () => [...unet.weights.keys(), extra.key], get: (k: string) => (k === extra.key ? extra : unet.weights.get(k)) } };
    await expect(writeGraphFile(join(dir, "model.onnx"), "unet", (g) => buildUnetGraph(g, withExtra, { dtype: "fp32", origin: "u" }))).rejects.toThrow(/1 weight\(s\) are not used by the converted graph \("add_embedding.linear_1.bias"\)/);
    const classEmbedding = { config: { ...unet.config, class_embed_type: "timestep" }, weights: unet.weights };
    await expect(writeGraphFile(join(dir, "model.onnx"), "unet", (g) => buildUnetGraph(g, classEmbedding, { dtype: "fp32", origin: "u" }))).rejects.toThrow('u: config "class_embed_type" = "timestep" is not supported by sd-trt\'s converter (supported: null)');
    expect(await readdir(dir)).toEqual([]);
  });
});
