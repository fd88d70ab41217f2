/**
 * The training noise schedule every diffusers scheduler builds in `__init__`, in float32 exactly
 * as diffusers does (scheduling_*.py: `betas`, `alphas_cumprod`, and the sigma-space
 * `((1 - alphas_cumprod) / alphas_cumprod) ** 0.5`), plus the sigma-space helpers shared by the
 * Karras / sigma-interpolating schedulers (`_convert_to_karras`, `_sigma_to_t`).
 */
import { f32, sqrt32, sub32, div32, square32, log32 } from "./float32.js";
import { linspace, torchLinspaceFloat32 } from "./numpy.js";

/** The beta-schedule keys every resolved scheduler config carries. */
export interface BetaScheduleConfig {
  num_train_timesteps: number;
  beta_start: number;
  beta_end: number;
  beta_schedule: "linear" | "scaled_linear" | "squaredcos_cap_v2";
  trained_betas: readonly number[] | null;
}

/** float32 tables indexed by training timestep 0 … T−1. */
export interface TrainTables {
  betas: Float32Array;
  alphasCumprod: Float32Array;
  /** sqrt((1 − ᾱ) / ᾱ) in float32: the sigma of each training timestep (ascending). */
  sigmas: Float32Array;
  /** np.log of the float32 sigmas (numpy keeps float32), for `_sigma_to_t`. */
  logSigmas: Float32Array;
}

/** Glide's cosine schedule (`betas_for_alpha_bar`, alpha_transform_type "cosine", max_beta 0.999). */
function cosineBetas(T: number): Float32Array {
  const alphaBar = (t: number) => Math.cos(((t + 0.008) / 1.008) * (Math.PI / 2)) ** 2;
  const out = new Float32Array(T);
  for (let i = 0; i < T; i++) out[i] = Math.min(1 - alphaBar((i + 1) / T) / alphaBar(i / T), 0.999);
  return out;
}

export function buildBetas(config: BetaScheduleConfig): Float32Array {
  const T = config.num_train_timesteps;
  if (config.trained_betas !== null) return Float32Array.from(config.trained_betas);
  switch (config.beta_schedule) {
    case "linear":
      return torchLinspaceFloat32(config.beta_start, config.beta_end, T);
    case "scaled_linear":
      // torch.linspace(beta_start**0.5, beta_end**0.5, T, dtype=float32) ** 2
      return torchLinspaceFloat32(Math.sqrt(config.beta_start), Math.sqrt(config.beta_end), T).map(square32);
    case "squaredcos_cap_v2":
      return cosineBetas(T);
  }
}

const tableCache = new WeakMap<BetaScheduleConfig, TrainTables>();

/** Tables for a resolved (frozen) config; computed once per config object. */
export function trainTables(config: BetaScheduleConfig): TrainTables {
  const cached = tableCache.get(config);
  if (cached) return cached;
  const betas = buildBetas(config);
  const T = betas.length;
  const alphasCumprod = new Float32Array(T);
  // torch.cumprod on the CPU accumulates in double (acc_type<float> is double) and stores float32.
  let acc = 1;
  for (let i = 0; i < T; i++) {
    acc *= f32(1 - betas[i]!);
    alphasCumprod[i] = acc;
  }
  const sigmas = alphasCumprod.map((ac) => sqrt32(div32(sub32(1, ac), ac)));
  const logSigmas = sigmas.map(log32);
  const tables: TrainTables = { betas, alphasCumprod, sigmas, logSigmas };
  tableCache.set(config, tables);
  return tables;
}

/**
 * `_sigma_to_t`: the fractional training timestep whose (log-linearly interpolated) sigma is
 * `sigma`, in float64 over the float32 log-sigma table.
 */
export function sigmaToT(sigma: number, logSigmas: Float32Array): number {
  const logSigma = Math.log(Math.max(sigma, 1e-10));
  const n = logSigmas.length;
  // cumsum(dists >= 0).argmax(): the last index whose log-sigma is <= logSigma (0 when none).
  let count = 0;
  for (let i = 0; i < n; i++) if (logSigma - logSigmas[i]! >= 0) count++;
  const lowIdx = Math.min(Math.max(count - 1, 0), n - 2);
  const highIdx = lowIdx + 1;
  const low = logSigmas[lowIdx]!;
  const high = logSigmas[highIdx]!;
  const w = Math.min(Math.max((low - logSigma) / (low - high), 0), 1);
  return (1 - w) * lowIdx + w * highIdx;
}

/**
 * `_convert_to_karras` (Karras et al. 2022, "Elucidating the Design Space of Diffusion-Based
 * Generative Models", eq. 5, rho = 7): N sigmas from sigmaMax down to sigmaMin, float64.
 */
export function karrasSigmas(sigmaMin: number, sigmaMax: number, steps: number): number[] {
  const rho = 7;
  const ramp = linspace(0, 1, steps);
  const minInvRho = sigmaMin ** (1 / rho);
  const maxInvRho = sigmaMax ** (1 / rho);
  return ramp.map((r) => (maxInvRho + r * (minInvRho - maxInvRho)) ** rho);
}
