/**
 * Reading SDXL's refiner (lib/convert/checkpoint/sdxl*.ts): the tiny refiner of
 * test/fixtures/checkpoints/sdxl-refiner (scripts/reference/gen_tiny_sdxl_refiner_single_file.py) as the
 * single file diffusers' convert_diffusers_to_original_sdxl.py writes (OpenCLIP alone under
 * `conditioner.embedders.0.model.`) and as its diffusers folder. diffusers' from_single_file loads the
 * file to exactly the folder's weights (checked by the generator), so our reading of the file must give
 * the same diffusers keys, shapes and values; a full-size refiner's shapes must give its published
 * configs, and its fp16 conversion must be a refiner folder as optimum exports one. Bad input: a config folder of the other kind, a refiner without its OpenCLIP encoder.
 */
import { afterAll, describe, expect, test } from "@jest/globals";
import { mkdtempSync, readFileSync, rmSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { exportPrecision } from "../../lib/backends/tensorrt/roles.js";
import { readCheckpoint } from "../../lib/convert/checkpoint/index.js";
import { writeConvertedModel } from "../../lib/convert/graphs/folder.js";
import type { ComponentName } from "../../lib/convert/types.js";
import { locateModelFolder } from "../../lib/model/folder.js";
import { OnnxModel } from "../../lib/onnx/model.js";
import { CHECKPOINTS, expectSameWeights, writeF32Safetensors, writeSparseF16Safetensors } from "../support/checkpoint-fixtures.js";

const REFINER = join(CHECKPOINTS, "sdxl-refiner");
const FOLDER = join(REFINER, "diffusers");
const FILE = join(REFINER, "single_file.safetensors");
const COMPONENTS: readonly ComponentName[] = ["text_encoder_2", "unet", "vae"];
const scratch = mkdtempSync(join(tmpdir(), "sd-trt-sdxl-refiner-read-"));
afterAll(() => rmSync(scratch, { recursive: true, force: true }));

const json = (path: string) => JSON.parse(readFileSync(path, "utf8")) as Record<string, unknown>;

describe("an SDXL refiner single file reads to exactly the weights diffusers' from_single_file loads", () => {
  test("every key, shape and value of text_encoder_2, unet and vae; no text_encoder; the folder's configs", async () => {
    const folder = await readCheckpoint(FOLDER);
    const single = await readCheckpoint(FILE, { configFolder: FOLDER });
    for (const source of [folder, single]) {
      expect([source.family, source.refiner]).toEqual(["sdxl", true]);
      expect(Object.keys(source.components).sort()).toEqual(["text_encoder_2", "unet", "vae"]);
    }
    await expectSameWeights(single, folder, COMPONENTS);
    expect(single.components.text_encoder_2!.config).toEqual(json(join(FOLDER, "text_encoder_2", "config.json")));
    expect(single.components.unet!.config).toEqual({ ...json(join(FOLDER, "unet", "config.json")), upcast_attention: false });
    expect(single.schedulerConfig).toEqual(json(join(FOLDER, "scheduler", "scheduler_config.json")));
  });

  test("the refiner's OpenCLIP keeps every layer and its projection, transposed", async () => {
    const single = await readCheckpoint(FILE, { configFolder: FOLDER });
    const weights = single.components.text_encoder_2!.weights;
    expect(weights.get("text_projection.weight")!.shape).toEqual([6, 6]);
    expect(weights.get("text_model.encoder.layers.2.self_attn.q_proj.weight")!.shape).toEqual([6, 6]);
  });

  test("without a config folder the UNet's layout comes from the shapes: 4 levels, 5 time ids, one transformer depth for every attention and the mid block", async () => {
    const single = await readCheckpoint(FILE);
    expect(single.refiner).toBe(true);
    const unet = json(join(FOLDER, "unet", "config.json"));
    const derived = single.components.unet!.config;
    for (const key of ["block_out_channels", "down_block_types", "up_block_types", "layers_per_block", "transformer_layers_per_block", "cross_attention_dim", "addition_embed_type", "addition_time_embed_dim", "projection_class_embeddings_input_dim", "use_linear_projection", "in_channels", "out_channels"]) {
      expect({ key, value: derived[key] }).toEqual({ key, value: unet[key] });
    }
    const te2 = single.components.text_encoder_2!.config;
    expect([te2["hidden_act"], te2["hidden_size"], te2["num_hidden_layers"], te2["projection_dim"], te2["architectures"]]).toEqual(["gelu", 6, 3, 6, ["CLIPTextModelWithProjection"]]);
    expect(single.schedulerConfig).toMatchObject({ _class_name: "EulerDiscreteScheduler", timestep_spacing: "leading", steps_offset: 1, prediction_type: "epsilon" });
  });
});

test("a full-size SDXL refiner's tensor shapes give the refiner's published configs (no config folder)", async () => {
  // gen_tiny_sdxl_refiner_single_file.py: the names and shapes diffusers' convert script gives the
  // published refiner (built on the meta device). Written as a sparse file: only the header is read.
  const full = json(join(REFINER, "full_size_shapes.json")) as { configs: Record<string, Record<string, unknown>>; tensors: Record<string, number[]> };
  const path = writeSparseF16Safetensors(join(scratch, "sd_xl_refiner_1.0.safetensors"), full.tensors);
  const source = await readCheckpoint(path);
  expect([source.family, source.refiner, source.components.text_encoder]).toEqual(["sdxl", true, undefined]);
  for (const [component, published] of Object.entries(full.configs)) {
    const derived = source.components[component as ComponentName]!.config;
    for (const [key, value] of Object.entries(published)) expect({ component, key, value: derived[key] }).toEqual({ component, key, value });
  }
});

test("an fp16 conversion is a refiner folder as optimum exports it: text_encoder_2 alone, a UNet taking 5 time ids, the VAE kept fp32", async () => {
  const dir = join(scratch, "refiner-fp16");
  const report = await writeConvertedModel(await readCheckpoint(FILE, { configFolder: FOLDER }), dir, { dtype: "fp16" });
  expect(Object.keys(report.graphs).sort()).toEqual(["text_encoder_2", "unet", "vae_decoder", "vae_encoder"]);
  const precisions = await Promise.all(Object.keys(report.graphs).map(async (graph) => [graph, exportPrecision(await OnnxModel.read(join(dir, graph, "model.onnx")))]));
  expect(Object.fromEntries(precisions)).toEqual({ text_encoder_2: "fp16", unet: "fp16", vae_decoder: "fp32", vae_encoder: "fp32" });
  const unet = (await OnnxModel.read(join(dir, "unet", "model.onnx"))).io();
  expect(unet.inputs.find((v) => v.name === "time_ids")!.shape).toEqual(["batch_size", 5]);
  expect(unet.inputs.find((v) => v.name === "text_embeds")!.shape).toEqual(["batch_size", 6]);
  expect(unet.inputs.find((v) => v.name === "encoder_hidden_states")!.shape).toEqual(["batch_size", "sequence_length", 6]);
  // optimum's ORTStableDiffusionXLImg2ImgPipeline folder (gen_tiny_sdxl.py's refiner) names the same components and flags.
  const { _diffusers_version: _, ...optimumIndex } = json(join(CHECKPOINTS, "..", "sdxl", "tiny-sdxl-refiner", "model_index.json"));
  expect(json(join(dir, "model_index.json"))).toEqual(optimumIndex);
  const folder = await locateModelFolder(dir);
  expect([folder.sdxl?.secondEncoderOnly, folder.sdxl?.requiresAestheticsScore, folder.sdxl?.forceZerosForEmptyPrompt, folder.textEncoder.path]).toEqual([true, true, false, join(dir, "text_encoder_2", "model.onnx")]);
});

describe("bad SDXL refiner input is refused with the reason", () => {
  test("a refiner file read with a base's config folder (and the reverse) names both kinds", async () => {
    await expect(readCheckpoint(FILE, { configFolder: join(CHECKPOINTS, "sdxl", "diffusers") })).rejects.toThrow(
      /sdxl[/\\]diffusers holds the configs of an SDXL base \(text_encoder and text_encoder_2\), but .*single_file\.safetensors is an SDXL refiner checkpoint; pass the configs of the same model/,
    );
    await expect(readCheckpoint(join(CHECKPOINTS, "sdxl", "single_file.fp16.safetensors"), { configFolder: FOLDER })).rejects.toThrow(
      /sdxl-refiner[/\\]diffusers holds the configs of an SDXL refiner \(text_encoder_2 alone\), but .*single_file\.fp16\.safetensors is an SDXL base checkpoint/,
    );
  });

  test("a refiner file without its VAE names the missing part and the refiner", async () => {
    const path = writeF32Safetensors(join(scratch, "refiner-no-vae.safetensors"), {
      "model.diffusion_model.input_blocks.0.0.weight": { shape: [8, 4, 3, 3] },
      "conditioner.embedders.0.model.positional_embedding": { shape: [77, 6] },
      "conditioner.embedders.0.model.text_projection": { shape: [6, 6] },
    });
    await expect(readCheckpoint(path)).rejects.toThrow(
      /refiner-no-vae\.safetensors is an SDXL refiner checkpoint without its VAE \(no tensors under "first_stage_model\." or "vae\."\); sd-trt converts a whole SDXL refiner checkpoint/,
    );
  });

  test("a refiner UNet whose added embedding does not take the pooled width plus 5 time ids is refused from the shapes", async () => {
    // A base's UNet (2816 = 1280 + 6 · 256) under a refiner's OpenCLIP: (2816 − 1280) / 5 is not whole.
    const full = json(join(REFINER, "full_size_shapes.json")) as { tensors: Record<string, number[]> };
    const tensors = { ...full.tensors, "model.diffusion_model.label_emb.0.0.weight": [1536, 2816] };
    const path = writeSparseF16Safetensors(join(scratch, "refiner-base-unet.safetensors"), tensors);
    await expect(readCheckpoint(path)).rejects.toThrow(/cannot tell the shape of the UNet \(the added embedding takes 2816 inputs, not text_encoder_2's 1280 pooled values plus 5 time ids \(a base model or another model\)\)/);
  });
});
