/**
 * DDIM: denoising diffusion implicit models (Song, Meng & Ermon 2021, eq. 12). With eta = 0 the
 * update is deterministic; eta > 0 adds σ_t·n with σ_t = eta·sqrt(variance). Follows diffusers'
 * src/diffusers/schedulers/scheduling_ddim.py (DDIMScheduler) at 58eb52c, including
 * `prev_t = t − T // N` whatever the spacing (with `trailing`/`linspace` that is not the next
 * entry of `timesteps`) and `final_alpha_cumprod` when prev_t < 0.
 *
 * `eta` is not a DDIMScheduler config key in diffusers — the pipeline passes it to `step()` —
 * but sd-trt compiles it into the program, so it is taken here as a config key (default 0).
 */
import {
  ALPHA_FAMILY_KEYS,
  AlphaRun,
  alphaAddNoise,
  alphaProducts,
  epsilonFromOutput,
  finalAlphaCumprod,
  originalFromOutput,
  spacedAlphaPlan,
  type AlphaFamilyConfig,
  type AlphaPlan,
} from "./alpha-family.js";
import { ZERO_SNR, check, type ConfigSpec } from "./config.js";
import { defineScheduler } from "./define.js";
import { div32, f32, mul32, sqrt32, square32, sub32 } from "./float32.js";
import { trainTables } from "./tables.js";
import type { SchedulerDefinition } from "./types.js";

export interface DdimConfig extends AlphaFamilyConfig {
  clip_sample: false;
  set_alpha_to_one: boolean;
  thresholding: false;
  dynamic_thresholding_ratio: number;
  clip_sample_range: number;
  sample_max_value: number;
  rescale_betas_zero_snr: false;
  /** sd-trt extension: the `eta` of `DDIMScheduler.step` / the pipeline. Defaults to 0. */
  eta: number;
}

const CLASS = "DDIMScheduler";

const SPEC: ConfigSpec<DdimConfig> = {
  ...ALPHA_FAMILY_KEYS,
  // The class default is clip_sample=True; every SD config turns it off.
  clip_sample: { default: true, check: check.nonLinear("clip_sample") },
  set_alpha_to_one: { default: true, check: check.boolean },
  thresholding: { default: false, check: check.nonLinear("thresholding") },
  dynamic_thresholding_ratio: { default: 0.995, check: check.number(0, 1) },
  clip_sample_range: { default: 1, check: check.number(0, Number.MAX_VALUE) },
  sample_max_value: { default: 1, check: check.number(0, Number.MAX_VALUE) },
  rescale_betas_zero_snr: ZERO_SNR,
  eta: { default: 0, check: check.number(0, 1) },
};

class DdimRun<V> extends AlphaRun<DdimConfig, V> {
  readonly #finalAlphaCumprod = finalAlphaCumprod(this.config);

  step(modelOutput: V, sample: V, drawNoise: () => V): V {
    const { la, config } = this;
    const t = this.plan.timesteps[this.index++]!;
    const prevT = t - this.plan.stepRatio;
    const { alphaProd, alphaProdPrev, betaProd, betaProdPrev } = alphaProducts(
      trainTables(config).alphasCumprod,
      t,
      prevT,
      this.#finalAlphaCumprod,
    );
    const predictedOriginal = originalFromOutput(la, config.prediction_type, alphaProd, sample, modelOutput);
    const predictedEpsilon = epsilonFromOutput(la, config.prediction_type, alphaProd, sample, modelOutput);

    // _get_variance: (β_prev / β_t) · (1 − ᾱ_t / ᾱ_prev), then σ_t = eta · variance ** 0.5
    const variance = mul32(div32(betaProdPrev, betaProd), sub32(1, div32(alphaProd, alphaProdPrev)));
    const stdDev = f32(config.eta * sqrt32(variance));
    const direction = sqrt32(sub32(sub32(1, alphaProdPrev), square32(stdDev)));
    const terms: [number, V][] = [
      [sqrt32(alphaProdPrev), predictedOriginal],
      [direction, predictedEpsilon],
    ];
    if (config.eta > 0) terms.push([stdDev, drawNoise()]);
    return la.combine(...terms);
  }
}

export const ddim: SchedulerDefinition<DdimConfig, AlphaPlan> = defineScheduler({
  className: CLASS,
  order: 1,
  spec: SPEC,
  plan: (config, steps) => spacedAlphaPlan(CLASS, config, steps),
  Run: DdimRun,
  addNoise: alphaAddNoise,
});
