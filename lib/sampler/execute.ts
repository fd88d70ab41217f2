/**
 * The CPU executor of sampler programs (program.ts): the same update the CUDA denoiser applies
 * (native/denoiser/program_math.h), element by element in float64, rounded once on store.
 *
 * History lives in two rings of K buffers (x and m); x_{j+1} is written over the slot of
 * x_{j−K+1}, which is safe because each element reads all its history before it is written.
 * Apart from what the model returns, a run allocates only at the start.
 */
import { SdTrtError, throwIfAborted } from "../errors.js";
import { checkProgram } from "./check.js";
import type { SamplerProgram } from "./program.js";

/** Latent buffers the executor works on: float32 (pipelines) or float64 (reference runs). */
export type LatentArray = Float32Array | Float64Array;

/** Supplies the standard-normal draw for an evaluation whose `drawsNoise` is true. */
export type NoiseSource = (evalIndex: number) => ArrayLike<number>;

/** The UNet (already guided): gets cIn · x_j and the timestep as diffusers passes it. */
export type ProgramModel<T extends LatentArray> = (input: T, t: number, evalIndex: number) => ArrayLike<number>;
export type AsyncProgramModel<T extends LatentArray> = (
  input: T,
  t: number,
  evalIndex: number,
) => ArrayLike<number> | Promise<ArrayLike<number>>;

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
  /** Per evaluation: the history buffers it reads (non-zero coefficients only) and their coefficients. */
  readonly #terms: { xs: T[]; xa: number[]; ms: T[]; mb: number[] }[];
  #j = 0;

  /** @param latents x_0 (txt2img: initNoiseSigma · z; img2img: the add_noise result). Not modified. */
  constructor(program: SamplerProgram, latents: T) {
    checkProgram(program);
    if (!(latents instanceof Float32Array || latents instanceof Float64Array) || latents.length === 0) {
      throw new SdTrtError("ERR_INVALID_ARGUMENT", "latents must be a non-empty Float32Array or Float64Array");
    }
    this.#program = program;
    this.#length = latents.length;
    const K = program.historyDepth;
    this.#xs = Array.from({ length: K }, () => allocate(latents, latents.length));
    this.#ms = Array.from({ length: K }, () => allocate(latents, latents.length));
    this.#input = allocate(latents, latents.length);
    this.#xs[0]!.set(latents);
    this.#terms = program.evals.map((e, j) => {
      const terms = { xs: [] as T[], xa: [] as number[], ms: [] as T[], mb: [] as number[] };
      // History before x_0 / m_0 is 0: evaluation j reads at most j + 1 entries.
      for (let k = 0; k < Math.min(K, j + 1); k++) {
        const slot = (j - k) % K;
        if (e.a[k] !== 0) {
          terms.xs.push(this.#xs[slot]!);
          terms.xa.push(e.a[k]!);
        }
        if (e.b[k] !== 0) {
          terms.ms.push(this.#ms[slot]!);
          terms.mb.push(e.b[k]!);
        }
      }
      return terms;
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

  /** Applies evaluation j's update with its model output m_j (and noise n_j when it draws). */
  advance(modelOutput: ArrayLike<number>, noise?: ArrayLike<number>): void {
    const e = this.#evalOrThrow();
    const j = this.#j;
    const K = this.#program.historyDepth;
    if (modelOutput.length !== this.#length) {
      throw new SdTrtError("ERR_INVALID_ARGUMENT", `model output for evaluation ${j} has ${modelOutput.length} values, expected ${this.#length}`);
    }
    if (e.drawsNoise && (noise === undefined || noise.length !== this.#length)) {
      throw new SdTrtError(
        "ERR_INVALID_ARGUMENT",
        noise === undefined
          ? `evaluation ${j} of the ${this.#program.scheduler} program draws noise, but no noise was given`
          : `noise for evaluation ${j} has ${noise.length} values, expected ${this.#length}`,
      );
    }
    this.#ms[j % K]!.set(modelOutput);

    const { xs, xa, ms, mb } = this.#terms[j]!;
    const out = this.#xs[(j + 1) % K]!;
    const c = e.drawsNoise ? e.c : 0;
    for (let i = 0; i < this.#length; i++) {
      // Same order as program_math.h's updateElement: x terms, m terms, then noise.
      let acc = 0;
      for (let k = 0; k < xs.length; k++) acc += xa[k]! * xs[k]![i]!;
      for (let k = 0; k < ms.length; k++) acc += mb[k]! * ms[k]![i]!;
      if (c !== 0) acc += c * noise![i]!;
      out[i] = acc;
    }
    this.#j++;
  }

  /** A copy of the current latents (x_M once done). */
  result(): T {
    return this.latents.slice() as T;
  }

  #evalOrThrow() {
    const e = this.#program.evals[this.#j];
    if (e === undefined) throw new SdTrtError("ERR_INVALID_STATE", "the sampler program has no evaluations left");
    return e;
  }
}

function noiseFor(program: SamplerProgram, source: NoiseSource | undefined, j: number): ArrayLike<number> | undefined {
  if (!program.evals[j]!.drawsNoise) return undefined;
  if (source === undefined) {
    throw new SdTrtError(
      "ERR_INVALID_ARGUMENT",
      `the ${program.scheduler} program draws noise at evaluation ${j}; pass a noise source`,
    );
  }
  return source(j);
}

/**
 * Runs a sampler program on the CPU: x_0 = `latents` → x_M (a new array; inputs are untouched).
 * @param model the guided UNet; its input buffer is reused, copy it to keep it.
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
    const output = model(run.modelInput(), run.timestep, j);
    run.advance(output, noiseFor(program, noise, j));
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
    const output = await model(run.modelInput(), run.timestep, j);
    throwIfAborted(signal);
    run.advance(output, noiseFor(program, noise, j));
    onStep?.(j, run.latents);
  }
  return run.result();
}
