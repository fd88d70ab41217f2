/**
 * The sampler program: the contract between the TypeScript schedulers and every executor
 * (the CPU executor in `lib/sampler/execute.ts`, the CUDA denoiser in `native/`).
 *
 * Every supported scheduler is linear in its history for epsilon and v prediction, so a
 * scheduler + step count + config compiles to a table. Model evaluation j sees
 * `input_j = cIn_j · x_j` and the timestep `t_j`, and returns m_j (already guided) and u_j, its
 * unconditional half. Then
 *
 *     x_{j+1} = Σ_k a_j[k] · x_{j−k}  +  Σ_k b_j[k] · m_{j−k}  +  d_j · u_j  +  c_j · n_j
 *
 * where k = 0 … historyDepth−1 (entries that would reach before x_0 / m_0 are 0), and n_j is
 * a fresh standard-normal draw taken only when `drawsNoise` is true (a draw may happen with
 * c_j = 0: Euler a's last step consumes the generator without using the noise).
 * u_j is read only where d_j ≠ 0 (A1111's DDIM CFG++ renoises with it) and only from the current
 * evaluation, so executors keep no history of it; without guidance there is one prediction and
 * u_j = m_j (what A1111 hands CFG++ when it skips the uncond: the cond output in its place).
 * The final latents are x_M, M = evals.length.
 */
export const SAMPLER_PROGRAM_FORMAT = "sd-trt-sampler/1" as const;

export interface SamplerEval {
  /** The timestep value handed to the UNet, exactly as diffusers passes it (float32 values for
   *  fractional schedules, integers otherwise). The backend casts it to the model's dtype. */
  t: number;
  /** UNet input scale: the model sees cIn · x_j (diffusers' `scale_model_input`). */
  cIn: number;
  /** a[k] multiplies x_{j−k}; length = historyDepth. */
  a: number[];
  /** b[k] multiplies m_{j−k}; length = historyDepth. */
  b: number[];
  /** Multiplies the noise drawn at this evaluation (0 when none is used). */
  c: number;
  /** Multiplies u_j, this evaluation's unconditional model output; absent means 0 (every sampler but CFG++). */
  d?: number;
  /** Whether this evaluation consumes one noise draw of the latent shape from the generator. */
  drawsNoise: boolean;
}

/** img2img: x_0 = signal · image_latents + noise · n (diffusers' `scheduler.add_noise`). */
export interface AddNoiseSpec {
  /** The timestep add_noise is evaluated at (timesteps[0] of the sliced schedule). */
  t: number;
  signal: number;
  noise: number;
}

/**
 * The step noise of A1111's SDE samplers: not the generator's draws but k-diffusion's
 * BrownianTreeNoiseSampler over [sigmaMin, sigmaMax], one tree per image seed
 * (lib/rng/brownian-tree.ts); draw k is its value at draws[k] = (σ, σ_next).
 */
export interface BrownianNoiseSpec {
  sigmaMin: number;
  sigmaMax: number;
  draws: [sigma: number, sigmaNext: number][];
}

export interface SamplerProgram {
  format: typeof SAMPLER_PROGRAM_FORMAT;
  /** Canonical scheduler name (`lms`, `euler`, `euler_a`, `ddim`, `pndm`, `dpmpp_2m`, …). */
  scheduler: string;
  /** num_inference_steps the program was compiled for. */
  steps: number;
  /** Index into the full schedule where this program starts (img2img: t_start · order; else 0). */
  startIndex: number;
  /** txt2img: x_0 = initNoiseSigma · z. (img2img uses `addNoise` instead.) */
  initNoiseSigma: number;
  /** How diffusers holds the timesteps ("float32" or "int64"). */
  timestepDtype: "float32" | "int64";
  /** K: how many past x / m each update reads. */
  historyDepth: number;
  evals: SamplerEval[];
  /** Present when compiled for img2img (startIndex > 0 or strength given). */
  addNoise?: AddNoiseSpec;
  /** Present when the step noise is Brownian (A1111's SDE samplers); host-side, not packed. */
  brownian?: BrownianNoiseSpec;
}

/**
 * Number of float64 words in the flat header written by `packProgram` (lib/sampler/pack.ts):
 * [0] layout version, [1] M = evals.length, [2] K = historyDepth, [3] initNoiseSigma,
 * [4] timestep dtype (0 = float32, 1 = int64), [5] steps, [6] startIndex, [7] reserved (0).
 * Then M rows of PACKED_ROW_FIXED_WORDS + 2K words: [t, cIn, c, drawsNoise (0/1), d, a[0..K−1], b[0..K−1]].
 * `scheduler`, `addNoise` and `brownian` are host-side only and not packed.
 */
export const PACKED_HEADER_WORDS = 8;
/** Words of a packed row before a[] and b[]: t, cIn, c, drawsNoise, d. */
export const PACKED_ROW_FIXED_WORDS = 5;
/** Layout version written in word 0 of the flat program (2: rows gained d, the coefficient on u_j). */
export const PACKED_LAYOUT_VERSION = 2;
