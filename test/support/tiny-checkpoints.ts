/**
 * The tiny reference checkpoints of test/fixtures/checkpoints (scripts/reference/gen_tiny_checkpoints.py)
 * as a CheckpointSource, and their torch goldens.
 *
 * The diffusers-folder reader here is deliberately minimal (config.json + every *.safetensors of a
 * component, read with lib/model/safetensors.ts); the real readers are lib/convert/checkpoint's.
 */
import { readdir, readFile } from "node:fs/promises";
import { join } from "node:path";
import { readSafetensors } from "../../lib/model/safetensors.js";
import type { CheckpointSource, ComponentSource, ModelFamily, SourceTensor } from "../../lib/convert/types.js";

export const CHECKPOINTS = join(process.cwd(), "test", "fixtures", "checkpoints");

async function readJson(path: string): Promise<Record<string, unknown>> {
  return JSON.parse(await readFile(path, "utf8")) as Record<string, unknown>;
}

/** One component folder (config.json + *.safetensors) as a ComponentSource. */
export async function componentFromFolder(dir: string): Promise<ComponentSource> {
  const tensors = new Map<string, SourceTensor>();
  for (const file of (await readdir(dir)).filter((f) => f.endsWith(".safetensors")).sort()) {
    const st = await readSafetensors(join(dir, file));
    for (const [key, t] of st.tensors) {
      tensors.set(key, { key, dtype: t.dtype, shape: t.shape, read: async () => t.toFloat32() });
    }
  }
  return { config: await readJson(join(dir, "config.json")), weights: { keys: () => tensors.keys(), get: (k) => tensors.get(k) } };
}

export async function tinyCheckpoint(family: "sd1" | "sd2"): Promise<CheckpointSource> {
  const dir = join(CHECKPOINTS, family, "diffusers");
  return {
    family: family as ModelFamily,
    path: dir,
    components: {
      text_encoder: await componentFromFolder(join(dir, "text_encoder")),
      unet: await componentFromFolder(join(dir, "unet")),
      vae: await componentFromFolder(join(dir, "vae")),
    },
    schedulerConfig: await readJson(join(dir, "scheduler", "scheduler_config.json")),
  };
}

export interface GoldenArray {
  readonly shape: readonly number[];
  readonly data: Float32Array | Int32Array;
}

/** component_goldens.json + .bin: name → array. */
export async function tinyGoldens(family: "sd1" | "sd2" | "deep-unet" | "sdxl-parts" | "sdxl"): Promise<Map<string, GoldenArray>> {
  const index = (await readJson(join(CHECKPOINTS, family, "component_goldens.json")))["arrays"] as Record<string, { dtype: string; shape: number[]; offset: number }>;
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
