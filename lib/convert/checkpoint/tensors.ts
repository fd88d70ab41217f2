/**
 * Weight sources over `.safetensors` files: a component's tensors under diffusers keys, each read
 * from its file only when asked (lib/model/safetensors.ts streams them), with the few reshapes the
 * original single-file layout needs on the way (q/k/v rows out of a joined in_proj, 1×1 convs as
 * linear weights).
 */
import type { StreamedSafetensorsTensor } from "../../model/safetensors.js";
import type { SourceTensor, WeightSource } from "../types.js";

/** How a stored tensor becomes the diffusers tensor. */
export type TensorTransform =
  /** rows [start, start + count) of the first axis (OpenCLIP's in_proj → q, k, v). */
  | { readonly kind: "rows"; readonly start: number; readonly count: number }
  /** the same values under another shape (a 1×1 conv kernel read as a linear weight). */
  | { readonly kind: "reshape"; readonly shape: readonly number[] };

/** `stored` as the diffusers tensor `key`, after `transform`. */
export function sourceTensor(key: string, stored: StreamedSafetensorsTensor, transform?: TensorTransform): SourceTensor {
  const { dtype } = stored;
  if (transform === undefined) return { key, dtype, shape: stored.shape, read: () => stored.read() };
  if (transform.kind === "reshape") return { key, dtype, shape: transform.shape, read: () => stored.read() };
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
