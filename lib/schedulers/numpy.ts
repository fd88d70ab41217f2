/**
 * The few numpy / torch array constructors diffusers' schedulers call in `__init__` and
 * `set_timesteps`, reproduced with their exact rounding so timesteps and tables match bit for bit.
 */
import { f32 } from "./float32.js";

/**
 * `np.linspace(start, stop, num)` in float64: `i * ((stop - start) / (num - 1)) + start`, with the
 * last entry set to `stop` exactly (numpy's `function_base.linspace`).
 */
export function linspace(start: number, stop: number, num: number): number[] {
  if (num <= 0) return [];
  if (num === 1) return [start];
  const div = num - 1;
  const delta = stop - start;
  const step = delta / div;
  const out = new Array<number>(num);
  for (let i = 0; i < num; i++) {
    // numpy takes the `y / div * delta` branch only when the step underflows to 0.
    out[i] = (step === 0 ? (i / div) * delta : i * step) + start;
  }
  out[num - 1] = stop;
  return out;
}

/**
 * `np.arange(start, stop, step)` for floats: length `ceil((stop - start) / step)` and entries
 * `start + i * delta` where `delta = (start + step) - start` (numpy's `PyArray_Arange`). The length
 * rule is why `np.arange(1000, 0, -1000 / 61)` has 62 entries.
 */
export function arange(start: number, stop: number, step: number): number[] {
  const length = Math.max(0, Math.ceil((stop - start) / step));
  const delta = start + step - start;
  const out = new Array<number>(length);
  for (let i = 0; i < length; i++) out[i] = start + i * delta;
  return out;
}

/** `np.round` / `np.rint`: round half to even. */
export function roundHalfEven(x: number): number {
  const r = Math.round(x);
  // Math.round rounds .5 up; step back when that lands on an odd number.
  return Math.abs(x - Math.trunc(x)) === 0.5 && r % 2 !== 0 ? r - 1 : r;
}

/**
 * `np.interp(x, arange(len(fp)), fp)`: piecewise-linear interpolation on the integer grid
 * 0…n−1, clamped at both ends, computed as numpy's C loop does:
 * `slope * (x - xp[j]) + fp[j]`.
 */
export function interpOnIndexGrid(x: number, fp: ArrayLike<number>): number {
  const n = fp.length;
  if (x <= 0) return fp[0]!;
  if (x >= n - 1) return fp[n - 1]!;
  const j = Math.floor(x);
  const slope = (fp[j + 1]! - fp[j]!) / 1;
  return slope * (x - j) + fp[j]!;
}

/**
 * `torch.linspace(start, end, steps, dtype=torch.float32)` on the CPU, as torch's
 * `linspace_kernel` computes it: `step = (end − start) / (steps − 1)` in float32; the first half
 * counts up from `start`, the second half down from `end`; the AVX2 path fills 8 lanes from a base
 * `start + step·idx` (a fused multiply-add) plus `lane·step`, two vectors per loop iteration, and
 * the tail goes through the scalar lambda. This reproduces the betas in the scheduler goldens bit
 * for bit (they were made on an AVX2/FMA CPU).
 */
export function torchLinspaceFloat32(start: number, end: number, steps: number): Float32Array {
  const out = new Float32Array(steps);
  if (steps === 0) return out;
  if (steps === 1) {
    out[0] = start;
    return out;
  }
  const s = f32(start);
  const e = f32(end);
  const step = f32(f32(e - s) / (steps - 1));
  const halfway = Math.floor(steps / 2);
  // A fused multiply-add rounds once; the exact product fits a double (24-bit × ≤31-bit integer).
  const fromStart = (idx: number) => f32(s + step * idx);
  const fromEnd = (idx: number) => f32(e - step * (steps - idx - 1));
  const lanes = 8;
  let i = 0;
  for (; i <= steps - 2 * lanes; i += 2 * lanes) {
    for (const v of [i, i + lanes]) {
      const base = v < halfway ? fromStart(v) : fromEnd(v);
      out[v] = base;
      for (let lane = 1; lane < lanes; lane++) out[v + lane] = f32(base + f32(lane * step));
    }
  }
  for (; i < steps; i++) out[i] = i < halfway ? fromStart(i) : fromEnd(i);
  return out;
}
