/**
 * What DDIM, PNDM and DDPM share (diffusers' scheduling_ddim.py, scheduling_pndm.py,
 * scheduling_ddpm.py): they index the float32 ᾱ table by the integer timestep itself, the UNet sees
 * x unscaled (`init_noise_sigma = 1`, identity `scale_model_input`), and `add_noise` is
 * sqrt(ᾱ_t)·x + sqrt(1 − ᾱ_t)·n.
 */
import type { LinearAlgebra } from "./algebra.js";
import { scheduleKeys, type PredictionType, type ScheduleConfig } from "./config.js";
import { ScheduledRun } from "./define.js";
import { sqrt32, sub32 } from "./float32.js";
import { checkSchedule, integerTimesteps } from "./spacing.js";
import { trainTables, type BetaScheduleConfig } from "./tables.js";
import type { NoiseScales, SchedulePlan } from "./types.js";

export type AlphaFamilyConfig = ScheduleConfig;

export const ALPHA_FAMILY_KEYS = scheduleKeys("leading");

export interface AlphaPlan extends SchedulePlan {
  /** `num_train_timesteps // num_inference_steps`, the stride DDIM and PNDM step back by. */
  stepRatio: number;
}

/**
 * `add_noise` at the integer timestep `plan.timesteps[beginIndex]`: alphas_cumprod is float32 and
 * so are the square roots.
 */
export function alphaAddNoise(config: AlphaFamilyConfig, plan: AlphaPlan, beginIndex: number): NoiseScales {
  const ac = trainTables(config).alphasCumprod[plan.timesteps[beginIndex]!]!;
  return { signal: sqrt32(ac), noise: sqrt32(sub32(1, ac)) };
}

/** The plan for integer timesteps already spaced (and checked) by the class's `set_timesteps`. */
export function alphaPlan(config: AlphaFamilyConfig, steps: number, timesteps: number[]): AlphaPlan {
  const stepRatio = Math.floor(config.num_train_timesteps / steps);
  return { timesteps, timestepDtype: "int64", initNoiseSigma: 1, stepRatio };
}

/** DDIM / DDPM `set_timesteps`: int64 timesteps that stay inside the training range. */
export function spacedAlphaPlan(className: string, config: AlphaFamilyConfig, steps: number): AlphaPlan {
  const T = config.num_train_timesteps;
  const timesteps = integerTimesteps(T, steps, config.timestep_spacing, config.steps_offset);
  checkSchedule(className, timesteps, steps, config.timestep_spacing, { T });
  return alphaPlan(config, steps, timesteps);
}

/** ᾱ used below timestep 0 by DDIM and PNDM: 1 with `set_alpha_to_one`, else ᾱ_0. */
export function finalAlphaCumprod(config: BetaScheduleConfig & { set_alpha_to_one: boolean }): number {
  return config.set_alpha_to_one ? 1 : trainTables(config).alphasCumprod[0]!;
}

/** ᾱ_t, ᾱ_prev and their complements 1 − ᾱ (float32); ᾱ_prev is `belowZero` when prevT < 0. */
export function alphaProducts(
  alphasCumprod: Float32Array,
  t: number,
  prevT: number,
  belowZero: number,
): { alphaProd: number; alphaProdPrev: number; betaProd: number; betaProdPrev: number } {
  const alphaProd = alphasCumprod[t]!;
  const alphaProdPrev = prevT >= 0 ? alphasCumprod[prevT]! : belowZero;
  return { alphaProd, alphaProdPrev, betaProd: sub32(1, alphaProd), betaProdPrev: sub32(1, alphaProdPrev) };
}

/** `pred_original_sample` from the model output at ᾱ_t = `alphaProd`. */
export function originalFromOutput<V>(
  la: LinearAlgebra<V>,
  prediction: PredictionType,
  alphaProd: number,
  sample: V,
  modelOutput: V,
): V {
  const sqrtAlpha = sqrt32(alphaProd);
  const sqrtBeta = sqrt32(sub32(1, alphaProd));
  return prediction === "epsilon"
    ? la.combine([1 / sqrtAlpha, sample], [-sqrtBeta / sqrtAlpha, modelOutput])
    : la.combine([sqrtAlpha, sample], [-sqrtBeta, modelOutput]);
}

/** The predicted noise ε from the model output at ᾱ_t = `alphaProd` (v → ε for v_prediction). */
export function epsilonFromOutput<V>(
  la: LinearAlgebra<V>,
  prediction: PredictionType,
  alphaProd: number,
  sample: V,
  modelOutput: V,
): V {
  if (prediction === "epsilon") return modelOutput;
  return la.combine([sqrt32(alphaProd), modelOutput], [sqrt32(sub32(1, alphaProd)), sample]);
}

/** A run on the ᾱ table: the UNet sees x unscaled. */
export abstract class AlphaRun<C extends AlphaFamilyConfig, V> extends ScheduledRun<C, AlphaPlan, V> {
  inputScale(): number {
    return 1;
  }
}
