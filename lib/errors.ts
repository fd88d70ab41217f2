/**
 * Every error the library throws on purpose, in one module. Each is an `SdTrtError` with a
 * stable `code`, so callers (the CLI, the server, a service) branch on the class or the code,
 * never on the message. One class per condition, whichever backend hit it: a NaN image is a
 * `VaeOverflowError` on the CPU and on TensorRT alike.
 *
 * | class                     | code                       | condition                                            |
 * | ------------------------- | -------------------------- | ---------------------------------------------------- |
 * | InvalidOptionError        | ERR_INVALID_OPTION         | a user option is out of range (names option + limit) |
 * | InvalidArgumentError      | ERR_INVALID_ARGUMENT       | a lower-tier API got arrays of the wrong shape/type  |
 * | ModelFileError            | ERR_MODEL_FILE             | a model/vocabulary/engine file is missing or bad     |
 * | OutputFileError           | ERR_OUTPUT_FILE            | an output file cannot be written                     |
 * | InvalidImageError         | ERR_INVALID_IMAGE          | image bytes are not a valid PNG (text chunks)        |
 * | InvalidProgramError       | ERR_INVALID_PROGRAM        | a sampler program (or its packed form) is malformed  |
 * | OutOfMemoryError          | ERR_OUT_OF_MEMORY          | a run could not allocate; what it took is released   |
 * | AbortError                | ABORT_ERR                  | cancelled through an AbortSignal                     |
 * | DisposedError             | ERR_DISPOSED               | a call on a disposed object                          |
 * | BusyError                 | ERR_BUSY                   | the service queue is full                            |
 * | ServiceClosedError        | ERR_SERVICE_CLOSED         | the service is shutting down                         |
 * | OnnxRuntimeError          | ERR_ONNX_RUNTIME           | ONNX Runtime failed a call (the CPU backend)         |
 * | NativeError               | (the native status)        | a CUDA / TensorRT call failed (stage + status)       |
 * | TensorRtUnavailableError  | ERR_TENSORRT_UNAVAILABLE   | the TensorRT backend cannot run here, and why        |
 * | EngineMismatchError       | ERR_ENGINE_MISMATCH        | engines built for another GPU/TensorRT/model         |
 * | EngineBuildError          | ERR_ENGINE_BUILD           | an engine build failed                               |
 * | UnetOverflowError         | ERR_UNET_NAN               | the UNet produced NaN/Inf in the loop (either backend) |
 * | VaeOverflowError          | ERR_VAE_NAN                | the VAE decoder produced NaN/Inf (either backend)    |
 * | ModelMismatchError        | ERR_MODEL_MISMATCH         | a fleet job asks for a model this worker does not run |
 * | QueueUnavailableError     | ERR_QUEUE_UNAVAILABLE      | the fleet queue cannot take work (no worker, Redis)  |
 * | JobFailedError            | ERR_JOB_FAILED             | a fleet job failed on its workers (reason, attempts) |
 * | InternalError             | ERR_INTERNAL               | a broken invariant inside sd-trt: a bug to report    |
 */

export class SdTrtError extends Error {
  readonly code: string;
  constructor(code: string, message: string, options?: { cause?: unknown }) {
    super(message, options);
    this.name = new.target.name;
    this.code = code;
  }
}

/** An option has a value outside what is allowed. The message names the option and the limit. */
export class InvalidOptionError extends SdTrtError {
  readonly option: string;
  constructor(option: string, message: string) {
    super("ERR_INVALID_OPTION", message);
    this.option = option;
  }
}

/**
 * A lower-tier API (sampler executor, backend jobs, pixel conversions) was handed arrays of the
 * wrong size or type. User-facing options never reach this: they are `InvalidOptionError`s first.
 */
export class InvalidArgumentError extends SdTrtError {
  constructor(message: string) {
    super("ERR_INVALID_ARGUMENT", message);
  }
}

/** A generation ran out of memory; what it allocated has been released. */
export class OutOfMemoryError extends SdTrtError {
  constructor(message: string, options?: { cause?: unknown }) {
    super("ERR_OUT_OF_MEMORY", message, options);
  }
}

/** A model, vocabulary, engine or other input file is missing, unreadable or malformed. */
export class ModelFileError extends SdTrtError {
  readonly file: string;
  constructor(file: string, message: string, options?: { cause?: unknown }) {
    super("ERR_MODEL_FILE", message, options);
    this.file = file;
  }
}

/** An output file cannot be written (missing folder, no permission, disk full, …). */
export class OutputFileError extends SdTrtError {
  readonly file: string;
  constructor(file: string, message: string, options?: { cause?: unknown }) {
    super("ERR_OUTPUT_FILE", message, options);
    this.file = file;
  }
}

/** Image bytes that should be a PNG are not a valid one. */
export class InvalidImageError extends SdTrtError {
  constructor(message: string) {
    super("ERR_INVALID_IMAGE", message);
  }
}

/** A sampler program, or its packed Float64Array form, breaks the contract (sampler/program.ts). */
export class InvalidProgramError extends SdTrtError {
  constructor(message: string) {
    super("ERR_INVALID_PROGRAM", message);
  }
}

/** The operation was cancelled through an AbortSignal. */
export class AbortError extends SdTrtError {
  constructor(message = "The operation was aborted", options?: { cause?: unknown }) {
    super("ABORT_ERR", message, options);
  }
}

/** A call on an object whose `dispose()` already ran. */
export class DisposedError extends SdTrtError {
  constructor(what: string) {
    super("ERR_DISPOSED", `${what} is disposed`);
  }
}

/** The service queue is full: retry later (the server answers 503). */
export class BusyError extends SdTrtError {
  /** Requests waiting when this one was refused. */
  readonly queued: number;
  /** The queue's bound (`maxQueue`). */
  readonly maxQueue: number;
  constructor(queued: number, maxQueue: number, asked = 1) {
    super(
      "ERR_BUSY",
      `the service is busy: ${queued} request(s) are already waiting and the queue holds at most ${maxQueue}` +
        (asked > 1 ? ` (this request needs ${asked} places)` : "") +
        "; retry later",
    );
    this.queued = queued;
    this.maxQueue = maxQueue;
  }
}

/** The service is closing or closed and accepts no new requests. */
export class ServiceClosedError extends SdTrtError {
  constructor() {
    super("ERR_SERVICE_CLOSED", "the service is shutting down and accepts no new requests");
  }
}

/** ONNX Runtime failed a call; the message names the model file and the input shapes. */
export class OnnxRuntimeError extends SdTrtError {
  constructor(message: string, options?: { cause?: unknown }) {
    super("ERR_ONNX_RUNTIME", message, options);
  }
}

/** A native (CUDA / TensorRT) failure, carrying the stage and the status name. */
export class NativeError extends SdTrtError {
  readonly stage: string;
  readonly status?: string;
  constructor(code: string, stage: string, message: string, status?: string) {
    super(code, message);
    this.stage = stage;
    if (status !== undefined) this.status = status;
  }
}

/** TensorRT cannot run (or build) here: the problems found and what to do about each. */
export class TensorRtUnavailableError extends SdTrtError {
  readonly problems: string[];
  readonly fixes: string[];
  constructor(what: string, problems: string[], fixes: string[]) {
    const body = [`${what}: TensorRT is not usable on this machine`, ...problems.map((p) => `  - ${p}`)];
    if (fixes.length > 0) body.push("What to do:", ...fixes.map((f) => `  - ${f}`));
    super("ERR_TENSORRT_UNAVAILABLE", body.join("\n"));
    this.problems = problems;
    this.fixes = fixes;
  }
}

/** One way built engines differ from what this machine or model folder has now. */
export interface EngineDifference {
  /** What differs: "tensorrt", "computeCapability", "gpu", "model:unet", "shapes", … */
  field: string;
  /** What the engines were built with / for. */
  built: string;
  /** What this machine or model folder has now. */
  current: string;
}

/** Engines built for another GPU, TensorRT version or model files; the message has the rebuild command. */
export class EngineMismatchError extends SdTrtError {
  readonly enginesDir: string;
  readonly differences: EngineDifference[];
  readonly rebuildCommand: string;
  constructor(enginesDir: string, differences: EngineDifference[], rebuildCommand: string, lead?: string) {
    const lines = differences.map((d) => `  - ${d.field}: built for ${d.built}; here: ${d.current}`);
    super(
      "ERR_ENGINE_MISMATCH",
      `${lead ?? `the TensorRT engines in ${enginesDir} do not match this machine`}:\n${lines.join("\n")}\n` + `Rebuild them with:\n  ${rebuildCommand}`,
    );
    this.enginesDir = enginesDir;
    this.differences = differences;
    this.rebuildCommand = rebuildCommand;
  }
}

/** An engine build failed (parser, builder or an I/O step); `model` names the graph. */
export class EngineBuildError extends SdTrtError {
  readonly model: string;
  constructor(model: string, message: string, options?: { cause?: unknown }) {
    super("ERR_ENGINE_BUILD", message, options);
    this.model = model;
  }
}

/**
 * The VAE decoder produced NaN or Inf (an fp16 VAE overflowing at this size), on either backend:
 * never a silent black image. `rebuildCommand` is set where rebuilding the VAE engine in fp32 is
 * the fix (TensorRT).
 */
export class VaeOverflowError extends SdTrtError {
  readonly rebuildCommand?: string;
  constructor(message: string, rebuildCommand?: string) {
    super("ERR_VAE_NAN", rebuildCommand === undefined ? message : `${message}. Rebuild the VAE engine in fp32:\n  ${rebuildCommand}`);
    if (rebuildCommand !== undefined) this.rebuildCommand = rebuildCommand;
  }
}

/**
 * The UNet produced NaN or ±Inf during the denoise loop, on either backend: an fp16 UNet that
 * overflowed (typically in the attention scores of a model that needs them in fp32, diffusers'
 * `upcast_attention`, e.g. SD 2.x 768-v), or a guidance scale so large that the latents blow up.
 * Raised after the loop, before the VAE runs, so it is never blamed on the VAE (whose fix,
 * `--fp32-vae`, cannot help here). `evaluation` is the first UNet evaluation (0-based) with a
 * non-finite output, `count` how many latent values were affected there and later.
 */
export class UnetOverflowError extends SdTrtError {
  readonly evaluation?: number;
  readonly count?: number;
  constructor(message: string, details: { evaluation?: number; count?: number; advice?: string } = {}) {
    super("ERR_UNET_NAN", details.advice ? `${message}. ${details.advice}` : message);
    if (details.evaluation !== undefined) this.evaluation = details.evaluation;
    if (details.count !== undefined) this.count = details.count;
  }

  /** Advice for a UnetOverflowError, by backend (the same wording wherever it is raised). */
  static readonly advice = {
    tensorrt:
      "This is the UNet overflowing in float16, not the VAE: rebuilding the VAE with --fp32-vae will not help. " +
      "Models whose attention scores must be computed in fp32 (upcast_attention: true in unet/config.json, e.g. SD 2.x 768-v) need engines built from an fp32 UNet export, " +
      "which `sd-trt build` converts with those scores kept in fp32 (an fp16 export cannot be fixed that way); otherwise try a lower guidance scale",
    cpu:
      "This is the UNet, not the VAE. With an fp16 ONNX export of the UNet, use an fp32 export (the CPU backend runs the graph as exported); " +
      "otherwise try a lower guidance scale",
  } as const;

  /** The message every backend uses ("… N non-finite output values, first at evaluation J of M"; J 1-based). */
  static describe(count: number, evaluation: number, evaluations: number): string {
    return `the UNet produced NaN/Inf: ${count} non-finite output values, first at evaluation ${evaluation + 1} of ${evaluations}`;
  }

  /** Rebuilds the error from a message made by {@link describe} (it crossed a thread or the addon). */
  static fromMessage(message: string, advice?: string): UnetOverflowError {
    const match = / (\d+) non-finite output values, first at evaluation (\d+) of /.exec(message);
    return new UnetOverflowError(message, {
      ...(match ? { count: Number(match[1]), evaluation: Number(match[2]) - 1 } : {}),
      ...(advice !== undefined ? { advice } : {}),
    });
  }
}

/** A fleet job (lib/fleet) names a model other than the one this worker runs. */
export class ModelMismatchError extends SdTrtError {
  constructor(message: string) {
    super("ERR_MODEL_MISMATCH", message);
  }
}

/** The fleet queue cannot take work now: no worker has registered on it, or Redis is unreachable. */
export class QueueUnavailableError extends SdTrtError {
  constructor(message: string) {
    super("ERR_QUEUE_UNAVAILABLE", message);
  }
}

/**
 * A fleet job failed on the workers for a reason that has no class of its own here (an ONNX
 * Runtime or CUDA failure on the worker, retries used up after stalls). `reasonCode` is the
 * worker-side error's code; `attempts` how many times it ran.
 */
export class JobFailedError extends SdTrtError {
  readonly jobId: string;
  readonly reasonCode: string;
  readonly attempts: number;
  constructor(jobId: string, reasonCode: string, message: string, attempts: number) {
    super("ERR_JOB_FAILED", `job ${jobId} failed after ${attempts} attempt(s): ${message}`);
    this.jobId = jobId;
    this.reasonCode = reasonCode;
    this.attempts = attempts;
  }
}

/** A broken invariant inside sd-trt (a bug, not bad input): please report it with the message. */
export class InternalError extends SdTrtError {
  constructor(message: string) {
    super("ERR_INTERNAL", message);
  }
}

/** Throws `signal.reason` (or an AbortError) when the signal is aborted. */
export function throwIfAborted(signal: AbortSignal | undefined): void {
  if (signal?.aborted) {
    const reason = signal.reason;
    if (reason instanceof Error) throw reason;
    throw new AbortError(typeof reason === "string" ? reason : undefined);
  }
}
