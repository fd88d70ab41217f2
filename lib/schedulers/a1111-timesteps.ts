/**
 * A1111's own DDIM and PLMS (`a1111_ddim`, `a1111_plms`): modules/sd_samplers_timesteps_impl.py
 * `ddim` and `plms` as sd_samplers_timesteps.CompVisSampler drives them — not diffusers' DDIM and
 * PNDM. They step over ldm's integer timesteps `clip(range(0, 1000, 1000 // steps) + 1, 0, 999)`
 * with the model's eps (CompVisTimestepsDenoiser: the UNet's output as is, no input scaling),
 * starting from the unscaled noise, and stop at the schedule's first timestep: `len − 1`
 * iterations, the last one stepping to ᾱ[timesteps[0]] (t = 1), not to t = 0. v-prediction models
 * run as A1111 runs them, through its CompVisTimestepsVDenoiser (epsScalings).
 *
 * Written as generators over the same LinearAlgebra as the k-diffusion samplers (kdiffusion.ts'
 * GeneratorRun), so they compile to ordinary sampler programs; the goldens are A1111's own
 * functions (scripts/reference/gen_a1111_kdiffusion_goldens.py).
 */
import { InvalidOptionError } from "../errors.js";
import type { LinearAlgebra } from "./algebra.js";
import { check, resolveConfig, type ConfigSpec, type RawSchedulerConfig } from "./config.js";
import { f32, sqrt32, sub32 } from "./float32.js";
import { discreteSchedule, GeneratorRun, type EvalRequest, type EvalResult, type EvalScalings } from "./kdiffusion.js";
import type { NoiseScales, SchedulePlan, SchedulerDefinition } from "./types.js";

export const A1111_TIMESTEP_SAMPLER_NAMES = ["a1111_ddim", "a1111_plms"] as const;
export type A1111TimestepSamplerName = (typeof A1111_TIMESTEP_SAMPLER_NAMES)[number];

export function isA1111TimestepSampler(name: string): name is A1111TimestepSamplerName {
  return (A1111_TIMESTEP_SAMPLER_NAMES as readonly string[]).includes(name);
}

export interface A1111TimestepsConfig {
  num_train_timesteps: number;
  beta_start: number;
  beta_end: number;
  beta_schedule: "scaled_linear";
  trained_betas: null;
  /** v models go through A1111's CompVisTimestepsVDenoiser: eps = √ᾱ[t]·v + √(1 − ᾱ[t])·x. */
  prediction_type: "epsilon" | "v_prediction";
  /** DDIM's eta (A1111: the request's eta, else opts.eta_ddim = 0); PLMS has none. */
  eta: number;
}

export interface A1111TimestepsPlan extends SchedulePlan, EvalScalings {
  /** The requested step count (img2img's t_enc counts in it). */
  steps: number;
  /** CompVisSampler.get_timesteps: the integer timesteps, ascending. */
  schedule: number[];
  /** ᾱ at the timestep img2img noises the init latent to (img2img plans only). */
  img2imgAlpha?: number;
}

export interface TimestepsContext<V> {
  la: LinearAlgebra<V>;
  /** The timesteps the sampler gets (ascending; sliced to t_enc for img2img). */
  timesteps: readonly number[];
  /** sd_model.alphas_cumprod (float32). */
  alphasCumprod: Float32Array;
  eta: number;
  x: V;
  noise(): V;
}

export type TimestepsBody = <V>(s: TimestepsContext<V>) => Generator<EvalRequest<V>, V, EvalResult<V>>;

/** One timestep sampler: A1111's label, its sd_samplers_timesteps_impl function, its loop, whether it takes eta. */
export interface TimestepSamplerInfo {
  label: string;
  functionName: string;
  body: TimestepsBody;
  takesEta: boolean;
}

/** The per-iteration tables both samplers build: ᾱ_t, ᾱ_prev (ᾱ of the timestep before; ᾱ[0] first), √(1 − ᾱ_t). */
export function alphaTables(s: TimestepsContext<unknown>): { alphas: number[]; alphasPrev: number[]; sqrtOneMinus: number[] } {
  const alphas = s.timesteps.map((t) => s.alphasCumprod[t]!);
  // alphas_cumprod[pad(timesteps[:-1], (1, 0))]: the first entry is ᾱ[0].
  const alphasPrev = s.timesteps.map((_, k) => s.alphasCumprod[k === 0 ? 0 : s.timesteps[k - 1]!]!);
  return { alphas, alphasPrev, sqrtOneMinus: alphas.map((a) => sqrt32(sub32(1, a))) };
}

/**
 * One DDIM step's scalars at ᾱ_t → ᾱ_prev, as ddim and ddim_cfgpp both compute them: σ_t =
 * eta·√((1 − ᾱ_prev)/(1 − ᾱ_t)·(1 − ᾱ_t/ᾱ_prev)), the x term's √ᾱ_prev/√ᾱ_t, and the direction's √(1 − ᾱ_prev − σ²).
 */
export function ddimStepScalars(eta: number, aT: number, aPrev: number): { sigma: number; toPrev: number; direction: number } {
  const sigma = eta * Math.sqrt(((1 - aPrev) / (1 - aT)) * (1 - aT / aPrev));
  return { sigma, toPrev: Math.sqrt(aPrev) / Math.sqrt(aT), direction: Math.sqrt(1 - aPrev - sigma * sigma) };
}

/** sd_samplers_timesteps_impl.ddim. */
function* ddim<V>(s: TimestepsContext<V>): Generator<EvalRequest<V>, V, EvalResult<V>> {
  const { la, timesteps } = s;
  const { alphas, alphasPrev, sqrtOneMinus } = alphaTables(s);
  let x = s.x;
  for (let i = 0; i < timesteps.length - 1; i++) {
    const index = timesteps.length - 1 - i;
    const r = yield [x, timesteps[index]!];
    const { sigma, toPrev, direction } = ddimStepScalars(s.eta, alphas[index]!, alphasPrev[index]!);
    // x = √ᾱ_prev · (x − √(1 − ᾱ_t) · e) / √ᾱ_t + √(1 − ᾱ_prev − σ²) · e + σ · n; n is drawn even when σ = 0.
    x = la.combine([toPrev, r.x], [-toPrev * sqrtOneMinus[index]! + direction, r.denoised], [sigma, s.noise()]);
  }
  return x;
}

/** sd_samplers_timesteps_impl.plms: a pseudo improved Euler first step (two model calls), then Adams–Bashforth on eps up to 4th order. */
function* plms<V>(s: TimestepsContext<V>): Generator<EvalRequest<V>, V, EvalResult<V>> {
  const { la, timesteps } = s;
  const { alphas, alphasPrev, sqrtOneMinus } = alphaTables(s);
  let x = s.x;
  const oldEps: V[] = [];
  // get_x_prev_and_pred_x0(e, index) from the step's x.
  const toPrev = (from: V, e: V, index: number) => {
    const ratio = Math.sqrt(alphasPrev[index]!) / Math.sqrt(alphas[index]!);
    return la.combine([ratio, from], [-ratio * sqrtOneMinus[index]! + Math.sqrt(1 - alphasPrev[index]!), e]);
  };
  for (let i = 0; i < timesteps.length - 1; i++) {
    const index = timesteps.length - 1 - i;
    const r = yield [x, timesteps[index]!];
    const e = r.denoised;
    let ePrime: V;
    if (oldEps.length === 0) {
      const r2 = yield [toPrev(r.x, e, index), timesteps[Math.max(index - 1, 0)]!];
      ePrime = la.combine([0.5, e], [0.5, r2.denoised]);
    } else if (oldEps.length === 1) {
      ePrime = la.combine([3 / 2, e], [-1 / 2, oldEps[0]!]);
    } else if (oldEps.length === 2) {
      ePrime = la.combine([23 / 12, e], [-16 / 12, oldEps[1]!], [5 / 12, oldEps[0]!]);
    } else {
      ePrime = la.combine([55 / 24, e], [-59 / 24, oldEps[2]!], [37 / 24, oldEps[1]!], [-9 / 24, oldEps[0]!]);
    }
    x = toPrev(r.x, ePrime, index);
    oldEps.push(e);
    if (oldEps.length >= 4) oldEps.shift();
  }
  return x;
}

const SAMPLERS: Record<A1111TimestepSamplerName, TimestepSamplerInfo> = {
  a1111_ddim: { label: "DDIM", functionName: "ddim", body: ddim, takesEta: true },
  a1111_plms: { label: "PLMS", functionName: "plms", body: plms, takesEta: false },
};

/** A1111's label ("DDIM", "PLMS"). */
export function a1111TimestepLabel(name: A1111TimestepSamplerName): string {
  return SAMPLERS[name].label;
}

/** CompVisSampler.get_timesteps (no discard_next_to_last_sigma: A1111's default). */
export function a1111Timesteps(steps: number): number[] {
  const out: number[] = [];
  for (let t = 0; t < 1000; t += Math.floor(1000 / steps)) out.push(Math.min(Math.max(t + 1, 0), 999));
  return out;
}

const nullAlgebra: LinearAlgebra<null> = { combine: () => null };

/**
 * A timestep sampler's D is the eps it steps with: the UNet's output as is (CompVisTimestepsDenoiser),
 * or for v models CompVisTimestepsVDenoiser's √ᾱ[t.to(int)]·v + √(1 − ᾱ[t.to(int)])·x (a fractional
 * timestep, UniPC's, truncated to index the float32 tables). Linear in the output, so the guided
 * eps is this of the guided v, as A1111's CFG combine of the eps gives.
 */
export function epsScalings(
  config: Pick<A1111TimestepsConfig, "beta_start" | "beta_end" | "num_train_timesteps" | "prediction_type">,
  evals: readonly number[],
): { cSkip: number[]; cOut: number[] } {
  if (config.prediction_type === "epsilon") return { cSkip: evals.map(() => 0), cOut: evals.map(() => 1) };
  const ac = discreteSchedule(config).alphasCumprod;
  return { cSkip: evals.map((t) => sqrt32(sub32(1, ac[Math.trunc(t)]!))), cOut: evals.map((t) => sqrt32(ac[Math.trunc(t)]!)) };
}

function planFor(config: A1111TimestepsConfig, info: { label: string; body: TimestepsBody }, steps: number, timesteps: number[]): A1111TimestepsPlan {
  const alphasCumprod = discreteSchedule(config).alphasCumprod;
  const evals: number[] = [];
  const generator = info.body({ la: nullAlgebra, timesteps, alphasCumprod, eta: config.eta, x: null, noise: () => null });
  for (let r = generator.next(); !r.done; r = generator.next({ x: null, denoised: null, uncondDenoised: null })) evals.push(r.value[1]);
  if (evals.length === 0) {
    throw new InvalidOptionError("steps", `A1111's ${info.label} runs len(timesteps) − 1 model steps; ${steps} steps give none`);
  }
  return {
    // A1111 hands the UNet `timesteps[index].item() * s_in`: a float32 tensor of whole numbers.
    timesteps: evals,
    timestepDtype: "float32",
    initNoiseSigma: 1,
    steps,
    schedule: timesteps,
    // The UNet input is x as is (no c_in); D is the eps (epsScalings).
    cIn: evals.map(() => 1),
    ...epsScalings(config, evals),
  };
}

/** The scheduler definition of a timestep sampler (its own DDIM, PLMS, and DDIM CFG++ in a1111-ddim-cfgpp.ts). */
export function timestepSamplerDefinition(info: TimestepSamplerInfo): SchedulerDefinition<A1111TimestepsConfig, A1111TimestepsPlan> {
  const className = `modules.sd_samplers_timesteps_impl.${info.functionName}`;
  const configSpec: ConfigSpec<A1111TimestepsConfig> = {
    num_train_timesteps: { default: 1000, check: check.only(1000, "A1111's timestep samplers use ldm's 1000 training timesteps") },
    beta_start: { default: 0.00085, check: check.number(Number.MIN_VALUE, 1) },
    beta_end: { default: 0.012, check: check.number(Number.MIN_VALUE, 1) },
    beta_schedule: { default: "scaled_linear", check: check.only("scaled_linear", "A1111's samplers use ldm's linear-in-sqrt betas") },
    trained_betas: { default: null, check: check.only(null, "A1111's samplers use ldm's computed betas") },
    prediction_type: { default: "epsilon", check: check.oneOf(["epsilon", "v_prediction"]) },
    eta: { default: 0, check: info.takesEta ? check.number(0, 100) : check.only(0, `${info.label} takes no eta`) },
  };
  return {
    className,
    order: 1,
    resolveConfig: (raw: RawSchedulerConfig) => resolveConfig(className, configSpec, raw),
    plan: (config, steps) => planFor(config, info, steps, a1111Timesteps(steps)),
    img2imgPlan(config, plan, startIndex) {
      // CompVisSampler.sample_img2img: startIndex = steps − t_enc − 1 (a1111Img2imgStartIndex), the
      // sampler runs timesteps[:t_enc] from the init latent noised to timesteps[t_enc].
      const tEnc = plan.steps - 1 - startIndex;
      if (!Number.isInteger(startIndex) || startIndex < 0 || tEnc < 2) {
        throw new InvalidOptionError(
          "strength",
          `A1111's ${info.label} img2img runs t_enc − 1 steps, t_enc = int(min(strength, 0.999) · steps); with ${plan.steps} steps this strength gives t_enc = ${tEnc}, no step: raise strength or steps`,
        );
      }
      const alphasCumprod = discreteSchedule(config).alphasCumprod;
      return { ...planFor(config, info, plan.steps, plan.schedule.slice(0, tEnc)), img2imgAlpha: alphasCumprod[plan.schedule[tEnc]!]! };
    },
    start(config, plan, la) {
      const alphasCumprod = discreteSchedule(config).alphasCumprod;
      return new GeneratorRun(plan, la, (x, noise) => info.body({ la, timesteps: plan.schedule, alphasCumprod, eta: config.eta, x, noise }));
    },
    addNoise(_config, plan): NoiseScales {
      // xi = x · √ᾱ + noise · √(1 − ᾱ) at timesteps[t_enc], on float32 tensors.
      const alpha = plan.img2imgAlpha ?? 1;
      return { signal: sqrt32(alpha), noise: sqrt32(f32(1 - alpha)) };
    },
  };
}

export const A1111_TIMESTEP_DEFINITIONS: Record<A1111TimestepSamplerName, SchedulerDefinition<A1111TimestepsConfig, A1111TimestepsPlan>> = {
  a1111_ddim: timestepSamplerDefinition(SAMPLERS.a1111_ddim),
  a1111_plms: timestepSamplerDefinition(SAMPLERS.a1111_plms),
};
