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
import type { LinearAlgebra } from "./algebra.js";
import { ALPHA_FAMILY_KEYS, alphaAddNoise, type AlphaFamilyConfig, type AlphaPlan } from "./alpha-family.js";
import { ZERO_SNR, check, checkBetaSchedule, resolveConfig, type ConfigSpec } from "./config.js";
import { div32, f32, mul32, sqrt32, square32, sub32 } from "./float32.js";
import { checkSchedule, integerTimesteps } from "./spacing.js";
import { trainTables } from "./tables.js";
import type { SchedulerDefinition, SchedulerRun } from "./types.js";

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

class DdimRun<V> implements SchedulerRun<V> {
  #call: number;
  readonly #finalAlphaCumprod: number;

  constructor(
    private readonly config: DdimConfig,
    private readonly plan: AlphaPlan,
    private readonly la: LinearAlgebra<V>,
    beginIndex: number,
  ) {
    this.#call = beginIndex;
    this.#finalAlphaCumprod = config.set_alpha_to_one ? 1 : trainTables(config).alphasCumprod[0]!;
  }

  inputScale(): number {
    return 1;
  }

  step(modelOutput: V, sample: V, drawNoise: () => V): V {
    const { la, config } = this;
    const ac = trainTables(config).alphasCumprod;
    const t = this.plan.timesteps[this.#call++]!;
    const prevT = t - this.plan.stepRatio;
    const alphaProd = ac[t]!;
    const alphaProdPrev = prevT >= 0 ? ac[prevT]! : this.#finalAlphaCumprod;
    const betaProd = sub32(1, alphaProd);
    const sqrtAlpha = sqrt32(alphaProd);
    const sqrtBeta = sqrt32(betaProd);

    let predictedOriginal: V;
    let predictedEpsilon: V;
    if (config.prediction_type === "epsilon") {
      predictedOriginal = la.combine([1 / sqrtAlpha, sample], [-sqrtBeta / sqrtAlpha, modelOutput]);
      predictedEpsilon = modelOutput;
    } else {
      predictedOriginal = la.combine([sqrtAlpha, sample], [-sqrtBeta, modelOutput]);
      predictedEpsilon = la.combine([sqrtAlpha, modelOutput], [sqrtBeta, sample]);
    }

    // _get_variance: (β_prev / β_t) · (1 − ᾱ_t / ᾱ_prev), then σ_t = eta · variance ** 0.5
    const betaProdPrev = sub32(1, alphaProdPrev);
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

export const ddim: SchedulerDefinition<DdimConfig, AlphaPlan> = {
  className: CLASS,
  order: 1,
  resolveConfig(raw) {
    const config = resolveConfig(CLASS, SPEC, raw);
    checkBetaSchedule(CLASS, config);
    return config;
  },
  plan(config, steps) {
    const T = config.num_train_timesteps;
    const timesteps = integerTimesteps(T, steps, config.timestep_spacing, config.steps_offset);
    checkSchedule(CLASS, timesteps, steps, config.timestep_spacing, { T });
    return { timesteps, timestepDtype: "int64", initNoiseSigma: 1, stepRatio: Math.floor(T / steps) };
  },
  start(config, plan, la, beginIndex) {
    return new DdimRun(config, plan, la, beginIndex);
  },
  addNoise(config, plan, beginIndex) {
    return alphaAddNoise(trainTables(config).alphasCumprod, plan.timesteps[beginIndex]!);
  },
};
