/**
 * UniPC: the unified predictor–corrector framework (Zhao et al. 2023, "UniPC: A Unified
 * Predictor-Corrector Framework for Fast Sampling of Diffusion Models", algorithms 1–2): from the
 * second call on, the corrector UniC refines the incoming sample with the model output just
 * computed on it, then the predictor UniP steps from the refined sample. The returned sample is the
 * predictor's; the final sample is never corrected. Follows diffusers'
 * src/diffusers/schedulers/scheduling_unipc_multistep.py (UniPCMultistepScheduler) at 58eb52c
 * (B(h) variants bh1/bh2, predict_x0 on or off).
 *
 * One reformulation, exact in real arithmetic: diffusers' corrector recomputes the predictor's
 * base `σ_t/σ_s0 · last_sample − α_t·hφ₁·m0` from the previous step's refined sample. That base is
 * the incoming sample plus the predictor's higher-order term (same sigmas, same h), so this port
 * stores that term instead of `last_sample`. It keeps every step a combination of the last few
 * samples and model outputs; the literal recomputation would drag the whole history along.
 */
import type { Term } from "./algebra.js";
import { ZERO_SNR, check, configError, unsupportedFlag, type ConfigSpec, type KeyCheck } from "./config.js";
import { defineScheduler } from "./define.js";
import { div32, expm132, f32, mul32, sub32 } from "./float32.js";
import { roundHalfEven } from "./numpy.js";
import {
  MultistepRun,
  alphaSigma,
  dataPrediction,
  lambdaOf,
  multistepAddNoise,
  multistepPlan,
  noisePrediction,
  type MultistepPlan,
} from "./multistep-family.js";
import { SIGMA_FAMILY_KEYS, interpolateSigmas, type SigmaFamilyConfig } from "./sigma-family.js";
import { checkSchedule, multistepTimesteps } from "./spacing.js";
import { karrasSigmas, sigmaToT, trainTables } from "./tables.js";
import type { SchedulerDefinition } from "./types.js";

export interface UniPcConfig extends SigmaFamilyConfig {
  solver_order: 1 | 2 | 3;
  thresholding: false;
  dynamic_thresholding_ratio: number;
  sample_max_value: number;
  predict_x0: boolean;
  solver_type: "bh1" | "bh2";
  lower_order_final: boolean;
  /** Step indices whose following call skips the corrector. */
  disable_corrector: readonly number[];
  solver_p: null;
  use_karras_sigmas: boolean;
  use_exponential_sigmas: false;
  use_beta_sigmas: false;
  use_flow_sigmas: false;
  flow_shift: number;
  final_sigmas_type: "zero" | "sigma_min";
  rescale_betas_zero_snr: false;
  use_dynamic_shifting: false;
  time_shift_type: string;
  sigma_min: number | null;
  sigma_max: number | null;
  shift_terminal: null;
}

const CLASS = "UniPCMultistepScheduler";

// diffusers maps DPM-Solver's solver types onto bh2 (`register_to_config`).
const solverType: KeyCheck = (v, fail) =>
  v === "bh1" || v === "bh2" ? v : ["midpoint", "heun", "logrho"].includes(v as string) ? "bh2" : fail(`one of "bh1", "bh2"`);
const stepIndexList: KeyCheck = (v, fail) =>
  Array.isArray(v) && v.every((i) => Number.isInteger(i)) ? Object.freeze([...v]) : fail("an array of step indices");

const SPEC: ConfigSpec<UniPcConfig> = {
  ...SIGMA_FAMILY_KEYS,
  solver_order: { default: 2, check: check.oneOf([1, 2, 3]) },
  thresholding: { default: false, check: check.nonLinear("thresholding") },
  dynamic_thresholding_ratio: { default: 0.995, check: check.number(0, 1) },
  sample_max_value: { default: 1, check: check.number(0, Number.MAX_VALUE) },
  predict_x0: { default: true, check: check.boolean },
  solver_type: { default: "bh2", check: solverType },
  lower_order_final: { default: true, check: check.boolean },
  disable_corrector: { default: [], check: stepIndexList },
  solver_p: { default: null, check: check.only(null, "an external predictor scheduler is not supported by sd-trt") },
  use_karras_sigmas: { default: false, check: check.boolean },
  use_exponential_sigmas: unsupportedFlag("use_exponential_sigmas"),
  use_beta_sigmas: unsupportedFlag("use_beta_sigmas"),
  use_flow_sigmas: unsupportedFlag("use_flow_sigmas"),
  flow_shift: { default: 1, check: check.number(-Number.MAX_VALUE, Number.MAX_VALUE) },
  final_sigmas_type: { default: "zero", check: check.oneOf(["zero", "sigma_min"]) },
  rescale_betas_zero_snr: ZERO_SNR,
  use_dynamic_shifting: unsupportedFlag("use_dynamic_shifting"),
  time_shift_type: { default: "exponential", check: check.anyString },
  sigma_min: { default: null, check: check.positiveOrNull },
  sigma_max: { default: null, check: check.positiveOrNull },
  shift_terminal: { default: null, check: check.only(null, "shift_terminal applies to flow sigmas, which sd-trt does not support") },
};

/** Solves A·x = b (small, dense) by Gaussian elimination with partial pivoting, like LAPACK's gesv. */
function solve(matrix: number[][], rhs: number[]): number[] {
  const n = rhs.length;
  const a = matrix.map((row, r) => [...row.slice(0, n), rhs[r]!]);
  for (let col = 0; col < n; col++) {
    let pivot = col;
    for (let r = col + 1; r < n; r++) if (Math.abs(a[r]![col]!) > Math.abs(a[pivot]![col]!)) pivot = r;
    [a[col], a[pivot]] = [a[pivot]!, a[col]!];
    for (let r = col + 1; r < n; r++) {
      const factor = a[r]![col]! / a[col]![col]!;
      for (let c = col; c <= n; c++) a[r]![c]! -= factor * a[col]![c]!;
    }
  }
  const x = new Array<number>(n).fill(0);
  for (let r = n - 1; r >= 0; r--) {
    let sum = a[r]![n]!;
    for (let c = r + 1; c < n; c++) sum -= a[r]![c]! * x[c]!;
    x[r] = sum / a[r]![r]!;
  }
  return x.map(f32);
}

/** The h-dependent quantities both UniP and UniC build for one interval and order. */
interface IntervalTerms<V> {
  /** σ_t/σ_s0 (predict_x0) or α_t/α_s0: the sample's coefficient in the base step. */
  ratio: number;
  /** α_t (predict_x0) or σ_t: the factor in front of hφ₁ and B(h). */
  scale: number;
  hPhi1: number;
  bH: number;
  /** (m_k − m0)/r_k for the older outputs. */
  d1s: V[];
  /** R (order × order) and b of the UniPC linear system. */
  r: number[][];
  b: number[];
}

class UniPcRun<V> extends MultistepRun<UniPcConfig, V> {
  #thisOrder = 0;
  /** diffusers' `last_sample is not None`. */
  #hasLastSample = false;
  /** scale·B(h)·Σ ρ_p·D1 of the last predictor (null when it had no higher-order term). */
  #predictorTerm: V | null = null;

  step(modelOutput: V, sample: V): V {
    const { config, la, plan } = this;
    const i = this.index;
    const sigma = plan.sigmas[i]!;
    const converted = config.predict_x0
      ? dataPrediction(la, config.prediction_type, sigma, sample, modelOutput)
      : noisePrediction(la, config.prediction_type, sigma, sample, modelOutput);

    const useCorrector = i > 0 && !config.disable_corrector.includes(i - 1) && this.#hasLastSample;
    const corrected = useCorrector ? this.#correct(converted, sample) : sample;

    this.remember(converted);
    const order = config.lower_order_final ? Math.min(config.solver_order, plan.timesteps.length - i) : config.solver_order;
    this.#thisOrder = Math.min(order, this.lowerOrderNums + 1);
    this.#hasLastSample = true;
    const prev = this.#predict(corrected, this.#thisOrder);
    this.advance();
    return prev;
  }

  /**
   * The interval s0 → t (sigma indices) with history outputs at sigma indices `historySigma(k)`
   * for k = 1 … order−1, stored `k` places before the newest output.
   */
  #terms(s0: number, t: number, order: number, historySigma: (k: number) => number): IntervalTerms<V> {
    const { config, la, plan } = this;
    const target = alphaSigma(plan.sigmas[t]!);
    const source = alphaSigma(plan.sigmas[s0]!);
    const lambdaS0 = lambdaOf(plan.sigmas[s0]!);
    const h = sub32(lambdaOf(plan.sigmas[t]!), lambdaS0);
    const m0 = this.output(0);
    const rks: number[] = [];
    const d1s: V[] = [];
    for (let k = 1; k < order; k++) {
      const rk = div32(sub32(lambdaOf(plan.sigmas[historySigma(k)]!), lambdaS0), h);
      rks.push(rk);
      d1s.push(la.combine([1 / rk, this.output(k)], [-1 / rk, m0]));
    }
    rks.push(1);
    const hh = config.predict_x0 ? -h : h;
    const hPhi1 = expm132(hh);
    const bH = config.solver_type === "bh1" ? hh : expm132(hh);
    let hPhiK = sub32(div32(hPhi1, hh), 1);
    let factorial = 1;
    const r: number[][] = [];
    const b: number[] = [];
    for (let n = 1; n <= order; n++) {
      r.push(rks.map((rk) => f32(rk ** (n - 1))));
      b.push(div32(mul32(hPhiK, factorial), bH));
      factorial *= n + 1;
      hPhiK = sub32(div32(hPhiK, hh), f32(1 / factorial));
    }
    return config.predict_x0
      ? { ratio: div32(target.sigma, source.sigma), scale: target.alpha, hPhi1, bH, d1s, r, b }
      : { ratio: div32(target.alpha, source.alpha), scale: target.sigma, hPhi1, bH, d1s, r, b };
  }

  /** `multistep_uni_p_bh_update`: from `sample` at sigmas[i] to sigmas[i+1]. */
  #predict(sample: V, order: number): V {
    const { la } = this;
    const i = this.index;
    const terms = this.#terms(i, i + 1, order, (k) => i - k);
    const base: Term<V>[] = [
      [terms.ratio, sample],
      [-mul32(terms.scale, terms.hPhi1), this.output(0)],
    ];
    this.#predictorTerm = null;
    if (terms.d1s.length === 0) return la.combine(...base);
    const rhos = order === 2 ? [0.5] : solve(terms.r.slice(0, -1).map((row) => row.slice(0, -1)), terms.b.slice(0, -1));
    const factor = mul32(terms.scale, terms.bH);
    this.#predictorTerm = la.combine(...terms.d1s.map((d, k) => [factor * rhos[k]!, d] as const));
    return la.combine(...base, [-1, this.#predictorTerm]);
  }

  /** `multistep_uni_c_bh_update`: refines `sample` (at sigmas[i]) with this call's output. */
  #correct(converted: V, sample: V): V {
    const { la } = this;
    const i = this.index;
    const order = this.#thisOrder;
    const terms = this.#terms(i - 1, i, order, (k) => i - (k + 1));
    const rhos = order === 1 ? [0.5] : solve(terms.r, terms.b);
    const factor = mul32(terms.scale, terms.bH);
    // The predictor's base for this interval, rebuilt from the sample it produced (see file docstring).
    const base: Term<V>[] = this.#predictorTerm === null ? [[1, sample]] : [[1, sample], [1, this.#predictorTerm]];
    const correction: Term<V>[] = terms.d1s.map((d, k) => [-factor * rhos[k]!, d] as const);
    const last = rhos[rhos.length - 1]!;
    // D1_t = model_t − m0
    correction.push([-factor * last, converted], [factor * last, this.output(0)]);
    return la.combine(...base, ...correction);
  }
}

export const uniPc: SchedulerDefinition<UniPcConfig, MultistepPlan> = defineScheduler({
  className: CLASS,
  order: 1,
  spec: SPEC,
  checkConfig(config) {
    // At a final σ of 0, h = ∞: B(h) = −h (bh1) or the noise-prediction form's σ_t·hφ₁ is 0·∞, and
    // diffusers' last step returns NaN. Say so instead of compiling NaN.
    if (config.final_sigmas_type === "zero" && config.solver_type === "bh1") {
      configError(CLASS, "solver_type", `"bh2" with final_sigmas_type "zero" (bh1's B(h) = -h is infinite at the final sigma 0 and diffusers returns NaN there), or set final_sigmas_type "sigma_min"`, "bh1");
    }
    if (config.final_sigmas_type === "zero" && !config.predict_x0) {
      configError(CLASS, "predict_x0", `true with final_sigmas_type "zero" (the noise-prediction update computes 0 · infinity at the final sigma 0 and diffusers returns NaN there), or set final_sigmas_type "sigma_min"`, false);
    }
  },
  plan(config, steps) {
    const T = config.num_train_timesteps;
    const tables = trainTables(config);
    let timesteps = multistepTimesteps(T, T, steps, config.timestep_spacing, config.steps_offset);
    checkSchedule(CLASS, timesteps, steps, config.timestep_spacing);
    let sigmas: number[];
    let finalSigma: number;
    if (config.use_karras_sigmas) {
      sigmas = karrasSigmas(config.sigma_min ?? tables.sigmas[0]!, config.sigma_max ?? tables.sigmas[T - 1]!, steps);
      timesteps = sigmas.map((s) => roundHalfEven(sigmaToT(s, tables.logSigmas)));
      finalSigma = config.final_sigmas_type === "sigma_min" ? sigmas.at(-1)! : 0;
    } else {
      sigmas = interpolateSigmas(timesteps, tables);
      finalSigma = config.final_sigmas_type === "sigma_min" ? tables.sigmas[0]! : 0;
    }
    return multistepPlan(CLASS, steps, timesteps, sigmas, finalSigma);
  },
  Run: UniPcRun,
  addNoise: multistepAddNoise,
});
