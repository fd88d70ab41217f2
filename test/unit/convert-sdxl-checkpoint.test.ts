/**
 * Reading SDXL (lib/convert/checkpoint/sdxl*.ts): the tiny SDXL base of test/fixtures/checkpoints/sdxl
 * (scripts/reference/gen_tiny_sdxl_single_file.py) as single files, written by diffusers'
 * convert_diffusers_to_original_sdxl.py, and as a diffusers folder. diffusers' from_single_file loads
 * each file back to exactly the folder's weights (checked by the generator), so the readers must give
 * the same diffusers keys, shapes and values from every form. Bad input: a file missing a component,
 * a truncated file. (The refiner: convert-sdxl-refiner.test.ts.)
 */
import { afterAll, describe, expect, test } from "@jest/globals";
import { mkdtempSync, readFileSync, rmSync, writeFileSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { readCheckpoint } from "../../lib/convert/checkpoint/index.js";
import type { ComponentName } from "../../lib/convert/types.js";
import { CHECKPOINTS, expectSameWeights, writeF32Safetensors, writeSparseF16Safetensors } from "../support/checkpoint-fixtures.js";

const SDXL = join(CHECKPOINTS, "sdxl");
const FOLDER = join(SDXL, "diffusers");
const COMPONENTS: readonly ComponentName[] = ["text_encoder", "text_encoder_2", "unet", "vae"];
const scratch = mkdtempSync(join(tmpdir(), "sd-trt-sdxl-read-"));
afterAll(() => rmSync(scratch, { recursive: true, force: true }));

const json = (path: string) => JSON.parse(readFileSync(path, "utf8")) as Record<string, unknown>;

describe("SDXL single files read to exactly the diffusers folder's weights", () => {
  test.each(["single_file.safetensors", "single_file.fp16.safetensors"])("%s: every key, shape and value of the four components; the folder's configs", async (name) => {
    const folder = await readCheckpoint(FOLDER);
    expect(folder.family).toBe("sdxl");
    const single = await readCheckpoint(join(SDXL, name), { configFolder: FOLDER });
    expect(single.family).toBe("sdxl");
    await expectSameWeights(single, folder, COMPONENTS);
    expect(single.components.text_encoder_2!.config).toEqual(json(join(FOLDER, "text_encoder_2", "config.json")));
    expect(single.components.unet!.config).toEqual({ ...json(join(FOLDER, "unet", "config.json")), upcast_attention: false });
    expect(single.schedulerConfig).toEqual(json(join(FOLDER, "scheduler", "scheduler_config.json")));
  });

  test("OpenCLIP's text_projection [width, projection] becomes the linear weight [projection, width], transposed", async () => {
    const single = await readCheckpoint(join(SDXL, "single_file.safetensors"), { configFolder: FOLDER });
    const projection = single.components.text_encoder_2!.weights.get("text_projection.weight")!;
    expect(projection.shape).toEqual([6, 6]);
    const stored = single.components.text_encoder_2!.weights.get("text_model.encoder.layers.2.self_attn.v_proj.weight")!;
    // bigG keeps every layer (SD 2.x drops layer 23 of ViT-H; the tiny model has 3).
    expect(stored.shape).toEqual([6, 6]);
  });

  test("without a config folder, the configs come from the shapes and SDXL base's conventions", async () => {
    const single = await readCheckpoint(join(SDXL, "single_file.fp16.safetensors"));
    const unet = json(join(FOLDER, "unet", "config.json"));
    const derived = single.components.unet!.config;
    for (const key of ["block_out_channels", "down_block_types", "up_block_types", "layers_per_block", "transformer_layers_per_block", "cross_attention_dim", "addition_embed_type", "addition_time_embed_dim", "projection_class_embeddings_input_dim", "use_linear_projection", "in_channels", "out_channels"]) {
      expect({ key, value: derived[key] }).toEqual({ key, value: unet[key] });
    }
    // SDXL base's: 64-wide heads, 1024² (latent 128), no upcast.
    expect(derived["attention_head_dim"]).toEqual([8 / 64, 8 / 64, 16 / 64]);
    expect(derived["sample_size"]).toBe(128);
    expect(derived["upcast_attention"]).toBe(false);
    const vae = single.components.vae!.config;
    expect([vae["scaling_factor"], vae["force_upcast"], vae["block_out_channels"], vae["layers_per_block"]]).toEqual([0.13025, true, [8, 8, 16, 16], 2]);
    const te = single.components.text_encoder!.config;
    const te2 = single.components.text_encoder_2!.config;
    expect([te["hidden_act"], te["hidden_size"], te["num_hidden_layers"], te["architectures"]]).toEqual(["quick_gelu", 4, 2, ["CLIPTextModel"]]);
    expect([te2["hidden_act"], te2["hidden_size"], te2["num_hidden_layers"], te2["projection_dim"], te2["architectures"]]).toEqual(["gelu", 6, 3, 6, ["CLIPTextModelWithProjection"]]);
    // EulerDiscrete with "leading" timesteps, as the folder's (SDXL base's) scheduler config.
    const scheduler = json(join(FOLDER, "scheduler", "scheduler_config.json"));
    for (const [key, value] of Object.entries(single.schedulerConfig)) expect({ key, value }).toEqual({ key, value: scheduler[key] });
  });
});

test("a full-size SDXL base's tensor shapes give SDXL base's published configs (no config folder)", async () => {
  // gen_tiny_sdxl_single_file.py: the names and shapes diffusers' convert script gives the published
  // model. Written as a sparse file: only the header is read.
  const full = json(join(SDXL, "full_size_shapes.json")) as { configs: Record<string, Record<string, unknown>>; tensors: Record<string, number[]> };
  const path = writeSparseF16Safetensors(join(scratch, "sd_xl_base.safetensors"), full.tensors);

  const source = await readCheckpoint(path);
  expect(source.family).toBe("sdxl");
  for (const [component, published] of Object.entries(full.configs)) {
    const derived = source.components[component as ComponentName]!.config;
    for (const [key, value] of Object.entries(published)) expect({ component, key, value: derived[key] }).toEqual({ component, key, value });
  }
  expect(source.schedulerConfig).toMatchObject({ _class_name: "EulerDiscreteScheduler", timestep_spacing: "leading", steps_offset: 1, prediction_type: "epsilon" });
});

describe("bad SDXL input is refused with the reason", () => {
  test("a file without its VAE and OpenCLIP encoder names both missing parts", async () => {
    const path = writeF32Safetensors(join(scratch, "partial.safetensors"), {
      "model.diffusion_model.input_blocks.0.0.weight": { shape: [8, 4, 3, 3] },
      "conditioner.embedders.0.transformer.text_model.embeddings.position_embedding.weight": { shape: [77, 4] },
    });
    await expect(readCheckpoint(path)).rejects.toThrow(
      /partial\.safetensors is an SDXL checkpoint without its VAE \(no tensors under "first_stage_model\." or "vae\."\), OpenCLIP ViT-bigG text encoder \(no tensors under "conditioner\.embedders\.1\.model\."\); sd-trt converts a whole SDXL base checkpoint/,
    );
  });

  test("a truncated file is refused before anything is read", async () => {
    const bytes = readFileSync(join(SDXL, "single_file.fp16.safetensors"));
    const path = join(scratch, "truncated.safetensors");
    writeFileSync(path, bytes.subarray(0, bytes.length - 4096));
    await expect(readCheckpoint(path)).rejects.toThrow(/truncated\.safetensors is not a valid \.safetensors file: tensor ".*" has data_offsets \[\d+, \d+\] outside the \d+ bytes of data \(the file ends before it: truncated\?\)/);
  });
});
