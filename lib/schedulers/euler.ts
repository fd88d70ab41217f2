/**
 * Euler: the explicit Euler method on the probability-flow ODE dx/dσ = (x − x0)/σ (Karras et al.
 * 2022, algorithm 2 with s_churn = 0, so no noise). Follows diffusers'
 * src/diffusers/schedulers/scheduling_euler_discrete.py (EulerDiscreteScheduler) at 58eb52c.
 */
import type { LinearAlgebra } from "./algebra.js";
import { ZERO_SNR, check, checkBetaSchedule, resolveConfig, unsupportedFlag, type ConfigSpec } from "./config.js";
import { f32, log32, mul32, sub32 } from "./float32.js";
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

export interface EulerConfig extends SigmaFamilyConfig {
  interpolation_type: "linear";
  use_karras_sigmas: boolean;
  use_exponential_sigmas: false;
  use_beta_sigmas: false;
  /** Karras range override (null: the schedule's own smallest / largest sigma). */
  sigma_min: number | null;
  sigma_max: number | null;
  /** "continuous" with v_prediction feeds the UNet 0.25·log(σ) instead of t. */
  timestep_type: "discrete" | "continuous";
  rescale_betas_zero_snr: false;
  final_sigmas_type: "zero" | "sigma_min";
}

const CLASS = "EulerDiscreteScheduler";

const SPEC: ConfigSpec<EulerConfig> = {
  ...SIGMA_FAMILY_KEYS,
  interpolation_type: { default: "linear", check: check.oneOf(["linear"], " (log_linear is not supported by sd-trt)") },
  use_karras_sigmas: { default: false, check: check.boolean },
  use_exponential_sigmas: unsupportedFlag("use_exponential_sigmas"),
  use_beta_sigmas: unsupportedFlag("use_beta_sigmas"),
  sigma_min: { default: null, check: check.positiveOrNull },
  sigma_max: { default: null, check: check.positiveOrNull },
  timestep_type: { default: "discrete", check: check.oneOf(["discrete", "continuous"]) },
  rescale_betas_zero_snr: ZERO_SNR,
  final_sigmas_type: { default: "zero", check: check.oneOf(["zero", "sigma_min"]) },
};

class EulerRun<V> implements SchedulerRun<V> {
  #index: number;

  constructor(
    private readonly config: EulerConfig,
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
    // s_churn = 0 ⇒ gamma = 0 ⇒ sigma_hat = sigma and no noise is drawn.
    const sigma = plan.sigmas[i]!;
    const predicted = predictOriginal(la, this.config.prediction_type, sigma, sample, modelOutput);
    const d = derivative(la, sample, predicted, sigma);
    const dt = sub32(plan.sigmas[i + 1]!, sigma);
    this.#index++;
    return la.combine([1, sample], [dt, d]);
  }
}

export const euler: SchedulerDefinition<EulerConfig, SigmaPlan> = {
  className: CLASS,
  order: 1,
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
      const sigmaMin = config.sigma_min ?? sigmas.at(-1)!;
      const sigmaMax = config.sigma_max ?? sigmas[0]!;
      sigmas = karrasSigmas(sigmaMin, sigmaMax, steps);
      timesteps = sigmas.map((s) => f32(sigmaToT(s, tables.logSigmas)));
    }
    // "sigma_min": ((1 - ᾱ_0) / ᾱ_0) ** 0.5 in float32, i.e. the smallest training sigma.
    const finalSigma = config.final_sigmas_type === "sigma_min" ? tables.sigmas[0]! : 0;
    const all = withFinalSigma(sigmas, finalSigma);
    if (config.timestep_type === "continuous" && config.prediction_type === "v_prediction") {
      timesteps = all.slice(0, -1).map((s) => mul32(0.25, log32(s)));
    }
    return {
      timesteps,
      timestepDtype: "float32",
      sigmas: all,
      initNoiseSigma: sigmaInitNoise(all, config.timestep_spacing),
    };
  },
  start(config, plan, la, beginIndex) {
    return new EulerRun(config, plan, la, beginIndex);
  },
  addNoise(_config, plan, beginIndex) {
    return sigmaAddNoise(plan, beginIndex);
  },
};
