/**
 * k-diffusion's samplers as A1111 runs them (k_diffusion/sampling.py at ab527a9, the commit A1111
 * v1.10.1 pins; A1111's sampler table in modules/sd_samplers_kdiffusion.py), compiled to sampler
 * programs like the diffusers schedulers.
 *
 * A1111 wraps the UNet in CompVisDenoiser (CompVisVDenoiser for v-prediction): the model sees
 * c_in(σ)·x and the fractional timestep sigma_to_t(σ), and the sampler works on the denoised
 * estimate D = c_skip(σ)·x + c_out(σ)·m, which is linear in the latents and the model output. So
 * each sampler below is k-diffusion's loop written once over `LinearAlgebra`, as a generator
 * that yields every latent it wants the model evaluated at and receives D back; run on symbolic
 * vectors it compiles to the program table, run on a null algebra it lists the evaluations.
 * A1111's own k-diffusion-style samplers live here too: Restart (modules/sd_samplers_extra.py
 * restart_sampler) and LCM (modules/sd_samplers_lcm.py, whose LCMCompVisDenoiser gives other
 * timesteps and scalings over the same D contract). DPM adaptive is refused
 * (REFUSED_KDIFFUSION_SAMPLERS says why).
 *
 * Noise: every `torch.randn_like` k-diffusion makes for an ancestral step is the next draw of
 * A1111's ImageRNG. Euler, Heun and DPM2 also draw `eps` at every step for s_churn, which with
 * s_churn = 0 multiplies nothing and nothing later reads the generator (A1111's hires pass makes a
 * new ImageRNG), so those draws are not taken. The SDE samplers (A1111's `brownian_noise` ones) draw
 * from its BrownianTreeNoiseSampler instead, at (σ, σ_next) pairs fixed by the schedule: the plan
 * lists them (`brownian`), and the pipeline supplies those draws from per-image Brownian trees
 * (lib/rng/brownian-tree.ts); ENSD does not touch them (their seeds are the image seeds).
 */
import { InvalidOptionError } from "../errors.js";
import { integerInRange, numberInRange } from "../validate.js";
import type { LinearAlgebra } from "./algebra.js";
import type { RawSchedulerConfig } from "./config.js";
import { check, type ConfigSpec, resolveConfig } from "./config.js";
import {
  a1111Sigmas,
  compVisSchedule,
  findSigmaSchedule,
  REFUSED_SIGMA_SCHEDULES,
  SIGMA_SCHEDULE_LABELS,
  SIGMA_SCHEDULES,
  karrasSigmas,
  sigmaToT,
  tToSigma,
  type DiscreteSchedule,
  type SigmaSchedule,
} from "./kdiffusion-schedule.js";
import { add32, div32, exp32, expm132, f32, log32, mul32, sqrt32, square32, sub32 } from "./float32.js";
import { gaussKronrod21 } from "./quadrature.js";
import { torchLinspaceFloat32 } from "./numpy.js";
import type { NoiseScales, SchedulePlan, SchedulerDefinition, SchedulerRun } from "./types.js";

/** sd-trt's names for A1111's k-diffusion samplers (A1111's own aliases, `k_` + function). */
export const KDIFFUSION_SAMPLER_NAMES = [
  "k_euler",
  "k_euler_a",
  "k_lms",
  "k_heun",
  "k_dpm_2",
  "k_dpm_2_a",
  "k_dpmpp_2s_a",
  "k_dpmpp_2m",
  "k_dpmpp_sde",
  "k_dpmpp_2m_sde",
  "k_dpmpp_2m_sde_heun",
  "k_dpmpp_3m_sde",
  "k_dpm_fast",
  "k_restart",
  "k_lcm",
] as const;
export type KDiffusionSamplerName = (typeof KDIFFUSION_SAMPLER_NAMES)[number];

/** A1111's samplers that are not implemented, with why (the message of the error that refuses them). */
export const REFUSED_KDIFFUSION_SAMPLERS: Record<string, string> = {
  "DPM adaptive": "its steps are chosen adaptively from the model's outputs, which a precompiled sampler program cannot express",
};

/** Why an A1111 sampler name (with or without a schedule suffix) is refused; undefined if it is not. */
export function refusedA1111SamplerReason(name: string): string | undefined {
  const wanted = name.trim().toLowerCase();
  const key = Object.keys(REFUSED_KDIFFUSION_SAMPLERS)
    .sort((a, b) => b.length - a.length)
    .find((r) => wanted === r.toLowerCase() || wanted.startsWith(`${r.toLowerCase()} `));
  return key === undefined ? undefined : REFUSED_KDIFFUSION_SAMPLERS[key];
}

interface SamplerInfo {
  /** A1111's LCMSampler: LCMCompVisDenoiser instead of CompVis(V)Denoiser (see lcmSchedule). */
  lcm?: true;
  /** A1111's label (infotext `Sampler:`). */
  label: string;
  /** The k_diffusion.sampling function. */
  functionName: string;
  /** A1111's `scheduler` option: what "Automatic" means for this sampler. */
  defaultSchedule: SigmaSchedule;
  discardNextToLastSigma: boolean;
  /** The sampler takes `eta` (ancestral and SDE samplers; A1111 passes p.eta or opts.eta_ancestral). */
  usesEta: boolean;
  /** A1111's `uses_ensd` option: its noise comes from the ImageRNG, which ENSD re-seeds. */
  usesEnsd: boolean;
  /** A1111's `brownian_noise` option: the step noise is the Brownian tree's, not the ImageRNG's. */
  brownian?: true;
  body: SamplerBody;
}

/** What a sampler generator yields: the latent to evaluate the model at and its sigma (or timestep). */
export type EvalRequest<V> = readonly [x: V, sigma: number];
/**
 * What it receives back: the latent as the executor holds it (x_j), the denoised estimate, and the
 * same estimate from the unconditional prediction alone (= `denoised` without guidance).
 */
export interface EvalResult<V> {
  x: V;
  denoised: V;
  uncondDenoised: V;
}

interface SamplerContext<V> {
  la: LinearAlgebra<V>;
  sigmas: readonly number[];
  /** DPM fast's range: the model's sigma range in txt2img (whatever the schedule), the truncated schedule's in img2img. */
  sigmaMin: number;
  sigmaMax: number;
  x: V;
  eta: number;
  sNoise: number;
  /** The next draw of the image's generator. */
  noise(): V;
  /** A1111's Brownian noise sampler for the SDE samplers: noise_sampler(σ, σ_next), one step draw. */
  brownian(sigma: number, sigmaNext: number): V;
}

type SamplerBody = <V>(s: SamplerContext<V>) => Generator<EvalRequest<V>, V, EvalResult<V>>;

/** `to_d` (A1111 replaces it with the same formula without append_dims): (x − D) / σ. */
function toD<V>(la: LinearAlgebra<V>, x: V, sigma: number, denoised: V): V {
  return la.combine([1 / sigma, x], [-1 / sigma, denoised]);
}

/**
 * `get_ancestral_step(sigma_from, sigma_to, eta)` on float32 0-d tensors (A1111's sigmas), Python
 * scalars joining in float32.
 */
function ancestralStep(from: number, to: number, eta: number): { down: number; up: number } {
  if (!eta) return { down: to, up: 0 };
  const toSq = square32(to);
  const fromSq = square32(from);
  const up = Math.min(to, mul32(f32(eta), sqrt32(div32(mul32(toSq, sub32(fromSq, toSq)), fromSq))));
  return { down: sqrt32(sub32(toSq, square32(up))), up };
}

/** `a.log().lerp(b.log(), 0.5).exp()` in float32 (torch's lerp for weight ≥ 0.5: end − (end − start)·(1 − w)). */
function logMidpoint(a: number, b: number): number {
  const la = log32(a);
  const lb = log32(b);
  return exp32(sub32(lb, mul32(sub32(lb, la), 0.5)));
}

/** DPM-Solver++'s t_fn / sigma_fn: t = −log σ, σ = exp(−t), in float32. */
const tFn = (sigma: number) => f32(-log32(sigma));
const sigmaFn = (t: number) => exp32(-t);

function* euler<V>(s: SamplerContext<V>): Generator<EvalRequest<V>, V, EvalResult<V>> {
  const { la, sigmas } = s;
  let x = s.x;
  for (let i = 0; i < sigmas.length - 1; i++) {
    const sigma = sigmas[i]!;
    const r = yield [x, sigma];
    const d = toD(la, r.x, sigma, r.denoised);
    x = la.combine([1, r.x], [sub32(sigmas[i + 1]!, sigma), d]);
  }
  return x;
}

function* eulerAncestral<V>(s: SamplerContext<V>): Generator<EvalRequest<V>, V, EvalResult<V>> {
  const { la, sigmas } = s;
  let x = s.x;
  for (let i = 0; i < sigmas.length - 1; i++) {
    const sigma = sigmas[i]!;
    const next = sigmas[i + 1]!;
    const r = yield [x, sigma];
    const { down, up } = ancestralStep(sigma, next, s.eta);
    const d = toD(la, r.x, sigma, r.denoised);
    x = la.combine([1, r.x], [sub32(down, sigma), d]);
    if (next > 0) x = la.combine([1, x], [s.sNoise * up, s.noise()]);
  }
  return x;
}

/** One Heun step from σ to σ_next (an Euler step into σ_next = 0), as sample_heun and Restart take it. */
function* heunStep<V>(la: LinearAlgebra<V>, x: V, sigma: number, next: number): Generator<EvalRequest<V>, V, EvalResult<V>> {
  const r = yield [x, sigma];
  const d = toD(la, r.x, sigma, r.denoised);
  const dt = sub32(next, sigma);
  if (next === 0) return la.combine([1, r.x], [dt, d]);
  const r2 = yield [la.combine([1, r.x], [dt, d]), next];
  const d2 = toD(la, r2.x, next, r2.denoised);
  return la.combine([1, r.x], [dt / 2, d], [dt / 2, d2]);
}

function* heun<V>(s: SamplerContext<V>): Generator<EvalRequest<V>, V, EvalResult<V>> {
  const { la, sigmas } = s;
  let x = s.x;
  for (let i = 0; i < sigmas.length - 1; i++) x = yield* heunStep(la, x, sigmas[i]!, sigmas[i + 1]!);
  return x;
}

function* dpm2<V>(s: SamplerContext<V>): Generator<EvalRequest<V>, V, EvalResult<V>> {
  const { la, sigmas } = s;
  let x = s.x;
  for (let i = 0; i < sigmas.length - 1; i++) {
    const sigma = sigmas[i]!;
    const next = sigmas[i + 1]!;
    const r = yield [x, sigma];
    const d = toD(la, r.x, sigma, r.denoised);
    if (next === 0) {
      x = la.combine([1, r.x], [sub32(next, sigma), d]);
    } else {
      const mid = logMidpoint(sigma, next);
      const r2 = yield [la.combine([1, r.x], [sub32(mid, sigma), d]), mid];
      const d2 = toD(la, r2.x, mid, r2.denoised);
      x = la.combine([1, r.x], [sub32(next, sigma), d2]);
    }
  }
  return x;
}

function* dpm2Ancestral<V>(s: SamplerContext<V>): Generator<EvalRequest<V>, V, EvalResult<V>> {
  const { la, sigmas } = s;
  let x = s.x;
  for (let i = 0; i < sigmas.length - 1; i++) {
    const sigma = sigmas[i]!;
    const r = yield [x, sigma];
    const { down, up } = ancestralStep(sigma, sigmas[i + 1]!, s.eta);
    const d = toD(la, r.x, sigma, r.denoised);
    if (down === 0) {
      x = la.combine([1, r.x], [sub32(down, sigma), d]);
    } else {
      const mid = logMidpoint(sigma, down);
      const r2 = yield [la.combine([1, r.x], [sub32(mid, sigma), d]), mid];
      const d2 = toD(la, r2.x, mid, r2.denoised);
      x = la.combine([1, r.x], [sub32(down, sigma), d2], [s.sNoise * up, s.noise()]);
    }
  }
  return x;
}

function* dpmpp2sAncestral<V>(s: SamplerContext<V>): Generator<EvalRequest<V>, V, EvalResult<V>> {
  const { la, sigmas } = s;
  let x = s.x;
  for (let i = 0; i < sigmas.length - 1; i++) {
    const sigma = sigmas[i]!;
    const next = sigmas[i + 1]!;
    const r = yield [x, sigma];
    const { down, up } = ancestralStep(sigma, next, s.eta);
    if (down === 0) {
      x = la.combine([1, r.x], [sub32(down, sigma), toD(la, r.x, sigma, r.denoised)]);
    } else {
      // DPM-Solver++(2S) in t = −log σ, midpoint r = 1/2.
      const t = tFn(sigma);
      const tNext = tFn(down);
      const h = sub32(tNext, t);
      const sMid = f32(t + mul32(0.5, h));
      const sigmaMid = sigmaFn(sMid);
      const x2 = la.combine([div32(sigmaMid, sigmaFn(t)), r.x], [-expm132(f32(-h * 0.5)), r.denoised]);
      const r2 = yield [x2, sigmaMid];
      x = la.combine([div32(sigmaFn(tNext), sigmaFn(t)), r.x], [-expm132(-h), r2.denoised]);
    }
    if (next > 0) x = la.combine([1, x], [s.sNoise * up, s.noise()]);
  }
  return x;
}

function* dpmpp2m<V>(s: SamplerContext<V>): Generator<EvalRequest<V>, V, EvalResult<V>> {
  const { la, sigmas } = s;
  let x = s.x;
  let oldDenoised: V | undefined;
  for (let i = 0; i < sigmas.length - 1; i++) {
    const sigma = sigmas[i]!;
    const next = sigmas[i + 1]!;
    const r = yield [x, sigma];
    const t = tFn(sigma);
    const tNext = tFn(next);
    const h = sub32(tNext, t);
    // σ_next = 0: t_next = ∞, and the update is x = D (exp(−∞) = 0, expm1(−∞) = −1).
    const ratio = div32(sigmaFn(tNext), sigmaFn(t));
    if (oldDenoised === undefined || next === 0) {
      x = la.combine([ratio, r.x], [-expm132(-h), r.denoised]);
    } else {
      const hLast = sub32(t, tFn(sigmas[i - 1]!));
      const q = div32(1, mul32(2, div32(hLast, h)));
      x = la.combine([ratio, r.x], [-expm132(-h) * add32(1, q), r.denoised], [expm132(-h) * q, oldDenoised]);
    }
    oldDenoised = r.denoised;
  }
  return x;
}

/**
 * DPM-Solver++ (stochastic), k-diffusion's sample_dpmpp_sde with r = 1/2: each step an ancestral
 * half step to the log-midpoint, then a full one from the blended estimate (fac = 1: the
 * midpoint's alone), each followed by Brownian noise over the interval it covered (both drawn even
 * with eta = 0, where su = 0); into σ = 0 an Euler step.
 */
function* dpmppSde<V>(s: SamplerContext<V>): Generator<EvalRequest<V>, V, EvalResult<V>> {
  const { la, sigmas } = s;
  let x = s.x;
  for (let i = 0; i < sigmas.length - 1; i++) {
    const sigma = sigmas[i]!;
    const next = sigmas[i + 1]!;
    const r = yield [x, sigma];
    if (next === 0) {
      x = la.combine([1, r.x], [sub32(next, sigma), toD(la, r.x, sigma, r.denoised)]);
      continue;
    }
    const t = tFn(sigma);
    const tNext = tFn(next);
    const h = sub32(tNext, t);
    const sMid = add32(t, mul32(h, 0.5));
    // Step 1: to the midpoint.
    const first = ancestralStep(sigmaFn(t), sigmaFn(sMid), s.eta);
    const sTo = tFn(first.down);
    const x2 = la.combine([div32(sigmaFn(sTo), sigmaFn(t)), r.x], [-expm132(sub32(t, sTo)), r.denoised]);
    const r2 = yield [la.combine([1, x2], [s.sNoise * first.up, s.brownian(sigmaFn(t), sigmaFn(sMid))]), sigmaFn(sMid)];
    // Step 2: denoised_d = (1 − fac)·denoised + fac·denoised_2 with fac = 1.
    const second = ancestralStep(sigmaFn(t), sigmaFn(tNext), s.eta);
    const tTo = tFn(second.down);
    x = la.combine([div32(sigmaFn(tTo), sigmaFn(t)), r.x], [-expm132(sub32(t, tTo)), r2.denoised]);
    x = la.combine([1, x], [s.sNoise * second.up, s.brownian(sigmaFn(t), sigmaFn(tNext))]);
  }
  return x;
}

/**
 * DPM-Solver++(2M) SDE, k-diffusion's sample_dpmpp_2m_sde (A1111's "DPM++ 2M SDE" with the
 * midpoint solver, "DPM++ 2M SDE Heun" with heun): the exact exponential-integrator step with
 * eta·h of noise, the second-order correction from the previous estimate, then Brownian noise
 * over [σ, σ_next] (none when eta = 0); into σ = 0, x = D.
 */
function dpmpp2mSde(solver: "midpoint" | "heun"): SamplerBody {
  return function* <V>(s: SamplerContext<V>): Generator<EvalRequest<V>, V, EvalResult<V>> {
    const { la, sigmas } = s;
    let x = s.x;
    let oldDenoised: V | undefined;
    let hLast = 0;
    const eta = f32(s.eta);
    for (let i = 0; i < sigmas.length - 1; i++) {
      const sigma = sigmas[i]!;
      const next = sigmas[i + 1]!;
      const r = yield [x, sigma];
      if (next === 0) {
        // k-diffusion keeps h from the step before here (and has none after a single step, where it fails).
        x = r.denoised;
        oldDenoised = r.denoised;
        continue;
      }
      const t = f32(-log32(sigma));
      const sNext = f32(-log32(next));
      const h = sub32(sNext, t);
      const etaH = mul32(eta, h);
      const negHEta = sub32(-h, etaH);
      const phi1 = -expm132(negHEta);
      const terms: [number, V][] = [[mul32(div32(next, sigma), exp32(-etaH)), r.x], [phi1, r.denoised]];
      if (oldDenoised !== undefined) {
        const inverseR = div32(1, div32(hLast, h));
        const k = solver === "heun" ? mul32(add32(div32(phi1, negHEta), 1), inverseR) : mul32(mul32(0.5, phi1), inverseR);
        terms.push([k, r.denoised], [-k, oldDenoised]);
      }
      x = la.combine(...terms);
      if (s.eta) x = la.combine([1, x], [mul32(next, sqrt32(-expm132(mul32(-2, etaH)))) * s.sNoise, s.brownian(sigma, next)]);
      oldDenoised = r.denoised;
      hLast = h;
    }
    return x;
  };
}

/**
 * DPM-Solver++(3M) SDE, k-diffusion's sample_dpmpp_3m_sde: the exponential-integrator step with
 * (1 + eta)·h, third-order (second-order on the second step) corrections from the last two
 * estimates, then Brownian noise over [σ, σ_next] (none when eta = 0); into σ = 0, x = D.
 */
function* dpmpp3mSde<V>(s: SamplerContext<V>): Generator<EvalRequest<V>, V, EvalResult<V>> {
  const { la, sigmas } = s;
  let x = s.x;
  let denoised1: V | undefined;
  let denoised2: V | undefined;
  let h1: number | undefined;
  let h2: number | undefined;
  for (let i = 0; i < sigmas.length - 1; i++) {
    const sigma = sigmas[i]!;
    const next = sigmas[i + 1]!;
    const r = yield [x, sigma];
    if (next === 0) {
      x = r.denoised;
      continue;
    }
    const t = f32(-log32(sigma));
    const sNext = f32(-log32(next));
    const h = sub32(sNext, t);
    const hEta = mul32(h, f32(s.eta + 1));
    const terms: [number, V][] = [[exp32(-hEta), r.x], [-expm132(-hEta), r.denoised]];
    const phi2 = add32(div32(expm132(-hEta), hEta), 1);
    if (h2 !== undefined) {
      // d1_0 = (D − D1)/r0, d1_1 = (D1 − D2)/r1; x += φ2·(d1_0 + (d1_0 − d1_1)·r0/(r0 + r1)) − φ3·(d1_0 − d1_1)/(r0 + r1).
      const r0 = div32(h1!, h);
      const r1 = div32(h2, h);
      const phi3 = sub32(div32(phi2, hEta), 0.5);
      const c0 = phi2 * (1 + r0 / (r0 + r1)) - phi3 / (r0 + r1);
      const c1 = phi3 / (r0 + r1) - (phi2 * r0) / (r0 + r1);
      terms.push([c0 / r0, r.denoised], [-c0 / r0 + c1 / r1, denoised1!], [-c1 / r1, denoised2!]);
    } else if (h1 !== undefined) {
      const k = phi2 / div32(h1, h);
      terms.push([k, r.denoised], [-k, denoised1!]);
    }
    x = la.combine(...terms);
    if (s.eta) x = la.combine([1, x], [mul32(next, sqrt32(-expm132(mul32(mul32(-2, h), f32(s.eta))))) * s.sNoise, s.brownian(sigma, next)]);
    denoised2 = denoised1;
    denoised1 = r.denoised;
    h2 = h1;
    h1 = h;
  }
  return x;
}

/** `linear_multistep_coeff(order, sigmas, i, j)`: scipy's quad of the Lagrange basis polynomial. */
function lmsCoefficient(order: number, sigmas: readonly number[], i: number, j: number): number {
  const basis = (tau: number) => {
    let prod = 1;
    for (let k = 0; k < order; k++) {
      if (j === k) continue;
      prod *= (tau - sigmas[i - k]!) / (sigmas[i - j]! - sigmas[i - k]!);
    }
    return prod;
  };
  return gaussKronrod21(basis, sigmas[i]!, sigmas[i + 1]!);
}

function* lms<V>(s: SamplerContext<V>): Generator<EvalRequest<V>, V, EvalResult<V>> {
  const order = 4;
  const { la, sigmas } = s;
  let x = s.x;
  const ds: V[] = [];
  for (let i = 0; i < sigmas.length - 1; i++) {
    const sigma = sigmas[i]!;
    const r = yield [x, sigma];
    ds.push(toD(la, r.x, sigma, r.denoised));
    if (ds.length > order) ds.shift();
    const current = Math.min(i + 1, order);
    const terms: [number, V][] = [[1, r.x]];
    for (let j = 0; j < current; j++) terms.push([lmsCoefficient(current, sigmas, i, j), ds[ds.length - 1 - j]!]);
    x = la.combine(...terms);
  }
  return x;
}

/**
 * DPM-Solver-Fast (k-diffusion's DPMSolver.dpm_solver_fast through sample_dpm_fast): n = the
 * step count of model calls spread over orders 3, 3, …, then 2/1, from t(σ_max) to t(σ_min) of
 * the model's range (A1111 passes model_wrap.sigmas[0] / [-1]); it ends at σ_min, not 0. With
 * eta (A1111: opts.eta_ancestral = 1) every step ends with a draw scaled by su.
 */
function* dpmFast<V>(s: SamplerContext<V>): Generator<EvalRequest<V>, V, EvalResult<V>> {
  const { la } = s;
  const nfe = s.sigmas.length - 1;
  const tStart = tFn(s.sigmaMax);
  const tEnd = tFn(s.sigmaMin);
  const m = Math.floor(nfe / 3) + 1;
  const ts = torchLinspaceFloat32(tStart, tEnd, m + 1);
  const orders = nfe % 3 === 0 ? [...new Array<number>(m - 2).fill(3), 2, 1] : [...new Array<number>(m - 1).fill(3), nfe % 3];
  let x = s.x;
  // eps = (x − D) / σ(t) at the point the model saw.
  const eps = (r: EvalResult<V>, sigma: number) => la.combine([1 / sigma, r.x], [-1 / sigma, r.denoised]);
  for (let i = 0; i < orders.length; i++) {
    const t = ts[i]!;
    const tNext = ts[i + 1]!;
    let tNext_ = tNext;
    let su = 0;
    if (s.eta) {
      const { down } = ancestralStep(sigmaFn(t), sigmaFn(tNext), s.eta);
      tNext_ = Math.min(tEnd, tFn(down));
      su = sqrt32(sub32(square32(sigmaFn(tNext)), square32(sigmaFn(tNext_))));
    }
    const sigmaT = sigmaFn(t);
    const r0 = yield [x, sigmaT];
    const x0 = r0.x;
    const e0 = eps(r0, sigmaT);
    const h = sub32(tNext_, t);
    const sNext = sigmaFn(tNext_);
    const order = orders[i]!;
    if (order === 1) {
      x = la.combine([1, x0], [-sNext * expm132(h), e0]);
    } else if (order === 2) {
      const r1 = 0.5;
      const s1 = add32(t, mul32(r1, h));
      const sig1 = sigmaFn(s1);
      const u1 = la.combine([1, x0], [-sig1 * expm132(mul32(r1, h)), e0]);
      const ra = yield [u1, sig1];
      const e1 = eps(ra, sig1);
      const c = div32(sNext, 2 * r1) * expm132(h);
      x = la.combine([1, x0], [-sNext * expm132(h) + c, e0], [-c, e1]);
    } else {
      const r1 = f32(1 / 3);
      const r2 = f32(2 / 3);
      const s1 = add32(t, mul32(r1, h));
      const s2 = add32(t, mul32(r2, h));
      const sig1 = sigmaFn(s1);
      const sig2 = sigmaFn(s2);
      const u1 = la.combine([1, x0], [-sig1 * expm132(mul32(r1, h)), e0]);
      const ra = yield [u1, sig1];
      const e1 = eps(ra, sig1);
      const r2h = mul32(r2, h);
      const phi = sub32(div32(expm132(r2h), r2h), 1);
      const k2 = sig2 * 2 * phi;
      const u2 = la.combine([1, x0], [-sig2 * expm132(r2h) + k2, e0], [-k2, e1]);
      const rb = yield [u2, sig2];
      const e2 = eps(rb, sig2);
      const k3 = div32(sNext, r2) * sub32(div32(expm132(h), h), 1);
      x = la.combine([1, x0], [-sNext * expm132(h) + k3, e0], [-k3, e2]);
    }
    // k-diffusion draws here on every step, with su = 0 when eta is 0.
    x = la.combine([1, x], [su * s.sNoise, s.noise()]);
  }
  return x;
}

/** `int(torch.argmin(abs(sigmas - value)))` on float32 sigmas: the first index of the smallest distance. */
function nearestSigmaIndex(sigmas: readonly number[], value: number): number {
  let best = 0;
  for (let i = 1; i < sigmas.length; i++) {
    if (Math.abs(sub32(sigmas[i]!, value)) < Math.abs(sub32(sigmas[best]!, value))) best = i;
  }
  return best;
}

/**
 * The (σ_old, σ_new) pairs restart_sampler steps through: the schedule's own steps, and from 20
 * steps on a shorter Karras schedule with restart segments inserted where σ is nearest 0.1, each a
 * Karras run from σ ≈ 2 back down (9 steps once; from 36 steps steps/4 steps twice).
 */
function restartStepList(scheduled: readonly number[]): [number, number][] {
  let sigmas = scheduled;
  const steps = sigmas.length - 1;
  // {index of the σ nearest 0.1: [restart steps, restart times, restart max σ]}
  let restart: { at: number; steps: number; times: number; max: number } | undefined;
  if (steps >= 20) {
    const times = steps >= 36 ? 2 : 1;
    const restartSteps = steps >= 36 ? Math.floor(steps / 4) : 9;
    sigmas = karrasSigmas(steps - restartSteps * times, sigmas[sigmas.length - 2]!, sigmas[0]!);
    restart = { at: nearestSigmaIndex(sigmas, 0.1), steps: restartSteps + 1, times, max: 2 };
  }
  const list: [number, number][] = [];
  for (let i = 0; i < sigmas.length - 1; i++) {
    list.push([sigmas[i]!, sigmas[i + 1]!]);
    if (restart && i + 1 === restart.at) {
      const maxIndex = nearestSigmaIndex(sigmas, restart.max);
      if (maxIndex < restart.at) {
        const segment = karrasSigmas(restart.steps, sigmas[restart.at]!, sigmas[maxIndex]!).slice(0, -1);
        for (let t = 0; t < restart.times; t++) for (let k = 0; k + 1 < segment.length; k++) list.push([segment[k]!, segment[k + 1]!]);
      }
    }
  }
  return list;
}

/**
 * A1111's Restart sampler (modules/sd_samplers_extra.py restart_sampler): Heun steps (Euler into
 * σ = 0) over restartStepList; where a pair starts above the σ the last one ended at, noise
 * raises x back to it first: x += n · sqrt(σ_old² − σ_last²). A1111 passes it no s_noise, so
 * its default 1 holds whatever opts.s_noise says.
 */
function* restart<V>(s: SamplerContext<V>): Generator<EvalRequest<V>, V, EvalResult<V>> {
  const { la } = s;
  let x = s.x;
  let last: number | undefined;
  for (const [from, to] of restartStepList(s.sigmas)) {
    if (last === undefined) last = from;
    else if (last < from) x = la.combine([1, x], [sqrt32(sub32(square32(from), square32(last))), s.noise()]);
    x = yield* heunStep(la, x, from, to);
    last = to;
  }
  return x;
}

/**
 * A1111's sample_lcm (modules/sd_samplers_lcm.py): x = D at each sigma, then, unless the next
 * sigma is 0, x += σ_next · n.
 */
function* lcm<V>(s: SamplerContext<V>): Generator<EvalRequest<V>, V, EvalResult<V>> {
  const { la, sigmas } = s;
  let x = s.x;
  for (let i = 0; i < sigmas.length - 1; i++) {
    const r = yield [x, sigmas[i]!];
    x = r.denoised;
    if (sigmas[i + 1]! > 0) x = la.combine([1, x], [sigmas[i + 1]!, s.noise()]);
  }
  return x;
}

const SAMPLERS: Record<KDiffusionSamplerName, SamplerInfo> = {
  k_euler: { label: "Euler", functionName: "sample_euler", defaultSchedule: "automatic", discardNextToLastSigma: false, usesEta: false, usesEnsd: false, body: euler },
  k_euler_a: { label: "Euler a", functionName: "sample_euler_ancestral", defaultSchedule: "automatic", discardNextToLastSigma: false, usesEta: true, usesEnsd: true, body: eulerAncestral },
  k_lms: { label: "LMS", functionName: "sample_lms", defaultSchedule: "automatic", discardNextToLastSigma: false, usesEta: false, usesEnsd: false, body: lms },
  k_heun: { label: "Heun", functionName: "sample_heun", defaultSchedule: "automatic", discardNextToLastSigma: false, usesEta: false, usesEnsd: false, body: heun },
  k_dpm_2: { label: "DPM2", functionName: "sample_dpm_2", defaultSchedule: "karras", discardNextToLastSigma: true, usesEta: false, usesEnsd: false, body: dpm2 },
  k_dpm_2_a: { label: "DPM2 a", functionName: "sample_dpm_2_ancestral", defaultSchedule: "karras", discardNextToLastSigma: true, usesEta: true, usesEnsd: true, body: dpm2Ancestral },
  k_dpmpp_2s_a: { label: "DPM++ 2S a", functionName: "sample_dpmpp_2s_ancestral", defaultSchedule: "karras", discardNextToLastSigma: false, usesEta: true, usesEnsd: true, body: dpmpp2sAncestral },
  k_dpmpp_2m: { label: "DPM++ 2M", functionName: "sample_dpmpp_2m", defaultSchedule: "karras", discardNextToLastSigma: false, usesEta: false, usesEnsd: false, body: dpmpp2m },
  k_dpmpp_sde: { label: "DPM++ SDE", functionName: "sample_dpmpp_sde", defaultSchedule: "karras", discardNextToLastSigma: false, usesEta: true, usesEnsd: false, brownian: true, body: dpmppSde },
  k_dpmpp_2m_sde: { label: "DPM++ 2M SDE", functionName: "sample_dpmpp_2m_sde", defaultSchedule: "exponential", discardNextToLastSigma: false, usesEta: true, usesEnsd: false, brownian: true, body: dpmpp2mSde("midpoint") },
  k_dpmpp_2m_sde_heun: { label: "DPM++ 2M SDE Heun", functionName: "sample_dpmpp_2m_sde", defaultSchedule: "exponential", discardNextToLastSigma: false, usesEta: true, usesEnsd: false, brownian: true, body: dpmpp2mSde("heun") },
  k_dpmpp_3m_sde: { label: "DPM++ 3M SDE", functionName: "sample_dpmpp_3m_sde", defaultSchedule: "exponential", discardNextToLastSigma: true, usesEta: true, usesEnsd: false, brownian: true, body: dpmpp3mSde },
  k_dpm_fast: { label: "DPM fast", functionName: "sample_dpm_fast", defaultSchedule: "automatic", discardNextToLastSigma: false, usesEta: true, usesEnsd: true, body: dpmFast },
  k_restart: { label: "Restart", functionName: "restart_sampler", defaultSchedule: "karras", discardNextToLastSigma: false, usesEta: false, usesEnsd: false, body: restart },
  k_lcm: { label: "LCM", functionName: "sample_lcm", defaultSchedule: "automatic", discardNextToLastSigma: false, usesEta: false, usesEnsd: false, body: lcm, lcm: true },
};

/** LCMCompVisDenoiser's skip: 1000 training timesteps over LCM's 50 original ones. */
const LCM_SKIP = 20;
const LCM_ORIGINAL_STEPS = 50;

/**
 * LCMCompVisDenoiser's table (a DiscreteEpsDDPMDenoiser): ᾱ at timesteps 19, 39, …, 999 and their
 * sigmas, ascending.
 */
function lcmSchedule(config: KDiffusionConfig): DiscreteSchedule {
  const key = `lcm/${config.beta_start}/${config.beta_end}/${config.num_train_timesteps}`;
  let schedule = scheduleCache.get(key);
  if (!schedule) {
    const full = discreteSchedule(config).alphasCumprod;
    const alphasCumprod = Float32Array.from({ length: LCM_ORIGINAL_STEPS }, (_, k) => full[LCM_SKIP - 1 + LCM_SKIP * k]!);
    const sigmas = alphasCumprod.map((ac) => Math.sqrt(f32(f32(1 - ac) / ac)));
    schedule = { alphasCumprod, sigmas, logSigmas: sigmas.map((s) => Math.log(s)) };
    scheduleCache.set(key, schedule);
  }
  return schedule;
}

/** LCMCompVisDenoiser.sigma_to_t: the nearest table entry in log σ (first on ties), as a training timestep. */
function lcmSigmaToT(model: DiscreteSchedule, sigma: number): number {
  const logSigma = log32(sigma);
  let best = 0;
  for (let k = 1; k < model.logSigmas.length; k++) {
    if (Math.abs(sub32(logSigma, model.logSigmas[k]!)) < Math.abs(sub32(logSigma, model.logSigmas[best]!))) best = k;
  }
  return best * LCM_SKIP + (LCM_SKIP - 1);
}

/**
 * LCMCompVisDenoiser.get_sigmas(n) (A1111's "Automatic" for LCM): t = linspace(999, 19, n) in
 * float32, σ = t_to_sigma(clamp((t − 19) / 20, 0, 49)), then 0.
 */
function lcmSigmas(model: DiscreteSchedule, n: number): number[] {
  const ts = torchLinspaceFloat32(LCM_SKIP * LCM_ORIGINAL_STEPS - 1, LCM_SKIP - 1, n);
  const last = model.sigmas.length - 1;
  return [...Array.from(ts, (t) => tToSigma(model, Math.min(Math.max(div32(sub32(t, LCM_SKIP - 1), LCM_SKIP), 0), last))), 0];
}

/** Schedule types that ask the model to map σ ↔ t (LCM's denoiser maps them its own way); refused for LCM. */
const LCM_REFUSED_SCHEDULES: readonly SigmaSchedule[] = ["uniform", "sgm_uniform", "simple", "normal", "ddim"];

/** The sigmas A1111's get_sigmas gives LCMSampler. */
function lcmPlanSigmas(config: KDiffusionConfig, model: DiscreteSchedule, steps: number): number[] {
  if (config.prediction_type !== "epsilon") {
    throw new InvalidOptionError("prediction_type", "A1111's LCM (LCMCompVisDenoiser) takes eps-prediction models only, got v_prediction");
  }
  if (LCM_REFUSED_SCHEDULES.includes(config.sigmaSchedule)) {
    throw new InvalidOptionError(
      "sigmaSchedule",
      `sigmaSchedule ${JSON.stringify(config.sigmaSchedule)} is not supported with LCM: it maps σ ↔ t through LCM's own denoiser, which sd-trt does not port for schedules; use "automatic", "karras", "exponential", "polyexponential", "kl_optimal" or "align_your_steps"`,
    );
  }
  return config.sigmaSchedule === "automatic" ? lcmSigmas(model, steps) : a1111Sigmas(model, config.sigmaSchedule, "automatic", false, steps);
}

export function isKDiffusionSampler(name: string): name is KDiffusionSamplerName {
  return (KDIFFUSION_SAMPLER_NAMES as readonly string[]).includes(name);
}

/** Whether the UNet gets fractional timesteps (sigma_to_t); LCM's are whole training timesteps. */
export function kdiffusionFractionalTimesteps(name: KDiffusionSamplerName): boolean {
  return !SAMPLERS[name].lcm;
}

/** Whether the sampler takes eta (A1111's ancestral samplers, DPM fast and the SDE samplers). */
export function kdiffusionUsesEta(name: KDiffusionSamplerName): boolean {
  return SAMPLERS[name].usesEta;
}

/** A1111's samplers with its "second_order" option (sd_samplers_kdiffusion.py): two model calls a step. */
const SECOND_ORDER: ReadonlySet<string> = new Set(["k_heun", "k_dpm_2", "k_dpm_2_a", "k_dpmpp_2s_a", "k_restart"]);

/**
 * A1111's `SamplerData.total_steps`: the CFG denoiser calls it expects for `steps`, which is the
 * step count prompt editing's schedules are made for (2 × steps for second-order samplers).
 */
export function kdiffusionTotalSteps(name: KDiffusionSamplerName, steps: number): number {
  return SECOND_ORDER.has(name) ? 2 * steps : steps;
}

/** Whether A1111 writes ENSD for the sampler (its `uses_ensd` option, and eta ≠ 0). */
export function kdiffusionUsesEnsd(name: KDiffusionSamplerName, eta = 1): boolean {
  return SAMPLERS[name].usesEnsd && eta !== 0;
}

/**
 * The `Schedule type:` A1111 writes: the schedule's label, where "Automatic" becomes the
 * sampler's own default (Karras for DPM++ 2M) when it has one.
 */
export function sigmaScheduleLabel(name: string, schedule: SigmaSchedule): string {
  const own = isKDiffusionSampler(name) ? SAMPLERS[name].defaultSchedule : "automatic";
  return SIGMA_SCHEDULE_LABELS[schedule === "automatic" ? own : schedule];
}

/** A1111's label for a k-diffusion sampler name. */
export function kdiffusionLabel(name: KDiffusionSamplerName): string {
  return SAMPLERS[name].label;
}

/** What "Automatic" means for the sampler (A1111's `scheduler` option; uniform when absent). */
export function kdiffusionDefaultSchedule(name: KDiffusionSamplerName): SigmaSchedule {
  const own = SAMPLERS[name].defaultSchedule;
  return own === "automatic" ? "uniform" : own;
}

/** The resolved config of a k-diffusion sampler: the model's beta schedule and A1111's knobs. */
export interface KDiffusionConfig {
  num_train_timesteps: number;
  beta_start: number;
  beta_end: number;
  beta_schedule: "scaled_linear";
  trained_betas: null;
  prediction_type: "epsilon" | "v_prediction";
  /** A1111's `Schedule type` (sd_schedulers.py names). */
  sigmaSchedule: SigmaSchedule;
  /** Ancestral samplers' eta (A1111: the request's eta, else opts.eta_ancestral = 1). */
  eta: number;
  /** s_noise: scales ancestral noise (A1111's opts.s_noise, default 1). */
  s_noise: number;
  /** s_churn: only 0 (see the check). */
  s_churn: number;
}

export interface KDiffusionPlan extends SchedulePlan {
  /** The sampler's sigmas (float32 values, the trailing 0 included where the schedule has it). */
  sigmas: number[];
  /** The sigma of every model evaluation, in order. */
  evalSigmas: number[];
  /** CompVisDenoiser's c_in per evaluation. */
  cIn: number[];
  /** D = cSkip·x + cOut·m per evaluation. */
  cSkip: number[];
  cOut: number[];
  /**
   * img2img only: DPM fast's integration range, A1111's sample_img2img sigma_min = sigma_sched[-2],
   * sigma_max = sigma_sched[0] (txt2img integrates over the model's whole sigma range).
   */
  sigmaRange?: { min: number; max: number };
}

function spec(defaultSchedule: SigmaSchedule): ConfigSpec<KDiffusionConfig> {
  const scheduleNames = [...SIGMA_SCHEDULES];
  return {
    num_train_timesteps: { default: 1000, check: check.integer(2, 100000) },
    beta_start: { default: 0.00085, check: check.number(Number.MIN_VALUE, 1) },
    beta_end: { default: 0.012, check: check.number(Number.MIN_VALUE, 1) },
    // ldm's "linear" schedule is diffusers' "scaled_linear": A1111 builds SD 1.x's from its yaml.
    beta_schedule: { default: "scaled_linear", check: check.only("scaled_linear", "A1111's k-diffusion samplers use ldm's linear-in-sqrt betas") },
    trained_betas: { default: null, check: check.only(null, "A1111's k-diffusion samplers use ldm's computed betas") },
    prediction_type: { default: "epsilon", check: check.oneOf(["epsilon", "v_prediction"]) },
    sigmaSchedule: {
      default: defaultSchedule,
      check: (v, fail) => {
        if (typeof v === "string" && Object.hasOwn(REFUSED_SIGMA_SCHEDULES, v)) {
          fail(`one of ${scheduleNames.map((n) => JSON.stringify(n)).join(", ")} (${REFUSED_SIGMA_SCHEDULES[v]})`);
        }
        return findSigmaSchedule(v) ?? fail(`one of ${scheduleNames.map((n) => JSON.stringify(n)).join(", ")} (or their A1111 labels)`);
      },
    },
    eta: { default: 1, check: check.number(0, 100) },
    s_noise: { default: 1, check: check.number(0, 100) },
    // s_churn > 0 adds noise to x before the model call of the same step, the first step
    // included, which a program that starts from initNoiseSigma · z cannot express.
    s_churn: { default: 0, check: check.only(0, "s_churn > 0 is not supported: its noise is added before the first model call") },
  };
}

/** k-diffusion's CompVis(V)Denoiser scalings at σ. */
function scalings(prediction: KDiffusionConfig["prediction_type"], sigma: number): { cIn: number; cSkip: number; cOut: number } {
  const norm = Math.sqrt(sigma * sigma + 1);
  if (prediction === "epsilon") return { cIn: 1 / norm, cSkip: 1, cOut: -sigma };
  return { cIn: 1 / norm, cSkip: 1 / (sigma * sigma + 1), cOut: -sigma / norm };
}

/**
 * LCMCompVisDenoiser.forward at σ: eps from the UNet at c_in · x (c_in = 1/√(σ² + 1)), then
 * D = c_out·(x − σ·eps) + c_skip·x with s = 10·t: c_skip = 0.25/(s² + 0.25), c_out = s/√(s² + 0.25).
 */
function lcmScalings(model: DiscreteSchedule, sigma: number): { cIn: number; cSkip: number; cOut: number } {
  const s = 10 * lcmSigmaToT(model, sigma);
  const skip = 0.25 / (s * s + 0.25);
  const out = s / Math.sqrt(s * s + 0.25);
  return { cIn: 1 / Math.sqrt(sigma * sigma + 1), cSkip: out + skip, cOut: -out * sigma };
}

/** A null algebra: runs a sampler body only to list the sigmas it evaluates at. */
const nullAlgebra: LinearAlgebra<null> = { combine: () => null };

const scheduleCache = new Map<string, DiscreteSchedule>();

/** ldm's schedule for a config's betas (compVisSchedule), computed once per beta schedule. */
export function discreteSchedule(config: Pick<KDiffusionConfig, "beta_start" | "beta_end" | "num_train_timesteps">): DiscreteSchedule {
  const key = `${config.beta_start}/${config.beta_end}/${config.num_train_timesteps}`;
  let schedule = scheduleCache.get(key);
  if (!schedule) {
    schedule = compVisSchedule(config.beta_start, config.beta_end, config.num_train_timesteps);
    scheduleCache.set(key, schedule);
  }
  return schedule;
}

/** @param queries where the Brownian draws' (σ, σ_next) are listed, in draw order (the plan's trace). */
function contextFor<V>(config: KDiffusionConfig, plan: KDiffusionPlan, la: LinearAlgebra<V>, x: V, noise: () => V, queries?: [number, number][]): SamplerContext<V> {
  const model = discreteSchedule(config);
  const sigmaMin = plan.sigmaRange?.min ?? model.sigmas[0]!;
  const sigmaMax = plan.sigmaRange?.max ?? model.sigmas[model.sigmas.length - 1]!;
  const brownian = (sigma: number, sigmaNext: number): V => {
    queries?.push([sigma, sigmaNext]);
    return noise();
  };
  return { la, sigmas: plan.sigmas, sigmaMin, sigmaMax, x, eta: config.eta, sNoise: config.s_noise, noise, brownian };
}

/**
 * A1111's create_noise_sampler range: the smallest non-zero and the largest sigma of the whole
 * schedule (get_sigmas' result, in img2img too, not the tail the sampler runs).
 */
function brownianRange(sigmas: readonly number[]): { sigmaMin: number; sigmaMax: number } {
  return { sigmaMin: Math.min(...sigmas.filter((v) => v > 0)), sigmaMax: Math.max(...sigmas) };
}

/** Per evaluation: the UNet input scale, and the model's output as D = cSkip·x + cOut·m. */
export interface EvalScalings {
  cIn: number[];
  cSkip: number[];
  cOut: number[];
}

/**
 * A sampler written as a generator (k-diffusion's loops, A1111's timestep samplers) as a
 * SchedulerRun: each step hands the generator the latent and D = cSkip·x + cOut·m, and returns
 * the next latent it yields (or its result).
 */
export class GeneratorRun<V> implements SchedulerRun<V> {
  readonly #scalings: EvalScalings;
  readonly #la: LinearAlgebra<V>;
  readonly #start: (x: V, noise: () => V) => Generator<EvalRequest<V>, V, EvalResult<V>>;
  #generator: Generator<EvalRequest<V>, V, EvalResult<V>> | undefined;
  #j = 0;
  #draw: (() => V) | undefined;

  /** @param start the sampler body from the first latent, drawing noise through `noise`. */
  constructor(scalings: EvalScalings, la: LinearAlgebra<V>, start: (x: V, noise: () => V) => Generator<EvalRequest<V>, V, EvalResult<V>>) {
    this.#scalings = scalings;
    this.#la = la;
    this.#start = start;
  }

  inputScale(): number {
    return this.#scalings.cIn[this.#j]!;
  }

  step(modelOutput: V, sample: V, drawNoise: () => V, uncond?: V): V {
    const j = this.#j;
    const plan = this.#scalings;
    this.#draw = drawNoise;
    if (this.#generator === undefined) {
      // The body starts from the first latent; its first yield is that latent at its first sigma / timestep.
      this.#generator = this.#start(sample, () => this.#draw!());
      this.#generator.next();
    }
    const denoised = this.#la.combine([plan.cSkip[j]!, sample], [plan.cOut[j]!, modelOutput]);
    const uncondDenoised = uncond === undefined ? denoised : this.#la.combine([plan.cSkip[j]!, sample], [plan.cOut[j]!, uncond]);
    const next = this.#generator.next({ x: sample, denoised, uncondDenoised });
    this.#j++;
    return next.done ? next.value : next.value[0];
  }
}

function definition(name: KDiffusionSamplerName): SchedulerDefinition<KDiffusionConfig, KDiffusionPlan> {
  const info = SAMPLERS[name];
  const className = `k_diffusion.sampling.${info.functionName}`;
  const configSpec = spec("automatic");
  return {
    className,
    order: 1,
    resolveConfig(raw: RawSchedulerConfig) {
      const config = resolveConfig(className, configSpec, raw);
      // Samplers without an eta parameter ignore it, as A1111 does (it passes eta only where
      // the k-diffusion function takes one).
      return config;
    },
    plan(config, steps) {
      if (info.lcm) {
        const model = lcmSchedule(config);
        return planFor(config, model, info, lcmPlanSigmas(config, model, steps));
      }
      const model = discreteSchedule(config);
      return planFor(config, model, info, a1111Sigmas(model, config.sigmaSchedule, info.defaultSchedule, info.discardNextToLastSigma, steps));
    },
    img2imgPlan(config, plan, startIndex) {
      // KDiffusionSampler.sample_img2img: the sampler runs fresh on sigmas[startIndex:].
      const last = plan.sigmas.length - 2;
      if (!Number.isInteger(startIndex) || startIndex < 0 || startIndex > last) {
        throw new InvalidOptionError("startIndex", `startIndex must be an integer from 0 to ${last} (an index into the ${plan.sigmas.length} sigmas that leaves at least one step), got ${String(startIndex)}`);
      }
      const sigmas = plan.sigmas.slice(startIndex);
      return planFor(config, info.lcm ? lcmSchedule(config) : discreteSchedule(config), info, sigmas, { min: sigmas[sigmas.length - 2]!, max: sigmas[0]! }, plan.sigmas);
    },
    start(config, plan, la) {
      return new GeneratorRun(plan, la, (x, noise) => info.body(contextFor(config, plan, la, x, noise)));
    },
    addNoise(_config, plan): NoiseScales {
      // x = init_latent + noise · sigma_sched[0]
      return { signal: 1, noise: plan.sigmas[0]! };
    },
  };
}

/** The evaluations a sampler makes over `sigmas`, with their timesteps and scalings. */
/**
 * @param fullSigmas the whole schedule (img2img: `sigmas` is its tail), whose range A1111's
 *   Brownian noise sampler spans.
 */
function planFor(
  config: KDiffusionConfig,
  model: DiscreteSchedule,
  info: SamplerInfo,
  sigmas: number[],
  sigmaRange?: KDiffusionPlan["sigmaRange"],
  fullSigmas: readonly number[] = sigmas,
): KDiffusionPlan {
  const evalSigmas: number[] = [];
  const queries: [number, number][] = [];
  const generator = info.body(contextFor<null>(config, { sigmas, ...(sigmaRange ? { sigmaRange } : {}) } as KDiffusionPlan, nullAlgebra, null, () => null, queries));
  for (let r = generator.next(); !r.done; r = generator.next({ x: null, denoised: null, uncondDenoised: null })) evalSigmas.push(r.value[1]);
  const cIn: number[] = [];
  const cSkip: number[] = [];
  const cOut: number[] = [];
  for (const sigma of evalSigmas) {
    const s = info.lcm ? lcmScalings(model, sigma) : scalings(config.prediction_type, sigma);
    cIn.push(s.cIn);
    cSkip.push(s.cSkip);
    cOut.push(s.cOut);
  }
  return {
    ...(sigmaRange ? { sigmaRange } : {}),
    ...(info.brownian ? { brownian: { ...brownianRange(fullSigmas), draws: queries } } : {}),
    // The UNet gets sigma_to_t(σ) as a float32 tensor (LCM: a whole training timestep).
    timesteps: evalSigmas.map((sigma) => Math.fround(info.lcm ? lcmSigmaToT(model, sigma) : sigmaToT(model, sigma))),
    timestepDtype: "float32",
    // A1111: x = noise * sigmas[0].
    initNoiseSigma: sigmas[0]!,
    sigmas,
    evalSigmas,
    cIn,
    cSkip,
    cOut,
  };
}

/**
 * A1111's img2img start for k-diffusion samplers (sd_samplers_common.setup_img2img_steps with
 * img2img_fix_steps off, then sample_img2img): t_enc = int(min(strength, 0.999) · steps), and the
 * sampler runs sigmas[steps − t_enc − 1:], i.e. t_enc + 1 steps. Pass the result as
 * `compile(steps, { startIndex })` of a k_* scheduler.
 */
export function a1111Img2imgStartIndex(steps: number, strength: number): number {
  integerInRange("steps", steps, 1, Number.MAX_SAFE_INTEGER);
  numberInRange("strength", strength, 0, 1);
  return steps - Math.trunc(Math.min(strength, 0.999) * steps) - 1;
}

export const KDIFFUSION_DEFINITIONS: Record<KDiffusionSamplerName, SchedulerDefinition<KDiffusionConfig, KDiffusionPlan>> = Object.fromEntries(
  KDIFFUSION_SAMPLER_NAMES.map((name) => [name, definition(name)]),
) as Record<KDiffusionSamplerName, SchedulerDefinition<KDiffusionConfig, KDiffusionPlan>>;
