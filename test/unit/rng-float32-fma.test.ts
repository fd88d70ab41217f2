import { describe, expect, test } from "@jest/globals";

import { fmaf } from "../../lib/rng/float32-fma.js";

/**
 * Independent reference: a·b + c computed exactly with BigInt and rounded once to float32
 * (round to nearest, ties to even). Every float32 is an integer multiple of 2⁻¹⁴⁹, so with
 * A = a·2¹⁴⁹, B = b·2¹⁴⁹, C = c·2¹⁴⁹ the exact result is (A·B + C·2¹⁴⁹)·2⁻²⁹⁸.
 */
function exactFmaf(a: number, b: number, c: number): number {
  const scale = 2 ** 149;
  const x = BigInt(a * scale) * BigInt(b * scale) + BigInt(c * scale) * (1n << 149n);
  if (x === 0n) return a * b + c; // the sign of an exact zero follows IEEE (e.g. −0 for −0 + −0)
  const negative = x < 0n;
  const mag = negative ? -x : x;
  const bits = mag.toString(2).length;
  const exponent = bits - 1 - 298; // value in [2^exponent, 2^(exponent+1))
  const ulpExponent = Math.max(exponent - 23, -149);
  const shift = BigInt(ulpExponent + 298);
  let q = mag >> shift;
  const rem = mag - (q << shift);
  const half = 1n << (shift - 1n);
  if (rem > half || (rem === half && (q & 1n) === 1n)) q += 1n;
  const value = Number(q) * 2 ** ulpExponent;
  const rounded = value >= 2 ** 128 ? Infinity : value;
  return negative ? -rounded : rounded;
}

/** Deterministic xorshift32 stream for the random cases. */
function makeRandom(seed: number): () => number {
  let s = seed >>> 0 || 1;
  return () => {
    s ^= s << 13;
    s >>>= 0;
    s ^= s >>> 17;
    s ^= s << 5;
    s >>>= 0;
    return s;
  };
}

const bitsF32 = new Float32Array(1);
const bitsU32 = new Uint32Array(bitsF32.buffer);
function float32FromBits(bits: number): number {
  bitsU32[0] = bits;
  return bitsF32[0]!;
}

describe("fmaf (single-rounding float32 fused multiply-add)", () => {
  test("matches exact rounding on random operands of all magnitudes", () => {
    const next = makeRandom(12345);
    // Exponent field 1 … 254 keeps the operands finite and normal; then mix in narrow ranges
    // where the product and the addend overlap (the interesting case for double rounding).
    const randomFloat = (lowExp: number, highExp: number): number => {
      const exp = lowExp + (next() % (highExp - lowExp + 1));
      return float32FromBits(((next() & 1) << 31) | (exp << 23) | (next() & 0x7fffff));
    };
    for (let i = 0; i < 10000; i++) {
      const wide = i % 2 === 0;
      const a = wide ? randomFloat(64, 190) : randomFloat(120, 134);
      const b = wide ? randomFloat(64, 190) : randomFloat(120, 134);
      const c = wide ? randomFloat(1, 254) : randomFloat(100, 140);
      expect(fmaf(a, b, c)).toBe(exactFmaf(a, b, c));
    }
  });

  test("resolves a product that lands exactly on a float32 midpoint in the direction of the addend", () => {
    // (1 + 2⁻¹²)² = 1 + 2⁻¹¹ + 2⁻²⁴ is halfway between two float32 numbers. A tiny addend
    // is lost when the sum is rounded to double, and Math.fround would then tie to even.
    const a = 1 + 2 ** -12;
    const tiny = 2 ** -60;
    const below = 1 + 2 ** -11;
    const above = 1 + 2 ** -11 + 2 ** -23;
    expect(Math.fround(a * a + tiny)).toBe(below); // the naive formula double-rounds
    expect(fmaf(a, a, tiny)).toBe(above);
    expect(fmaf(a, a, -tiny)).toBe(below);
    expect(fmaf(a, a, 0)).toBe(below); // an exact tie goes to even
    expect(fmaf(-a, a, -tiny)).toBe(-above);
    expect(exactFmaf(a, a, tiny)).toBe(above);
  });

  test("matches exact rounding on constructed midpoint cases", () => {
    const next = makeRandom(777);
    let naiveWrong = 0;
    for (let i = 0; i < 5000; i++) {
      // a = 1 + x·2⁻¹², b = 1 + y·2⁻¹² with small x, y: products with ≤ 25 significant bits.
      const a = 1 + (next() % 4096) * 2 ** -12;
      const b = 1 + (next() % 4096) * 2 ** -12;
      const sign = next() & 1 ? 1 : -1;
      const c = sign * float32FromBits(((40 + (next() % 60)) << 23) | (next() & 0x7fffff)); // tiny addend
      const expected = exactFmaf(a, b, c);
      expect(fmaf(a, b, c)).toBe(expected);
      if (Math.fround(a * b + c) !== expected) naiveWrong++;
    }
    expect(naiveWrong).toBeGreaterThan(0); // the cases really exercise double rounding
  });

  test("handles midpoints in the subnormal range and at the overflow threshold", () => {
    const check = (x: number, y: number, z: number, expected: number) => {
      for (const v of [x, y, z]) expect(Math.fround(v)).toBe(v); // operands are float32
      expect(exactFmaf(x, y, z)).toBe(expected);
      expect(fmaf(x, y, z)).toBe(expected);
      expect(Math.fround(x * y + z)).not.toBe(expected); // the naive formula gets these wrong
    };
    // Subnormal: a·b = −(2⁻¹⁵⁰ − 2⁻¹⁹⁶) and c = 2⁻¹²⁷ + 2⁻¹⁴⁹ sum to just above the midpoint
    // 2⁻¹²⁷ + 2⁻¹⁵⁰ (float32 grid 2⁻¹⁴⁹ there); the double sum lands exactly on it.
    const a = (1 + 2 ** -23) * 2 ** -75;
    const b = (1 - 2 ** -23) * 2 ** -75;
    check(a, -b, 2 ** -127 + 2 ** -149, 2 ** -127 + 2 ** -149);
    check(-a, b, -(2 ** -127 + 2 ** -149), -(2 ** -127 + 2 ** -149));
    // Overflow: FLT_MAX + (2¹⁰³ − 2⁵⁷) is just below the midpoint 2¹²⁸ − 2¹⁰³ (which rounds to ∞
    // on a tie); the double sum lands exactly on the midpoint.
    const fltMax = float32FromBits(0x7f7fffff);
    const p = (1 + 2 ** -23) * 2 ** 52;
    const q = (1 - 2 ** -23) * 2 ** 51;
    check(p, q, fltMax, fltMax);
    check(-p, q, -fltMax, -fltMax);
    // An exact tie at the overflow midpoint rounds to infinity; below it, to FLT_MAX.
    expect(fmaf(fltMax, 1, 2 ** 103)).toBe(Infinity);
    expect(fmaf(fltMax, 1, 2 ** 102)).toBe(fltMax);
    expect(fmaf(fltMax, 2, 0)).toBe(Infinity);
  });
});
