/**
 * The float32 Box–Muller transform of PyTorch's AVX2 normal kernel (`normal_fill_16_AVX2` in
 * `aten/src/ATen/native/cpu/DistributionKernels.cpp`), with the Cephes `log256_ps` and
 * `sincos256_ps` of `aten/src/ATen/native/cpu/avx_mathfun.h`, evaluated lane by lane.
 *
 * Every step is one float32 operation rounded once, exactly as the compiled kernel does it:
 * `Math.fround(a ⊙ b)` for + − × √ (correct for float32 operands, see `float32-fma.ts`) and
 * {@link fmaf} where the compiler fused a multiply and an add into one `vfmadd`. The order and
 * fusion points follow `test/fixtures/goldens/torch_randn.md` §5a; changing any of them changes
 * some output bits.
 */
import { fmaf } from "./float32-fma.js";

const f = Math.fround;

// Constants: float32 roundings of the decimal literals in avx_mathfun.h.
const ONE = 1;
const HALF = 0.5;
const TWO_PI = f(6.2831853071795864769); // 0x40C90FDB
const SQRTHF = f(0.707106781186547524); // 0x3F3504F3
const FOUR_OVER_PI = f(1.27323954473516); // 0x3FA2F983

// Coefficient tables are looped over rather than unrolled: each `fmaf` call site costs inlining
// budget, and V8 must inline every one of them to keep the hot loop free of boxed doubles.
/** Cephes logf polynomial p₀ … p₈ (Horner, highest power first). */
const LOG_POLY = Float64Array.from(
  [
    7.0376836292e-2, -1.1514610310e-1, 1.1676998740e-1, -1.2420140846e-1, 1.4249322787e-1,
    -1.6668057665e-1, 2.0000714765e-1, -2.4999993993e-1, 3.3333331174e-1,
  ],
  f,
);
const LOG_Q1 = f(-2.12194440e-4);
const LOG_Q2 = f(0.693359375);

/** −π/4 split in three parts (Cody–Waite): DP1 + DP2 + DP3 ≈ −π/4. */
const MINUS_DP = Float64Array.from([-0.78515625, -2.4187564849853515625e-4, -3.77489497744594108e-8], f);
/** Sine polynomial s₀, s₁, s₂ and cosine polynomial k₀, k₁, k₂. */
const SIN_POLY = Float64Array.from([-1.9515295891e-4, 8.3321608736e-3, -1.6666654611e-1], f);
const COS_POLY = Float64Array.from([2.443315711809948e-5, -1.388731625493765e-3, 4.166664568298827e-2], f);

/** 2⁻ᵏ for k = 0 … 25: exact power-of-two scales for the significand split of ln u₁. */
const INV_POW2 = Float64Array.from({ length: 26 }, (_, k) => 2 ** -k);

/**
 * One lane of `normal_fill_16_AVX2`: reads the uniforms a = data[k], c = data[k + 8] and writes
 * ρ·cos θ to data[k] and ρ·sin θ to data[k + 8], with ρ = √(−2·ln(1 − a)) and θ = 2π·c.
 *
 * Written as one function on purpose: V8 passes and returns doubles between functions that it
 * does not inline as heap-allocated boxes, so splitting log and sincos into helpers made the
 * garbage collector a third of the run time. `fmaf` is small enough to be inlined everywhere.
 */
function boxMullerLane(data: Float32Array, k: number): void {
  const a = data[k]!;
  const c = data[k + 8]!;

  // ---- ln u₁, u₁ = 1 − a (log256_ps) --------------------------------------------------------
  const u1 = f(ONE - a); // exact: u₁ = K·2⁻²⁴ with an integer K in [1, 2²⁴]
  // The kernel splits the float32 bit pattern of u₁ into m ∈ [0.5, 1) and E = biased
  // exponent − 127 (u₁ = m·2^(E+1)). With L = ⌊log₂ K⌋ that is E = L − 24 and m = K·2^−(L+1),
  // so no bit reinterpretation is needed.
  const bigK = u1 * 16777216;
  const log2K = 31 - Math.clz32(bigK);
  let e = f(log2K - 24 + ONE);
  const m = bigK * INV_POW2[log2K + 1]!;
  let t: number;
  if (m < SQRTHF) {
    e = f(e - ONE);
    t = f(f(m - ONE) + m);
  } else {
    t = f(m - ONE);
  }
  const tt = f(t * t);
  let y = LOG_POLY[0]!;
  for (let i = 1; i <= 8; i++) y = fmaf(y, t, LOG_POLY[i]!);
  y = f(y * t);
  y = fmaf(y, tt, f(e * LOG_Q1));
  y = f(y - f(tt * HALF));
  const lnU1 = f(f(t + y) + f(e * LOG_Q2));
  const rho = f(Math.sqrt(f(-2 * lnU1)));

  // ---- sin θ, cos θ, θ = 2π·c ≥ 0 (sincos256_ps) ----------------------------------------------
  const theta = f(TWO_PI * c);
  // Octant j = trunc(θ·4/π) rounded up to even; subtract j·π/4 in three parts (Cody–Waite).
  let j = Math.trunc(f(theta * FOUR_OVER_PI));
  j = (j + 1) & ~1;
  let x = theta;
  for (let i = 0; i < 3; i++) x = fmaf(j, MINUS_DP[i]!, x);
  const z = f(x * x);

  let cosPoly = COS_POLY[0]!;
  for (let i = 1; i < 3; i++) cosPoly = fmaf(cosPoly, z, COS_POLY[i]!);
  cosPoly = f(cosPoly * z);
  cosPoly = fmaf(cosPoly, z, -f(z * HALF));
  cosPoly = f(cosPoly + ONE);

  let sinPoly = SIN_POLY[0]!;
  for (let i = 1; i < 3; i++) sinPoly = fmaf(sinPoly, z, SIN_POLY[i]!);
  sinPoly = f(sinPoly * z);
  sinPoly = fmaf(sinPoly, x, x);

  let sin = sinPoly;
  let cos = cosPoly;
  if ((j & 2) !== 0) {
    sin = cosPoly;
    cos = sinPoly;
  }
  if ((j & 4) !== 0) sin = -sin;
  if (((j - 2) & 4) === 0) cos = -cos;

  data[k] = f(rho * cos);
  data[k + 8] = f(rho * sin);
}

/**
 * `normal_fill_16_AVX2` on `data[start … start + 16)`, in place: the 16 entries hold float32
 * uniforms on entry and standard normals on exit. Entry k < 8 pairs with entry k + 8:
 * ρ = √(−2·ln(1 − a)), θ = 2π·c, out[k] = ρ·cos θ, out[k + 8] = ρ·sin θ.
 * (mean 0 and std 1 are applied as `fma(n, 1, 0)`, which is exact and therefore omitted.)
 */
export function avx2NormalFill16(data: Float32Array, start: number): void {
  for (let k = start, end = start + 8; k < end; k++) boxMullerLane(data, k);
}
