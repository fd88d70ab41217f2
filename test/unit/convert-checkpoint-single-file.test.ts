/**
 * Checkpoint reading (lib/convert/checkpoint) on the tiny reference checkpoints: the single files
 * written by diffusers' convert_diffusers_to_original script (scripts/reference/gen_tiny_single_file.py,
 * which checked that diffusers' own `from_single_file(file, config=folder)` loads them to exactly the
 * folder's weights) read back, through our key mapping, to exactly the diffusers folder's tensors;
 * configs from the folder or derived from shapes; detection, overrides and refusals.
 */
import { copyFileSync, mkdirSync, mkdtempSync, readFileSync, rmSync, writeFileSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { afterAll, describe, expect, test } from "@jest/globals";
import { readCheckpoint } from "../../lib/convert/checkpoint/index.js";
import type { ComponentName } from "../../lib/convert/types.js";
import { ModelFileError } from "../../lib/errors.js";
import { CHECKPOINTS, expectSameWeights, writeF32Safetensors, writeSparseF16Safetensors } from "../support/checkpoint-fixtures.js";

const folderOf = (family: string) => join(CHECKPOINTS, family, "diffusers");
const COMPONENTS: ComponentName[] = ["text_encoder", "unet", "vae"];
const scratch = mkdtempSync(join(tmpdir(), "sdtrt-checkpoint-"));
afterAll(() => rmSync(scratch, { recursive: true, force: true }));

describe("single files read to exactly the weights diffusers' from_single_file loads", () => {
  test.each([
    ["sd1", "single_file.safetensors"],
    ["sd1", "single_file.fp16.safetensors"],
    ["sd2", "single_file.fp16.safetensors"],
  ])("%s %s: every diffusers key, shape and value of the folder; the folder's configs", async (family, name) => {
    const folder = await readCheckpoint(folderOf(family));
    const single = await readCheckpoint(join(CHECKPOINTS, family, name), { configFolder: folderOf(family) });
    expect(single.family).toBe(family);
    await expectSameWeights(single, folder, COMPONENTS);
    for (const component of COMPONENTS) expect(single.components[component]!.config).toEqual(folder.components[component]!.config);
    expect(single.schedulerConfig).toEqual(folder.schedulerConfig);
  });

  test("the text encoder's keys are CLIPTextModel's as real SD folders name them (text_model.…), whatever the source", async () => {
    const single = await readCheckpoint(join(CHECKPOINTS, "sd2", "single_file.fp16.safetensors"), { configFolder: folderOf("sd2") });
    const keys = [...single.components.text_encoder!.weights.keys()];
    expect(keys).toContain("text_model.embeddings.token_embedding.weight");
    expect(keys).toContain("text_model.encoder.layers.1.self_attn.v_proj.bias");
    expect(keys.every((k) => k.startsWith("text_model."))).toBe(true);
  });
});

describe("configs derived from the shapes when no folder is given", () => {
  test.each(["sd1", "sd2"])("%s: everything the shapes say matches the folder's configs", async (family) => {
    const folder = await readCheckpoint(folderOf(family));
    const single = await readCheckpoint(join(CHECKPOINTS, family, "single_file.fp16.safetensors"));
    const pick = (config: Record<string, unknown>, keys: string[]) => Object.fromEntries(keys.map((k) => [k, config[k]]));
    const unetKeys = ["block_out_channels", "layers_per_block", "down_block_types", "up_block_types", "cross_attention_dim", "in_channels", "out_channels", "use_linear_projection", "transformer_layers_per_block"];
    expect(pick(single.components.unet!.config, unetKeys)).toEqual(pick(folder.components.unet!.config, unetKeys));
    const vaeKeys = ["block_out_channels", "layers_per_block", "latent_channels", "in_channels", "out_channels", "scaling_factor"];
    expect(pick(single.components.vae!.config, vaeKeys)).toEqual(pick(folder.components.vae!.config, vaeKeys));
    const textKeys = ["hidden_size", "intermediate_size", "num_hidden_layers", "vocab_size", "max_position_embeddings", "hidden_act"];
    expect(pick(single.components.text_encoder!.config, textKeys)).toEqual(pick(folder.components.text_encoder!.config, textKeys));
  });

  test("SD 2.x defaults to v_prediction with upcast attention (diffusers' SD 2.1 config), SD 1.x to epsilon without", async () => {
    const sd2 = await readCheckpoint(join(CHECKPOINTS, "sd2", "single_file.fp16.safetensors"));
    expect([sd2.schedulerConfig["prediction_type"], sd2.components.unet!.config["upcast_attention"], sd2.schedulerConfig["_class_name"]]).toEqual(["v_prediction", true, "DDIMScheduler"]);
    const sd1 = await readCheckpoint(join(CHECKPOINTS, "sd1", "single_file.fp16.safetensors"));
    expect([sd1.schedulerConfig["prediction_type"], sd1.components.unet!.config["upcast_attention"], sd1.schedulerConfig["_class_name"]]).toEqual(["epsilon", false, "PNDMScheduler"]);
  });

  test("the overrides win over detection and over a folder's configs", async () => {
    const overrides = { predictionType: "epsilon", upcastAttention: false } as const;
    const single = await readCheckpoint(join(CHECKPOINTS, "sd2", "single_file.fp16.safetensors"), overrides);
    expect([single.schedulerConfig["prediction_type"], single.components.unet!.config["upcast_attention"]]).toEqual(["epsilon", false]);
    const folder = await readCheckpoint(folderOf("sd2"), overrides);
    expect([folder.schedulerConfig["prediction_type"], folder.components.unet!.config["upcast_attention"]]).toEqual(["epsilon", false]);
  });
});

describe("full-size SD 1.5 and SD 2.1 files: configs derived from shapes are the published ones", () => {
  // scripts/reference/gen_full_size_shapes.py: the names and shapes diffusers' convert script gives
  // the published models. Written here as sparse files: only the header is ever read.
  const full = JSON.parse(readFileSync(join(CHECKPOINTS, "full_size_shapes.json"), "utf8")) as Record<string, { configs: Record<string, Record<string, unknown>>; tensors: Record<string, number[]> }>;
  const sparseCheckpoint = (family: string): string => writeSparseF16Safetensors(join(scratch, `${family}.safetensors`), full[family]!.tensors);

  test.each([
    ["sd15", "sd1", "epsilon"],
    ["sd21", "sd2", "v_prediction"],
  ])("%s: family %s, %s, and every config value the published configs set", async (name, family, prediction) => {
    const source = await readCheckpoint(sparseCheckpoint(name));
    expect(source.family).toBe(family);
    expect(source.schedulerConfig["prediction_type"]).toBe(prediction);
    const published = full[name]!.configs;
    for (const component of COMPONENTS) {
      const config = source.components[component]!.config;
      const want = published[component]!;
      expect({ component, config: Object.fromEntries(Object.keys(want).map((k) => [k, config[k]])) }).toEqual({ component, config: want });
    }
    // SD 2.x drops OpenCLIP's last layer (the penultimate one conditions the UNet): 23 layers, q/k/v split.
    const text = [...source.components.text_encoder!.weights.keys()];
    expect(text.filter((k) => k.endsWith(".self_attn.q_proj.weight"))).toHaveLength(family === "sd2" ? 23 : 12);
  });
});

describe("diffusers folders: variants and shards", () => {
  test("an fp16-variant folder and a sharded UNet read to the same weights", async () => {
    const source = folderOf("sd1");
    const copy = join(scratch, "variant");
    for (const sub of ["text_encoder", "unet", "vae", "scheduler"]) mkdirSync(join(copy, sub), { recursive: true });
    for (const file of ["model_index.json", "text_encoder/config.json", "unet/config.json", "vae/config.json", "scheduler/scheduler_config.json"]) copyFileSync(join(source, file), join(copy, file));
    copyFileSync(join(source, "text_encoder/model.safetensors"), join(copy, "text_encoder/model.fp16.safetensors"));
    copyFileSync(join(source, "vae/diffusion_pytorch_model.safetensors"), join(copy, "vae/diffusion_pytorch_model.fp16.safetensors"));
    // Two shards of the UNet, written from its tensors' values.
    const original = await readCheckpoint(source);
    const unet = original.components.unet!.weights;
    const keys = [...unet.keys()];
    const shards: Record<string, Record<string, { shape: number[]; values: number[] }>> = { "diffusion_pytorch_model-00001-of-00002.safetensors": {}, "diffusion_pytorch_model-00002-of-00002.safetensors": {} };
    const weightMap: Record<string, string> = {};
    for (const [i, key] of keys.entries()) {
      const shard = Object.keys(shards)[i % 2]!;
      const tensor = unet.get(key)!;
      shards[shard]![key] = { shape: [...tensor.shape], values: Array.from(await tensor.read()) };
      weightMap[key] = shard;
    }
    for (const [name, tensors] of Object.entries(shards)) writeF32Safetensors(join(copy, "unet", name), tensors);
    writeFileSync(join(copy, "unet/diffusion_pytorch_model.safetensors.index.json"), JSON.stringify({ metadata: {}, weight_map: weightMap }));
    await expectSameWeights(await readCheckpoint(copy), original, COMPONENTS);
  });

  test("a folder whose weights are only pickles is refused, naming the file", async () => {
    const copy = join(scratch, "pickled");
    for (const sub of ["text_encoder", "unet", "vae", "scheduler"]) mkdirSync(join(copy, sub), { recursive: true });
    for (const file of ["text_encoder/config.json", "unet/config.json", "vae/config.json", "scheduler/scheduler_config.json"]) copyFileSync(join(folderOf("sd1"), file), join(copy, file));
    writeFileSync(join(copy, "text_encoder/pytorch_model.bin"), Uint8Array.from([0x80, 0x02]));
    await expect(readCheckpoint(copy)).rejects.toThrow(/text_encoder\/pytorch_model\.bin is a PyTorch pickle \(\.bin\): loading it would run the code it contains/);
  });
});

describe("what is not an SD 1.x/2.x checkpoint is refused, naming the file", () => {
  test("a pickle checkpoint, by name or by content", async () => {
    await expect(readCheckpoint(writeF32Safetensors(join(scratch, "model.ckpt"), { a: { shape: [1] } }))).rejects.toThrow(/model\.ckpt is a PyTorch pickle \(\.ckpt\): loading it would run the code it contains/);
    const disguised = join(scratch, "disguised.safetensors");
    writeFileSync(disguised, Buffer.concat([Buffer.from("PK\x03\x04"), Buffer.alloc(64)]));
    await expect(readCheckpoint(disguised)).rejects.toThrow(/disguised\.safetensors is a zip archive, the layout torch\.save writes pickles in/);
  });

  test("an unknown architecture lists the keys it has", async () => {
    const path = writeF32Safetensors(join(scratch, "other.safetensors"), { "transformer.h.0.attn.c_attn.weight": { shape: [2] }, "lm_head.weight": { shape: [2] } });
    const refusal = readCheckpoint(path);
    await expect(refusal).rejects.toThrow(ModelFileError);
    await expect(readCheckpoint(path)).rejects.toThrow(`${path} is not a Stable Diffusion checkpoint sd-trt knows: it has no UNet under "model.diffusion_model." with a text encoder under "cond_stage_model.transformer." (SD 1.x) or "cond_stage_model.model." (SD 2.x). Its 2 tensors begin "transformer.h.0.attn.c_attn.weight", "lm_head.weight"`);
  });

  test("SDXL is detected by its conditioner and read as SDXL (convert-sdxl-checkpoint.test.ts)", async () => {
    const path = writeF32Safetensors(join(scratch, "xl.safetensors"), { "model.diffusion_model.input_blocks.0.0.weight": { shape: [1] }, "conditioner.embedders.1.model.transformer.resblocks.9.mlp.c_proj.bias": { shape: [1] } });
    await expect(readCheckpoint(path)).rejects.toThrow(/xl\.safetensors is an SDXL checkpoint without its VAE .*, CLIP ViT-L text encoder/);
  });

  test("a checkpoint without its VAE, an inpainting UNet, a missing file", async () => {
    const noVae = writeF32Safetensors(join(scratch, "novae.safetensors"), { "model.diffusion_model.input_blocks.0.0.weight": { shape: [4, 4, 1, 1] }, "cond_stage_model.transformer.text_model.embeddings.token_embedding.weight": { shape: [2, 2] } });
    await expect(readCheckpoint(noVae)).rejects.toThrow(/novae\.safetensors has no VAE \(no tensors under "first_stage_model\." or "vae\."\)/);
    const inpaint = writeF32Safetensors(join(scratch, "inpaint.safetensors"), { "model.diffusion_model.input_blocks.0.0.weight": { shape: [4, 9, 1, 1] }, "cond_stage_model.transformer.x": { shape: [1] }, "first_stage_model.x": { shape: [1] } });
    await expect(readCheckpoint(inpaint)).rejects.toThrow(/inpaint\.safetensors has a UNet with 9 input channels \(an inpainting or instruct-pix2pix model\)/);
    await expect(readCheckpoint(join(scratch, "absent.safetensors"))).rejects.toThrow(/checkpoint .*absent\.safetensors does not exist/);
  });

  test("a truncated single file names the file and the tensor past its end", async () => {
    const bytes = readFileSync(join(CHECKPOINTS, "sd1", "single_file.fp16.safetensors"));
    const path = join(scratch, "truncated.safetensors");
    writeFileSync(path, bytes.subarray(0, bytes.length - 1000));
    await expect(readCheckpoint(path)).rejects.toThrow(/truncated\.safetensors is not a valid \.safetensors file: tensor ".*" has data_offsets \[\d+, \d+\] outside the \d+ bytes of data \(the file ends before it: truncated\?\)/);
  });
});
