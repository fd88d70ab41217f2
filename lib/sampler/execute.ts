/**
 * The CPU executor of sampler programs (program.ts): the same update the CUDA denoiser applies
 * (native/denoiser/program_math.h), element by element in float64, rounded once on store.
 *
 * History lives in two rings of K buffers (x and m); x_{j+1} is written over the slot of
 * x_{j−K+1}, which is safe because each element reads all its history before it is written.
 * Apart from what the model returns, a run allocates only at the start.
 */
import { InvalidArgumentError, InternalError, throwIfAborted } from "../errors.js";
import { checkProgram } from "./check.js";
import type { SamplerProgram } from "./program.js";

/** Latent buffers the executor works on: float32 (pipelines) or float64 (reference runs). */
export type LatentArray = Float32Array | Float64Array;

/** Supplies the standard-normal draw for an evaluation whose `drawsNoise` is true. */
export type NoiseSource = (evalIndex: number) => ArrayLike<number>;

/** A guided model's two outputs: m_j and the unconditional u_j it was guided from. */
export interface GuidedOutput {
  guided: ArrayLike<number>;
  uncond: ArrayLike<number>;
}

/**
 * The UNet (already guided): gets cIn · x_j and the timestep as diffusers passes it, and returns
 * m_j, or m_j with u_j (programs whose evaluations carry `d`; without u_j, u_j = m_j).
 */
export type ProgramModel<T extends LatentArray> = (input: T, t: number, evalIndex: number) => ArrayLike<number> | GuidedOutput;
export type AsyncProgramModel<T extends LatentArray> = (
  input: T,
  t: number,
  evalIndex: number,
) => ArrayLike<number> | GuidedOutput | Promise<ArrayLike<number> | GuidedOutput>;

/** Called after evaluation `evalIndex` with x_{evalIndex+1}, a view valid only during the call. */
export type StepObserver<T extends LatentArray> = (evalIndex: number, latents: T) => void;

export interface RunProgramOptions<T extends LatentArray> {
  /** See StepObserver. */
  onStep?: StepObserver<T>;
}

export interface RunProgramAsyncOptions<T extends LatentArray> extends RunProgramOptions<T> {
  /** Required when any evaluation draws noise (Euler a, DDPM, DDIM with eta > 0). */
  noise?: NoiseSource;
  /** Checked before the first and after every model evaluation. */
  signal?: AbortSignal;
}

function allocate<T extends LatentArray>(like: T, length: number): T {
  return new (like.constructor as new (n: number) => T)(length);
}

/**
 * One program run, evaluation by evaluation. `runProgram` / `runProgramAsync` drive it; tests and
 * host backends that need to look between evaluations can drive it directly.
 */
export class ProgramExecution<T extends LatentArray> {
  readonly #program: SamplerProgram;
  readonly #length: number;
  readonly #xs: T[];
  readonly #ms: T[];
  readonly #input: T;
  /**
   * Per evaluation: the history buffers its update reads (non-zero coefficients only), x terms
   * then m terms, and their coefficients.
   */
  readonly #terms: { values: T[]; coefs: number[] }[];
  #j = 0;

  /** @param latents x_0 (txt2img: initNoiseSigma · z; img2img: the add_noise result). Not modified. */
  constructor(program: SamplerProgram, latents: T) {
    checkProgram(program);
    if (!(latents instanceof Float32Array || latents instanceof Float64Array) || latents.length === 0) {
      throw new InvalidArgumentError("latents must be a non-empty Float32Array or Float64Array");
    }
    this.#program = program;
    this.#length = latents.length;
    const K = program.historyDepth;
    this.#xs = Array.from({ length: K }, () => allocate(latents, latents.length));
    this.#ms = Array.from({ length: K }, () => allocate(latents, latents.length));
    this.#input = allocate(latents, latents.length);
    this.#xs[0]!.set(latents);
    this.#terms = program.evals.map((e, j) => {
      const xs = { values: [] as T[], coefs: [] as number[] };
      const ms = { values: [] as T[], coefs: [] as number[] };
      // History before x_0 / m_0 is 0: evaluation j reads at most j + 1 entries.
      for (let k = 0; k < Math.min(K, j + 1); k++) {
        const slot = (j - k) % K;
        if (e.a[k] !== 0) {
          xs.values.push(this.#xs[slot]!);
          xs.coefs.push(e.a[k]!);
        }
        if (e.b[k] !== 0) {
          ms.values.push(this.#ms[slot]!);
          ms.coefs.push(e.b[k]!);
        }
      }
      return { values: [...xs.values, ...ms.values], coefs: [...xs.coefs, ...ms.coefs] };
    });
  }

  /** Index j of the next evaluation (= number of evaluations done). */
  get evalIndex(): number {
    return this.#j;
  }

  get done(): boolean {
    return this.#j >= this.#program.evals.length;
  }

  /** The timestep of the next evaluation. */
  get timestep(): number {
    return this.#evalOrThrow().t;
  }

  /** x_j, the current latents (a view, valid until the next `advance`). */
  get latents(): T {
    return this.#xs[this.#j % this.#program.historyDepth]!;
  }

  /** cIn_j · x_j, the UNet input, in a buffer reused by every evaluation. */
  modelInput(): T {
    const { cIn } = this.#evalOrThrow();
    const x = this.latents;
    const input = this.#input;
    for (let i = 0; i < input.length; i++) input[i] = cIn * x[i]!;
    return input;
  }

  /**
   * Where evaluation j keeps its model output m_j. A caller that computes m_j itself (classifier-
   * free guidance) may write it here and pass this buffer to `advance`, which then copies nothing.
   * Valid until that `advance`.
   */
  modelOutputBuffer(): T {
    this.#evalOrThrow();
    return this.#ms[this.#j % this.#program.historyDepth]!;
  }

  /**
   * Applies evaluation j's update with its model output m_j (and noise n_j when it draws).
   * `uncond` is u_j, the unconditional output m_j was guided from; omitted (no guidance), u_j = m_j.
   * Only evaluations with a coefficient `d` read it.
   */
  advance(modelOutput: ArrayLike<number>, noise?: ArrayLike<number>, uncond?: ArrayLike<number>): void {
    const e = this.#evalOrThrow();
    const j = this.#j;
    const K = this.#program.historyDepth;
    if (modelOutput.length !== this.#length) {
      throw new InvalidArgumentError(`model output for evaluation ${j} has ${modelOutput.length} values, expected ${this.#length}`);
    }
    if (e.drawsNoise && (noise === undefined || noise.length !== this.#length)) {
      throw new InvalidArgumentError(
        noise === undefined
          ? `evaluation ${j} of the ${this.#program.scheduler} program draws noise, but no noise was given`
          : `noise for evaluation ${j} has ${noise.length} values, expected ${this.#length}`,
      );
    }
    if (uncond !== undefined && uncond.length !== this.#length) {
      throw new InvalidArgumentError(`unconditional output for evaluation ${j} has ${uncond.length} values, expected ${this.#length}`);
    }
    const slot = this.#ms[j % K]!;
    if (modelOutput !== slot) slot.set(modelOutput);
    const terms = this.#terms[j]!;
    let values: ArrayLike<number>[] = terms.values;
    let coefs = terms.coefs;
    // The same order as program_math.h's updateElement: x terms, m terms, d·u_j, then the noise.
    if (e.d !== undefined && e.d !== 0) {
      values = [...values, uncond ?? slot];
      coefs = [...coefs, e.d];
    }
    const out = this.#xs[(j + 1) % K]!;
    // x_{j+1} overwrites the slot of x_{j−K+1}; updateInto reads every term of an element first.
    if (e.drawsNoise && e.c !== 0) updateInto(out, [...coefs, e.c], [...values, noise!]);
    else updateInto(out, coefs, values);
    this.#j++;
  }

  /** A copy of the current latents (x_M once done). */
  result(): T {
    return this.latents.slice() as T;
  }

  #evalOrThrow() {
    const e = this.#program.evals[this.#j];
    if (e === undefined) throw new InternalError("the sampler program has no evaluations left");
    return e;
  }
}

/**
 * out[i] = Σ_k coefs[k] · values[k][i]: the same float64 sum as program_math.h's updateElement —
 * from 0, the x terms, the m terms, the u term, then the noise, in that order — rounded once when stored.
 * Every term of an element is read before the element is written, so `out` may be one of the
 * `values`. One pass over memory (the arrays are larger than the caches at SD sizes, so a pass
 * per term would cost more than the arithmetic); the common term counts are unrolled, because a
 * loop over the terms inside the loop over elements is several times slower in V8.
 */
function updateInto(out: LatentArray, coefs: number[], values: ArrayLike<number>[]): void {
  const n = out.length;
  const [c0, c1, c2, c3, c4, c5] = coefs as [number, number, number, number, number, number];
  const [v0, v1, v2, v3, v4, v5] = values as [ArrayLike<number>, ArrayLike<number>, ArrayLike<number>, ArrayLike<number>, ArrayLike<number>, ArrayLike<number>];
  switch (values.length) {
    case 0:
      out.fill(0);
      return;
    case 1:
      for (let i = 0; i < n; i++) out[i] = 0 + c0 * v0[i]!;
      return;
    case 2:
      for (let i = 0; i < n; i++) out[i] = 0 + c0 * v0[i]! + c1 * v1[i]!;
      return;
    case 3:
      for (let i = 0; i < n; i++) out[i] = 0 + c0 * v0[i]! + c1 * v1[i]! + c2 * v2[i]!;
      return;
    case 4:
      for (let i = 0; i < n; i++) out[i] = 0 + c0 * v0[i]! + c1 * v1[i]! + c2 * v2[i]! + c3 * v3[i]!;
      return;
    case 5:
      for (let i = 0; i < n; i++) out[i] = 0 + c0 * v0[i]! + c1 * v1[i]! + c2 * v2[i]! + c3 * v3[i]! + c4 * v4[i]!;
      return;
    case 6:
      for (let i = 0; i < n; i++) out[i] = 0 + c0 * v0[i]! + c1 * v1[i]! + c2 * v2[i]! + c3 * v3[i]! + c4 * v4[i]! + c5 * v5[i]!;
      return;
    default:
      for (let i = 0; i < n; i++) {
        let acc = 0;
        for (let k = 0; k < values.length; k++) acc += coefs[k]! * values[k]![i]!;
        out[i] = acc;
      }
  }
}

/** A model's return value as (m_j, u_j); u_j undefined when the model gave only m_j. */
function splitOutput(output: ArrayLike<number> | GuidedOutput): [ArrayLike<number>, ArrayLike<number> | undefined] {
  return "guided" in output ? [output.guided, output.uncond] : [output, undefined];
}

function noiseFor(program: SamplerProgram, source: NoiseSource | undefined, j: number): ArrayLike<number> | undefined {
  if (!program.evals[j]!.drawsNoise) return undefined;
  if (source === undefined) {
    throw new InvalidArgumentError(
      `the ${program.scheduler} program draws noise at evaluation ${j}; pass a noise source`,
    );
  }
  return source(j);
}

/**
 * Runs a sampler program on the CPU: x_0 = `latents` → x_M (a new array; inputs are untouched).
 * @param model the guided UNet (m_j, or { guided: m_j, uncond: u_j }); its input buffer is reused, copy it to keep it.
 * @param noise the draw for each evaluation with `drawsNoise` (required if there is one).
 */
export function runProgram<T extends LatentArray>(
  program: SamplerProgram,
  latents: T,
  model: ProgramModel<T>,
  noise?: NoiseSource,
  options: RunProgramOptions<T> = {},
): T {
  const run = new ProgramExecution(program, latents);
  while (!run.done) {
    const j = run.evalIndex;
    const [guided, uncond] = splitOutput(model(run.modelInput(), run.timestep, j));
    run.advance(guided, noiseFor(program, noise, j), uncond);
    options.onStep?.(j, run.latents);
  }
  return run.result();
}

/**
 * `runProgram` for an asynchronous model (pipelines). Checks `signal` before the first and after
 * every evaluation and rejects with its reason (an AbortError when it has none).
 */
export async function runProgramAsync<T extends LatentArray>(
  program: SamplerProgram,
  latents: T,
  model: AsyncProgramModel<T>,
  options: RunProgramAsyncOptions<T> = {},
): Promise<T> {
  const { signal, noise, onStep } = options;
  throwIfAborted(signal);
  const run = new ProgramExecution(program, latents);
  while (!run.done) {
    const j = run.evalIndex;
    const [guided, uncond] = splitOutput(await model(run.modelInput(), run.timestep, j));
    throwIfAborted(signal);
    run.advance(guided, noiseFor(program, noise, j), uncond);
    onStep?.(j, run.latents);
  }
  return run.result();
}
