/**
 * DPM-Solver++ multistep (Lu et al. 2022, "DPM-Solver++: Fast Solver for Guided Sampling of
 * Diffusion Probabilistic Models", algorithm 2): exponential-integrator steps in λ on the data
 * prediction, orders 1–3 from the stored history — "DPM++ 2M" at order 2 with the midpoint
 * solver, "DPM++ 2M Karras" with Karras sigmas. Follows diffusers'
 * src/diffusers/schedulers/scheduling_dpmsolver_multistep.py (DPMSolverMultistepScheduler) at
 * 58eb52c: first-order warm-up, first-order final step with `final_sigmas_type="zero"` (and the
 * `lower_order_final` rule below 15 steps), Karras timesteps rounded to int64 while the update
 * keeps the unrounded Karras sigmas.
 */
import type { Term } from "./algebra.js";
import { ZERO_SNR, check, unsupportedFlag, type ConfigSpec, type KeyCheck } from "./config.js";
import { defineScheduler } from "./define.js";
import { add32, div32, exp32, mul32, sub32 } from "./float32.js";
import { roundHalfEven } from "./numpy.js";
import {
  MultistepRun,
  alphaSigma,
  dataPrediction,
  lambdaOf,
  lastTimestepAfterClip,
  multistepAddNoise,
  multistepPlan,
  type MultistepPlan,
} from "./multistep-family.js";
import { SIGMA_FAMILY_KEYS, interpolateSigmas, type SigmaFamilyConfig } from "./sigma-family.js";
import { checkSchedule, multistepTimesteps } from "./spacing.js";
import { karrasSigmas, sigmaToT, trainTables } from "./tables.js";
import type { SchedulerDefinition } from "./types.js";

export interface DpmSolverConfig extends SigmaFamilyConfig {
  solver_order: 1 | 2 | 3;
  thresholding: false;
  dynamic_thresholding_ratio: number;
  sample_max_value: number;
  algorithm_type: "dpmsolver++";
  solver_type: "midpoint" | "heun";
  lower_order_final: boolean;
  euler_at_final: boolean;
  use_karras_sigmas: boolean;
  use_exponential_sigmas: false;
  use_beta_sigmas: false;
  use_lu_lambdas: false;
  use_flow_sigmas: false;
  flow_shift: number;
  final_sigmas_type: "zero" | "sigma_min";
  /** −Infinity (no clipping) by default; null, what JSON makes of −Infinity, means the same. */
  lambda_min_clipped: number;
  variance_type: null;
  rescale_betas_zero_snr: false;
  use_dynamic_shifting: false;
  time_shift_type: string;
}

const CLASS = "DPMSolverMultistepScheduler";

// diffusers maps DEIS's settings onto DPM-Solver++ (`register_to_config`); so does sd-trt.
const algorithmType: KeyCheck = (v, fail) =>
  v === "dpmsolver++" || v === "deis"
    ? "dpmsolver++"
    : fail(`"dpmsolver++" (the SDE and first-generation DPM-Solver variants are not supported by sd-trt)`);
const solverType: KeyCheck = (v, fail) =>
  v === "midpoint" || v === "heun" ? v : ["logrho", "bh1", "bh2"].includes(v as string) ? "midpoint" : fail(`one of "midpoint", "heun"`);
const lambdaMinClipped: KeyCheck = (v, fail) =>
  v === null ? -Infinity : typeof v === "number" && !Number.isNaN(v) ? v : fail("a number (−Infinity for no clipping)");

const SPEC: ConfigSpec<DpmSolverConfig> = {
  ...SIGMA_FAMILY_KEYS,
  solver_order: { default: 2, check: check.oneOf([1, 2, 3]) },
  thresholding: { default: false, check: check.nonLinear("thresholding") },
  dynamic_thresholding_ratio: { default: 0.995, check: check.number(0, 1) },
  sample_max_value: { default: 1, check: check.number(0, Number.MAX_VALUE) },
  algorithm_type: { default: "dpmsolver++", check: algorithmType },
  solver_type: { default: "midpoint", check: solverType },
  lower_order_final: { default: true, check: check.boolean },
  euler_at_final: { default: false, check: check.boolean },
  use_karras_sigmas: { default: false, check: check.boolean },
  use_exponential_sigmas: unsupportedFlag("use_exponential_sigmas"),
  use_beta_sigmas: unsupportedFlag("use_beta_sigmas"),
  use_lu_lambdas: unsupportedFlag("use_lu_lambdas"),
  use_flow_sigmas: unsupportedFlag("use_flow_sigmas"),
  flow_shift: { default: 1, check: check.number(-Number.MAX_VALUE, Number.MAX_VALUE) },
  final_sigmas_type: { default: "zero", check: check.oneOf(["zero", "sigma_min"]) },
  lambda_min_clipped: { default: -Infinity, check: lambdaMinClipped },
  variance_type: {
    default: null,
    check: check.only(null, "learned variances need extra UNet output channels, which sd-trt does not support"),
  },
  rescale_betas_zero_snr: ZERO_SNR,
  use_dynamic_shifting: unsupportedFlag("use_dynamic_shifting"),
  time_shift_type: { default: "exponential", check: check.anyString },
};

class DpmSolverRun<V> extends MultistepRun<DpmSolverConfig, V> {
  step(modelOutput: V, sample: V): V {
    const { config, plan } = this;
    const i = this.index;
    const n = plan.timesteps.length;
    const lowerOrderFinal =
      i === n - 1 &&
      (config.euler_at_final || (config.lower_order_final && n < 15) || config.final_sigmas_type === "zero");
    const lowerOrderSecond = i === n - 2 && config.lower_order_final && n < 15;

    this.remember(dataPrediction(this.la, config.prediction_type, plan.sigmas[i]!, sample, modelOutput));

    let prev: V;
    if (config.solver_order === 1 || this.lowerOrderNums < 1 || lowerOrderFinal) {
      prev = this.#firstOrder(sample);
    } else if (config.solver_order === 2 || this.lowerOrderNums < 2 || lowerOrderSecond) {
      prev = this.#secondOrder(sample);
    } else {
      prev = this.#thirdOrder(sample);
    }
    this.advance();
    return prev;
  }

  /** σ_t/σ_s0 · x and α_t for the interval sigmas[i] → sigmas[i+1], with h and λ's. */
  #interval(): { ratio: number; alphaT: number; h: number; lambdaS0: number } {
    const i = this.index;
    const target = alphaSigma(this.plan.sigmas[i + 1]!);
    const source = alphaSigma(this.plan.sigmas[i]!);
    const lambdaS0 = lambdaOf(this.plan.sigmas[i]!);
    const h = sub32(lambdaOf(this.plan.sigmas[i + 1]!), lambdaS0);
    return { ratio: div32(target.sigma, source.sigma), alphaT: target.alpha, h, lambdaS0 };
  }

  /** DPM-Solver++ (first order, = DDIM): x_t = (σ_t/σ_s)·x − α_t(e^{−h} − 1)·D0. */
  #firstOrder(sample: V): V {
    const { ratio, alphaT, h } = this.#interval();
    const phi = mul32(alphaT, sub32(exp32(-h), 1));
    return this.la.combine([ratio, sample], [-phi, this.output(0)]);
  }

  /** `multistep_dpm_solver_second_order_update` (dpmsolver++ branch). */
  #secondOrder(sample: V): V {
    const { la } = this;
    const { ratio, alphaT, h, lambdaS0 } = this.#interval();
    const lambdaS1 = lambdaOf(this.plan.sigmas[this.index - 1]!);
    const r0 = div32(sub32(lambdaS0, lambdaS1), h);
    const m0 = this.output(0);
    const m1 = this.output(1);
    const d1 = la.combine([div32(1, r0), m0], [-div32(1, r0), m1]);
    const phi = mul32(alphaT, sub32(exp32(-h), 1));
    const terms: Term<V>[] = [
      [ratio, sample],
      [-phi, m0],
    ];
    if (this.config.solver_type === "midpoint") {
      terms.push([-mul32(0.5, phi), d1]);
    } else {
      terms.push([mul32(alphaT, add32(div32(sub32(exp32(-h), 1), h), 1)), d1]);
    }
    return la.combine(...terms);
  }

  /** `multistep_dpm_solver_third_order_update` (dpmsolver++ branch). */
  #thirdOrder(sample: V): V {
    const { la } = this;
    const { ratio, alphaT, h, lambdaS0 } = this.#interval();
    const lambdaS1 = lambdaOf(this.plan.sigmas[this.index - 1]!);
    const lambdaS2 = lambdaOf(this.plan.sigmas[this.index - 2]!);
    const r0 = div32(sub32(lambdaS0, lambdaS1), h);
    const r1 = div32(sub32(lambdaS1, lambdaS2), h);
    const m0 = this.output(0);
    const m1 = this.output(1);
    const m2 = this.output(2);
    const d10 = la.combine([div32(1, r0), m0], [-div32(1, r0), m1]);
    const d11 = la.combine([div32(1, r1), m1], [-div32(1, r1), m2]);
    const r0r1 = add32(r0, r1);
    const d1 = la.combine([1 + div32(r0, r0r1), d10], [-div32(r0, r0r1), d11]);
    const d2 = la.combine([div32(1, r0r1), d10], [-div32(1, r0r1), d11]);
    const expm = sub32(exp32(-h), 1);
    return la.combine(
      [ratio, sample],
      [-mul32(alphaT, expm), m0],
      [mul32(alphaT, add32(div32(expm, h), 1)), d1],
      [-mul32(alphaT, sub32(div32(add32(expm, h), mul32(h, h)), 0.5)), d2],
    );
  }
}

export const dpmSolver: SchedulerDefinition<DpmSolverConfig, MultistepPlan> = defineScheduler({
  className: CLASS,
  order: 1,
  spec: SPEC,
  plan(config, steps) {
    const T = config.num_train_timesteps;
    const tables = trainTables(config);
    const last = lastTimestepAfterClip(tables.alphasCumprod, config.lambda_min_clipped);
    let timesteps = multistepTimesteps(T, last, steps, config.timestep_spacing, config.steps_offset);
    checkSchedule(CLASS, timesteps, steps, config.timestep_spacing);
    let sigmas: number[];
    if (config.use_karras_sigmas) {
      // From the full training range (the flipped table's ends), not from the spaced timesteps.
      sigmas = karrasSigmas(tables.sigmas[0]!, tables.sigmas[T - 1]!, steps);
      // Rounded (np.round) except for the cosine schedule, where the int64 cast truncates — there
      // the top timestep (999 or 998) hangs on how numpy's float32 log rounds the largest sigma.
      const toInteger = config.beta_schedule !== "squaredcos_cap_v2" ? roundHalfEven : Math.trunc;
      timesteps = sigmas.map((s) => toInteger(sigmaToT(s, tables.logSigmas)));
    } else {
      sigmas = interpolateSigmas(timesteps, tables);
    }
    const finalSigma = config.final_sigmas_type === "sigma_min" ? tables.sigmas[0]! : 0;
    return multistepPlan(CLASS, steps, timesteps, sigmas, finalSigma);
  },
  Run: DpmSolverRun,
  addNoise: multistepAddNoise,
});
