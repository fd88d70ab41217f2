/**
 * The noise-generator contract shared by the torch CPU generator and A1111's "NV" source, shape
 * and seed validation, and diffusers' `randn_tensor` semantics for one generator or a list.
 */
import { InvalidOptionError } from "../errors.js";
import { invalidOption } from "../validate.js";

/** Largest seed either generator accepts: 2⁶⁴ − 1 (torch's `manual_seed` takes a 64-bit value). */
export const MAX_SEED = 0xffff_ffff_ffff_ffffn;
/** Largest element count one `randn` call may produce (2³¹). */
export const MAX_NUMEL = 2 ** 31;

/**
 * A seeded stream of standard normal float32 samples. Successive `randn` calls continue the
 * stream, exactly like successive `torch.randn(shape, generator=g)` calls on one generator.
 */
export interface Generator {
  /** The seed the generator was created with, 0 … 2⁶⁴ − 1. */
  readonly seed: bigint;
  /**
   * Draws a tensor of standard normal samples in C (row-major) order.
   * @param shape non-empty list of positive integers; their product must not exceed 2³¹.
   */
  randn(shape: readonly number[]): Float32Array;
}

/**
 * Checks a seed and returns it as a bigint. Seeds are non-negative integers up to 2⁶⁴ − 1, given
 * as a number (any integer-valued number, exact above 2⁵³ as it stands) or a bigint.
 * @param name the option name used in the error message, e.g. `"seed"` or `"seeds[2]"`.
 */
export function validateSeed(name: string, value: unknown): bigint {
  const expected = `an integer from 0 to ${MAX_SEED} (a number or a bigint)`;
  if (typeof value === "bigint") {
    if (value < 0n || value > MAX_SEED) throw invalidOption(name, expected, value);
    return value;
  }
  // 2**64 is the first double above MAX_SEED (which itself is not a double).
  if (typeof value !== "number" || !Number.isInteger(value) || value < 0 || value >= 2 ** 64) {
    throw invalidOption(name, expected, value);
  }
  return BigInt(value);
}

/**
 * Checks a tensor shape and returns its element count.
 * @param name the option name used in the error message. Defaults to `"shape"`.
 */
export function validateShape(shape: unknown, name = "shape"): number {
  const expected = `a non-empty array of positive integers with at most ${MAX_NUMEL} elements in all`;
  if (!Array.isArray(shape) || shape.length === 0) throw invalidOption(name, expected, shape);
  const badShape = () =>
    new InvalidOptionError(name, `${name} must be ${expected}, got [${shape.map(describeDim).join(", ")}]`);
  let numel = 1;
  for (const dim of shape) {
    if (typeof dim !== "number" || !Number.isInteger(dim) || dim < 1) throw badShape();
    numel *= dim;
    if (numel > MAX_NUMEL) throw badShape();
  }
  return numel;
}

function describeDim(dim: unknown): string {
  if (typeof dim === "string") return JSON.stringify(dim);
  if (typeof dim === "bigint") return `${dim}n`;
  return String(dim);
}

function validateGenerator(name: string, value: unknown): Generator {
  if (typeof value !== "object" || value === null || typeof (value as Generator).randn !== "function") {
    throw invalidOption(name, "a Generator (TorchGenerator or NvGenerator)", value);
  }
  return value as Generator;
}

/**
 * `torch.randn(shape, generator=generator)`: standard normal float32 samples in C order.
 * The shape is validated here (errors name `shape`).
 */
export function randn(shape: readonly number[], generator: Generator): Float32Array {
  validateShape(shape);
  return validateGenerator("generator", generator).randn(shape);
}

/**
 * diffusers' `randn_tensor(shape, generator=[g₀ … g_{B−1}])`: B separate draws of shape
 * `[1, ...shape.slice(1)]`, row i from generator i, concatenated along the first axis. This is
 * how per-image seeds (A1111's seed, seed + 1, …) give each image the noise it would get alone.
 * @param shape `[B, ...rest]`; B must equal `generators.length`.
 */
export function randnRows(shape: readonly number[], generators: readonly Generator[]): Float32Array {
  const numel = validateShape(shape);
  const batch = shape[0]!;
  if (!Array.isArray(generators) || generators.length !== batch) {
    throw invalidOption("generators", `an array of ${batch} generators (one per row of shape[0])`, generators);
  }
  const rowShape = [1, ...shape.slice(1)];
  const rowSize = numel / batch;
  const out = new Float32Array(numel);
  for (let i = 0; i < batch; i++) {
    out.set(validateGenerator(`generators[${i}]`, generators[i]).randn(rowShape), i * rowSize);
  }
  return out;
}
