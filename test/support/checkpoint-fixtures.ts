/**
 * The tiny reference checkpoints of test/fixtures/checkpoints (scripts/reference/gen_tiny_checkpoints.py,
 * gen_tiny_single_file.py, gen_tiny_sdxl*.py), read with the real readers of lib/convert/checkpoint,
 * their torch goldens, and what the checkpoint-reading tests share: hand-made `.safetensors` files and
 * a comparison of two readings weight by weight.
 */
import { truncateSync, writeFileSync } from "node:fs";
import { readFile } from "node:fs/promises";
import { join } from "node:path";
import { expect } from "@jest/globals";
import { readComponentWeights, type FolderComponent } from "../../lib/convert/checkpoint/diffusers-folder.js";
import { readCheckpoint } from "../../lib/convert/checkpoint/index.js";
import type { CheckpointSource, ComponentName, ComponentSource } from "../../lib/convert/types.js";

export const CHECKPOINTS = join(process.cwd(), "test", "fixtures", "checkpoints");

/** The tiny SD 1.x or 2.x model's diffusers folder, read by the converter's own reader. */
export function tinyCheckpoint(family: "sd1" | "sd2"): Promise<CheckpointSource> {
  return readCheckpoint(join(CHECKPOINTS, family, "diffusers"));
}

/** A fixture set's lone component folder (`deep-unet/unet`, `sdxl-parts/text_encoder_2`, …): its config and weights. */
export async function fixtureComponent(set: string, component: FolderComponent): Promise<ComponentSource> {
  const dir = join(CHECKPOINTS, set, component);
  return { config: JSON.parse(await readFile(join(dir, "config.json"), "utf8")) as Record<string, unknown>, weights: await readComponentWeights(dir, component) };
}

/** Writes a .safetensors file of F32 tensors (zeros unless values are given) and returns its path. */
export function writeF32Safetensors(path: string, tensors: Record<string, { shape: number[]; values?: number[] }>): string {
  const header: Record<string, unknown> = {};
  let offset = 0;
  const chunks: Float32Array[] = [];
  for (const [name, { shape, values }] of Object.entries(tensors)) {
    const data = new Float32Array(shape.reduce((n, d) => n * d, 1));
    if (values) data.set(values);
    header[name] = { dtype: "F32", shape, data_offsets: [offset, offset + data.byteLength] };
    offset += data.byteLength;
    chunks.push(data);
  }
  const json = Buffer.from(JSON.stringify(header));
  const head = Buffer.alloc(8);
  head.writeBigUInt64LE(BigInt(json.length));
  writeFileSync(path, Buffer.concat([head, json, ...chunks.map((c) => Buffer.from(c.buffer))]));
  return path;
}

/**
 * Writes a full-size checkpoint's header (F16 tensors with these names and shapes) as a sparse file
 * of its full length, for readers that only read the header (the full-size shape tests); returns its path.
 */
export function writeSparseF16Safetensors(path: string, tensors: Record<string, number[]>): string {
  const header: Record<string, unknown> = {};
  let offset = 0;
  for (const [name, shape] of Object.entries(tensors)) {
    const bytes = 2 * shape.reduce((n, d) => n * d, 1);
    header[name] = { dtype: "F16", shape, data_offsets: [offset, offset + bytes] };
    offset += bytes;
  }
  const json = Buffer.from(JSON.stringify(header));
  const head = Buffer.alloc(8);
  head.writeBigUInt64LE(BigInt(json.length));
  writeFileSync(path, Buffer.concat([head, json]));
  truncateSync(path, 8 + json.length + offset);
  return path;
}

/** Expects `got` to hold exactly `want`'s weights in these components: the same keys, shapes and values (bit for bit). */
export async function expectSameWeights(got: CheckpointSource, want: CheckpointSource, components: readonly ComponentName[]): Promise<void> {
  for (const component of components) {
    const [a, b] = [got.components[component]!.weights, want.components[component]!.weights];
    expect({ component, keys: [...a.keys()].sort() }).toEqual({ component, keys: [...b.keys()].sort() });
    for (const key of b.keys()) {
      const [x, y] = [a.get(key)!, b.get(key)!];
      expect({ key, shape: x.shape }).toEqual({ key, shape: y.shape });
      const [xs, ys] = [await x.read(), await y.read()];
      if (!xs.every((v, i) => Object.is(v, ys[i]))) throw new Error(`${component} ${key}: values differ`);
    }
  }
}

export interface GoldenArray {
  readonly shape: readonly number[];
  readonly data: Float32Array | Int32Array;
}

/** component_goldens.json + .bin: name → array. */
export async function tinyGoldens(family: "sd1" | "sd2" | "deep-unet" | "sdxl-parts" | "sdxl"): Promise<Map<string, GoldenArray>> {
  const index = (JSON.parse(await readFile(join(CHECKPOINTS, family, "component_goldens.json"), "utf8")) as Record<string, unknown>)["arrays"] as Record<
    string,
    { dtype: string; shape: number[]; offset: number }
  >;
  const bin = await readFile(join(CHECKPOINTS, family, "component_goldens.bin"));
  const out = new Map<string, GoldenArray>();
  for (const [name, { dtype, shape, offset }] of Object.entries(index)) {
    const n = shape.reduce((a, b) => a * b, 1);
    const bytes = bin.buffer.slice(bin.byteOffset + offset, bin.byteOffset + offset + n * 4);
    out.set(name, { shape, data: dtype === "int32" ? new Int32Array(bytes) : new Float32Array(bytes) });
  }
  return out;
}

/** max |a − b| / max |b| over the tensor: the relative error the tests report and bound. */
export function relativeError(actual: ArrayLike<number>, expected: ArrayLike<number>): number {
  let diff = 0;
  let scale = 0;
  for (let i = 0; i < expected.length; i++) {
    diff = Math.max(diff, Math.abs(actual[i]! - expected[i]!));
    scale = Math.max(scale, Math.abs(expected[i]!));
  }
  if (actual.length !== expected.length) return Infinity;
  return diff / scale;
}
