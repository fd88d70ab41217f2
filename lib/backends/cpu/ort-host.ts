/**
 * ONNX Runtime sessions on a worker thread.
 *
 * onnxruntime-node's `session.run()` returns a Promise, but the inference itself runs
 * synchronously on the calling thread (`setImmediate(() => resolve(binding.run(...)))`), so on
 * the main thread a UNet call blocks the event loop for its whole duration — seconds for SD 1.5
 * on a CPU. Here every session lives on one worker thread owned by the backend (`ort-worker.ts`);
 * the main thread only posts tensors and awaits replies, so timers, I/O and progress output keep
 * running during each call.
 *
 * The whole denoise loop runs on the worker too (`denoise`): the main thread sends x_0, the noise
 * draws and the embeddings once and gets x_M back, with progress posted as it goes. A per-step
 * round trip between the threads would cost more than a small UNet evaluation. `generate` goes
 * further for txt2img: token ids in, images out, one message each way for the text encoder, the
 * loop and the decoder (each wake-up of an idle thread costs about 0.1 ms).
 *
 * Calls are answered in order (the worker runs one at a time), and each reply carries the time
 * spent inside `session.run`, which the backend reports so the pipeline's overhead can be measured.
 */
import { existsSync } from "node:fs";
import { fileURLToPath } from "node:url";
import { Worker } from "node:worker_threads";
import { ModelFileError, DisposedError, OnnxRuntimeError, OutOfMemoryError, UnetOverflowError, VaeOverflowError, type SdTrtError } from "../../errors.js";
import type { GraphSignature } from "../../model/graph-io.js";
import type { StepNoise } from "../../sampler/step-noise.js";
import { TOKENS, type CpuDenoiseJob } from "./denoise-loop.js";
import type {
  DecodeValue,
  DenoiseValue,
  EncodeJob,
  EncodeValue,
  GenerateJob,
  GenerateStage,
  GenerateValue,
  HostTensor,
  LoadValue,
  NoiseMessage,
  ProgressReply,
  RunValue,
  StepReport,
  WorkerReply,
  WorkerRequest,
} from "./ort-protocol.js";

export type { GenerateJob, GenerateStage, GenerateValue, HostTensor, OrtElementType, PromptRows } from "./ort-protocol.js";

export interface SessionOptions {
  /** Threads ONNX Runtime may use inside one operator. Defaults to ONNX Runtime's choice (the physical cores). */
  intraOpThreads?: number;
}

export interface LoadedSession {
  handle: number;
  signature: GraphSignature;
}

export interface RunResult {
  outputs: Record<string, HostTensor>;
  /** Milliseconds spent inside ONNX Runtime's `run` on the worker. */
  ms: number;
}

export interface HostDenoiseOptions {
  /** Stops the loop between evaluations (the worker polls a shared flag). */
  signal?: AbortSignal;
  /** After each evaluation (0-based), posted by the worker without waiting; not called once `signal` has aborted. */
  onStep?: (evalIndex: number) => void;
  /** With each step: x_{evalIndex+1}, a copy the callee may keep. Asks the worker to copy every step's latents. */
  onLatents?: (evalIndex: number, latents: Float32Array) => void;
}

export interface HostGenerateOptions extends HostDenoiseOptions {
  /** When the prompts are encoded (posted by the worker without waiting); not called once `signal` has aborted. */
  onTextEncoded?: () => void;
}

/** A `generate`'s outcome, with the main thread's time drawing its step noise (while the worker ran). */
export type HostGenerateResult = GenerateValue & { stepNoiseMs: number };

/** A denoise's outcome: x_M (null when `signal` stopped it) and the UNet calls it made. */
export type HostDenoiseResult = DenoiseValue;

export interface DecodeRequest {
  latentName: string;
  imageName: string;
  /** Latents [B, 4, h, w], already divided by the scaling factor. */
  latents: HostTensor;
}

/** A request before `#call` numbers it (Omit distributed over the union). */
type WithoutId<T> = T extends unknown ? Omit<T, "id"> : never;
type Request = WithoutId<WorkerRequest>;

interface Pending {
  resolve: (value: unknown) => void;
  reject: (error: Error) => void;
  /** Turns the worker's error text (and code and failing model, when it sent them) into a typed error with the caller's stack. */
  fail: (message: string, code?: string, model?: GenerateStage) => Error;
  onProgress?: (reply: ProgressReply) => void;
}

let workerFile: URL | undefined;
/**
 * The compiled worker beside this module, or — when this module runs from the TypeScript sources
 * (ts-jest), where a worker cannot load .ts — the compiled copy in dist/, which the test setup
 * rebuilds whenever lib/ is newer.
 */
function workerUrl(): URL {
  if (workerFile) return workerFile;
  const beside = new URL("./ort-worker.js", import.meta.url);
  const built = new URL("../../../dist/backends/cpu/ort-worker.js", import.meta.url);
  for (const url of [beside, built]) {
    if (existsSync(url)) {
      workerFile = url;
      return url;
    }
  }
  throw new OnnxRuntimeError(`the ONNX Runtime worker ${fileURLToPath(beside)} is missing (build with: npm run build:ts)`);
}

/** Every host whose worker is still running, for `disposeAllOrtHosts`. */
const liveHosts = new Set<OrtHost>();

/**
 * Disposes every OrtHost in this process, each once its worker is outside ONNX Runtime (see
 * `OrtHost.dispose`). Call it before `process.exit` while a generation may be running: exiting
 * terminates the worker threads, and a worker terminated inside onnxruntime-node's native
 * `run`/`create` cannot throw into its dying JS environment, so node-addon-api throws a C++
 * `Napi::Error` that nothing catches and the process aborts (SIGABRT, "terminate called after
 * throwing an instance of 'Napi::Error'").
 */
export async function disposeAllOrtHosts(): Promise<void> {
  await Promise.all([...liveHosts].map((host) => host.dispose()));
}

/** One worker thread holding ONNX Runtime sessions. */
export class OrtHost {
  #worker: Worker | null;
  #pending = new Map<number, Pending>();
  #nextId = 1;
  #failure: Error | null = null;
  /** Requests posted to the worker and not answered yet (it may be inside ONNX Runtime for them). */
  #unanswered = new Set<number>();
  /** Stop flags of the loops running on the worker, raised by `dispose`. */
  #stopFlags = new Set<Int32Array>();
  #idleWaiters: Array<() => void> = [];
  #disposing: Promise<void> | null = null;

  constructor() {
    // execArgv: [] — the worker must not inherit the parent's flags: `node --input-type=module
    // -e …`, `--eval`, inspector or loader flags apply to the parent's entry, not to this module.
    const worker = new Worker(workerUrl(), { execArgv: [] });
    worker.unref(); // only in-flight calls keep the process alive
    worker.on("message", (message: WorkerReply) => {
      if (!("step" in message || "stage" in message)) this.#answered(message.id);
      const pending = this.#pending.get(message.id);
      if (!pending) return;
      if ("step" in message || "stage" in message) {
        pending.onProgress?.(message);
        return;
      }
      this.#pending.delete(message.id);
      if (this.#pending.size === 0) worker.unref();
      if ("error" in message) pending.reject(pending.fail(message.error, message.code, message.model));
      else pending.resolve(message.value);
    });
    const failAll = (error: Error) => {
      this.#failure = error;
      // A worker that failed or exited runs nothing any more.
      for (const id of [...this.#unanswered]) this.#answered(id);
      for (const pending of this.#pending.values()) pending.reject(error);
      this.#pending.clear();
    };
    worker.on("error", (error) => failAll(new OnnxRuntimeError(`ONNX Runtime worker failed: ${error.message}`, { cause: error })));
    worker.on("exit", (code) => {
      if (this.#worker) failAll(new OnnxRuntimeError(`ONNX Runtime worker exited unexpectedly (code ${code})`));
    });
    this.#worker = worker;
    liveHosts.add(this);
  }

  #answered(id: number): void {
    this.#unanswered.delete(id);
    if (this.#unanswered.size > 0) return;
    for (const resolve of this.#idleWaiters.splice(0)) resolve();
  }

  get disposed(): boolean {
    return this.#worker === null;
  }

  #call<T>(request: Request, fail: Pending["fail"], onProgress?: Pending["onProgress"], transfer: ArrayBuffer[] = [], onPosted?: (id: number) => void): Promise<T> {
    const worker = this.#worker;
    if (!worker) return Promise.reject(new DisposedError("ONNX Runtime session host"));
    if (this.#failure) return Promise.reject(this.#failure);
    const id = this.#nextId++;
    return new Promise<T>((resolve, reject) => {
      this.#pending.set(id, { resolve: resolve as (v: unknown) => void, reject, fail, ...(onProgress ? { onProgress } : {}) });
      if (this.#pending.size === 1) worker.ref();
      this.#unanswered.add(id);
      worker.postMessage({ ...request, id } as WorkerRequest, transfer);
      onPosted?.(id);
    });
  }

  /**
   * Creates a session for an ONNX file (ONNX Runtime follows external-data files beside it), or
   * for `bytes`, that file's graph edited in memory (lib/onnx).
   * @throws ModelFileError naming the file when ONNX Runtime cannot load it.
   */
  load(path: string, options: SessionOptions = {}, bytes?: Uint8Array): Promise<LoadedSession> {
    const stack = new Error();
    const request: Request = { op: "load", path, ...(options.intraOpThreads ? { intraOpThreads: options.intraOpThreads } : {}), ...(bytes ? { bytes } : {}) };
    return this.#call<LoadValue>(request, (text) => withStack(new ModelFileError(path, `ONNX Runtime cannot load ${path}: ${text}`), stack)).then(
      ({ handle, inputs, outputs }) => ({ handle, signature: { inputs, outputs } }),
    );
  }

  /**
   * Runs a session. Feed arrays are copied to the worker; outputs are moved here without a copy.
   * @param what names the model in error messages ("unet/model.onnx").
   */
  run(handle: number, what: string, feeds: Record<string, HostTensor>, outputs: string[]): Promise<RunResult> {
    const stack = new Error();
    return this.#call<RunValue>({ op: "run", handle, feeds, outputs }, (text) => withStack(ortError(what, feeds, text), stack));
  }

  /**
   * Runs a whole denoise loop on the worker with a UNet session (see cpu-denoise.ts). Resolves
   * with `latents: null` when `signal` aborted it: the worker stops before the next evaluation,
   * so at most the evaluation running when the abort arrived completes.
   */
  denoise(handle: number, what: string, job: CpuDenoiseJob, options: HostDenoiseOptions = {}): Promise<HostDenoiseResult> {
    const stack = new Error();
    const feeds = unetFeeds(job, job.context, job.condTokens, job.uncondTokens);
    const { stop, steps, deliver, done } = watch(options);
    this.#stopFlags.add(stop);
    return this.#call<DenoiseValue>(
      { op: "denoise", handle, job, stop, steps },
      (text, code) => withStack(code === "ERR_UNET_NAN" ? UnetOverflowError.fromMessage(text, UnetOverflowError.advice.cpu) : ortError(what, feeds, text), stack),
      deliver,
    ).finally(() => {
      this.#stopFlags.delete(stop);
      done();
    });
  }

  /**
   * Runs a whole txt2img generation on the worker (`GenerateJob`): the text encoder, the denoise
   * loop and the VAE decoder back to back, one message each way. Resolves with `latents: null`
   * when `signal` stopped it (between the stages or between evaluations).
   * @param files names each model in error messages; an output of the wrong shape is a
   *   ModelFileError naming its file, a NaN image is ERR_VAE_NAN.
   */
  generate(job: GenerateJob, files: Record<GenerateStage, { name: string; path: string }>, noise: StepNoise, options: HostGenerateOptions = {}): Promise<HostGenerateResult> {
    const stack = new Error();
    const { stop, steps, deliver, done } = watch(options);
    const { batch, latentHeight, latentWidth } = job.denoise;
    // Shapes only, for error messages.
    const feeds: Record<GenerateStage, Record<string, HostTensor>> = {
      textEncoder: { [job.textEncoder.idsName]: job.cond.ids },
      unet: unetFeeds(job.denoise, new Float32Array(0), job.cond.chunks * TOKENS, (job.uncond ?? job.cond).chunks * TOKENS),
      vaeDecoder: { [job.decoder.latentName]: { type: "float32", dims: [batch, 4, latentHeight, latentWidth], data: new Float32Array(0) } },
    };
    const fail = (text: string, code?: string, model: GenerateStage = "unet") => {
      const file = files[model];
      if (code === "ERR_VAE_NAN") return withStack(new VaeOverflowError(text), stack);
      if (code === "ERR_UNET_NAN") return withStack(UnetOverflowError.fromMessage(text, UnetOverflowError.advice.cpu), stack);
      if (code === "ERR_OUTPUT_SHAPE") return withStack(new ModelFileError(file.path, `${file.path} ${text}`), stack);
      return withStack(ortError(file.name, feeds[model], text), stack);
    };
    this.#stopFlags.add(stop);
    let pumping: Promise<{ ms: number; error?: unknown }> = Promise.resolve({ ms: 0 });
    let answered = false;
    const generated = this.#call<GenerateValue>({ op: "generate", job, stop, steps }, fail, deliver, [], (id) => {
      // Posted right after the request, so the worker has draw 0 before its loop needs it.
      pumping = this.#pumpNoise(id, noise, stop, () => answered);
    }).finally(() => {
      answered = true;
      this.#stopFlags.delete(stop);
      done();
    });
    return generated.then(async (value) => {
      const { ms, error } = await pumping;
      if (error !== undefined) throw error; // the loop was cancelled for it
      return { ...value, stepNoiseMs: ms };
    });
  }

  /**
   * Draws a generate request's step noise on this thread while the worker runs it, posting each
   * draw as it is made (`NoiseMessage`) and letting the event loop run between draws. Stops with a
   * cancel message when the request is stopped (`stop`, also raised by `dispose`) or drawing
   * fails, so the worker's loop never waits for a draw that will not come; stops silently once
   * the request is answered. Resolves with the milliseconds spent drawing and the error that
   * stopped it.
   */
  async #pumpNoise(id: number, noise: StepNoise, stop: Int32Array, answered: () => boolean): Promise<{ ms: number; error?: unknown }> {
    const worker = this.#worker!;
    const post = (message: NoiseMessage, transfer: ArrayBuffer[] = []) => worker.postMessage(message, transfer);
    let ms = 0;
    for (let index = 0; index < noise.count; index++) {
      if (index > 0) await new Promise((resolve) => setImmediate(resolve));
      if (answered()) return { ms };
      if (Atomics.load(stop, 0) !== 0) {
        post({ op: "noise-cancel", id });
        return { ms };
      }
      let data: Float32Array;
      const start = performance.now();
      try {
        data = noise.next();
      } catch (error) {
        post({ op: "noise-cancel", id });
        return { ms, error };
      }
      ms += performance.now() - start;
      // A fresh draw that owns its whole buffer moves without a copy; the caller's arrays are copied.
      const movable = noise.fresh && data.byteOffset === 0 && data.byteLength === data.buffer.byteLength && data.buffer instanceof ArrayBuffer;
      post({ op: "noise", id, index, data }, movable ? [data.buffer as ArrayBuffer] : []);
    }
    return { ms };
  }

  /**
   * Runs the VAE decoder and converts its output to 8-bit RGB on the worker (`decodedToRgb`).
   * @param what names the model in error messages, including the NaN error (code ERR_VAE_NAN).
   */
  decode(handle: number, what: string, request: DecodeRequest): Promise<DecodeValue> {
    const stack = new Error();
    const feeds = { [request.latentName]: request.latents };
    return this.#call<DecodeValue>({ op: "decode", handle, ...request, source: what }, (text, code) =>
      withStack(code === "ERR_VAE_NAN" ? new VaeOverflowError(text) : ortError(what, feeds, text), stack),
    );
  }

  /**
   * The text encoder alone on one prompt list, emphasis applied (see `EncodeJob`).
   * @param what names the model in error messages.
   */
  encode(what: { name: string; path: string }, job: EncodeJob): Promise<EncodeValue> {
    const stack = new Error();
    const feeds = { [job.textEncoder.idsName]: job.prompts.ids };
    return this.#call<EncodeValue>({ op: "encode", job }, (text, code) =>
      withStack(code === "ERR_OUTPUT_SHAPE" ? new ModelFileError(what.path, `${what.path} ${text}`) : ortError(what.name, feeds, text), stack),
    );
  }

  release(handle: number): Promise<void> {
    if (!this.#worker) return Promise.resolve();
    return this.#call<void>({ op: "release", handle }, (text) => new OnnxRuntimeError(text));
  }

  /**
   * Stops the worker; sessions go with it. Idempotent. Pending calls are rejected at once, but
   * the worker is terminated only when it is outside ONNX Runtime: running loops are told to
   * stop (they finish the evaluation in progress), other calls run to their end. Terminating it
   * inside a native ONNX Runtime call aborts the whole process (see `disposeAllOrtHosts`).
   */
  dispose(): Promise<void> {
    this.#disposing ??= this.#dispose();
    return this.#disposing;
  }

  async #dispose(): Promise<void> {
    const worker = this.#worker;
    if (!worker) return;
    this.#worker = null;
    for (const pending of this.#pending.values()) pending.reject(new DisposedError("ONNX Runtime session host"));
    this.#pending.clear();
    for (const stop of this.#stopFlags) Atomics.store(stop, 0, 1);
    if (this.#unanswered.size > 0) {
      worker.ref(); // the answers still to come are what we wait for
      await new Promise<void>((resolve) => this.#idleWaiters.push(resolve));
    }
    await worker.terminate();
    liveHosts.delete(this);
  }
}

/** The UNet feeds' shapes, for error messages. */
function unetFeeds(job: Omit<CpuDenoiseJob, "context" | "condTokens" | "uncondTokens">, context: Float32Array, condTokens: number, uncondTokens: number): Record<string, HostTensor> {
  const unetBatch = job.batch * (job.guidance && condTokens === uncondTokens ? 2 : 1);
  return {
    [job.io.sampleName]: { type: "float32", dims: [unetBatch, 4, job.latentHeight, job.latentWidth], data: job.latents },
    [job.io.contextName]: { type: "float32", dims: [unetBatch, condTokens, job.hiddenSize], data: context },
  };
}

/**
 * The stop flag a loop on the worker polls (set when `signal` aborts), what progress to ask for,
 * and the delivery of progress replies; `done` detaches from the signal.
 */
function watch(options: HostGenerateOptions): { stop: Int32Array; steps: StepReport; deliver: ((reply: ProgressReply) => void) | undefined; done: () => void } {
  const { signal, onStep, onLatents, onTextEncoded } = options;
  const stop = new Int32Array(new SharedArrayBuffer(4));
  const requestStop = () => Atomics.store(stop, 0, 1);
  if (signal?.aborted) requestStop();
  signal?.addEventListener("abort", requestStop, { once: true });
  const steps: StepReport = onLatents ? "latents" : onStep || onTextEncoded ? "progress" : "none";
  const deliver =
    steps === "none"
      ? undefined
      : (reply: ProgressReply) => {
          if (signal?.aborted) return; // the caller has stopped listening
          if ("stage" in reply) {
            onTextEncoded?.();
            return;
          }
          if (reply.latents) onLatents?.(reply.step, reply.latents);
          onStep?.(reply.step);
        };
  return { stop, steps, deliver, done: () => signal?.removeEventListener("abort", requestStop) };
}

/** "unet/model.onnx failed in ONNX Runtime with inputs sample float32 [2, 4, 8, 8]: …" */
function ortError(what: string, feeds: Record<string, HostTensor>, text: string): SdTrtError {
  const shapes = Object.entries(feeds)
    .map(([name, t]) => `${name} ${t.type} [${t.dims.join(", ")}]`)
    .join(", ");
  if (/Failed to allocate|bad_alloc|out of memory/i.test(text)) {
    // The worker has made its sessions again, so what the failed run took is released.
    const size = /size (\d+)/.exec(text)?.[1];
    return new OutOfMemoryError(
      `out of memory: ${what} with inputs ${shapes} could not allocate ${size ? `${Number(size)} bytes` : "what it needed"}; use a smaller size or batch (or a lower --memory-limit, so such requests are refused before they run)`,
    );
  }
  return new OnnxRuntimeError(`${what} failed in ONNX Runtime with inputs ${shapes}: ${text}`);
}

/** Gives an error created from a worker reply the stack of the call that caused it. */
function withStack<E extends Error>(error: E, stack: Error): E {
  if (stack.stack) error.stack = `${error.name}: ${error.message}\n${stack.stack.split("\n").slice(1).join("\n")}`;
  return error;
}
