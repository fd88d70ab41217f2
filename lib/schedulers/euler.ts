/**
 * Euler: the explicit Euler method on the probability-flow ODE dx/dσ = (x − x0)/σ (Karras et al.
 * 2022, algorithm 2 with s_churn = 0, so no noise). Follows diffusers'
 * src/diffusers/schedulers/scheduling_euler_discrete.py (EulerDiscreteScheduler) at 58eb52c.
 */
import { ZERO_SNR, check, unsupportedFlag, type ConfigSpec } from "./config.js";
import { defineScheduler } from "./define.js";
import { log32, mul32, sub32 } from "./float32.js";
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

class EulerRun<V> extends SigmaRun<EulerConfig, V> {
  step(modelOutput: V, sample: V): V {
    const { la, plan } = this;
    const i = this.index;
    // s_churn = 0 ⇒ gamma = 0 ⇒ sigma_hat = sigma and no noise is drawn.
    const sigma = plan.sigmas[i]!;
    const d = this.slope(sigma, sample, modelOutput);
    const dt = sub32(plan.sigmas[i + 1]!, sigma);
    this.index++;
    return la.combine([1, sample], [dt, d]);
  }
}

export const euler: SchedulerDefinition<EulerConfig, SigmaPlan> = defineScheduler({
  className: CLASS,
  order: 1,
  spec: SPEC,
  plan(config, steps) {
    const spaced = spacedSigmas(CLASS, config, steps);
    let { timesteps, sigmas } = spaced;
    if (config.use_karras_sigmas) {
      ({ timesteps, sigmas } = karrasSchedule(config.sigma_min ?? sigmas.at(-1)!, config.sigma_max ?? sigmas[0]!, steps, spaced.tables));
    }
    // "sigma_min": ((1 - ᾱ_0) / ᾱ_0) ** 0.5 in float32, i.e. the smallest training sigma.
    const finalSigma = config.final_sigmas_type === "sigma_min" ? spaced.tables.sigmas[0]! : 0;
    const all = withFinalSigma(sigmas, finalSigma);
    if (config.timestep_type === "continuous" && config.prediction_type === "v_prediction") {
      timesteps = all.slice(0, -1).map((s) => mul32(0.25, log32(s)));
    }
    return sigmaPlan(config, timesteps, all);
  },
  Run: EulerRun,
  addNoise: sigmaAddNoise,
});
