/**
 * PNDM / PLMS: pseudo numerical methods for diffusion models (Liu et al. 2022), the linear
 * multistep (Adams–Bashforth) variant with `skip_prk_steps` — SD 1.x's default scheduler. Each
 * call transfers x from t to t − T//N with PNDM's `_get_prev_sample` formula (eq. 11), using an
 * Adams–Bashforth combination of the last 1–4 stored model outputs.
 *
 * Follows diffusers' src/diffusers/schedulers/scheduling_pndm.py (PNDMScheduler) at 58eb52c and
 * reproduces its warm-up exactly: timesteps [t0, t1, t1, t2, …]; call 0 steps t0→t1 with e0 and
 * keeps x; call 1 (t1) evaluates e1 on that result, then restarts from the kept x and steps t0→t1
 * with (e0 + e1)/2 without storing e1; call 2 (t1 again) is AB2 over [e0, e2]. The counter always
 * starts at 0, so in img2img — where the slice `timesteps[t_start:]` drops the repeated entry — the
 * warm-up lands on two different timesteps and one interval is never integrated (see the goldens
 * README). That is what diffusers does; it is not "fixed" here.
 *
 * The Runge–Kutta warm-up (`skip_prk_steps: false`, the class default) is not implemented.
 */
import {
  ALPHA_FAMILY_KEYS,
  AlphaRun,
  alphaAddNoise,
  alphaPlan,
  alphaProducts,
  epsilonFromOutput,
  finalAlphaCumprod,
  type AlphaFamilyConfig,
  type AlphaPlan,
} from "./alpha-family.js";
import { check, type ConfigSpec } from "./config.js";
import { defineScheduler } from "./define.js";
import { add32, div32, mul32, sqrt32, sub32 } from "./float32.js";
import { arange, linspace, roundHalfEven } from "./numpy.js";
import { checkSchedule } from "./spacing.js";
import { trainTables } from "./tables.js";
import type { SchedulerDefinition } from "./types.js";

export interface PndmConfig extends AlphaFamilyConfig {
  skip_prk_steps: true;
  set_alpha_to_one: boolean;
}

const CLASS = "PNDMScheduler";

const SPEC: ConfigSpec<PndmConfig> = {
  ...ALPHA_FAMILY_KEYS,
  skip_prk_steps: {
    default: false,
    check: check.only(true, "the Runge-Kutta warm-up of skip_prk_steps=false is not implemented by sd-trt; SD configs set true"),
  },
  set_alpha_to_one: { default: false, check: check.boolean },
};

/** `_timesteps` (ascending), as PNDM's `set_timesteps` spaces them. */
function ascendingTimesteps(config: PndmConfig, steps: number): number[] {
  const T = config.num_train_timesteps;
  switch (config.timestep_spacing) {
    case "linspace":
      return linspace(0, T - 1, steps).map(roundHalfEven);
    case "leading": {
      const ratio = Math.floor(T / steps);
      return Array.from({ length: steps }, (_, i) => i * ratio + config.steps_offset);
    }
    case "trailing":
      return arange(T, 0, -T / steps)
        .map(roundHalfEven)
        .reverse()
        .map((t) => t - 1);
  }
}

/** The Adams–Bashforth combination of the stored outputs (newest last). */
const AB_WEIGHTS: Record<number, number[]> = {
  2: [-1 / 2, 3 / 2],
  3: [5 / 12, -16 / 12, 23 / 12],
  4: [-9 / 24, 37 / 24, -59 / 24, 55 / 24],
};

class PndmRun<V> extends AlphaRun<PndmConfig, V> {
  #counter = 0;
  #ets: V[] = [];
  #curSample: V | null = null;
  readonly #finalAlphaCumprod = finalAlphaCumprod(this.config);

  step(modelOutput: V, sample: V): V {
    const { la } = this;
    let t = this.plan.timesteps[this.index++]!;
    let prevT = t - this.plan.stepRatio;
    if (this.#counter !== 1) {
      this.#ets = [...this.#ets.slice(-3), modelOutput];
    } else {
      prevT = t;
      t = t + this.plan.stepRatio;
    }

    let output: V;
    let from = sample;
    const ets = this.#ets;
    if (ets.length === 1 && this.#counter === 0) {
      output = modelOutput;
      this.#curSample = sample;
    } else if (ets.length === 1 && this.#counter === 1) {
      output = la.combine([0.5, modelOutput], [0.5, ets[0]!]);
      from = this.#curSample!;
      this.#curSample = null;
    } else {
      const weights = AB_WEIGHTS[Math.min(ets.length, 4)]!;
      const recent = ets.slice(-weights.length);
      output = la.combine(...weights.map((w, k) => [w, recent[k]!] as const));
    }
    this.#counter++;
    return this.#prevSample(from, t, prevT, output);
  }

  /** `_get_prev_sample` (PNDM paper eq. 11) from t to prevT. */
  #prevSample(sample: V, t: number, prevT: number, modelOutput: V): V {
    const { alphaProd, alphaProdPrev, betaProd, betaProdPrev } = alphaProducts(
      trainTables(this.config).alphasCumprod,
      t,
      prevT,
      this.#finalAlphaCumprod,
    );
    const epsilon = epsilonFromOutput(this.la, this.config.prediction_type, alphaProd, sample, modelOutput);
    const sampleCoeff = sqrt32(div32(alphaProdPrev, alphaProd));
    const denominator = add32(
      mul32(alphaProd, sqrt32(betaProdPrev)),
      sqrt32(mul32(mul32(alphaProd, betaProd), alphaProdPrev)),
    );
    const outputCoeff = -sub32(alphaProdPrev, alphaProd) / denominator;
    return this.la.combine([sampleCoeff, sample], [outputCoeff, epsilon]);
  }
}

export const pndm: SchedulerDefinition<PndmConfig, AlphaPlan> = defineScheduler({
  className: CLASS,
  order: 1,
  spec: SPEC,
  plan(config, steps) {
    const ascending = ascendingTimesteps(config, steps);
    checkSchedule(CLASS, ascending, steps, config.timestep_spacing, { T: config.num_train_timesteps });
    // plms_timesteps = concat([_t[:-1], _t[-2:-1], _t[-1:]])[::-1]: the second-largest repeated.
    const repeated = ascending.length >= 2 ? [ascending.at(-2)!] : [];
    return alphaPlan(config, steps, [...ascending.slice(0, -1), ...repeated, ascending.at(-1)!].reverse());
  },
  Run: PndmRun,
  addNoise: alphaAddNoise,
});
