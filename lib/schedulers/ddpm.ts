/**
 * DDPM: ancestral sampling of denoising diffusion probabilistic models (Ho, Jain & Abbeel 2020,
 * eq. 6–7): x_prev = c0·x0 + c1·x_t + σ·n with the posterior q(x_{t−1} | x_t, x0). Follows
 * diffusers' src/diffusers/schedulers/scheduling_ddpm.py (DDPMScheduler) at 58eb52c: `prev_t` is
 * the next entry of `timesteps` (−1 after the last, where ᾱ_prev = 1), the variance is clamped at
 * 1e-20, and noise is drawn whenever t > 0 (with steps_offset = 1 that includes the last step).
 */
import {
  ALPHA_FAMILY_KEYS,
  AlphaRun,
  alphaAddNoise,
  alphaProducts,
  originalFromOutput,
  spacedAlphaPlan,
  type AlphaFamilyConfig,
  type AlphaPlan,
} from "./alpha-family.js";
import { ZERO_SNR, check, type ConfigSpec } from "./config.js";
import { defineScheduler } from "./define.js";
import { div32, exp32, f32, log32, mul32, sqrt32, sub32 } from "./float32.js";
import { trainTables } from "./tables.js";
import type { SchedulerDefinition } from "./types.js";

export type DdpmVarianceType = "fixed_small" | "fixed_small_log" | "fixed_large";

export interface DdpmConfig extends AlphaFamilyConfig {
  variance_type: DdpmVarianceType;
  clip_sample: false;
  thresholding: false;
  dynamic_thresholding_ratio: number;
  clip_sample_range: number;
  sample_max_value: number;
  rescale_betas_zero_snr: false;
}

const CLASS = "DDPMScheduler";

const SPEC: ConfigSpec<DdpmConfig> = {
  ...ALPHA_FAMILY_KEYS,
  variance_type: {
    default: "fixed_small",
    check: check.oneOf(
      ["fixed_small", "fixed_small_log", "fixed_large"],
      " (learned variances need extra UNet channels and fixed_large_log gives NaN in diffusers; sd-trt does not support them)",
    ),
  },
  clip_sample: { default: true, check: check.nonLinear("clip_sample") },
  thresholding: { default: false, check: check.nonLinear("thresholding") },
  dynamic_thresholding_ratio: { default: 0.995, check: check.number(0, 1) },
  clip_sample_range: { default: 1, check: check.number(0, Number.MAX_VALUE) },
  sample_max_value: { default: 1, check: check.number(0, Number.MAX_VALUE) },
  rescale_betas_zero_snr: ZERO_SNR,
};

class DdpmRun<V> extends AlphaRun<DdpmConfig, V> {
  step(modelOutput: V, sample: V, drawNoise: () => V): V {
    const { la, config } = this;
    const { timesteps } = this.plan;
    const index = this.index++;
    const t = timesteps[index]!;
    // previous_timestep: the next scheduled timestep (timesteps are unique here), −1 at the end.
    const prevT = index === timesteps.length - 1 ? -1 : timesteps[index + 1]!;
    const { alphaProd, alphaProdPrev, betaProd, betaProdPrev } = alphaProducts(trainTables(config).alphasCumprod, t, prevT, 1);
    const currentAlpha = div32(alphaProd, alphaProdPrev);
    const currentBeta = sub32(1, currentAlpha);
    const predictedOriginal = originalFromOutput(la, config.prediction_type, alphaProd, sample, modelOutput);

    // Posterior mean coefficients (eq. 7).
    const originalCoeff = div32(mul32(sqrt32(alphaProdPrev), currentBeta), betaProd);
    const sampleCoeff = div32(mul32(sqrt32(currentAlpha), betaProdPrev), betaProd);
    const terms: [number, V][] = [
      [originalCoeff, predictedOriginal],
      [sampleCoeff, sample],
    ];
    if (t > 0) terms.push([this.#noiseScale(betaProd, betaProdPrev, currentBeta), drawNoise()]);
    return la.combine(...terms);
  }

  /** The standard deviation multiplying the noise (`_get_variance` and its use in `step`). */
  #noiseScale(betaProd: number, betaProdPrev: number, currentBeta: number): number {
    // (1 − ᾱ_prev) / (1 − ᾱ_t) · β_t, clamped to ≥ 1e-20 (torch.clamp on a float32 tensor).
    const variance = Math.max(mul32(div32(betaProdPrev, betaProd), currentBeta), f32(1e-20));
    switch (this.config.variance_type) {
      case "fixed_small":
        return sqrt32(variance);
      case "fixed_small_log":
        // exp(0.5 · log(variance)), used as the standard deviation directly.
        return exp32(mul32(0.5, log32(variance)));
      case "fixed_large":
        return sqrt32(currentBeta);
    }
  }
}

export const ddpm: SchedulerDefinition<DdpmConfig, AlphaPlan> = defineScheduler({
  className: CLASS,
  order: 1,
  spec: SPEC,
  plan: (config, steps) => spacedAlphaPlan(CLASS, config, steps),
  Run: DdpmRun,
  addNoise: alphaAddNoise,
});
