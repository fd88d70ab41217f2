/**
 * QUADPACK's 21-point Gauss–Kronrod rule (`dqk21`), which is what `scipy.integrate.quad` returns
 * for LMS's coefficients: the integrands are polynomials of degree ≤ 3, so `dqagse` accepts the
 * very first 21-point estimate. Reproducing the rule (nodes, weights, summation order) rather than
 * integrating the polynomial exactly keeps the float32 rounding of diffusers' integrand in the
 * result, so the coefficients match `lms_coeffs` in the goldens to ~1e-12 instead of ~3e-6.
 */

// Kronrod abscissae on [-1, 1]; xgk[1], xgk[3], … are the 10-point Gauss abscissae.
const XGK = [
  0.995657163025808080735527280689003, 0.973906528517171720077964012084452, 0.930157491355708226001207180059508,
  0.865063366688984510732096688423493, 0.780817726586416897063717578345042, 0.679409568299024406234327365114874,
  0.562757134668604683339000099272694, 0.433395394129247190799265943165784, 0.294392862701460198131126603103866,
  0.14887433898163121088482600112972, 0,
];
const WGK = [
  0.011694638867371874278064396062192, 0.03255816230796472747881897245939, 0.05475589657435199603138130024458,
  0.07503967481091995276704314091619, 0.093125454583697605535065465083366, 0.109387158802297641899210590325805,
  0.123491976262065851077208643474524, 0.134709217311473325928054001771707, 0.142775938577060080797094273138717,
  0.147739104901338491374841515972068, 0.149445554002916905664936468389821,
];

/** ∫_a^b f with QUADPACK's dqk21 (b < a allowed, as in LMS where sigmas decrease). */
export function gaussKronrod21(f: (x: number) => number, a: number, b: number): number {
  const center = 0.5 * (a + b);
  const halfLength = 0.5 * (b - a);
  let resk = WGK[10]! * f(center);
  // dqk21 first adds the Gauss nodes' pairs (j = 1, 3, …, 9), then the Kronrod-only ones.
  for (const j of [1, 3, 5, 7, 9, 0, 2, 4, 6, 8]) {
    const abscissa = halfLength * XGK[j]!;
    resk += WGK[j]! * (f(center - abscissa) + f(center + abscissa));
  }
  return resk * halfLength;
}
