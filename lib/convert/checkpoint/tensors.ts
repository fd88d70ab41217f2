/**
 * Weight sources over `.safetensors` files: a component's tensors under diffusers keys, each read
 * from its file only when asked (lib/model/safetensors.ts streams them), with the few reshapes the
 * original single-file layout needs on the way (q/k/v rows out of a joined in_proj, 1×1 convs as
 * linear weights, OpenCLIP's transposed projection), and the steps every single-file reader
 * (single-file.ts, sdxl-single-file.ts) takes: a component's tensors by prefix, renamed.
 */
import { ModelFileError } from "../../errors.js";
import type { StreamedSafetensorsTensor } from "../../model/safetensors.js";
import type { SourceTensor, WeightSource } from "../types.js";
import type { ShapeIndex } from "./ldm-configs.js";

/** A stored tensor's diffusers key, and how its values become that tensor. */
export interface MappedKey {
  readonly key: string;
  readonly transform?: TensorTransform;
}

/** How a stored tensor becomes the diffusers tensor. */
export type TensorTransform =
  /** rows [start, start + count) of the first axis (OpenCLIP's in_proj → q, k, v). */
  | { readonly kind: "rows"; readonly start: number; readonly count: number }
  /** the same values under another shape (a 1×1 conv kernel read as a linear weight). */
  | { readonly kind: "reshape"; readonly shape: readonly number[] }
  /** a 2-D tensor transposed (OpenCLIP's `text_projection` [width, projection] → a linear weight [projection, width]). */
  | { readonly kind: "transpose" };

/** `stored` as the diffusers tensor `key`, after `transform`. */
export function sourceTensor(key: string, stored: StreamedSafetensorsTensor, transform?: TensorTransform): SourceTensor {
  const { dtype } = stored;
  if (transform === undefined) return { key, dtype, shape: stored.shape, read: () => stored.read() };
  if (transform.kind === "reshape") return { key, dtype, shape: transform.shape, read: () => stored.read() };
  if (transform.kind === "transpose") {
    const [rows, cols] = stored.shape as [number, number];
    return { key, dtype, shape: [cols, rows], read: async () => transpose(await stored.read(), rows, cols) };
  }
  const rowSize = stored.shape.slice(1).reduce((n, d) => n * d, 1);
  const { start, count } = transform;
  return {
    key,
    dtype,
    shape: [count, ...stored.shape.slice(1)],
    read: async () => (await stored.read()).slice(start * rowSize, (start + count) * rowSize),
  };
}

/** A WeightSource over a map built once (keys in insertion order). */
export function weightSourceOf(tensors: ReadonlyMap<string, SourceTensor>): WeightSource {
  return { keys: () => tensors.keys(), get: (key) => tensors.get(key) };
}

function transpose(values: Float32Array, rows: number, cols: number): Float32Array {
  const out = new Float32Array(values.length);
  for (let r = 0; r < rows; r++) for (let c = 0; c < cols; c++) out[c * rows + r] = values[r * cols + c]!;
  return out;
}

/** A component's stored tensors with the prefix removed (`tensors` holds the float ones: integers such as position_ids are not weights). */
export function withPrefix(tensors: ReadonlyMap<string, StreamedSafetensorsTensor>, prefix: string): Map<string, StreamedSafetensorsTensor> {
  const out = new Map<string, StreamedSafetensorsTensor>();
  for (const [name, tensor] of tensors) if (name.startsWith(prefix)) out.set(name.slice(prefix.length), tensor);
  return out;
}

export const shapesOf = (tensors: ReadonlyMap<string, { readonly shape: readonly number[] }>): ShapeIndex => new Map([...tensors].map(([k, t]) => [k, t.shape]));

/** Renames a component's tensors; a diffusers key that two stored tensors both claim is an error. */
export function mapComponent(path: string, what: string, stored: ReadonlyMap<string, StreamedSafetensorsTensor>, map: (key: string, tensor: StreamedSafetensorsTensor) => MappedKey[]): Map<string, SourceTensor> {
  const out = new Map<string, SourceTensor>();
  for (const [key, tensor] of stored) {
    for (const mapped of map(key, tensor)) {
      if (out.has(mapped.key)) throw new ModelFileError(path, `${path}: two ${what} tensors map to the diffusers weight ${JSON.stringify(mapped.key)} (the second is ${JSON.stringify(key)})`);
      out.set(mapped.key, sourceTensor(mapped.key, tensor, mapped.transform));
    }
  }
  return out;
}
