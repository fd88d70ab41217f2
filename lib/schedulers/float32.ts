/**
 * float32 scalar arithmetic, for the places where diffusers holds a value in a 0-d float32 tensor
 * (sigmas, `alpha_prod_t ** 0.5`, DPM-Solver's `lambda`, `h`, …) and the rounding carries into
 * the coefficients. `Math.fround` of a float64 +, −, ×, ÷ or √ of two float32 values is the
 * correctly rounded float32 result (float64 has more than 2·24 + 2 bits), so these match torch's
 * CPU float32 ops bit for bit. `log`, `exp`, `expm1` go through float64 libm and one rounding,
 * which can differ from torch's vectorised float32 versions by one ulp; the goldens show that is
 * far inside tolerance.
 */
export const f32 = Math.fround;

export function add32(a: number, b: number): number {
  return f32(a + b);
}

export function sub32(a: number, b: number): number {
  return f32(a - b);
}

export function mul32(a: number, b: number): number {
  return f32(a * b);
}

export function div32(a: number, b: number): number {
  return f32(a / b);
}

/** `x ** 0.5` on a float32 tensor (torch turns the 0.5 power into sqrt). */
export function sqrt32(x: number): number {
  return f32(Math.sqrt(x));
}

/** `x ** 2` on a float32 tensor (torch turns the power 2 into x·x). */
export function square32(x: number): number {
  return f32(x * x);
}

export function log32(x: number): number {
  return f32(Math.log(x));
}

export function exp32(x: number): number {
  return f32(Math.exp(x));
}

export function expm132(x: number): number {
  return f32(Math.expm1(x));
}
