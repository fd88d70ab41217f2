/**
 * Single-rounding float32 fused multiply-add, `fmaf(a, b, c) = f32(a·b + c)`, in plain JS doubles.
 *
 * PyTorch's AVX2 normal kernel is compiled with `vfmadd` instructions, and matching it bit for bit
 * needs the same single rounding. Why the obvious `Math.fround(a * b + c)` is almost right, and
 * how the rest is fixed:
 *
 * 1. `p = a * b` is exact: two 24-bit significands give at most 48 bits (≤ 53), and float32
 *    exponents can neither overflow nor underflow a double.
 * 2. `s = p + c` is the exact sum `x = p + c` rounded to double. Rounding `s` again to float32
 *    ("double rounding") equals rounding `x` once **unless `s` is exactly halfway between two
 *    float32 numbers** (a float32 midpoint). Proof: every float32 value and every float32 midpoint
 *    is a double. Rounding to double is monotone, so a double `m` with `x < m` gives `s ≤ m`, and
 *    `x > m` gives `s ≥ m`. Hence if `s` is not itself a midpoint, `s` and `x` lie on the same
 *    side of every midpoint, i.e. in the same float32 rounding interval (when `s` is a float32
 *    value, `x` is within half a double ulp of it and rounds to it as well).
 * 3. A float32 midpoint has at most 25 significant bits. A Veltkamp split (`σ = 2²⁸ + 1`) rounds
 *    `s` to 25 bits exactly; if that changes `s`, it is not a midpoint and `Math.fround(s)` is the
 *    answer. This costs three flops and almost never fails.
 * 4. Otherwise (a 25-bit `s`: about one sum in 2²⁸ of random data) the exact error of the double
 *    addition is recovered with Knuth's TwoSum, `x = s + err` exactly. If `err = 0` the sum was
 *    exact and `Math.fround(s)` is correct (ties to even, as the hardware does). If `s` is a
 *    midpoint and `err ≠ 0`, `x` is strictly beyond the midpoint in the direction of `err`, so
 *    the result is the float32 neighbour on that side instead of the tie-to-even choice.
 *
 * Plain float32 `+ − × ÷ √` need no such care: a double has 53 ≥ 2·24 + 2 bits, and for those
 * operations rounding first to double and then to float32 is always equal to rounding once
 * (Figueroa, "When is double rounding innocuous?", 1995). So `Math.fround(a ⊙ b)` is exact there.
 */

/** 2²⁸ + 1: the Veltkamp splitter that rounds a double to 53 − 28 = 25 significant bits. */
const SPLIT_25_BITS = 268435457;
/** Smallest positive normal float32, 2⁻¹²⁶. Below it float32 has fewer than 24 bits. */
const FLOAT32_MIN_NORMAL = 2 ** -126;
/** 2¹⁵⁰: scales the subnormal float32 midpoints (odd multiples of 2⁻¹⁵⁰) to odd integers. */
const TWO_POW_150 = 2 ** 150;
/** The midpoint between the largest finite float32 and 2¹²⁸ (it rounds to infinity on a tie). */
const FLOAT32_OVERFLOW_MIDPOINT = 2 ** 128 - 2 ** 103;
const FLOAT32_MAX = 2 ** 128 - 2 ** 104;

/**
 * `a·b + c` computed exactly and rounded once to float32 (round to nearest, ties to even), as the
 * x86 `vfmadd*ps` instructions do. `a`, `b`, `c` must be float32 values (results of
 * `Math.fround`); the result is one too.
 */
export function fmaf(a: number, b: number, c: number): number {
  const s = a * b + c; // a·b is exact (≤ 48-bit significand); the sum is rounded to double
  const r = Math.fround(s);
  const t = s * SPLIT_25_BITS;
  // Kept tiny so V8 inlines it at every call site (a non-inlined call boxes its doubles). The
  // no-op fround around the rare call keeps the result an unboxed float64 on the common path.
  return r === s || t - (t - s) !== s ? r : Math.fround(fmafNearMidpoint(a * b, c, s, r));
}

/** The rare path of {@link fmaf}: `s` has ≤ 25 significant bits and is not a float32 value. */
function fmafNearMidpoint(p: number, c: number, s: number, r: number): number {
  // TwoSum (Knuth): err is exactly (p + c) − s.
  const pv = s - c;
  const cv = s - pv;
  const err = (p - pv) + (c - cv);
  if (err === 0) return r;
  const abs = Math.abs(s);
  if (abs === FLOAT32_OVERFLOW_MIDPOINT) {
    // Halfway between FLT_MAX and 2¹²⁸: below it rounds to ±FLT_MAX, beyond it to ±∞.
    const towardZero = (err > 0) !== (s > 0);
    return towardZero ? Math.sign(s) * FLOAT32_MAX : Math.sign(s) * Infinity;
  }
  if (!Number.isFinite(r)) return r; // beyond the overflow midpoint: ±∞ whatever err is
  let isMidpoint: boolean;
  if (abs >= FLOAT32_MIN_NORMAL) {
    isMidpoint = true; // 25 significant bits, not representable in 24: exactly halfway
  } else {
    const scaled = abs * TWO_POW_150; // exact: scaling by a power of two
    isMidpoint = Number.isInteger(scaled) && scaled % 2 === 1;
  }
  if (!isMidpoint) return r;
  // s is halfway between r and other = 2s − r (a float32, so the subtraction is exact).
  const other = 2 * s - r;
  return (err > 0) === (other > r) ? other : r;
}
