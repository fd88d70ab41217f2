/**
 * What DDIM, PNDM and DDPM share (diffusers' scheduling_ddim.py, scheduling_pndm.py,
 * scheduling_ddpm.py): they index the float32 ᾱ table by the integer timestep itself, the UNet sees
 * x unscaled (`init_noise_sigma = 1`, identity `scale_model_input`), and `add_noise` is
 * sqrt(ᾱ_t)·x + sqrt(1 − ᾱ_t)·n.
 */
import { BETA_KEYS, PREDICTION_TYPE, STEPS_OFFSET, TIMESTEP_SPACING, type PredictionType, type TimestepSpacing } from "./config.js";
import { sqrt32, sub32 } from "./float32.js";
import type { BetaScheduleConfig } from "./tables.js";
import type { NoiseScales, SchedulePlan } from "./types.js";

export interface AlphaFamilyConfig extends BetaScheduleConfig {
  prediction_type: PredictionType;
  timestep_spacing: TimestepSpacing;
  steps_offset: number;
}

export const ALPHA_FAMILY_KEYS = {
  ...BETA_KEYS,
  prediction_type: { default: "epsilon", check: PREDICTION_TYPE },
  timestep_spacing: { default: "leading", check: TIMESTEP_SPACING },
  steps_offset: { default: 0, check: STEPS_OFFSET },
} as const;

export interface AlphaPlan extends SchedulePlan {
  /** `num_train_timesteps // num_inference_steps`, the stride DDIM and PNDM step back by. */
  stepRatio: number;
}

/** `add_noise` at integer timestep t: alphas_cumprod is float32 and so are the square roots. */
export function alphaAddNoise(alphasCumprod: Float32Array, t: number): NoiseScales {
  const ac = alphasCumprod[t]!;
  return { signal: sqrt32(ac), noise: sqrt32(sub32(1, ac)) };
}
