/**
 * What LMS, Euler, Euler ancestral and Heun share (diffusers' scheduling_lms_discrete.py,
 * scheduling_euler_discrete.py, scheduling_euler_ancestral_discrete.py,
 * scheduling_heun_discrete.py): the sigma ("variance exploding", k-diffusion) view of the DDPM
 * schedule, where x = x0 + σ·ε and the UNet sees x / sqrt(σ² + 1).
 */
import type { LinearAlgebra } from "./algebra.js";
import { scheduleKeys, type PredictionType, type ScheduleConfig, type TimestepSpacing } from "./config.js";
import { ScheduledRun } from "./define.js";
import { add32, div32, f32, sqrt32, square32 } from "./float32.js";
import { interpOnIndexGrid } from "./numpy.js";
import { checkSchedule, float32Timesteps } from "./spacing.js";
import { karrasSigmas, sigmaToT, trainTables, type TrainTables } from "./tables.js";
import type { NoiseScales, SchedulePlan } from "./types.js";

export type SigmaFamilyConfig = ScheduleConfig;

/** The keys (and defaults) all four classes have — DPM-Solver and UniPC too. */
export const SIGMA_FAMILY_KEYS = scheduleKeys("linspace");

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
export function sigmaAddNoise(_config: unknown, plan: SigmaPlan, beginIndex: number): NoiseScales {
  return { signal: 1, noise: plan.sigmas[beginIndex]! };
}

/** Appends the final sigma and rounds every sigma to float32 (`np.concatenate(...).astype(float32)`). */
export function withFinalSigma(sigmas: readonly number[], finalSigma: number): number[] {
  return [...sigmas, finalSigma].map(f32);
}

/**
 * The start of LMS / Euler / Euler ancestral / Heun `set_timesteps`: the spaced float32 timesteps
 * (checked) and their sigmas interpolated from the training table, before any Karras conversion.
 */
export function spacedSigmas(
  className: string,
  config: SigmaFamilyConfig,
  steps: number,
): { tables: TrainTables; timesteps: number[]; sigmas: number[] } {
  const tables = trainTables(config);
  const timesteps = float32Timesteps(config.num_train_timesteps, steps, config.timestep_spacing, config.steps_offset);
  checkSchedule(className, timesteps, steps, config.timestep_spacing);
  return { tables, timesteps, sigmas: interpolateSigmas(timesteps, tables) };
}

/** `use_karras_sigmas`: Karras sigmas over [sigmaMin, sigmaMax] and their float32 `_sigma_to_t` timesteps. */
export function karrasSchedule(
  sigmaMin: number,
  sigmaMax: number,
  steps: number,
  tables: TrainTables,
): { timesteps: number[]; sigmas: number[] } {
  const sigmas = karrasSigmas(sigmaMin, sigmaMax, steps);
  return { timesteps: sigmas.map((s) => f32(sigmaToT(s, tables.logSigmas))), sigmas };
}

/** The plan of a float32-timestep sigma scheduler; `sigmas` already hold the final sigma. */
export function sigmaPlan(config: SigmaFamilyConfig, timesteps: number[], sigmas: number[]): SigmaPlan {
  return {
    timesteps,
    timestepDtype: "float32",
    sigmas,
    initNoiseSigma: sigmaInitNoise(sigmas, config.timestep_spacing),
  };
}

/** A sigma-space run: the UNet sees x / sqrt(σ² + 1) at the current sigma. */
export abstract class SigmaRun<C extends SigmaFamilyConfig, V> extends ScheduledRun<C, SigmaPlan, V> {
  inputScale(): number {
    return 1 / scaleDivisor(this.plan.sigmas[this.index]!);
  }

  /** dx/dσ at `sigma` from this call's model output: `pred_original_sample`, then `(sample − x0)/σ`. */
  protected slope(sigma: number, sample: V, modelOutput: V): V {
    const predicted = predictOriginal(this.la, this.config.prediction_type, sigma, sample, modelOutput);
    return derivative(this.la, sample, predicted, sigma);
  }
}
