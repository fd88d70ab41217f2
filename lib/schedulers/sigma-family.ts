/**
 * What LMS, Euler, Euler ancestral and Heun share (diffusers' scheduling_lms_discrete.py,
 * scheduling_euler_discrete.py, scheduling_euler_ancestral_discrete.py,
 * scheduling_heun_discrete.py): the sigma ("variance exploding", k-diffusion) view of the DDPM
 * schedule, where x = x0 + σ·ε and the UNet sees x / sqrt(σ² + 1).
 */
import type { LinearAlgebra } from "./algebra.js";
import { BETA_KEYS, PREDICTION_TYPE, STEPS_OFFSET, TIMESTEP_SPACING, type PredictionType, type TimestepSpacing } from "./config.js";
import { add32, div32, f32, sqrt32, square32 } from "./float32.js";
import { interpOnIndexGrid } from "./numpy.js";
import type { BetaScheduleConfig, TrainTables } from "./tables.js";
import type { NoiseScales, SchedulePlan } from "./types.js";

export interface SigmaFamilyConfig extends BetaScheduleConfig {
  prediction_type: PredictionType;
  timestep_spacing: TimestepSpacing;
  steps_offset: number;
}

/** The keys (and defaults) all four classes have. */
export const SIGMA_FAMILY_KEYS = {
  ...BETA_KEYS,
  prediction_type: { default: "epsilon", check: PREDICTION_TYPE },
  timestep_spacing: { default: "linspace", check: TIMESTEP_SPACING },
  steps_offset: { default: 0, check: STEPS_OFFSET },
} as const;

export interface SigmaPlan extends SchedulePlan {
  /** float32 sigmas indexed like diffusers' `self.sigmas` (the trailing final sigma included). */
  sigmas: number[];
}

/** `np.interp(timesteps, arange(T), train_sigmas)` — linear in sigma, float64. */
export function interpolateSigmas(timesteps: readonly number[], tables: TrainTables): number[] {
  return timesteps.map((t) => interpOnIndexGrid(t, tables.sigmas));
}

/**
 * `init_noise_sigma`: `sigmas.max()` for linspace/trailing, `(max² + 1) ** 0.5` for leading
 * (float32 tensor arithmetic).
 */
export function sigmaInitNoise(sigmas: readonly number[], spacing: TimestepSpacing): number {
  const max = Math.max(...sigmas);
  return spacing === "leading" ? sqrt32(add32(square32(max), 1)) : max;
}

/** `scale_model_input`'s divisor `(σ² + 1) ** 0.5`, in float32 like diffusers. */
export function scaleDivisor(sigma: number): number {
  return sqrt32(add32(square32(sigma), 1));
}

/** The predicted x0 for the sigma parameterisation (`pred_original_sample`). */
export function predictOriginal<V>(
  la: LinearAlgebra<V>,
  prediction: PredictionType,
  sigma: number,
  sample: V,
  modelOutput: V,
): V {
  if (prediction === "epsilon") return la.combine([1, sample], [-sigma, modelOutput]);
  // v_prediction: model_output * (-σ / (σ² + 1) ** 0.5) + sample / (σ² + 1)
  const sigmaSqPlusOne = add32(square32(sigma), 1);
  return la.combine([div32(-sigma, sqrt32(sigmaSqPlusOne)), modelOutput], [1 / sigmaSqPlusOne, sample]);
}

/** `(sample − x0) / σ`: the ODE derivative dx/dσ. */
export function derivative<V>(la: LinearAlgebra<V>, sample: V, predicted: V, sigma: number): V {
  return la.combine([1 / sigma, sample], [-1 / sigma, predicted]);
}

/** `add_noise` in sigma space: original + σ·noise, σ = sigmas[begin_index]. */
export function sigmaAddNoise(plan: SigmaPlan, beginIndex: number): NoiseScales {
  return { signal: 1, noise: plan.sigmas[beginIndex]! };
}

/** Appends the final sigma and rounds every sigma to float32 (`np.concatenate(...).astype(float32)`). */
export function withFinalSigma(sigmas: readonly number[], finalSigma: number): number[] {
  return [...sigmas, finalSigma].map(f32);
}
