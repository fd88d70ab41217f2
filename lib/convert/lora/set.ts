/**
 * A LoRA set: the LoRAs one generation runs with, each at its scale, in order. What the
 * surfaces hand the backends (`--lora FILE[:SCALE]`, A1111's `<lora:NAME:SCALE>` tags), what
 * the CPU backend caches merged graphs under and what TensorRT refits.
 *
 * Merging follows diffusers' `fuse_lora`: each LoRA's delta is added to the weight in turn, in
 * float32 (w ← w + Δ₁, then w ← w + Δ₂, …), so the same set gives the same weights bit for bit and
 * the base weights are never changed in place: going back to the base is using them again.
 */
import { createHash } from "node:crypto";
import { readFile } from "node:fs/promises";
import { resolve } from "node:path";
import { InternalError, InvalidOptionError, ModelFileError } from "../../errors.js";
import type { ComponentName, WeightDelta } from "../types.js";
import { loraDeltas, type LoraTarget } from "./deltas.js";
import { readLoraFile } from "./read.js";

/** One LoRA of a set. */
export interface LoraSpec {
  readonly path: string;
  /** The user's weight (A1111's multiplier, diffusers' adapter weight); 1 when not given. */
  readonly scale: number;
  /** The name a prompt tag gave it (for infotext); the file name without extension otherwise. */
  readonly name?: string;
}

/** Largest |scale| accepted: A1111's UI slider stops at 2, scripts go further; past this it is a typo. */
export const MAX_LORA_SCALE = 100;

/**
 * Reads `FILE[:SCALE]` (the `--lora` option). The scale is what follows the last ":" when that
 * is a number, so Windows paths (`C:\loras\a.safetensors`) need no scale to parse.
 * @throws InvalidOptionError naming `option`, the value and what is wrong.
 */
export function parseLoraSpec(value: string, option = "--lora"): LoraSpec {
  const colon = value.lastIndexOf(":");
  const tail = colon >= 0 ? value.slice(colon + 1) : "";
  const hasScale = colon >= 0 && tail.trim() !== "" && /^[-+]?(\d+\.?\d*|\.\d+)(e[-+]?\d+)?$/i.test(tail.trim());
  const path = hasScale ? value.slice(0, colon) : value;
  const scale = hasScale ? Number(tail) : 1;
  if (path === "") throw new InvalidOptionError(option, `${option} must be FILE or FILE:SCALE, got ${JSON.stringify(value)}`);
  checkLoraScale(scale, option, value);
  return { path, scale };
}

/** @throws InvalidOptionError when a LoRA scale is not a finite number within ±MAX_LORA_SCALE. */
export function checkLoraScale(scale: number, option: string, shown: string = String(scale)): void {
  if (!Number.isFinite(scale) || Math.abs(scale) > MAX_LORA_SCALE) {
    throw new InvalidOptionError(option, `${option} scale must be a number from -${MAX_LORA_SCALE} to ${MAX_LORA_SCALE}, got ${JSON.stringify(shown)}`);
  }
}

/** The deltas of one component weight, in the set's order. */
export interface KeyDeltas {
  readonly shape: readonly number[];
  readonly deltas: readonly Float32Array[];
}

/** Every delta of a set, per component and key. */
export type SetDeltas = Map<ComponentName, Map<string, KeyDeltas>>;

/**
 * Reads each LoRA of the set and computes its deltas on `target`.
 * @throws ModelFileError from readLoraFile / loraDeltas, naming the file.
 */
export async function loraSetDeltas(set: readonly LoraSpec[], target: LoraTarget): Promise<SetDeltas> {
  const out: SetDeltas = new Map();
  for (const spec of set) {
    const file = await readLoraFile(spec.path);
    for (const delta of loraDeltas(file, target, spec.scale)) addDelta(out, delta);
  }
  return out;
}

function addDelta(out: SetDeltas, delta: WeightDelta): void {
  let component = out.get(delta.component);
  if (!component) {
    component = new Map();
    out.set(delta.component, component);
  }
  const entry = component.get(delta.key);
  component.set(delta.key, { shape: delta.shape, deltas: [...(entry?.deltas ?? []), delta.values] });
}

/** base + Δ₁ + Δ₂ + …, added one at a time in float32 (diffusers' fuse order); `base` is left as it was. */
export function mergedWeight(base: Float32Array, deltas: readonly Float32Array[]): Float32Array {
  const out = new Float32Array(base);
  for (const delta of deltas) {
    if (delta.length !== out.length) throw new InternalError(`a LoRA delta of ${delta.length} values was merged into a weight of ${out.length} (loraDeltas checks shapes)`);
    for (let i = 0; i < out.length; i++) out[i]! += delta[i]!;
  }
  return out;
}

/**
 * A name for the set's merged weights: sha256 over each file's bytes and scale, in order. Equal
 * sets (same files, same scales, same order) share it; anything else gives another.
 */
export async function loraSetId(set: readonly LoraSpec[]): Promise<string> {
  const hash = createHash("sha256");
  for (const spec of set) {
    let bytes: Buffer;
    try {
      bytes = await readFile(resolve(spec.path));
    } catch (error) {
      throw new ModelFileError(spec.path, `${spec.path} cannot be read (${(error as Error).message})`, { cause: error });
    }
    hash.update(createHash("sha256").update(bytes).digest("hex"));
    hash.update(`:${spec.scale};`);
  }
  return hash.digest("hex");
}
