/**
 * Heun: the second-order (trapezoidal predictor–corrector) method on the probability-flow ODE
 * (Karras et al. 2022, algorithm 1 with s_churn = 0). Each interval costs two UNet calls — an Euler
 * predictor, then a corrector that averages the two derivatives and restarts from the saved sample
 * — except the last one down to σ = 0, which is a plain Euler step. Follows diffusers'
 * src/diffusers/schedulers/scheduling_heun_discrete.py (HeunDiscreteScheduler) at 58eb52c:
 * timesteps [t0, t1, t1, …, t_{N−1}, t_{N−1}] and sigmas [σ0, σ1, σ1, …, σ_{N−1}, σ_{N−1}, 0].
 */
import { check, unsupportedFlag, type ConfigSpec } from "./config.js";
import { defineScheduler } from "./define.js";
import { f32, sub32 } from "./float32.js";
import {
  SIGMA_FAMILY_KEYS,
  SigmaRun,
  karrasSchedule,
  sigmaAddNoise,
  sigmaPlan,
  spacedSigmas,
  withFinalSigma,
  type SigmaFamilyConfig,
  type SigmaPlan,
} from "./sigma-family.js";
import type { SchedulerDefinition } from "./types.js";

export interface HeunConfig extends SigmaFamilyConfig {
  use_karras_sigmas: boolean;
  use_exponential_sigmas: false;
  use_beta_sigmas: false;
  clip_sample: false;
  clip_sample_range: number;
}

const CLASS = "HeunDiscreteScheduler";

const SPEC: ConfigSpec<HeunConfig> = {
  ...SIGMA_FAMILY_KEYS,
  // HeunDiscreteScheduler's own defaults ("sensible defaults" in diffusers).
  beta_start: { ...SIGMA_FAMILY_KEYS.beta_start, default: 0.00085 },
  beta_end: { ...SIGMA_FAMILY_KEYS.beta_end, default: 0.012 },
  use_karras_sigmas: { default: false, check: check.boolean },
  use_exponential_sigmas: unsupportedFlag("use_exponential_sigmas"),
  use_beta_sigmas: unsupportedFlag("use_beta_sigmas"),
  clip_sample: { default: false, check: check.nonLinear("clip_sample") },
  clip_sample_range: { default: 1, check: check.number(0, Number.MAX_VALUE) },
};

/** Heun's interleaving: `cat([a[:1], a[1:].repeat_interleave(2)])`. */
function interleave(values: readonly number[]): number[] {
  return [values[0]!, ...values.slice(1).flatMap((v) => [v, v])];
}

class HeunRun<V> extends SigmaRun<HeunConfig, V> {
  /** Set by a predictor call, consumed by the following corrector (diffusers' `self.dt is None`). */
  #pending: { derivative: V; dt: number; sample: V } | null = null;

  step(modelOutput: V, sample: V): V {
    const { la, plan } = this;
    const i = this.index;
    const pending = this.#pending;
    this.index++;
    if (pending === null) {
      // First order (predictor): an Euler step from σ_i to σ_{i+1}.
      const sigma = plan.sigmas[i]!;
      const sigmaNext = plan.sigmas[i + 1]!;
      const d = this.slope(sigma, sample, modelOutput);
      const dt = sub32(sigmaNext, sigma);
      this.#pending = { derivative: d, dt, sample };
      return la.combine([1, sample], [dt, d]);
    }
    // Second order (corrector): the model saw the predicted sample at σ_next; average the slopes
    // and redo the step from the saved sample.
    const sigmaNext = plan.sigmas[i]!;
    const d = la.combine([0.5, pending.derivative], [0.5, this.slope(sigmaNext, sample, modelOutput)]);
    this.#pending = null;
    return la.combine([1, pending.sample], [pending.dt, d]);
  }
}

export const heun: SchedulerDefinition<HeunConfig, SigmaPlan> = defineScheduler({
  className: CLASS,
  order: 2,
  spec: SPEC,
  plan(config, steps) {
    const spaced = spacedSigmas(CLASS, config, steps);
    let { timesteps, sigmas } = spaced;
    if (config.use_karras_sigmas) {
      ({ timesteps, sigmas } = karrasSchedule(sigmas.at(-1)!, sigmas[0]!, steps, spaced.tables));
    }
    const all = interleave(withFinalSigma(sigmas, 0).slice(0, -1)).concat(0);
    return sigmaPlan(config, interleave(timesteps).map(f32), all);
  },
  Run: HeunRun,
  addNoise: sigmaAddNoise,
});
