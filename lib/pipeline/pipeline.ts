/**
 * `Pipeline`: Stable Diffusion txt2img and img2img on a model folder, exactly as diffusers'
 * `StableDiffusionPipeline` / `StableDiffusionImg2ImgPipeline` compute it, on the CPU (ONNX
 * Runtime) or on TensorRT engines. One `generate()`:
 *
 * 1. validates every option against the model's limits (`pipeline/options.ts`);
 * 2. prepares the request without any model (`pipeline/generation.ts`): reads the init image,
 *    tokenizes the prompts (and, with guidance > 1, the negative prompts), takes the compiled
 *    sampler program, and draws every random number in diffusers' order (`pipeline/noise.ts`);
 * 3. runs it as a batch of one: the text encoder once per prompt list, the VAE encoder for
 *    img2img (posterior sample × scaling factor, `add_noise`), the denoise loop on the backend
 *    (classifier-free guidance with the uncond rows first), and the decoder to 8-bit RGB, with
 *    the A1111 infotext per image.
 *
 * `generateBatch` runs several compatible requests through the same code as one batch, which is
 * how `PipelineService` merges requests. One pipeline runs one batch at a time; concurrent calls
 * queue in order.
 */
import { createHash } from "node:crypto";
import { createReadStream } from "node:fs";
import { dirname } from "node:path";
import { ModelFileError, DisposedError, InvalidOptionError, throwIfAborted } from "../errors.js";
import { Lifecycle } from "../lifecycle.js";
import type { Backend, BackendLimits, BackendName } from "../backends/backend.js";
import { loadBackend, type BackendChoice, BACKEND_CHOICES } from "../backends/select.js";
import { locateModelFolder, type ModelFolder } from "../model/folder.js";
import { defaultModelDir } from "../package-info.js";
import { ClipTokenizer } from "../tokenizer/index.js";
import { canonicalSchedulerName, createScheduler, SCHEDULER_NAMES, type SchedulerName } from "../schedulers/index.js";
import { limitsForModel, resolveGenerateOptions, type GenerateOptions, type ResolvedRequest } from "./options.js";
import { executeBatch, prepareRequest, type BatchHooks, type GenerateResult, type GenerationContext } from "./generation.js";
import { ProgramCache } from "./program-cache.js";
import { integerInRange, numberInRange, oneOf } from "../validate.js";

export type { GenerateOptions, ProgressEvent, ResolvedRequest } from "./options.js";
export type { BatchHooks, GeneratedImage, GenerateResult, GenerateTimings } from "./generation.js";
export type { BackendChoice } from "../backends/select.js";

export interface PipelineLoadOptions {
  /**
   * `"cpu"` (ONNX Runtime), `"tensorrt"` (engines built by `sd-trt build`), or `"auto"`: TensorRT
   * when its addon, a GPU and engines for this model are usable, else the CPU. The choice and its
   * reason are in `pipeline.backendName` / `backendReason`. Defaults to `"auto"`.
   */
  backend?: BackendChoice;
  /** TensorRT only: the folder of built engines. */
  engines?: string;
  /** CPU only: ONNX Runtime intra-op threads. Defaults to ONNX Runtime's choice (physical cores). */
  threads?: number;
  /**
   * CPU only: the most memory one generation may need, in bytes; requests estimated to need more
   * are refused before they run (InvalidOptionError). Defaults to this machine's memory.
   */
  memoryLimit?: number;
  /**
   * TensorRT only: run the denoise loop under CUDA graphs (captured once per shape, then
   * replayed). `false` runs every evaluation as separate launches, to compare. Defaults to true;
   * ignored by the CPU backend.
   */
  useGraphs?: boolean;
  /**
   * The device this pipeline runs on: TensorRT's CUDA device index (engines, contexts and the
   * denoiser live there). On the CPU backend each pipeline is its own ONNX Runtime worker thread
   * and the index only names it (so `serve --devices 0,1,2` runs three CPU pipelines).
   * 0 … 63, defaults to 0.
   */
  device?: number;
}

/** Hex SHA-256 of a file, streamed. */
async function sha256File(path: string): Promise<string> {
  const hash = createHash("sha256");
  for await (const chunk of createReadStream(path)) hash.update(chunk as Buffer);
  return hash.digest("hex");
}

export class Pipeline {
  readonly #backend: Backend;
  readonly #folder: ModelFolder;
  readonly #limits: BackendLimits;
  readonly #generation: GenerationContext;
  /** Why this backend was chosen. */
  readonly backendReason: string;
  /** The scheduler used when `generate` names none (from the model's scheduler config). */
  readonly defaultScheduler: SchedulerName;
  /** The device it runs on (see `PipelineLoadOptions.device`). */
  readonly device: number;
  /** One batch at a time; dispose waits for the accepted ones, then releases the backend. */
  readonly #life = new Lifecycle("Pipeline");
  #modelHash: Promise<string> | undefined;

  private constructor(folder: ModelFolder, backend: Backend, reason: string, tokenizer: ClipTokenizer, defaultScheduler: SchedulerName, device: number) {
    this.#folder = folder;
    this.device = device;
    this.#backend = backend;
    this.#limits = limitsForModel(backend.limits, folder.sizeMultiple);
    this.backendReason = reason;
    this.defaultScheduler = defaultScheduler;
    this.#generation = {
      backend,
      limits: this.#limits,
      tokenizer,
      programs: new ProgramCache(folder.schedulerConfig),
      ...(folder.sourceCheckpoint !== undefined ? { modelName: folder.sourceCheckpoint.name } : {}),
      modelHash: () => this.modelHash(),
    };
  }

  /**
   * Loads a model folder (optimum ONNX layout or TensorRT demo naming) on a backend.
   * @param modelDir Defaults to the tiny test model shipped with the package (`models/tiny-sd`).
   * @throws ModelFileError naming the folder or file that is missing or unsupported.
   */
  static async load(modelDir: string = defaultModelDir, options: PipelineLoadOptions = {}): Promise<Pipeline> {
    const choice = oneOf("backend", options.backend ?? "auto", BACKEND_CHOICES);
    const folder = await locateModelFolder(modelDir);
    const defaultScheduler = canonicalSchedulerName(folder.schedulerClass, folder.schedulerConfig);
    if (!defaultScheduler) {
      throw new ModelFileError(folder.schedulerConfigFile ?? folder.dir, `${folder.schedulerConfigFile ?? "the default scheduler config"} names the scheduler class ${JSON.stringify(folder.schedulerClass)}, which sd-trt does not implement (supported: ${SCHEDULER_NAMES.join(", ")})`);
    }
    createScheduler(defaultScheduler, folder.schedulerConfig); // a bad config fails at load, not at the first generate
    const tokenizer = folder.tokenizer ? await ClipTokenizer.fromDirectory(dirname(folder.tokenizer.vocab)) : await ClipTokenizer.default();
    const loadOptions: { engines?: string; threads?: number; useGraphs?: boolean; memoryLimit?: number; device?: number } = {};
    if (options.memoryLimit !== undefined) loadOptions.memoryLimit = numberInRange("memoryLimit", options.memoryLimit, 1, Number.MAX_SAFE_INTEGER);
    if (options.device !== undefined) loadOptions.device = options.device;
    if (options.engines !== undefined) loadOptions.engines = options.engines;
    if (options.threads !== undefined) loadOptions.threads = integerInRange("threads", options.threads, 1, 1024);
    if (options.useGraphs !== undefined) loadOptions.useGraphs = options.useGraphs;
    const { backend, reason } = await loadBackend(folder, choice, loadOptions);
    return new Pipeline(folder, backend, reason, tokenizer, defaultScheduler, options.device ?? 0);
  }

  /** The backend that runs: `"cpu"` or `"tensorrt"`. */
  get backendName(): BackendName {
    return this.#backend.name;
  }

  /** What the loaded model accepts: the backend's batch and size limits, with sizes in multiples the UNet can take. */
  get limits(): BackendLimits {
    return { ...this.#limits };
  }

  /** The model folder. */
  get modelDir(): string {
    return this.#folder.dir;
  }

  /** The checkpoint the model folder was converted from (`sd-trt convert`, `--model <checkpoint>`), if any. */
  get sourceCheckpoint(): { readonly name: string; readonly sha256?: string } | undefined {
    return this.#folder.sourceCheckpoint;
  }

  /** The image size generate() uses when none is given: the model's native size, within the limits. */
  get defaultSize(): { width: number; height: number } {
    const l = this.#limits;
    const fit = (v: number, min: number, max: number) => Math.min(max, Math.max(min, Math.floor(v / l.sizeMultiple) * l.sizeMultiple));
    return { width: fit(this.#folder.nativeSize, l.minWidth, l.maxWidth), height: fit(this.#folder.nativeSize, l.minHeight, l.maxHeight) };
  }

  /** @internal The backend, for benchmarks and tests. */
  get backend(): Backend {
    return this.#backend;
  }

  get disposed(): boolean {
    return this.#life.disposed;
  }

  /** A1111's "Model hash": the first 10 hex digits of the UNet ONNX file's SHA-256 (computed once). */
  modelHash(): Promise<string> {
    // A model converted from a checkpoint carries that file's SHA-256: its hash is the file's, as
    // A1111's `calculate_shorthash` computes it for the same checkpoint.
    const source = this.#folder.sourceCheckpoint?.sha256;
    this.#modelHash ??= source !== undefined ? Promise.resolve(source.slice(0, 10)) : sha256File(this.#folder.unet.path).then((h) => h.slice(0, 10));
    return this.#modelHash;
  }

  /**
   * Validates `generate()` options against this model and applies the defaults.
   * @throws InvalidOptionError naming the option.
   */
  resolveOptions(options: GenerateOptions): ResolvedRequest {
    const size = this.defaultSize;
    return resolveGenerateOptions(options, {
      limits: this.#limits,
      defaultWidth: size.width,
      defaultHeight: size.height,
      defaultScheduler: this.defaultScheduler,
      schedulerNames: SCHEDULER_NAMES,
      canonicalScheduler: (name) => canonicalSchedulerName(name, this.#folder.schedulerConfig),
      hostLatents: this.#limits.canObserveLatents,
      tokenizer: this.#generation.tokenizer,
    });
  }

  /**
   * The text conditioning `generate` would give the UNet for this prompt, read with these options
   * (`promptSyntax`, `emphasis`, `commaPaddingBacktrack`): [77 · chunks, hidden] values. For
   * inspection and comparison with A1111 (`sd-trt tokenize --model DIR --embeddings`).
   * @throws InvalidOptionError naming the option; when the backend keeps embeddings on the device
   *   only (TensorRT), naming `backend`.
   */
  async promptConditioning(prompt: string, options: Pick<GenerateOptions, "promptSyntax" | "emphasis" | "commaPaddingBacktrack"> = {}): Promise<{ shape: [number, number]; values: Float32Array }> {
    const request = this.resolveOptions({ ...options, prompt, guidance: 1 });
    const encode = this.#backend.encodePrompts?.bind(this.#backend);
    if (!encode) throw new InvalidOptionError("backend", `the ${this.#backend.name} backend keeps text embeddings on the device; load the pipeline with backend "cpu" to read them`);
    const { shape, values } = await this.#life.exclusive(() => encode(request.cond.batch, request.promptReading.emphasis));
    return { shape: [shape[1], shape[2]], values };
  }

  /**
   * Generates images. Rejects with InvalidOptionError (naming the option) before any model runs
   * when an option is out of range, and with `signal.reason` / AbortError when cancelled.
   */
  async generate(options: GenerateOptions): Promise<GenerateResult> {
    const started = performance.now();
    this.#life.assertLive();
    const request = this.resolveOptions(options);
    throwIfAborted(request.signal);
    const hooks: BatchHooks = {};
    if (request.signal) hooks.signal = request.signal;
    if (request.onProgress) hooks.onProgress = request.onProgress;
    const [result] = await this.generateBatch([request], hooks, started);
    return result!;
  }

  /**
   * Runs validated requests (from `resolveOptions`) as ONE batch: one text-encoder call per
   * prompt list, one denoise, one decode; each request gets exactly the images it gets alone.
   * The requests must share a `batchKey` (pipeline/generation.ts) when there are several.
   * Their model-free preparation (init images, tokens, noise) starts at once; the batch then
   * queues behind earlier calls. `PipelineService` merges requests through this.
   * @param hooks the batch's cancellation and progress.
   * @param started when the calls began, for `timings.total`. Defaults to now.
   */
  generateBatch(requests: ResolvedRequest[], hooks: BatchHooks = {}, started = performance.now()): Promise<GenerateResult[]> {
    if (this.#life.disposed) return Promise.reject(new DisposedError("Pipeline"));
    const prepared = Promise.all(requests.map((r) => prepareRequest(this.#generation, r, started)));
    // The batch takes its turn now, so dispose() waits for a call it accepted.
    const run = this.#life.exclusive(async () => executeBatch(this.#generation, await prepared, hooks));
    // A request that cannot be prepared (an unreadable init image) fails at once, not after the queue.
    return Promise.race([run, prepared.then(() => run)]);
  }

  /** Waits for the accepted generations, then releases the backend (sessions, engines, worker threads). Idempotent. */
  dispose(): Promise<void> {
    return this.#life.dispose(() => this.#backend.dispose());
  }

  async [Symbol.asyncDispose](): Promise<void> {
    await this.dispose();
  }
}
