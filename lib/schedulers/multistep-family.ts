/**
 * What DPM-Solver(++) and UniPC share (diffusers' scheduling_dpmsolver_multistep.py and
 * scheduling_unipc_multistep.py): they step in λ = log(α_t/σ_t) over sigmas taken from the
 * DDPM table, hold int64 timesteps, see x unscaled (`init_noise_sigma = 1`), and `add_noise` is
 * α_t·x + σ_t·n for the sigma at `begin_index`.
 */
import type { LinearAlgebra } from "./algebra.js";
import type { PredictionType } from "./config.js";
import { ScheduledRun } from "./define.js";
import { add32, div32, log32, mul32, sqrt32, square32, sub32 } from "./float32.js";
import { withFinalSigma } from "./sigma-family.js";
import { checkStrictlyDecreasing } from "./spacing.js";
import type { BetaScheduleConfig } from "./tables.js";
import type { NoiseScales, SchedulePlan } from "./types.js";

export interface MultistepPlan extends SchedulePlan {
  /** float32 sigmas (VE parameterisation), the final sigma included: N + 1 entries. */
  sigmas: number[];
}

/** `_sigma_to_alpha_sigma_t`: α_t = 1/sqrt(σ² + 1), σ_t = σ·α_t (float32). */
export function alphaSigma(sigma: number): { alpha: number; sigma: number } {
  const alpha = div32(1, sqrt32(add32(square32(sigma), 1)));
  return { alpha, sigma: mul32(sigma, alpha) };
}

/** λ = log α_t − log σ_t (+∞ at σ = 0). */
export function lambdaOf(sigma: number): number {
  const { alpha, sigma: s } = alphaSigma(sigma);
  return sub32(log32(alpha), log32(s));
}

/** `convert_model_output` to the data prediction x0 (DPM-Solver++ and UniPC's predict_x0). */
export function dataPrediction<V>(
  la: LinearAlgebra<V>,
  prediction: PredictionType,
  sigma: number,
  sample: V,
  modelOutput: V,
): V {
  const { alpha, sigma: s } = alphaSigma(sigma);
  return prediction === "epsilon"
    ? la.combine([1 / alpha, sample], [-s / alpha, modelOutput])
    : la.combine([alpha, sample], [-s, modelOutput]);
}

/** `convert_model_output` to the noise prediction ε (UniPC with predict_x0 = false). */
export function noisePrediction<V>(
  la: LinearAlgebra<V>,
  prediction: PredictionType,
  sigma: number,
  sample: V,
  modelOutput: V,
): V {
  if (prediction === "epsilon") return modelOutput;
  const { alpha, sigma: s } = alphaSigma(sigma);
  return la.combine([alpha, modelOutput], [s, sample]);
}

/** `add_noise` at sigmas[begin_index]: α_t·x + σ_t·n. */
export function multistepAddNoise(_config: unknown, plan: MultistepPlan, beginIndex: number): NoiseScales {
  const { alpha, sigma } = alphaSigma(plan.sigmas[beginIndex]!);
  return { signal: alpha, noise: sigma };
}

/**
 * DPM-Solver's `lambda_min_clipped` cut: `num_train_timesteps − searchsorted(flip(λ_t), clip)`,
 * with the float32 λ table of `__init__`.
 */
export function lastTimestepAfterClip(alphasCumprod: Float32Array, lambdaMinClipped: number): number {
  const T = alphasCumprod.length;
  let below = 0;
  for (let t = 0; t < T; t++) {
    const ac = alphasCumprod[t]!;
    const lambda = sub32(log32(sqrt32(ac)), log32(sqrt32(sub32(1, ac))));
    if (lambda < lambdaMinClipped) below++;
  }
  return T - below;
}

/**
 * The plan from the int64 timesteps and their sigmas (`withFinalSigma`: the final sigma appended,
 * all rounded to float32), which must be distinct: each step divides by the λ difference of its interval.
 */
export function multistepPlan(
  className: string,
  steps: number,
  timesteps: number[],
  sigmas: readonly number[],
  finalSigma: number,
): MultistepPlan {
  const all = withFinalSigma(sigmas, finalSigma);
  checkStrictlyDecreasing(className, all, steps, "each step divides by the log-SNR difference of its interval");
  return { timesteps, timestepDtype: "int64", initNoiseSigma: 1, sigmas: all };
}

/** What a multistep run reads of its config. */
type MultistepConfig = BetaScheduleConfig & { solver_order: number };

/**
 * A multistep run: the UNet sees x unscaled, the last `solver_order` converted model outputs are
 * kept, and the order warms up one step at a time (`lower_order_nums`).
 */
export abstract class MultistepRun<C extends MultistepConfig, V> extends ScheduledRun<C, MultistepPlan, V> {
  /** diffusers' `lower_order_nums`: steps taken so far, capped at `solver_order`. */
  protected lowerOrderNums = 0;
  /** `model_outputs`: the last `solver_order` converted outputs, newest last (null before warm-up). */
  readonly #outputs = new Array<V | null>(this.config.solver_order).fill(null);

  inputScale(): number {
    return 1;
  }

  /** Stores this call's converted output, dropping the oldest. */
  protected remember(output: V): void {
    this.#outputs.shift();
    this.#outputs.push(output);
  }

  /** The stored converted output `back` steps before the newest (0 = the newest). */
  protected output(back: number): V {
    return this.#outputs[this.#outputs.length - 1 - back]!;
  }

  /** Ends a step: one more warm-up step counted, and on to the next call. */
  protected advance(): void {
    if (this.lowerOrderNums < this.config.solver_order) this.lowerOrderNums++;
    this.index++;
  }
}
