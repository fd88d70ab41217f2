/**
 * Torch-compatible noise: `TorchGenerator` (torch's CPU generator, `rng: "cpu"`) and
 * `NvGenerator` (A1111's "NV" Philox source, torch's CUDA stream, `rng: "nv"`).
 */
import { oneOf } from "../validate.js";
import type { Generator } from "./generator.js";
import { NvGenerator } from "./nv-generator.js";
import { TorchGenerator } from "./torch-generator.js";

export { MAX_NUMEL, MAX_SEED, randn, randnRows, validateSeed, validateShape, type Generator } from "./generator.js";
export { NvGenerator } from "./nv-generator.js";
export { TorchGenerator } from "./torch-generator.js";

/** Random sources: `"cpu"` = torch's CPU generator, `"nv"` = torch's CUDA generator (A1111 "NV"). */
export const RNG_SOURCES = ["cpu", "nv"] as const;
export type RngSource = (typeof RNG_SOURCES)[number];

/**
 * Creates a generator for a random source.
 * @param rng `"cpu"` or `"nv"` (errors name `rng`).
 * @param seed 0 … 2⁶⁴ − 1 (errors name `seed`).
 */
export function createGenerator(rng: RngSource, seed: number | bigint): Generator {
  const source = oneOf("rng", rng, RNG_SOURCES);
  return source === "cpu" ? new TorchGenerator(seed) : new NvGenerator(seed);
}
