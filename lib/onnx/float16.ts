/**
 * IEEE 754 binary32 ↔ binary16 conversion (round to nearest, ties to even, subnormals kept),
 * as numpy's `astype(np.float16)` does. fp16 data is carried as Uint16Array bit patterns.
 */

/** Largest finite fp16 value. */
export const FLOAT16_MAX = 65504;

const f32 = new Float32Array(1);
const u32 = new Uint32Array(f32.buffer);

/** The fp16 bit pattern nearest to `value` (±Infinity beyond the fp16 range, NaN stays NaN). */
export function float32ToFloat16Bits(value: number): number {
  f32[0] = value;
  const x = u32[0]!;
  const sign = (x >>> 16) & 0x8000;
  const exp = (x >>> 23) & 0xff;
  let mant = x & 0x7fffff;
  if (exp === 0xff) return sign | 0x7c00 | (mant !== 0 ? 0x200 | (mant >>> 13) : 0);
  const e = exp - 127 + 15;
  if (e >= 0x1f) return sign | 0x7c00;
  if (e <= 0) {
    if (e < -10) return sign;
    mant |= 0x800000;
    const shift = 14 - e;
    let half = mant >>> shift;
    const rem = mant & ((1 << shift) - 1);
    const halfway = 1 << (shift - 1);
    if (rem > halfway || (rem === halfway && (half & 1) === 1)) half++;
    return sign | half;
  }
  let half = sign | (e << 10) | (mant >>> 13);
  const rem = mant & 0x1fff;
  // A carry out of the mantissa correctly bumps the exponent (up to Infinity).
  if (rem > 0x1000 || (rem === 0x1000 && (half & 1) === 1)) half++;
  return half;
}

export function float16BitsToFloat32(bits: number): number {
  const sign = bits & 0x8000 ? -1 : 1;
  const exp = (bits >>> 10) & 0x1f;
  const mant = bits & 0x3ff;
  if (exp === 0) return sign * mant * 2 ** -24;
  if (exp === 0x1f) return mant !== 0 ? NaN : sign * Infinity;
  return sign * (1 + mant / 1024) * 2 ** (exp - 15);
}

/**
 * Converts weights to fp16. Finite values beyond ±65504 are clamped to ±65504 (so that a large
 * finite constant such as torch's `finfo(float32).min` attention mask stays finite instead of
 * becoming −Inf); ±Infinity and NaN are kept as they are. Returns how many values were clamped.
 */
export function float32ArrayToFloat16(src: Float32Array): { bits: Uint16Array; clamped: number } {
  const bits = new Uint16Array(src.length);
  let clamped = 0;
  for (let i = 0; i < src.length; i++) {
    let v = src[i]!;
    if (v > FLOAT16_MAX && v !== Infinity) {
      v = FLOAT16_MAX;
      clamped++;
    } else if (v < -FLOAT16_MAX && v !== -Infinity) {
      v = -FLOAT16_MAX;
      clamped++;
    }
    bits[i] = float32ToFloat16Bits(v);
  }
  return { bits, clamped };
}

export function float16ArrayToFloat32(bits: Uint16Array): Float32Array {
  const out = new Float32Array(bits.length);
  for (let i = 0; i < bits.length; i++) out[i] = float16BitsToFloat32(bits[i]!);
  return out;
}
