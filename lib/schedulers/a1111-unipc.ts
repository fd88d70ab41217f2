/**
 * A1111's own UniPC (`a1111_unipc`): modules/sd_samplers_timesteps_impl.py `unipc` — its UniPCCFG
 * subclass of modules/models/diffusion/uni_pc/uni_pc.py's UniPC over NoiseScheduleVP('discrete',
 * alphas_cumprod), data prediction, multistep — as CompVisSampler drives it. Not diffusers' UniPC
 * (`unipc`): A1111 steps in continuous time t ∈ [1/1000, 1] over a piecewise-linear log ᾱ, feeds the
 * UNet the fractional t_input = (t − 1/1000) · 1000, keeps the model output at the predictor's
 * latent as history (not the corrected one), and has its own options (shared.opts):
 * `uni_pc_variant` (bh1, bh2, vary_coeff), `uni_pc_skip_type` (time_uniform, time_quadratic, logSNR),
 * `uni_pc_order` and `uni_pc_lower_order_final`, which are this scheduler's config keys.
 *
 * A1111 computes every scalar (t, λ, α, σ, h, the B(h) and φ tables, the small linear solves) on
 * float32 tensors; so does this file (float32.ts), so the coefficients carry the same rounding.
 * v-prediction models run as A1111 runs them, through its CompVisTimestepsVDenoiser (epsScalings).
 * The goldens are A1111's own code (scripts/reference/gen_a1111_unipc_goldens.py).
 */
import { InvalidOptionError } from "../errors.js";
import type { LinearAlgebra } from "./algebra.js";
import { a1111Timesteps, epsScalings } from "./a1111-timesteps.js";
import { check, resolveConfig, type ConfigSpec, type RawSchedulerConfig } from "./config.js";
import { add32, div32, exp32, expm132, f32, log32, mul32, sqrt32, sub32 } from "./float32.js";
import { discreteSchedule, GeneratorRun, type EvalRequest, type EvalResult } from "./kdiffusion.js";
import { torchLinspaceFloat32 } from "./numpy.js";
import type { NoiseScales, SchedulePlan, SchedulerDefinition } from "./types.js";

export function isA1111UniPc(name: string): name is "a1111_unipc" {
  return name === "a1111_unipc";
}

export const UNI_PC_VARIANTS = ["bh1", "bh2", "vary_coeff"] as const;
export const UNI_PC_SKIP_TYPES = ["time_uniform", "time_quadratic", "logSNR"] as const;
export type UniPcVariant = (typeof UNI_PC_VARIANTS)[number];
export type UniPcSkipType = (typeof UNI_PC_SKIP_TYPES)[number];

/** A1111's UniPC settings under its option names (shared_options.py; these are its defaults). */
// A type, not an interface: it travels as scheduler config keys (a Record).
export type A1111UniPcSettings = {
  uni_pc_variant: UniPcVariant;
  uni_pc_skip_type: UniPcSkipType;
  /** 1 … 15 (A1111's slider allows 50; see MAX_ORDER); uni_pc.py asserts the run has at least this many steps. */
  uni_pc_order: number;
  uni_pc_lower_order_final: boolean;
};

export const A1111_UNI_PC_DEFAULTS: Readonly<A1111UniPcSettings> = Object.freeze({
  uni_pc_variant: "bh1",
  uni_pc_skip_type: "time_uniform",
  uni_pc_order: 3,
  uni_pc_lower_order_final: true,
});

export interface A1111UniPcConfig extends A1111UniPcSettings {
  num_train_timesteps: number;
  beta_start: number;
  beta_end: number;
  beta_schedule: "scaled_linear";
  trained_betas: null;
  /** v models go through A1111's CompVisTimestepsVDenoiser: eps = √ᾱ[⌊t⌋]·v + √(1 − ᾱ[⌊t⌋])·x. */
  prediction_type: "epsilon" | "v_prediction";
}

export interface A1111UniPcPlan extends SchedulePlan {
  /** The requested step count. */
  steps: number;
  /** CompVisSampler.get_timesteps(steps): ldm's integer timesteps, ascending. */
  schedule: number[];
  /** UniPC's continuous times, t_T … t_0 (float32), one more than its steps. */
  times: Float32Array;
  /** The float32 ᾱ img2img noises the init latent with (img2img plans only). */
  img2imgAlpha?: number;
  cIn: number[];
  cSkip: number[];
  cOut: number[];
}

/** NoiseScheduleVP('discrete', alphas_cumprod): log α_t piecewise linear in t over t_i = (i + 1) / N, on float32 tensors. */
class DiscreteNoiseSchedule {
  readonly #t: Float32Array;
  readonly #logAlpha: Float32Array;
  readonly #tFlipped: Float32Array;
  readonly #logAlphaFlipped: Float32Array;

  constructor(alphasCumprod: Float32Array) {
    const n = alphasCumprod.length;
    // 0.5 · log(ᾱ); halving is exact in float32.
    this.#logAlpha = Float32Array.from(alphasCumprod, (a) => 0.5 * log32(a));
    this.#t = torchLinspaceFloat32(0, 1, n + 1).subarray(1);
    this.#tFlipped = this.#t.slice().reverse();
    this.#logAlphaFlipped = this.#logAlpha.slice().reverse();
  }

  /** marginal_log_mean_coeff: log α_t. */
  logMeanCoeff(t: number): number {
    return interpolate(t, this.#t, this.#logAlpha);
  }

  alpha(t: number): number {
    return exp32(this.logMeanCoeff(t));
  }

  /** marginal_std: √(1 − e^{2 log α_t}). */
  std(t: number): number {
    return sqrt32(sub32(1, exp32(2 * this.logMeanCoeff(t))));
  }

  /** marginal_lambda: log α_t − ½ log(1 − e^{2 log α_t}). */
  lambda(t: number): number {
    const logMean = this.logMeanCoeff(t);
    return sub32(logMean, 0.5 * log32(sub32(1, exp32(2 * logMean))));
  }

  /** inverse_lambda: log α = −½ logaddexp(0, −2λ), then t by the flipped table. */
  inverseLambda(lambda: number): number {
    const y = -2 * lambda;
    const logAddExp = Math.max(0, y) + Math.log1p(Math.exp(-Math.abs(y)));
    return interpolate(f32(-0.5 * f32(logAddExp)), this.#logAlphaFlipped, this.#tFlipped);
  }
}

/**
 * uni_pc.py's interpolate_fn for one x: the segment of the keypoints x falls in (the first or last
 * one outside them), y = y0 + (x − x0)·(y1 − y0) / (x1 − x0) in float32. torch.sort places x before
 * an equal keypoint, so x_idx counts the keypoints below x.
 */
function interpolate(x: number, xp: Float32Array, yp: Float32Array): number {
  let below = 0;
  let hi = xp.length;
  while (below < hi) {
    const mid = (below + hi) >> 1;
    if (xp[mid]! < x) below = mid + 1;
    else hi = mid;
  }
  const j = Math.min(Math.max(below - 1, 0), xp.length - 2);
  const x0 = xp[j]!;
  const y0 = yp[j]!;
  return add32(y0, div32(mul32(sub32(x, x0), sub32(yp[j + 1]!, y0)), sub32(xp[j + 1]!, x0)));
}

/** UniPC.get_time_steps(skip_type, t_T, t_0, N) on float32 tensors. */
function timeSteps(ns: DiscreteNoiseSchedule, skipType: UniPcSkipType, tT: number, t0: number, n: number): Float32Array {
  if (skipType === "time_uniform") return torchLinspaceFloat32(tT, t0, n + 1);
  if (skipType === "time_quadratic") {
    // t_T ** 0.5 is a float32 tensor (img2img) or a Python float (txt2img's 1.0): both give √ then float32.
    return torchLinspaceFloat32(Math.sqrt(tT), Math.sqrt(t0), n + 1).map((t) => f32(t * t));
  }
  const lambdas = torchLinspaceFloat32(ns.lambda(f32(tT)), ns.lambda(f32(t0)), n + 1);
  return lambdas.map((l) => ns.inverseLambda(l));
}

/** torch.linalg.solve / inv on a small float32 system (float64 elimination with partial pivoting, rounded to float32). */
function solve(a: number[][], b: number[]): number[] {
  const n = b.length;
  const m = a.map((row, i) => [...row.slice(0, n), b[i]!]);
  for (let c = 0; c < n; c++) {
    let p = c;
    for (let r = c + 1; r < n; r++) if (Math.abs(m[r]![c]!) > Math.abs(m[p]![c]!)) p = r;
    [m[c], m[p]] = [m[p]!, m[c]!];
    for (let r = c + 1; r < n; r++) {
      const f = m[r]![c]! / m[c]![c]!;
      for (let k = c; k <= n; k++) m[r]![k]! -= f * m[c]![k]!;
    }
  }
  const x = new Array<number>(n).fill(0);
  for (let r = n - 1; r >= 0; r--) {
    let s = m[r]![n]!;
    for (let k = r + 1; k < n; k++) s -= m[r]![k]! * x[k]!;
    x[r] = s / m[r]![r]!;
  }
  return x.map(f32);
}

function inverse(a: number[][]): number[][] {
  const n = a.length;
  const columns = a.map((_, j) => solve(a, a.map((__, i) => (i === j ? 1 : 0))));
  return Array.from({ length: n }, (_, i) => columns.map((col) => col[i]!));
}

interface UniPcContext<V> {
  la: LinearAlgebra<V>;
  ns: DiscreteNoiseSchedule;
  config: A1111UniPcSettings;
  times: Float32Array;
  x: V;
}

/** UniPCCFG.get_model_input_time: (t − 1/N) · 1000, the fractional timestep the UNet gets. */
function modelInputTime(t: number): number {
  return mul32(sub32(t, f32(1 / 1000)), 1000);
}

/** One multistep update's result: the new latent and, when the corrector ran, the model output at the predictor's latent. */
interface Update<V> {
  x: V;
  modelT: V | null;
}

/**
 * UniPC.sample(method="multistep") with UniPCCFG's model: data prediction x0 = (x − σ_t·eps) / α_t
 * from the UNet's eps (the run's D), lower orders first, the corrector after every step but the last.
 */
function* uniPc<V>(s: UniPcContext<V>): Generator<EvalRequest<V>, V, EvalResult<V>> {
  const { la, ns, times } = s;
  const { uni_pc_order: order, uni_pc_lower_order_final: lowerOrderFinal } = s.config;
  const steps = times.length - 1;
  function* modelFn(x: V, t: number): Generator<EvalRequest<V>, ModelEval<V>, EvalResult<V>> {
    const r = yield [x, modelInputTime(t)];
    const alpha = ns.alpha(t);
    return { x: r.x, model: la.combine([1 / alpha, r.x], [-ns.std(t) / alpha, r.denoised]) };
  }
  const update = s.config.uni_pc_variant === "vary_coeff" ? varyUpdate : bhUpdate;
  let x = s.x;
  const modelPrev: V[] = [(yield* modelFn(x, times[0]!)).model];
  const tPrev: number[] = [times[0]!];
  for (let initOrder = 1; initOrder < order; initOrder++) {
    const t = times[initOrder]!;
    const u: Update<V> = yield* update(s, x, modelPrev, tPrev, t, initOrder, true, modelFn);
    x = u.x;
    modelPrev.push(u.modelT!);
    tPrev.push(t);
  }
  for (let step = order; step <= steps; step++) {
    const t = times[step]!;
    const stepOrder = lowerOrderFinal ? Math.min(order, steps + 1 - step) : order;
    const useCorrector = step !== steps;
    const u: Update<V> = yield* update(s, x, modelPrev, tPrev, t, stepOrder, useCorrector, modelFn);
    x = u.x;
    for (let i = 0; i < order - 1; i++) {
      tPrev[i] = tPrev[i + 1]!;
      modelPrev[i] = modelPrev[i + 1]!;
    }
    tPrev[tPrev.length - 1] = t;
    if (step < steps) modelPrev[modelPrev.length - 1] = u.modelT!;
  }
  return x;
}

/** The latent the model was evaluated at (the executor's own copy of it) and the data prediction there. */
interface ModelEval<V> {
  x: V;
  model: V;
}

type ModelFn<V> = (x: V, t: number) => Generator<EvalRequest<V>, ModelEval<V>, EvalResult<V>>;

/** What both updates compute first: λ, α, σ at t and the last time, h, the ratios r_k and D1_k = (m_k − m_0) / r_k. */
function updateBasics<V>(s: UniPcContext<V>, modelPrev: readonly V[], tPrev: readonly number[], t: number, order: number) {
  const { la, ns } = s;
  const tPrev0 = tPrev[tPrev.length - 1]!;
  const lambdaPrev0 = ns.lambda(tPrev0);
  const h = sub32(ns.lambda(t), lambdaPrev0);
  const model0 = modelPrev[modelPrev.length - 1]!;
  const rks: number[] = [];
  const d1s: V[] = [];
  for (let i = 1; i < order; i++) {
    const rk = div32(sub32(ns.lambda(tPrev[tPrev.length - 1 - i]!), lambdaPrev0), h);
    rks.push(rk);
    d1s.push(la.combine([1 / rk, modelPrev[modelPrev.length - 1 - i]!], [-1 / rk, model0]));
  }
  rks.push(1);
  return { hh: -h, model0, rks, d1s, sigmaRatio: div32(ns.std(t), ns.std(tPrev0)), alphaT: ns.alpha(t) };
}

/** Σ_k w[k] · v[k] (torch.einsum over the D1s). */
function weighted<V>(weights: readonly number[], vectors: readonly V[]): [number, V][] {
  return vectors.map((v, k) => [weights[k]!, v]);
}

/** UniPC.multistep_uni_pc_bh_update (predict_x0): the B(h) variants bh1 (B = h) and bh2 (B = e^h − 1). */
function* bhUpdate<V>(
  s: UniPcContext<V>,
  x: V,
  modelPrev: readonly V[],
  tPrev: readonly number[],
  t: number,
  order: number,
  useCorrector: boolean,
  modelFn: ModelFn<V>,
): Generator<EvalRequest<V>, Update<V>, EvalResult<V>> {
  const { la } = s;
  const { hh, model0, rks, d1s, sigmaRatio, alphaT } = updateBasics(s, modelPrev, tPrev, t, order);
  const hPhi1 = expm132(hh);
  let hPhiK = sub32(div32(hPhi1, hh), 1);
  let factorial = 1;
  const bH = s.config.uni_pc_variant === "bh1" ? hh : expm132(hh);
  const R: number[][] = [];
  const b: number[] = [];
  for (let i = 1; i <= order; i++) {
    R.push(rks.map((r) => f32(r ** (i - 1))));
    b.push(div32(mul32(hPhiK, factorial), bH));
    factorial *= i + 1;
    hPhiK = sub32(div32(hPhiK, hh), f32(1 / factorial));
  }
  // x_t_ = σ_t/σ_prev · x − α_t·hφ1 · m_0; the residuals are scaled by α_t·B(h).
  const base: [number, V][] = [
    [sigmaRatio, x],
    [-mul32(alphaT, hPhi1), model0],
  ];
  const residualScale = mul32(alphaT, bH);
  const rhosP = d1s.length === 0 ? [] : order === 2 ? [0.5] : solve(R.slice(0, -1).map((row) => row.slice(0, -1)), b.slice(0, -1));
  const predictorTerms = weighted(rhosP.map((r) => -residualScale * r), d1s);
  const xT = la.combine(...base, ...predictorTerms);
  if (!useCorrector) return { x: xT, modelT: null };
  const rhosC = order === 1 ? [0.5] : solve(R, b);
  const at = yield* modelFn(xT, t);
  const last = rhosC[rhosC.length - 1]!;
  // x_t_ − α_t·B(h)·(Σ ρc_k·D1_k + ρc_last·(m_t − m_0)), written from the predictor's latent (= x_t_ minus
  // its residuals) so the result refers to the latent the model just saw, not to the whole history.
  const corrected = la.combine(
    [1, at.x],
    ...predictorTerms.map(([c, v]): [number, V] => [-c, v]),
    ...weighted(rhosC.slice(0, -1).map((r) => -residualScale * r), d1s),
    [-residualScale * last, at.model],
    [residualScale * last, model0],
  );
  return { x: corrected, modelT: at.model };
}

/** UniPC.multistep_uni_pc_vary_update (predict_x0): the coefficients from the inverse of C, C[i][k] = r_i^k / (k + 1)!. */
function* varyUpdate<V>(
  s: UniPcContext<V>,
  x: V,
  modelPrev: readonly V[],
  tPrev: readonly number[],
  t: number,
  order: number,
  useCorrector: boolean,
  modelFn: ModelFn<V>,
): Generator<EvalRequest<V>, Update<V>, EvalResult<V>> {
  const { la } = s;
  const { hh, model0, rks, d1s, sigmaRatio, alphaT } = updateBasics(s, modelPrev, tPrev, t, order);
  const K = rks.length;
  const columns: number[][] = [];
  let col = rks.map(() => 1);
  for (let k = 1; k <= K; k++) {
    columns.push(col);
    col = col.map((c, i) => div32(mul32(c, rks[i]!), k + 1));
  }
  const C = rks.map((_, i) => columns.map((c) => c[i]!));
  const hPhi1 = expm132(hh);
  const hPhiKs: number[] = [];
  let factorial = 1;
  let hPhiK = hPhi1;
  for (let k = 1; k <= K + 1; k++) {
    hPhiKs.push(hPhiK);
    hPhiK = sub32(div32(hPhiK, hh), f32(1 / factorial));
    factorial *= k + 1;
  }
  const base: [number, V][] = [
    [sigmaRatio, x],
    [-mul32(alphaT, hPhi1), model0],
  ];
  // x_t −= α_t·hφ_{k+1} · Σ_j A[k][j]·D1_j for k < K − 1.
  const residuals = (A: number[][]): [number, V][] => {
    const out: [number, V][] = [];
    for (let k = 0; k < K - 1; k++) out.push(...weighted(A[k]!.slice(0, K - 1).map((a) => -mul32(alphaT, hPhiKs[k + 1]!) * a), d1s));
    return out;
  };
  const predictorTerms = d1s.length > 0 ? residuals(inverse(C.slice(0, -1).map((row) => row.slice(0, -1)))) : [];
  const xT = la.combine(...base, ...predictorTerms);
  if (!useCorrector) return { x: xT, modelT: null };
  const Ac = inverse(C);
  const at = yield* modelFn(xT, t);
  // uni_pc.py scales D1_t by A_c[k][-1] with k left over from the residual loop (K − 2, or 0 when K = 1).
  const weight = mul32(alphaT, hPhiKs[K]!) * Ac[Math.max(K - 2, 0)]![K - 1]!;
  // x_t_ − Σ residuals(A_c) − weight·(m_t − m_0), from the predictor's latent as in bhUpdate.
  const corrected = la.combine([1, at.x], ...predictorTerms.map(([c, v]): [number, V] => [-c, v]), ...residuals(Ac), [-weight, at.model], [weight, model0]);
  return { x: corrected, modelT: at.model };
}

const nullAlgebra: LinearAlgebra<null> = { combine: () => null };

function planFor(config: A1111UniPcConfig, steps: number, schedule: number[], sampled: number[], img2img: boolean): A1111UniPcPlan {
  const order = config.uni_pc_order;
  if (sampled.length < order) {
    const what = img2img ? `this strength gives t_enc = ${sampled.length} of ${steps} steps` : `steps = ${steps} gives ${sampled.length} UniPC steps`;
    throw new InvalidOptionError(
      img2img ? "strength" : "steps",
      `A1111's UniPC needs at least uni_pc_order (${order}) steps (uni_pc.py: "UniPC order must be < sampling steps"); ${what}: raise ${img2img ? "strength or steps" : "steps"} or lower uni_pc_order`,
    );
  }
  const ns = noiseSchedule(config);
  // txt2img from t_T = 1; img2img (is_img2img) from timesteps[-1] / 1000 + 1 / 1000 in float32.
  const tT = img2img ? add32(f32(sampled[sampled.length - 1]! / 1000), f32(1 / 1000)) : 1;
  // t_0 = 1 / total_N, a Python float: each skip type rounds it to float32 where A1111's tensors do.
  const times = timeSteps(ns, config.uni_pc_skip_type, tT, 1 / 1000, sampled.length);
  const evals: number[] = [];
  const generator = uniPc({ la: nullAlgebra, ns, config, times, x: null });
  for (let r = generator.next(); !r.done; r = generator.next({ x: null, denoised: null, uncondDenoised: null })) evals.push(r.value[1]);
  return {
    timesteps: evals,
    timestepDtype: "float32",
    initNoiseSigma: 1,
    steps,
    schedule,
    times,
    cIn: evals.map(() => 1),
    ...epsScalings(config, evals),
  };
}

const noiseSchedules = new Map<string, DiscreteNoiseSchedule>();

function noiseSchedule(config: A1111UniPcConfig): DiscreteNoiseSchedule {
  const key = `${config.beta_start}/${config.beta_end}/${config.num_train_timesteps}`;
  let ns = noiseSchedules.get(key);
  if (!ns) {
    ns = new DiscreteNoiseSchedule(discreteSchedule(config).alphasCumprod);
    noiseSchedules.set(key, ns);
  }
  return ns;
}

const CLASS_NAME = "modules.sd_samplers_timesteps_impl.unipc";
const MAX_ORDER = 15;

const CONFIG_SPEC: ConfigSpec<A1111UniPcConfig> = {
  num_train_timesteps: { default: 1000, check: check.only(1000, "A1111's timestep samplers use ldm's 1000 training timesteps") },
  beta_start: { default: 0.00085, check: check.number(Number.MIN_VALUE, 1) },
  beta_end: { default: 0.012, check: check.number(Number.MIN_VALUE, 1) },
  beta_schedule: { default: "scaled_linear", check: check.only("scaled_linear", "A1111's samplers use ldm's linear-in-sqrt betas") },
  trained_betas: { default: null, check: check.only(null, "A1111's samplers use ldm's computed betas") },
  prediction_type: { default: "epsilon", check: check.oneOf(["epsilon", "v_prediction"]) },
  uni_pc_variant: { default: A1111_UNI_PC_DEFAULTS.uni_pc_variant, check: check.oneOf(UNI_PC_VARIANTS) },
  uni_pc_skip_type: { default: A1111_UNI_PC_DEFAULTS.uni_pc_skip_type, check: check.oneOf(UNI_PC_SKIP_TYPES) },
  uni_pc_order: {
    default: A1111_UNI_PC_DEFAULTS.uni_pc_order,
    // Order k keeps k + 1 latents and model outputs in play; the CUDA executor holds 16 (kMaxHistoryDepth).
    check: (v, fail) => (typeof v === "number" && Number.isInteger(v) && v >= 1 && v <= MAX_ORDER ? v : fail(`an integer from 1 to ${MAX_ORDER} (A1111's slider goes to 50; sd-trt's executors keep 16 steps of history, order k needs k + 1)`)),
  },
  uni_pc_lower_order_final: { default: A1111_UNI_PC_DEFAULTS.uni_pc_lower_order_final, check: check.boolean },
};

export const a1111UniPc: SchedulerDefinition<A1111UniPcConfig, A1111UniPcPlan> = {
  className: CLASS_NAME,
  order: 1,
  resolveConfig: (raw: RawSchedulerConfig) => resolveConfig(CLASS_NAME, CONFIG_SPEC, raw),
  plan(config, steps) {
    // unipc(timesteps) runs len(timesteps) steps, which can exceed the requested count (8 for 7).
    const schedule = a1111Timesteps(steps);
    return planFor(config, steps, schedule, schedule, false);
  },
  img2imgPlan(config, plan, startIndex) {
    // CompVisSampler.sample_img2img: startIndex = steps − t_enc − 1; UniPC runs timesteps[:t_enc]
    // (t_enc steps) from the init latent noised to timesteps[t_enc].
    const tEnc = plan.steps - 1 - startIndex;
    if (!Number.isInteger(startIndex) || startIndex < 0 || tEnc < 1) {
      throw new InvalidOptionError(
        "strength",
        `A1111's UniPC img2img runs t_enc steps, t_enc = int(min(strength, 0.999) · steps); with ${plan.steps} steps this strength gives t_enc = ${tEnc}, no step: raise strength or steps`,
      );
    }
    const alphasCumprod = discreteSchedule(config).alphasCumprod;
    return { ...planFor(config, plan.steps, plan.schedule, plan.schedule.slice(0, tEnc), true), img2imgAlpha: alphasCumprod[plan.schedule[tEnc]!]! };
  },
  start(config, plan, la) {
    const ns = noiseSchedule(config);
    return new GeneratorRun(plan, la, (x) => uniPc({ la, ns, config, times: plan.times, x }));
  },
  addNoise(_config, plan): NoiseScales {
    // xi = x · √ᾱ + noise · √(1 − ᾱ) at timesteps[t_enc], on float32 tensors.
    const alpha = plan.img2imgAlpha ?? 1;
    return { signal: sqrt32(alpha), noise: sqrt32(f32(1 - alpha)) };
  },
};
