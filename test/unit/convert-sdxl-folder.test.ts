/**
 * Converting SDXL (writeConvertedModel, lib/convert/graphs/folder.ts): the tiny SDXL base of
 * test/fixtures/checkpoints/sdxl from its three forms (single file fp32, single file fp16, diffusers
 * folder) becomes an optimum-layout SDXL folder whose every graph, run in ONNX Runtime, gives what torch
 * computed (component_goldens, scripts/reference/gen_tiny_sdxl_single_file.py), and whose graph
 * contracts are those of optimum's SDXL export (test/fixtures/sdxl/tiny-sdxl, issue 13's reference).
 *
 * Error measure: max |onnx − torch| / max |torch| per output.
 * - fp32 graphs: ≤ 1e-4 (measured worst: 3.1e-6, the VAE decoder; the rest ≤ 1.9e-6), from every form.
 * - fp16 graphs: ≤ 3e-3 (measured worst: 2.15e-3, text_encoder's last_hidden_state: the final layer norm
 *   of the 4-wide tiny CLIP normalises over 4 values, which magnifies the fp16 rounding of its input;
 *   everything else ≤ 8.9e-4: text_encoder_2 8.9e-4, UNet 4.9e-4). The VAE graphs stay fp32 in an fp16
 *   conversion (force_upcast), so they are held to the fp32 bound from every form. As in
 *   convert-graphs-components.test.ts this measures fp16 storage of weights and activations (the CPU
 *   provider computes between casts in fp32).
 */
import { afterAll, beforeAll, describe, expect, test } from "@jest/globals";
import { mkdtemp, readdir, readFile, rm, writeFile } from "node:fs/promises";
import { tmpdir } from "node:os";
import { join } from "node:path";
import ort from "onnxruntime-node";
import { readCheckpoint } from "../../lib/convert/checkpoint/index.js";
import { type ConvertProgress, writeConvertedModel } from "../../lib/convert/graphs/folder.js";
import type { GraphDtype } from "../../lib/convert/graphs/layers.js";
import { ModelFileError } from "../../lib/errors.js";
import { exportPrecision } from "../../lib/backends/tensorrt/roles.js";
import { OnnxModel } from "../../lib/onnx/model.js";
import { ClipTokenizer } from "../../lib/tokenizer/clip-tokenizer.js";
import { CHECKPOINTS, type GoldenArray, relativeError, tinyGoldens } from "../support/checkpoint-fixtures.js";

const SDXL = join(CHECKPOINTS, "sdxl");
const FOLDER = join(SDXL, "diffusers");
/** issue 13's optimum-layout export of its tiny SDXL (the contract the SDXL pipeline reads). */
const OPTIMUM = join(process.cwd(), "test", "fixtures", "sdxl", "tiny-sdxl");
const GRAPHS = ["text_encoder", "text_encoder_2", "unet", "vae_decoder", "vae_encoder"];
const BOUND: Record<GraphDtype, number> = { fp32: 1e-4, fp16: 3e-3 };

const SOURCES = [
  ["single file fp32", "single_file.safetensors", "fp32"],
  ["single file fp16", "single_file.fp16.safetensors", "fp32"],
  ["diffusers folder", "diffusers", "fp32"],
  ["single file fp16", "single_file.fp16.safetensors", "fp16"],
] as const;

let work: string;
let goldens: Map<string, GoldenArray>;
beforeAll(async () => {
  work = await mkdtemp(join(tmpdir(), "sd-trt-sdxl-convert-"));
  goldens = await tinyGoldens("sdxl");
});
afterAll(async () => {
  await rm(work, { recursive: true, force: true });
});

const json = async (path: string) => JSON.parse(await readFile(path, "utf8")) as Record<string, unknown>;

function feed(name: string, type?: "int32"): ort.Tensor {
  const g = goldens.get(name)!;
  return new ort.Tensor(type ?? (g.data instanceof Int32Array ? "int32" : "float32"), g.data, [...g.shape]);
}

function expectClose(output: ort.Tensor | undefined, golden: string, bound: number): void {
  const want = goldens.get(golden)!;
  expect(output?.dims).toEqual(want.shape);
  const error = relativeError(output!.data as Float32Array, want.data);
  expect({ golden, within: error <= bound }).toEqual({ golden, within: true });
}

describe.each(SOURCES)("the tiny SDXL from its %s (%s) converted in %s", (_form, name, dtype) => {
  let dir: string;
  const progress: ConvertProgress[] = [];
  beforeAll(async () => {
    const path = join(SDXL, name);
    const source = await readCheckpoint(path, name === "diffusers" ? {} : { configFolder: FOLDER });
    dir = join(work, `${name}-${dtype}`);
    await writeConvertedModel(source, dir, { dtype, onProgress: (p) => progress.push(p) });
  });
  const run = async (graph: string, feeds: Record<string, ort.Tensor>) => (await ort.InferenceSession.create(join(dir, graph, "model.onnx"))).run(feeds);

  test("writes the SDXL folder: both text encoders and tokenizers, the UNet, the VAE halves", async () => {
    expect((await readdir(dir)).sort()).toEqual(["model_index.json", "scheduler", ...GRAPHS.slice(0, 2), "tokenizer", "tokenizer_2", ...GRAPHS.slice(2)].sort());
    expect(progress.map((p) => `${p.index + 1}/${p.count} ${p.graph}`)).toEqual(GRAPHS.map((g, i) => `${i + 1}/5 ${g}`));
  });

  test("text_encoder computes CLIPTextModel's last_hidden_state, pooler_output and hidden_states.0…2", async () => {
    const out = await run("text_encoder", { input_ids: feed("text_encoder.input_ids") });
    for (const output of ["last_hidden_state", "pooler_output", "hidden_states.0", "hidden_states.1", "hidden_states.2"]) expectClose(out[output], `text_encoder.${output}`, BOUND[dtype]);
  });

  test("text_encoder_2 computes CLIPTextModelWithProjection's text_embeds, last_hidden_state and hidden_states.0…3", async () => {
    const out = await run("text_encoder_2", { input_ids: feed("text_encoder_2.input_ids") });
    for (const output of ["text_embeds", "last_hidden_state", "hidden_states.0", "hidden_states.1", "hidden_states.2", "hidden_states.3"]) {
      expectClose(out[output], `text_encoder_2.${output}`, BOUND[dtype]);
    }
  });

  test("the UNet computes UNet2DConditionModel's output with text_embeds and time_ids", async () => {
    const names = ["sample", "encoder_hidden_states", "text_embeds", "time_ids"];
    const out = await run("unet", { ...Object.fromEntries(names.map((n) => [n, feed(`unet.${n}`)])), timestep: feed("unet.timestep.0") });
    expectClose(out["out_sample"], "unet.out_sample.0", BOUND[dtype]);
  });

  test("the VAE decoder and encoder compute AutoencoderKL's decode and encode (quant_conv moments), in fp32", async () => {
    expectClose((await run("vae_decoder", { latent_sample: feed("vae.decoder.latent_sample") }))["sample"], "vae.decoder.sample", BOUND.fp32);
    expectClose((await run("vae_encoder", { sample: feed("vae.encoder.sample") }))["latent_parameters"], "vae.encoder.moments", BOUND.fp32);
  });
});

describe("the converted SDXL folder has the optimum SDXL export's contracts", () => {
  let dir: string;
  beforeAll(async () => {
    dir = join(work, "contract");
    await writeConvertedModel(await readCheckpoint(FOLDER), dir, { dtype: "fp16" });
  });

  /** Each input/output: name, element type and dims, a static width shown as "static" (the two tiny models' widths differ). */
  async function contract(folder: string, graph: string): Promise<Record<string, string[]>> {
    const io = (await OnnxModel.read(join(folder, graph, "model.onnx"))).io();
    const entries = [...io.inputs.map((v) => ["in", v] as const), ...io.outputs.map((v) => ["out", v] as const)];
    return Object.fromEntries(entries.map(([side, v]) => [`${side} ${v.name}`, [v.dtype, ...v.shape.map((d) => (typeof d === "number" ? "static" : d))]]));
  }

  /** hidden_states.0 … hidden_states.N as one entry with N (the two tiny models' depths differ). */
  function withHiddenStatesJoined(io: Record<string, string[]>): Record<string, string[]> {
    const states = Object.keys(io).filter((k) => k.startsWith("out hidden_states."));
    const out = Object.fromEntries(Object.entries(io).filter(([k]) => !states.includes(k)));
    if (states.length > 0) {
      expect(states.sort()).toEqual(states.map((_, i) => `out hidden_states.${i}`).sort());
      expect(new Set(states.map((k) => JSON.stringify(io[k])))).toEqual(new Set([JSON.stringify(io["out last_hidden_state"])]));
      out["out hidden_states.*"] = io[states[0]!]!;
    }
    return out;
  }

  test.each(GRAPHS)("%s: the same input and output names, element types and dynamic axes", async (graph) => {
    const ours = withHiddenStatesJoined(await contract(dir, graph));
    const optimum = withHiddenStatesJoined(await contract(OPTIMUM, graph));
    // The one difference: token ids are int32, as every converted text encoder takes them (TensorRT's
    // index type; lib/model/graph-io.ts reads int32 and int64 alike), where torch's export has int64.
    if (graph.startsWith("text_encoder")) optimum["in input_ids"] = ["int32", "batch_size", "sequence_length"];
    expect(ours).toEqual(optimum);
  });

  test("the static widths are the model's: text_embeds is text_encoder_2's projection, time_ids has SDXL base's 6", async () => {
    const unet = (await OnnxModel.read(join(dir, "unet", "model.onnx"))).io();
    expect(unet.inputs.find((v) => v.name === "text_embeds")!.shape).toEqual(["batch_size", 6]);
    expect(unet.inputs.find((v) => v.name === "time_ids")!.shape).toEqual(["batch_size", 6]);
    expect(unet.inputs.find((v) => v.name === "encoder_hidden_states")!.shape).toEqual(["batch_size", "sequence_length", 10]);
  });

  test("an fp16 conversion keeps the VAE fp32 (force_upcast: SDXL's VAE overflows in fp16) and the rest fp16", async () => {
    const precisions = await Promise.all(GRAPHS.map(async (graph) => [graph, exportPrecision(await OnnxModel.read(join(dir, graph, "model.onnx")))]));
    expect(Object.fromEntries(precisions)).toEqual({ text_encoder: "fp16", text_encoder_2: "fp16", unet: "fp16", vae_decoder: "fp32", vae_encoder: "fp32" });
  });

  test("model_index.json is the SDXL pipeline's, and tokenizer_2 pads with \"!\" as SDXL's does", async () => {
    const index = await json(join(dir, "model_index.json"));
    const { _diffusers_version: _, ...optimumIndex } = await json(join(OPTIMUM, "model_index.json"));
    expect(index).toEqual(optimumIndex);
    expect(await json(join(dir, "tokenizer_2", "tokenizer_config.json"))).toEqual(await json(join(OPTIMUM, "tokenizer_2", "tokenizer_config.json")));
    expect((await ClipTokenizer.fromDirectory(join(dir, "tokenizer_2"))).padTokenId).toBe(0);
    expect((await ClipTokenizer.fromDirectory(join(dir, "tokenizer"))).padTokenId).toBe(49407);
    expect(await json(join(dir, "vae_decoder", "config.json"))).toEqual(await json(join(FOLDER, "vae", "config.json")));
    expect(await json(join(dir, "scheduler", "scheduler_config.json"))).toEqual(await json(join(FOLDER, "scheduler", "scheduler_config.json")));
  });
});

/** `source` with one more F32 tensor appended (header rewritten, data kept). */
async function withExtraTensor(source: string, target: string, name: string, shape: number[]): Promise<void> {
  const bytes = await readFile(source);
  const headerLength = Number(bytes.readBigUInt64LE(0));
  const header = JSON.parse(bytes.subarray(8, 8 + headerLength).toString("utf8")) as Record<string, { data_offsets?: number[] }>;
  const data = bytes.subarray(8 + headerLength);
  const extra = Buffer.alloc(4 * shape.reduce((n, d) => n * d, 1));
  header[name] = { dtype: "F32", shape, data_offsets: [data.length, data.length + extra.length] } as never;
  const text = Buffer.from(JSON.stringify(header));
  const head = Buffer.alloc(8);
  head.writeBigUInt64LE(BigInt(text.length));
  await writeFile(target, Buffer.concat([head, text, data, extra]));
}

test("a single file with UNet weights SDXL's graph does not use lists them, and leaves no folder behind", async () => {
  const path = join(work, "extra.safetensors");
  // input_blocks.1 is level 0's first resnet (DownBlock2D, no attention): an attention there is not this UNet's.
  await withExtraTensor(join(SDXL, "single_file.fp16.safetensors"), path, "model.diffusion_model.input_blocks.1.1.proj_in.weight", [8, 8]);
  const out = join(work, "extra-model");
  await expect(writeConvertedModel(await readCheckpoint(path, { configFolder: FOLDER }), out, { dtype: "fp32" })).rejects.toThrow(
    new ModelFileError(path, `${path} unet: 1 weight(s) are not used by the converted graph ("down_blocks.0.attentions.0.proj_in.weight"); the checkpoint has parts this converter does not know`),
  );
  expect((await readdir(work)).filter((n) => n.startsWith("extra-model"))).toEqual([]);
});
