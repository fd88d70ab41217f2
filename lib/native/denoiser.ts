/**
 * `Denoiser`: the TypeScript handle on the native denoise loop (native/denoiser). It runs a packed
 * sampler program on the GPU — UNet, classifier-free guidance and the scheduler update for every
 * evaluation, under CUDA graphs — and adds what belongs in TS: AbortSignal, one run at a time
 * (later calls wait their turn instead of failing with ERR_BUSY), typed errors with the caller's
 * stack, and an idempotent `dispose()` / `Symbol.asyncDispose`.
 */
import { AbortError, DisposedError, InvalidOptionError, throwIfAborted } from "../errors.js";
import { Lifecycle } from "../lifecycle.js";
import { booleanValue, integerInRange, invalidOption } from "../validate.js";
import { callNative, requireNativeBinding, toTypedError } from "./load.js";
import type {
  NativeDenoiseResult,
  NativeDenoiser,
  NativeDenoiserOptions,
  NativeDeviceTensor,
  NativeLatentsOutput,
  NativeSplitCalls,
  NativeUnetEngine,
} from "./types.js";

export interface DenoiserOptions {
  /** `"analytic"` (the built-in stand-in network of the GPU self-test) or a TensorRT UNet engine. */
  unet: "analytic" | NativeUnetEngine;
  /** The stand-in's input/output dtype. Defaults to `"float32"`. */
  analyticDtype?: "float32" | "float16";
  /** CUDA device index. Defaults to 0. */
  device?: number;
}

/** `Output` is the type of `output`: `"host"` (the default, also when the option is left out) or
 *  `"device"`; it decides the type of the result's `latents` (LatentsFor). */
export interface DenoiseRunOptions<Output extends NativeLatentsOutput = "host"> {
  /** The flat program from `packProgram()` (lib/sampler). */
  program: Float64Array;
  /** x_0 [batch, 4, latentHeight, latentWidth]. Do not modify it until the promise settles. */
  latents: Float32Array;
  /** The program's noise draws in order, one [batch, 4, h, w] array per draw (or all of them
   *  concatenated in one array). */
  noise: Float32Array[] | Float32Array;
  /** Images in the batch, 1 to 1024. */
  batch: number;
  /** Latent size (pixels / 8), 1 to 16384. */
  latentHeight: number;
  latentWidth: number;
  /** Guidance scale per image; omit (or null) to run without classifier-free guidance. */
  guidance?: Float64Array | null;
  /** Text embeddings [unetBatch, sequenceLength, hidden], uncond rows first with guidance: host
   *  values, one device tensor, or a list of device tensors [rows, sequenceLength, hidden] joined in
   *  order on the device (e.g. `[uncond, cond]` from encodeText; no concatEmbeddings needed). Needed
   *  by TensorRT UNets; the analytic stand-in ignores them. */
  embeddings?: Float32Array | Uint16Array | NativeDeviceTensor | NativeDeviceTensor[];
  /** SDXL UNets (created with `textEmbeds`/`timeIds` names): the pooled text embedding [unetBatch, P]
   *  and the time ids [unetBatch, 6], float32, uncond rows first with guidance. Uploaded once per
   *  run and bound as UNet inputs in the captured loop. */
  textEmbeds?: Float32Array;
  timeIds?: Float32Array;
  /** Prompt editing: `embeddings` is then a bank of device tensors (every conditioning once) and
   *  entry j · unetBatch + i names the bank row UNet row i reads at evaluation j (NativeDenoiseOptions). */
  embeddingRows?: Int32Array;
  /** The embeddings' text length, a multiple of 77 up to 77 · 64 (A1111's long prompts: 77 · chunks). Defaults to 77. */
  sequenceLength?: number;
  /** Prompt and negative prompt of different lengths (A1111 without pad_cond_uncond), with guidance:
   *  uncond runs as its own UNet call at `uncondSequenceLength`, cond at `sequenceLength`; `callRows`
   *  is the batch, or twice it when the engine takes only the guidance batch. `embeddings` are then
   *  the uncond rows followed by the cond rows, in separate tensors (NativeDenoiseOptions). */
  splitCalls?: NativeSplitCalls;
  /** Where x_M goes: `"host"` (default) → `latents` is a new Float32Array; `"device"` → a new
   *  float32 NativeDeviceTensor [batch, 4, latentHeight, latentWidth] that stays on the GPU (for
   *  `decodeImage({ latents, scalingFactor })`). The tensor is the caller's: dispose() it. */
  output?: Output;
  /** Capture the loop step in a CUDA graph and replay it. Defaults to true. */
  useGraphs?: boolean;
  /** Evaluations queued ahead on the GPU, 0 (no limit) to 64; cancellation lands within this many.
   *  Defaults to 3. */
  queueDepth?: number;
  signal?: AbortSignal;
  /** Called after each model evaluation (evalIndex 0-based, total = evaluations). */
  onStep?: (evalIndex: number, total: number) => void;
}

/** What `latents` is for an `output` value: Float32Array for "host", NativeDeviceTensor for "device". */
export type LatentsFor<Output extends NativeLatentsOutput> = Output extends "device" ? NativeDeviceTensor : Float32Array;

/** `latents` is a Float32Array, or a NativeDeviceTensor for `output: "device"`. */
export type DenoiseRunResult<Latents extends Float32Array | NativeDeviceTensor = Float32Array> = NativeDenoiseResult<Latents>;

interface ValidatedRun {
  batch: number;
  height: number;
  width: number;
  useGraphs: boolean;
  queueDepth: number;
  output: NativeLatentsOutput;
  sequenceLength: number;
  splitCalls?: NativeSplitCalls;
  noise: Float32Array;
}

/** `splitCalls`: the uncond call's text length (a multiple of 77) and each call's rows (batch or 2 · batch), with guidance only. */
function validateSplitCalls(split: NativeSplitCalls, batch: number, guidance: boolean): NativeSplitCalls {
  if (typeof split !== "object" || split === null) throw invalidOption("splitCalls", "an object { uncondSequenceLength, callRows }", split);
  if (!guidance) throw new InvalidOptionError("splitCalls", "splitCalls needs guidance: only the uncond rows of classifier-free guidance run as their own UNet call");
  const uncondSequenceLength = integerInRange("splitCalls.uncondSequenceLength", split.uncondSequenceLength, 77, 77 * 64);
  if (uncondSequenceLength % 77 !== 0) throw invalidOption("splitCalls.uncondSequenceLength", "a multiple of 77 (chunks of 77 tokens)", uncondSequenceLength);
  if (split.callRows !== batch && split.callRows !== 2 * batch) throw invalidOption("splitCalls.callRows", `the batch (${batch}) or twice it (${2 * batch})`, split.callRows);
  return { uncondSequenceLength, callRows: split.callRows };
}

function concatNoise(noise: Float32Array[] | Float32Array): Float32Array {
  if (noise instanceof Float32Array) return noise;
  if (!Array.isArray(noise)) throw invalidOption("noise", "an array of Float32Array draws or one Float32Array", noise);
  const total = noise.reduce((sum, draw, i) => {
    if (!(draw instanceof Float32Array)) throw invalidOption(`noise[${i}]`, "a Float32Array", draw);
    return sum + draw.length;
  }, 0);
  const flat = new Float32Array(total);
  let offset = 0;
  for (const draw of noise) {
    flat.set(draw, offset);
    offset += draw.length;
  }
  return flat;
}

export class Denoiser {
  readonly #native: NativeDenoiser;
  /** Runs go one at a time; dispose cancels the running one, refuses the queued ones, then frees the GPU resources. */
  readonly #life = new Lifecycle("Denoiser");
  #pending = 0;

  private constructor(native: NativeDenoiser) {
    this.#native = native;
  }

  /**
   * Creates a denoiser on a GPU. Throws NativeError ERR_NATIVE_UNAVAILABLE (no addon), ERR_NO_CUDA
   * (built without CUDA) or ERR_NO_GPU (no usable GPU), each with what to do.
   */
  static async create(options: DenoiserOptions): Promise<Denoiser> {
    if (typeof options !== "object" || options === null) throw invalidOption("options", "an object", options);
    if (options.unet !== "analytic" && (typeof options.unet !== "object" || options.unet === null)) {
      throw invalidOption("unet", "\"analytic\" or a TensorRT UNet engine", options.unet);
    }
    const nativeOptions: NativeDenoiserOptions = { unet: options.unet };
    if (options.analyticDtype !== undefined) {
      if (options.analyticDtype !== "float32" && options.analyticDtype !== "float16") {
        throw invalidOption("analyticDtype", "\"float32\" or \"float16\"", options.analyticDtype);
      }
      nativeOptions.analyticDtype = options.analyticDtype;
    }
    if (options.device !== undefined) nativeOptions.device = integerInRange("device", options.device, 0, 1024);
    const binding = requireNativeBinding();
    return new Denoiser(callNative(() => new binding.Denoiser(nativeOptions)));
  }

  /**
   * @internal Wraps a native denoiser that already exists. The addon's is the only real one; tests
   * of this class's own logic (queueing, abort, dispose) hand it a scripted object instead, because
   * the real one cannot be constructed on a machine without a GPU.
   */
  static fromNative(native: NativeDenoiser): Denoiser {
    return new Denoiser(native);
  }

  get disposed(): boolean {
    return this.#life.disposed;
  }

  /** Runs waiting behind this one (plus the one running). */
  get queueLength(): number {
    return this.#pending;
  }

  /**
   * Runs the whole program on the GPU and returns x_M: a new Float32Array, or with
   * `output: "device"` a new device tensor the caller disposes. Runs of one Denoiser go one at a time.
   */
  run<Output extends NativeLatentsOutput = "host">(options: DenoiseRunOptions<Output>): Promise<DenoiseRunResult<LatentsFor<Output>>> {
    let request: ValidatedRun;
    try {
      this.#life.assertLive();
      request = this.#validate(options);
    } catch (error) {
      return Promise.reject(error); // a promise-returning method never throws synchronously
    }
    // Captured now: by the time the run starts, the caller's frames are gone.
    const callerStack = new Error();
    this.#pending++;
    const result = this.#life.exclusive(() => this.#runNow(request, options, callerStack)).finally(() => this.#pending--);
    // The native result's latents are what request.output asked for (checked by #validate).
    return result as Promise<DenoiseRunResult<LatentsFor<Output>>>;
  }

  #validate(options: DenoiseRunOptions<NativeLatentsOutput>): ValidatedRun {
    if (typeof options !== "object" || options === null) throw invalidOption("options", "an object", options);
    if (!(options.program instanceof Float64Array)) throw invalidOption("program", "a Float64Array from packProgram()", options.program);
    if (!(options.latents instanceof Float32Array)) throw invalidOption("latents", "a Float32Array", options.latents);
    const batch = integerInRange("batch", options.batch, 1, 1024);
    const height = integerInRange("latentHeight", options.latentHeight, 1, 16384);
    const width = integerInRange("latentWidth", options.latentWidth, 1, 16384);
    if (options.latents.length !== batch * 4 * height * width) {
      throw invalidOption("latents", `${batch * 4 * height * width} values (batch·4·latentHeight·latentWidth)`, options.latents);
    }
    if (options.guidance != null) {
      if (!(options.guidance instanceof Float64Array) || options.guidance.length !== batch) {
        throw invalidOption("guidance", `a Float64Array of ${batch} scales (one per image)`, options.guidance);
      }
    }
    const useGraphs = options.useGraphs === undefined ? true : booleanValue("useGraphs", options.useGraphs);
    const queueDepth = options.queueDepth === undefined ? 3 : integerInRange("queueDepth", options.queueDepth, 0, 64);
    if (options.onStep !== undefined && typeof options.onStep !== "function") throw invalidOption("onStep", "a function", options.onStep);
    const output = options.output ?? "host";
    if (output !== "host" && output !== "device") throw invalidOption("output", "\"host\" or \"device\"", options.output);
    const sequenceLength = options.sequenceLength === undefined ? 77 : integerInRange("sequenceLength", options.sequenceLength, 77, 77 * 64);
    if (sequenceLength % 77 !== 0) throw invalidOption("sequenceLength", "a multiple of 77 (chunks of 77 tokens)", sequenceLength);
    const splitCalls = options.splitCalls === undefined ? undefined : validateSplitCalls(options.splitCalls, batch, options.guidance != null);
    return { batch, height, width, useGraphs, queueDepth, output, sequenceLength, ...(splitCalls ? { splitCalls } : {}), noise: concatNoise(options.noise) };
  }

  async #runNow(request: ValidatedRun, options: DenoiseRunOptions<NativeLatentsOutput>, callerStack: Error): Promise<DenoiseRunResult<Float32Array | NativeDeviceTensor>> {
    // A run queued behind dispose() is refused rather than started.
    if (this.#life.disposed) throw new DisposedError("Denoiser");
    const native = this.#native;
    const { signal, onStep } = options;
    throwIfAborted(signal);
    const onAbort = () => native.cancel();
    signal?.addEventListener("abort", onAbort, { once: true });
    try {
      return await native.run({
        program: options.program,
        latents: options.latents,
        noise: request.noise,
        batch: request.batch,
        height: request.height,
        width: request.width,
        guidance: options.guidance ?? null,
        ...(options.embeddings !== undefined ? { embeddings: options.embeddings } : {}),
        ...(options.textEmbeds !== undefined ? { textEmbeds: options.textEmbeds } : {}),
        ...(options.timeIds !== undefined ? { timeIds: options.timeIds } : {}),
        ...(options.embeddingRows !== undefined ? { embeddingRows: options.embeddingRows } : {}),
        sequenceLength: request.sequenceLength,
        ...(request.splitCalls ? { splitCalls: request.splitCalls } : {}),
        useGraphs: request.useGraphs,
        queueDepth: request.queueDepth,
        ...(request.output === "device" ? { output: "device" as const } : {}),
        ...(onStep ? { onProgress: (completed: number, total: number) => onStep(completed - 1, total) } : {}),
      });
    } catch (nativeError) {
      const error = toTypedError(nativeError, callerStack);
      // The native loop stopped because of our signal: surface the signal's reason (node-llama-cpp).
      if (error instanceof AbortError && signal?.aborted) throwIfAborted(signal);
      throw error;
    } finally {
      signal?.removeEventListener("abort", onAbort);
    }
  }

  /** Cancels a running loop, waits for it to stop, then frees the GPU resources. Idempotent. */
  dispose(): Promise<void> {
    if (!this.#life.disposed) this.#native.cancel();
    return this.#life.dispose(() => this.#native.dispose());
  }

  async [Symbol.asyncDispose](): Promise<void> {
    await this.dispose();
  }
}
