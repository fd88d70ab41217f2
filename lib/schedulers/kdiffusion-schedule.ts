/**
 * The noise levels A1111 samples k-diffusion over: CompVisDenoiser's discrete schedule
 * (k_diffusion/external.py at ab527a9, the commit A1111 v1.10.1 pins) and the schedule types of
 * A1111's modules/sd_schedulers.py, picked the way KDiffusionSampler.get_sigmas picks them.
 *
 * Values are held as torch holds them, in float32: ldm's alphas_cumprod (float64 cumprod stored
 * as float32), CompVisDenoiser's `sigmas` / `log_sigmas`, and every schedule's tensor. Scalar
 * arithmetic between float32 tensors is rounded with Math.fround (exact for + − × ÷ √, within
 * one ulp for log/exp/tan/atan, far inside the goldens' 1e-5).
 */
import { InvalidOptionError } from "../errors.js";
import { f32 } from "./float32.js";
import { linspace, torchLinspaceFloat32 } from "./numpy.js";

/** A1111's schedule types that are pure math (modules/sd_schedulers.py, v1.10.1), by name. */
export const SIGMA_SCHEDULES = [
  "automatic",
  "uniform",
  "karras",
  "exponential",
  "polyexponential",
  "sgm_uniform",
  "kl_optimal",
  "align_your_steps",
  "simple",
  "normal",
  "ddim",
] as const;
export type SigmaSchedule = (typeof SIGMA_SCHEDULES)[number];

/** A1111's labels (the `Schedule type:` infotext field and /sdapi/v1/schedulers). */
export const SIGMA_SCHEDULE_LABELS: Record<SigmaSchedule, string> = {
  automatic: "Automatic",
  uniform: "Uniform",
  karras: "Karras",
  exponential: "Exponential",
  polyexponential: "Polyexponential",
  sgm_uniform: "SGM Uniform",
  kl_optimal: "KL Optimal",
  align_your_steps: "Align Your Steps",
  simple: "Simple",
  normal: "Normal",
  ddim: "DDIM",
};

/**
 * "Beta" is the one schedule type A1111 v1.10.1 lists that is not implemented: it needs
 * scipy.stats.beta.ppf (the inverse regularised incomplete beta function) at A1111's settings.
 */
export const REFUSED_SIGMA_SCHEDULES: Record<string, string> = {
  beta: "the Beta schedule needs scipy's inverse incomplete beta function, which sd-trt does not reproduce",
};

/** CompVisDenoiser's table for one beta schedule. */
export interface DiscreteSchedule {
  /** ldm's ᾱ (sd_model.alphas_cumprod) per training timestep (float32). */
  alphasCumprod: Float32Array;
  /** sqrt((1 − ᾱ) / ᾱ) per training timestep, ascending (float32). */
  sigmas: Float32Array;
  logSigmas: Float32Array;
}

/**
 * ldm's `register_schedule` for its "linear" schedule (what diffusers calls scaled_linear):
 * betas = linspace(√start, √end, T, float64)², ᾱ = cumprod(1 − β) in float64, stored as float32;
 * then CompVisDenoiser's `((1 − ᾱ) / ᾱ) ** 0.5` and `.log()` on float32 tensors.
 */
export function compVisSchedule(betaStart: number, betaEnd: number, T: number): DiscreteSchedule {
  const roots = linspaceTorchFloat64(Math.sqrt(betaStart), Math.sqrt(betaEnd), T);
  const alphasCumprod = new Float32Array(T);
  const sigmas = new Float32Array(T);
  const logSigmas = new Float32Array(T);
  let cumprod = 1;
  for (let i = 0; i < T; i++) {
    cumprod *= 1 - roots[i]! * roots[i]!;
    const ac = f32(cumprod);
    alphasCumprod[i] = ac;
    sigmas[i] = Math.sqrt(f32(f32(1 - ac) / ac));
    logSigmas[i] = Math.log(sigmas[i]!);
  }
  return { alphasCumprod, sigmas, logSigmas };
}

/**
 * `torch.linspace(start, end, steps, dtype=torch.float64)` on the CPU: step = (end − start) /
 * (steps − 1); the first half counts up from start, the second half down from end.
 */
function linspaceTorchFloat64(start: number, end: number, steps: number): Float64Array {
  const out = new Float64Array(steps);
  if (steps === 1) {
    out[0] = start;
    return out;
  }
  const step = (end - start) / (steps - 1);
  const halfway = Math.floor(steps / 2);
  for (let i = 0; i < steps; i++) out[i] = i < halfway ? start + step * i : end - step * (steps - i - 1);
  return out;
}

/**
 * `DiscreteSchedule.sigma_to_t`: the fractional timestep whose log-sigma interpolates linearly
 * between its two neighbours in `log_sigmas`. This is the timestep the UNet sees.
 */
export function sigmaToT(schedule: DiscreteSchedule, sigma: number): number {
  const { logSigmas } = schedule;
  const logSigma = Math.log(sigma);
  // dists.ge(0).cumsum().argmax(): the last index whose log-sigma is ≤ log(sigma) (0 if none).
  let low = 0;
  for (let i = 0; i < logSigmas.length; i++) if (logSigmas[i]! <= logSigma) low = i;
  low = Math.min(low, logSigmas.length - 2);
  const lo = logSigmas[low]!;
  const hi = logSigmas[low + 1]!;
  const w = Math.min(Math.max((lo - logSigma) / (lo - hi), 0), 1);
  return (1 - w) * low + w * (low + 1);
}

/** `DiscreteSchedule.t_to_sigma` on a float32 t. */
export function tToSigma(schedule: DiscreteSchedule, t: number): number {
  const { logSigmas } = schedule;
  const low = Math.floor(t);
  const high = Math.ceil(t);
  const w = f32(t - low);
  const logSigma = f32(f32((1 - w) * logSigmas[low]!) + f32(w * logSigmas[high]!));
  return f32(Math.exp(logSigma));
}

/** The schedule functions' shared inputs (KDiffusionSampler.get_sigmas). */
interface ScheduleInputs {
  n: number;
  sigmaMin: number;
  sigmaMax: number;
  model: DiscreteSchedule;
}

/** `DiscreteSchedule.get_sigmas(n)`: n timesteps evenly from T−1 to 0, then 0 appended. */
function uniform({ n, model }: ScheduleInputs): number[] {
  const ts = torchLinspaceFloat32(model.sigmas.length - 1, 0, n);
  return [...Array.from(ts, (t) => tToSigma(model, t)), 0];
}

/** k-diffusion's get_sigmas_karras (rho 7) from Python-float bounds, float32 values, the trailing 0 included. */
export function karrasSigmas(n: number, sigmaMin: number, sigmaMax: number): number[] {
  return karras({ n, sigmaMin, sigmaMax } as ScheduleInputs);
}

function karras({ n, sigmaMin, sigmaMax }: ScheduleInputs): number[] {
  const rho = 7;
  const ramp = torchLinspaceFloat32(0, 1, n);
  const minInvRho = sigmaMin ** (1 / rho);
  const maxInvRho = sigmaMax ** (1 / rho);
  // A float32 tensor with Python floats: the scalars join in float32.
  return [...Array.from(ramp, (r) => f32(f32(f32(maxInvRho) + f32(r * f32(minInvRho - maxInvRho))) ** rho)), 0];
}

function exponential({ n, sigmaMin, sigmaMax }: ScheduleInputs): number[] {
  return [...Array.from(torchLinspaceFloat32(Math.log(sigmaMax), Math.log(sigmaMin), n), (v) => f32(Math.exp(v))), 0];
}

function polyexponential({ n, sigmaMin, sigmaMax }: ScheduleInputs): number[] {
  // rho = 1 (A1111's default_rho): ramp ** 1 is the ramp.
  const ramp = torchLinspaceFloat32(1, 0, n);
  const span = f32(Math.log(sigmaMax) - Math.log(sigmaMin));
  const logMin = f32(Math.log(sigmaMin));
  return [...Array.from(ramp, (r) => f32(Math.exp(f32(f32(r * span) + logMin)))), 0];
}

/** `normal_scheduler` (sgm = false) and `sgm_uniform`: evenly spaced fractional timesteps. */
function evenTimesteps({ n, sigmaMin, sigmaMax, model }: ScheduleInputs, sgm: boolean): number[] {
  const start = f32(sigmaToT(model, sigmaMax));
  const end = f32(sigmaToT(model, sigmaMin));
  const ts = sgm ? torchLinspaceFloat32(start, end, n + 1).subarray(0, n) : torchLinspaceFloat32(start, end, n);
  return [...Array.from(ts, (t) => tToSigma(model, t)), 0];
}

function klOptimal({ n, sigmaMin, sigmaMax }: ScheduleInputs): number[] {
  const alphaMin = f32(Math.atan(f32(sigmaMin)));
  const alphaMax = f32(Math.atan(f32(sigmaMax)));
  const out: number[] = [];
  // No trailing 0: the last sigma is tan(alpha_min) = sigma_min, as A1111 returns it.
  for (let i = 0; i <= n; i++) {
    const frac = f32(i / n);
    out.push(f32(Math.tan(f32(f32(frac * alphaMin) + f32(f32(1 - frac) * alphaMax)))));
  }
  return out;
}

/** NVIDIA's Align Your Steps sigmas for SD 1.5, log-linearly interpolated to n (numpy float64). */
const AYS_SD15 = [14.615, 6.475, 3.861, 2.697, 1.886, 1.396, 0.963, 0.652, 0.399, 0.152, 0.029];

function alignYourSteps({ n }: ScheduleInputs): number[] {
  if (n === AYS_SD15.length) return [...AYS_SD15.map(f32), 0];
  const xs = linspace(0, 1, AYS_SD15.length);
  const ys = AYS_SD15.map(Math.log).reverse();
  const out = linspace(0, 1, n).map((x) => Math.exp(npInterp(x, xs, ys)));
  return [...out.reverse().map(f32), 0];
}

/** `np.interp(x, xp, fp)` for increasing xp and x inside [xp[0], xp[-1]]. */
function npInterp(x: number, xp: readonly number[], fp: readonly number[]): number {
  const last = xp.length - 1;
  if (x >= xp[last]!) return fp[last]!;
  let j = 0;
  while (x >= xp[j + 1]!) j++;
  const slope = (fp[j + 1]! - fp[j]!) / (xp[j + 1]! - xp[j]!);
  return slope * (x - xp[j]!) + fp[j]!;
}

function simple({ n, model }: ScheduleInputs): number[] {
  const T = model.sigmas.length;
  const ss = T / n;
  const out: number[] = [];
  for (let x = 0; x < n; x++) out.push(model.sigmas[T - 1 - Math.trunc(x * ss)]!);
  return [...out, 0];
}

function ddim({ n, model }: ScheduleInputs): number[] {
  const T = model.sigmas.length;
  const ss = Math.max(Math.floor(T / n), 1);
  const out: number[] = [];
  for (let x = 1; x < T; x += ss) out.push(model.sigmas[x]!);
  return [...out.reverse(), 0];
}

const FUNCTIONS: Record<Exclude<SigmaSchedule, "automatic">, (inputs: ScheduleInputs) => number[]> = {
  uniform,
  karras,
  exponential,
  polyexponential,
  sgm_uniform: (inputs) => evenTimesteps(inputs, true),
  kl_optimal: klOptimal,
  align_your_steps: alignYourSteps,
  simple,
  normal: (inputs) => evenTimesteps(inputs, false),
  ddim,
};

/**
 * KDiffusionSampler.get_sigmas (A1111 v1.10.1, default settings): "automatic" is the sampler's
 * own default schedule (uniform when it has none); samplers with `discard_next_to_last_sigma`
 * (DPM2, DPM2 a) build one step more and drop the penultimate sigma.
 */
export function a1111Sigmas(
  model: DiscreteSchedule,
  schedule: SigmaSchedule,
  samplerDefault: SigmaSchedule,
  discardNextToLast: boolean,
  steps: number,
): number[] {
  const n = steps + (discardNextToLast ? 1 : 0);
  const name = schedule === "automatic" ? samplerDefault : schedule;
  const fn = FUNCTIONS[name === "automatic" ? "uniform" : name];
  const sigmas = fn({ n, sigmaMin: model.sigmas[0]!, sigmaMax: model.sigmas[model.sigmas.length - 1]!, model });
  if (discardNextToLast) sigmas.splice(sigmas.length - 2, 1);
  if (sigmas.some((s) => !Number.isFinite(s))) {
    throw new InvalidOptionError("steps", `the ${schedule} schedule gives non-finite sigmas for ${steps} steps`);
  }
  return sigmas;
}

/**
 * A schedule type by sd-trt name or A1111 label ("Karras", "SGM Uniform", its alias
 * "SGMUniform"), case-insensitively.
 * @param option the option name errors carry.
 */
export function resolveSigmaSchedule(value: unknown, option = "sigmaSchedule"): SigmaSchedule {
  const names = SIGMA_SCHEDULES.map((n) => JSON.stringify(n)).join(", ");
  const found = findSigmaSchedule(value);
  if (found) return found;
  if (typeof value === "string") {
    const wanted = value.trim().toLowerCase();
    if (Object.hasOwn(REFUSED_SIGMA_SCHEDULES, wanted)) {
      throw new InvalidOptionError(option, `${option} ${JSON.stringify(value)} is not supported: ${REFUSED_SIGMA_SCHEDULES[wanted]}; use one of ${names}`);
    }
  }
  throw new InvalidOptionError(option, `${option} must be one of ${names} (or their A1111 labels), got ${typeof value === "string" ? JSON.stringify(value) : String(value)}`);
}

/** A schedule type by name or A1111 label (case-insensitive), or undefined. */
export function findSigmaSchedule(value: unknown): SigmaSchedule | undefined {
  if (typeof value !== "string") return undefined;
  const wanted = value.trim().toLowerCase();
  return SIGMA_SCHEDULES.find((n) => n === wanted || SIGMA_SCHEDULE_LABELS[n].toLowerCase() === wanted || (n === "sgm_uniform" && wanted === "sgmuniform"));
}
