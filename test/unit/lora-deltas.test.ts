/**
 * LoRA files → weight deltas, against diffusers' own `load_lora_weights` + `fuse_lora` on the tiny
 * SD 1.x model (scripts/reference/gen_tiny_loras.py): a kohya file (fp16, alpha/rank, LoCon 3×3
 * conv, 1×1 conv, text encoder) and a PEFT file (lora_adapter_metadata with rank and alpha
 * patterns), alone and together. Base + deltas must equal diffusers' fused weights to float32
 * rounding, change exactly the weights diffusers changed, and every file that does not fit is
 * refused with a message naming it. The same merge applied to a checkpoint before conversion.
 */
import { mkdtempSync, readFileSync, rmSync, writeFileSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { afterAll, describe, expect, test } from "@jest/globals";
import { InvalidOptionError, ModelFileError } from "../../lib/errors.js";
import { loraDeltas, loraFamilyOf, type LoraTarget } from "../../lib/convert/lora/deltas.js";
import { addnetHash, loraHashesInfotext } from "../../lib/convert/lora/hash.js";
import { readLoraFile } from "../../lib/convert/lora/read.js";
import { loraSetDeltas, loraSetId, mergedWeight, parseLoraSpec } from "../../lib/convert/lora/set.js";
import { readSafetensors } from "../../lib/model/safetensors.js";
import { checkpointWithLoras } from "../../lib/convert/lora/checkpoint.js";
import { tinyCheckpoint } from "../support/checkpoint-fixtures.js";
import type { ComponentName } from "../../lib/convert/types.js";

const dir = new URL("../fixtures/loras/", import.meta.url).pathname;
const reference = JSON.parse(readFileSync(join(dir, "reference.json"), "utf8")) as {
  cases: Record<string, { lora: string; scale: number }[]>;
  changed: string[];
  model_weights: Record<string, Record<string, number[]>>;
  addnet_hash: Record<string, string>;
};
const target: LoraTarget = {
  family: "sd1",
  weights: Object.fromEntries(Object.entries(reference.model_weights).map(([c, w]) => [c, new Map(Object.entries(w))])) as LoraTarget["weights"],
};
const fused = await readSafetensors(join(dir, "fused.safetensors"));
const fusedWeight = (kase: string, componentKey: string) => fused.tensors.get(`${kase}/${componentKey}`)!.toFloat32();

const scratch = mkdtempSync(join(tmpdir(), "sd-trt-lora-"));
afterAll(() => rmSync(scratch, { recursive: true, force: true }));

/** Writes a float32 .safetensors file (for files the fixtures do not have). */
function writeLora(name: string, tensors: Record<string, { shape: number[]; values?: number[] }>, metadata?: Record<string, string>): string {
  const header: Record<string, unknown> = metadata ? { __metadata__: metadata } : {};
  const chunks: Buffer[] = [];
  let offset = 0;
  for (const [key, { shape, values }] of Object.entries(tensors)) {
    const n = shape.reduce((a, b) => a * b, 1);
    const data = Buffer.from(new Float32Array(values ?? Array.from({ length: n }, (_, i) => ((i % 7) - 3) / 10)).buffer);
    header[key] = { dtype: "F32", shape, data_offsets: [offset, offset + data.length] };
    chunks.push(data);
    offset += data.length;
  }
  const json = Buffer.from(JSON.stringify(header));
  const length = Buffer.alloc(8);
  length.writeBigUInt64LE(BigInt(json.length));
  const path = join(scratch, name);
  writeFileSync(path, Buffer.concat([length, json, ...chunks]));
  return path;
}

function expectClose(actual: Float32Array, expected: Float32Array, what: string): void {
  expect(actual.length).toBe(expected.length);
  let worst = 0;
  for (let i = 0; i < expected.length; i++) worst = Math.max(worst, Math.abs(actual[i]! - expected[i]!) / Math.max(1, Math.abs(expected[i]!)));
  if (worst > 1e-6) throw new Error(`${what}: worst relative difference ${worst} > 1e-6`);
}

describe("merged weights match diffusers' fuse_lora", () => {
  for (const [kase, loras] of Object.entries(reference.cases)) {
    test(`${kase}: base + the deltas of each LoRA, in order, equal diffusers' fused weights`, async () => {
      const set = loras.map(({ lora, scale }) => ({ path: join(dir, lora), scale }));
      const deltas = await loraSetDeltas(set, target);
      const touched = [...deltas].flatMap(([component, keys]) => [...keys.keys()].map((key) => `${component}/${key}`));
      for (const componentKey of reference.changed) {
        const [component, ...rest] = componentKey.split("/");
        const key = rest.join("/");
        const entry = deltas.get(component as ComponentName)?.get(key);
        const merged = entry ? mergedWeight(fusedWeight("base", componentKey), entry.deltas) : fusedWeight("base", componentKey);
        expectClose(merged, fusedWeight(kase, componentKey), `${kase} ${componentKey}`);
      }
      // Nothing outside what diffusers changed in some case is touched.
      for (const key of touched) expect(reference.changed).toContain(key);
    });
  }

  test("the kohya file's text-encoder layers land on the model's text-encoder weights", async () => {
    const lora = await readLoraFile(join(dir, "kohya_sd1.safetensors"));
    expect(lora.format).toBe("kohya");
    const keys = loraDeltas(lora, target, 1).filter((d) => d.component === "text_encoder").map((d) => d.key);
    expect(keys.sort()).toEqual(["text_model.encoder.layers.0.self_attn.out_proj.weight", "text_model.encoder.layers.0.self_attn.q_proj.weight", "text_model.encoder.layers.1.mlp.fc1.weight"]);
  });

  test("the PEFT file's per-module rank and alpha patterns give each layer its own alpha/rank", async () => {
    const lora = await readLoraFile(join(dir, "peft_sd1.safetensors"));
    expect(lora.format).toBe("peft");
    const scaleOf = (suffix: string) => lora.layers.find((l) => l.name.endsWith(suffix))!.scale;
    expect(scaleOf("down_blocks.0.attentions.0.transformer_blocks.0.attn1.to_q")).toBe(8 / 4); // r 4, lora_alpha 8
    expect(scaleOf("down_blocks.0.attentions.0.transformer_blocks.0.attn1.to_v")).toBe(8 / 2); // rank_pattern to_v: 2
    expect(scaleOf("down_blocks.0.resnets.0.conv2")).toBe(2 / 4); // alpha_pattern conv2: 2
    expect(scaleOf("text_encoder.encoder.layers.0.self_attn.k_proj")).toBe(3 / 2);
  });

  test("kohya layers without an alpha have scale 1, and each alpha divides by its own layer's rank", async () => {
    const path = writeLora("alphas.safetensors", {
      "lora_unet_down_blocks_0_attentions_0_transformer_blocks_0_attn1_to_q.lora_down.weight": { shape: [2, 16] },
      "lora_unet_down_blocks_0_attentions_0_transformer_blocks_0_attn1_to_q.lora_up.weight": { shape: [16, 2] },
      "lora_unet_down_blocks_0_attentions_0_transformer_blocks_0_attn1_to_k.lora_down.weight": { shape: [4, 16] },
      "lora_unet_down_blocks_0_attentions_0_transformer_blocks_0_attn1_to_k.lora_up.weight": { shape: [16, 4] },
      "lora_unet_down_blocks_0_attentions_0_transformer_blocks_0_attn1_to_k.alpha": { shape: [], values: [3] },
    });
    const lora = await readLoraFile(path);
    expect(lora.layers.map((l) => [l.module.slice(-4), l.scale])).toEqual([
      ["to_q", 1],
      ["to_k", 3 / 4],
    ]);
  });
});

describe("LoRAs that do not fit are refused, naming the file", () => {
  const refusal = async (promise: Promise<unknown> | (() => unknown)): Promise<ModelFileError> => {
    try {
      await (typeof promise === "function" ? promise() : promise);
    } catch (error) {
      expect(error).toBeInstanceOf(ModelFileError);
      return error as ModelFileError;
    }
    throw new Error("expected a ModelFileError");
  };

  test("layers that match no weight: the count and a few of their names", async () => {
    const tensors: Record<string, { shape: number[] }> = {};
    for (let i = 0; i < 7; i++) {
      tensors[`lora_unet_down_blocks_${i}_attentions_9_proj_in.lora_down.weight`] = { shape: [2, 16] };
      tensors[`lora_unet_down_blocks_${i}_attentions_9_proj_in.lora_up.weight`] = { shape: [16, 2] };
    }
    const path = writeLora("unmatched.safetensors", tensors);
    const error = await refusal(async () => loraDeltas(await readLoraFile(path), target, 1));
    expect(error.file).toBe(path);
    expect(error.message).toContain(`${path} does not fit this SD 1.x model: 7 of its 7 layers match no weight of the model (lora_unet_down_blocks_0_attentions_9_proj_in`);
    expect(error.message).toContain("and 2 more");
  });

  test("a LoRA whose metadata names another family (kohya's ss_base_model_version)", async () => {
    const path = writeLora("sdxl.safetensors", { "lora_unet_conv_in.lora_down.weight": { shape: [1, 4, 3, 3] }, "lora_unet_conv_in.lora_up.weight": { shape: [16, 1, 1, 1] } }, { ss_base_model_version: "sdxl_base_v1-0" });
    const error = await refusal(async () => loraDeltas(await readLoraFile(path), target, 1));
    expect(error.message).toBe(`${path} is a LoRA for SDXL (its metadata says ss_base_model_version = sdxl_base_v1-0); the model is SD 1.x`);
    expect(loraFamilyOf({ ss_v2: "True" })?.family).toBe("sd2");
  });

  test("a layer whose shape does not fit its weight (another architecture's dimensions)", async () => {
    // attn2.to_k takes the text hidden size (8 here, 1024 in SD 2.x).
    const path = writeLora("sd2-shaped.safetensors", {
      "lora_unet_down_blocks_0_attentions_0_transformer_blocks_0_attn2_to_k.lora_down.weight": { shape: [2, 24] },
      "lora_unet_down_blocks_0_attentions_0_transformer_blocks_0_attn2_to_k.lora_up.weight": { shape: [16, 2] },
    });
    const error = await refusal(async () => loraDeltas(await readLoraFile(path), target, 1));
    expect(error.message).toContain("layer lora_unet_down_blocks_0_attentions_0_transformer_blocks_0_attn2_to_k changes unet weight down_blocks.0.attentions.0.transformer_blocks.0.attn2.to_k.weight of shape [16, 8] by [16, 24]");
  });

  test("network types sd-trt does not apply, and broken layers", async () => {
    const cases: [Record<string, { shape: number[] }>, string][] = [
      [{ "lora_unet_conv_in.hada_w1_a": { shape: [1, 1] } }, "it uses LyCORIS LoHa (key lora_unet_conv_in.hada_w1_a)"],
      [{ "lora_unet_conv_in.lora_mid.weight": { shape: [1, 1] } }, "it uses LoCon with CP decomposition (lora_mid)"],
      [{ "lora_unet_conv_in.dora_scale": { shape: [1, 1] } }, "it uses DoRA"],
      [{ "lora_unet_conv_in.lora_down.weight": { shape: [2, 4] } }, "layer lora_unet_conv_in has no lora_up.weight"],
      [{ "lora_unet_conv_in.lora_down.weight": { shape: [2, 4] }, "lora_unet_conv_in.lora_up.weight": { shape: [16, 3] } }, "factors disagree on the rank"],
      [{ "model.diffusion_model.x": { shape: [1] } }, "key model.diffusion_model.x is neither kohya's"],
    ];
    for (const [i, [tensors, message]] of cases.entries()) {
      const path = writeLora(`bad${i}.safetensors`, tensors);
      const error = await refusal(readLoraFile(path));
      expect(error.message).toContain(`${path} is not a LoRA sd-trt can apply: `);
      expect(error.message).toContain(message);
    }
  });

  test("pickles are refused unopened, by extension or by content", async () => {
    const named = join(scratch, "lora.pt");
    writeFileSync(named, "not even read");
    expect((await refusal(readLoraFile(named))).message).toContain(`${named} is a PyTorch pickle (.pt): loading it would run the code it contains`);
    const disguised = join(scratch, "disguised.safetensors");
    writeFileSync(disguised, Buffer.from([0x80, 0x02, 0x7d, 0x71, 0x00, 0x28, 0x58, 0x01, 0x00]));
    expect((await refusal(readLoraFile(disguised))).message).toContain("is a Python pickle");
    const zipped = join(scratch, "zipped.safetensors");
    writeFileSync(zipped, Buffer.from("PK\u0003\u0004 torch.save archive"));
    expect((await refusal(readLoraFile(zipped))).message).toContain("is a zip archive");
  });
});

describe("hashes and LoRA sets", () => {
  test("addnet hashes equal A1111's (sha256 of the bytes after the header)", async () => {
    for (const [name, hash] of Object.entries(reference.addnet_hash)) expect(await addnetHash(join(dir, name))).toBe(hash);
  });

  test("Lora hashes infotext: name: 12-digit hash, names without : and , and each name once", () => {
    expect(loraHashesInfotext([])).toBeUndefined();
    expect(loraHashesInfotext([
      { name: "kohya", hash: "97c28e9d5b5278826b3ed0c6e217a9ea" },
      { name: "a:b,c", hash: "2eb0dbcd8e4dec83f8a49" },
      { name: "kohya", hash: "97c28e9d5b5278826b3ed0c6e217a9ea" },
    ])).toBe("kohya: 97c28e9d5b52, abc: 2eb0dbcd8e4d");
  });

  test("--lora FILE[:SCALE] and its errors", () => {
    expect(parseLoraSpec("a.safetensors")).toEqual({ path: "a.safetensors", scale: 1 });
    expect(parseLoraSpec("a.safetensors:0.8")).toEqual({ path: "a.safetensors", scale: 0.8 });
    expect(parseLoraSpec("C:\\loras\\a.safetensors")).toEqual({ path: "C:\\loras\\a.safetensors", scale: 1 });
    expect(parseLoraSpec("C:\\loras\\a.safetensors:-1.5")).toEqual({ path: "C:\\loras\\a.safetensors", scale: -1.5 });
    expect(() => parseLoraSpec(":0.5")).toThrow(InvalidOptionError);
    expect(() => parseLoraSpec("a.safetensors:1e9")).toThrow("--lora scale must be a number from -100 to 100, got \"a.safetensors:1e9\"");
  });

  test("a set's id changes with any file, scale or order, and only then", async () => {
    const k = join(dir, "kohya_sd1.safetensors");
    const p = join(dir, "peft_sd1.safetensors");
    const id = await loraSetId([{ path: k, scale: 0.8 }, { path: p, scale: 0.5 }]);
    expect(await loraSetId([{ path: k, scale: 0.8 }, { path: p, scale: 0.5 }])).toBe(id);
    expect(await loraSetId([{ path: p, scale: 0.5 }, { path: k, scale: 0.8 }])).not.toBe(id);
    expect(await loraSetId([{ path: k, scale: 0.7 }, { path: p, scale: 0.5 }])).not.toBe(id);
  });
});

describe("LoRAs merged into a checkpoint before conversion (sd-trt convert --lora)", () => {
  test("the changed weights read as diffusers' fused weights; the others are the checkpoint's own", async () => {
    const source = await tinyCheckpoint("sd1");
    const merged = await checkpointWithLoras(source, [
      { path: join(dir, "kohya_sd1.safetensors"), scale: 0.8 },
      { path: join(dir, "peft_sd1.safetensors"), scale: 0.5 },
    ]);
    for (const componentKey of reference.changed) {
      const [component, ...rest] = componentKey.split("/");
      const tensor = merged.components[component as ComponentName]!.weights.get(rest.join("/"))!;
      expectClose(await tensor.read(), fusedWeight("kohya_0.8+peft_0.5", componentKey), componentKey);
    }
    const untouched = "conv_in.weight";
    expect(merged.components.unet!.weights.get(untouched)).toBe(source.components.unet!.weights.get(untouched));
    expect(await checkpointWithLoras(source, [])).toBe(source);
  });
});
