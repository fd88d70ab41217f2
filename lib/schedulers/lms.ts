/**
 * LMS: the linear multistep method for the probability-flow ODE in sigma space (Karras et al.
 * 2022 / k-diffusion's `sample_lms`), order 4: x_{i+1} = x_i + Σ_k c_k · d_{i−k}, where
 * d = (x − x0)/σ and c_k = ∫_{σ_i}^{σ_{i+1}} L_k(τ) dτ over the Lagrange basis on the last
 * sigmas. Follows diffusers' src/diffusers/schedulers/scheduling_lms_discrete.py
 * (LMSDiscreteScheduler) at 58eb52c, including its quirks: the integral is scipy's `quad` of a
 * float32 integrand, and the order comes from the step index, not from how many derivatives are
 * stored (so img2img's first step applies the order-4 coefficient of the newest derivative only).
 */
import { check, unsupportedFlag, type ConfigSpec } from "./config.js";
import { defineScheduler } from "./define.js";
import { f32 } from "./float32.js";
import { gaussKronrod21 } from "./quadrature.js";
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
import { checkStrictlyDecreasing } from "./spacing.js";
import type { SchedulerDefinition } from "./types.js";

export interface LmsConfig extends SigmaFamilyConfig {
  use_karras_sigmas: boolean;
  use_exponential_sigmas: false;
  use_beta_sigmas: false;
}

const CLASS = "LMSDiscreteScheduler";

const SPEC: ConfigSpec<LmsConfig> = {
  ...SIGMA_FAMILY_KEYS,
  use_karras_sigmas: { default: false, check: check.boolean },
  use_exponential_sigmas: unsupportedFlag("use_exponential_sigmas"),
  use_beta_sigmas: unsupportedFlag("use_beta_sigmas"),
};

/** diffusers keeps at most this many derivatives (`step(order=4)`). */
const MAX_ORDER = 4;

/**
 * `get_lms_coefficient(order, t, current_order)`: ∫ over [σ_t, σ_{t+1}] of the Lagrange basis
 * polynomial for node σ_{t−current_order} among σ_t … σ_{t−order+1}, with the integrand evaluated in
 * float32 as diffusers' torch scalars do (τ is rounded to float32 first).
 */
export function lmsCoefficient(sigmas: readonly number[], order: number, t: number, currentOrder: number): number {
  const integrand = (tau: number): number => {
    const tau32 = f32(tau);
    let prod = 1;
    for (let k = 0; k < order; k++) {
      if (k === currentOrder) continue;
      prod = f32(prod * f32(f32(tau32 - sigmas[t - k]!) / f32(sigmas[t - currentOrder]! - sigmas[t - k]!)));
    }
    return prod;
  };
  return gaussKronrod21(integrand, sigmas[t]!, sigmas[t + 1]!);
}

class LmsRun<V> extends SigmaRun<LmsConfig, V> {
  readonly #derivatives: V[] = [];

  step(modelOutput: V, sample: V): V {
    const { la, plan } = this;
    const i = this.index;
    const sigma = plan.sigmas[i]!;
    this.#derivatives.push(this.slope(sigma, sample, modelOutput));
    if (this.#derivatives.length > MAX_ORDER) this.#derivatives.shift();

    const order = Math.min(i + 1, MAX_ORDER);
    // zip(lms_coeffs, reversed(derivatives)) stops at the shorter list.
    const terms = Math.min(order, this.#derivatives.length);
    const update: [number, V][] = [[1, sample]];
    for (let k = 0; k < terms; k++) {
      update.push([lmsCoefficient(plan.sigmas, order, i, k), this.#derivatives[this.#derivatives.length - 1 - k]!]);
    }
    this.index++;
    return la.combine(...update);
  }
}

export const lms: SchedulerDefinition<LmsConfig, SigmaPlan> = defineScheduler({
  className: CLASS,
  order: 1,
  spec: SPEC,
  plan(config, steps) {
    const spaced = spacedSigmas(CLASS, config, steps);
    let { timesteps, sigmas } = spaced;
    if (config.use_karras_sigmas) {
      // LMS's _convert_to_karras takes its range from the interpolated sigmas.
      ({ timesteps, sigmas } = karrasSchedule(sigmas.at(-1)!, sigmas[0]!, steps, spaced.tables));
    }
    const all = withFinalSigma(sigmas, 0);
    checkStrictlyDecreasing(CLASS, all.slice(0, -1), steps, "the Lagrange basis divides by their differences");
    return sigmaPlan(config, timesteps, all);
  },
  Run: LmsRun,
  addNoise: sigmaAddNoise,
});
