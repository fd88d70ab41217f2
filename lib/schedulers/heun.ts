/**
 * Heun: the second-order (trapezoidal predictor–corrector) method on the probability-flow ODE
 * (Karras et al. 2022, algorithm 1 with s_churn = 0). Each interval costs two UNet calls — an Euler
 * predictor, then a corrector that averages the two derivatives and restarts from the saved sample
 * — except the last one down to σ = 0, which is a plain Euler step. Follows diffusers'
 * src/diffusers/schedulers/scheduling_heun_discrete.py (HeunDiscreteScheduler) at 58eb52c:
 * timesteps [t0, t1, t1, …, t_{N−1}, t_{N−1}] and sigmas [σ0, σ1, σ1, …, σ_{N−1}, σ_{N−1}, 0].
 */
import type { LinearAlgebra } from "./algebra.js";
import { check, checkBetaSchedule, resolveConfig, unsupportedFlag, type ConfigSpec } from "./config.js";
import { f32, sub32 } from "./float32.js";
import {
  SIGMA_FAMILY_KEYS,
  derivative,
  interpolateSigmas,
  predictOriginal,
  scaleDivisor,
  sigmaAddNoise,
  sigmaInitNoise,
  withFinalSigma,
  type SigmaFamilyConfig,
  type SigmaPlan,
} from "./sigma-family.js";
import { checkSchedule, float32Timesteps } from "./spacing.js";
import { karrasSigmas, sigmaToT, trainTables } from "./tables.js";
import type { SchedulerDefinition, SchedulerRun } from "./types.js";

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

class HeunRun<V> implements SchedulerRun<V> {
  #index: number;
  /** Set by a predictor call, consumed by the following corrector (diffusers' `self.dt is None`). */
  #pending: { derivative: V; dt: number; sample: V } | null = null;

  constructor(
    private readonly config: HeunConfig,
    private readonly plan: SigmaPlan,
    private readonly la: LinearAlgebra<V>,
    beginIndex: number,
  ) {
    this.#index = beginIndex;
  }

  inputScale(): number {
    return 1 / scaleDivisor(this.plan.sigmas[this.#index]!);
  }

  step(modelOutput: V, sample: V): V {
    const { la, plan } = this;
    const i = this.#index;
    const pending = this.#pending;
    this.#index++;
    if (pending === null) {
      // First order (predictor): an Euler step from σ_i to σ_{i+1}.
      const sigma = plan.sigmas[i]!;
      const sigmaNext = plan.sigmas[i + 1]!;
      const predicted = predictOriginal(la, this.config.prediction_type, sigma, sample, modelOutput);
      const d = derivative(la, sample, predicted, sigma);
      const dt = sub32(sigmaNext, sigma);
      this.#pending = { derivative: d, dt, sample };
      return la.combine([1, sample], [dt, d]);
    }
    // Second order (corrector): the model saw the predicted sample at σ_next; average the slopes
    // and redo the step from the saved sample.
    const sigmaNext = plan.sigmas[i]!;
    const predicted = predictOriginal(la, this.config.prediction_type, sigmaNext, sample, modelOutput);
    const d = la.combine([0.5, pending.derivative], [0.5, derivative(la, sample, predicted, sigmaNext)]);
    this.#pending = null;
    return la.combine([1, pending.sample], [pending.dt, d]);
  }
}

export const heun: SchedulerDefinition<HeunConfig, SigmaPlan> = {
  className: CLASS,
  order: 2,
  resolveConfig(raw) {
    const config = resolveConfig(CLASS, SPEC, raw);
    checkBetaSchedule(CLASS, config);
    return config;
  },
  plan(config, steps) {
    const tables = trainTables(config);
    let timesteps = float32Timesteps(config.num_train_timesteps, steps, config.timestep_spacing, config.steps_offset);
    checkSchedule(CLASS, timesteps, steps, config.timestep_spacing);
    let sigmas = interpolateSigmas(timesteps, tables);
    if (config.use_karras_sigmas) {
      sigmas = karrasSigmas(sigmas.at(-1)!, sigmas[0]!, steps);
      timesteps = sigmas.map((s) => sigmaToT(s, tables.logSigmas));
    }
    const all = interleave(withFinalSigma(sigmas, 0).slice(0, -1)).concat(0);
    return {
      timesteps: interleave(timesteps).map(f32),
      timestepDtype: "float32",
      sigmas: all,
      initNoiseSigma: sigmaInitNoise(all, config.timestep_spacing),
    };
  },
  start(config, plan, la, beginIndex) {
    return new HeunRun(config, plan, la, beginIndex);
  },
  addNoise(_config, plan, beginIndex) {
    return sigmaAddNoise(plan, beginIndex);
  },
};
