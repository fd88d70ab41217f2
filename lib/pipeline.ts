/**
 * `Pipeline`: Stable Diffusion txt2img and img2img on a model folder, exactly as diffusers'
 * `StableDiffusionPipeline` / `StableDiffusionImg2ImgPipeline` compute it, on the CPU (ONNX
 * Runtime) or on TensorRT engines. The steps of one `generate()`:
 *
 * 1. validate every option against the backend's limits (`pipeline/options.ts`);
 * 2. tokenize the prompts (and, with guidance > 1, the negative prompts) to 77 ids each and run
 *    the text encoder once per list;
 * 3. compile the scheduler for the step count into a sampler program;
 * 4. draw every random number up front in diffusers' order (`pipeline/noise.ts`): initial
 *    latents × init_noise_sigma, or for img2img the posterior draw, the VAE-encoded init image
 *    × scaling factor and `add_noise`; then each step's noise;
 * 5. denoise on the backend (classifier-free guidance with the uncond rows first);
 * 6. decode `latents / scaling_factor` to 8-bit RGB and write the A1111 infotext per image.
 *
 * One pipeline runs one generation at a time; concurrent `generate()` calls queue in order.
 */
import { createHash } from "node:crypto";
import { createReadStream } from "node:fs";
import { dirname } from "node:path";
import { DisposedError, InvalidOptionError, SdTrtError, throwIfAborted } from "./errors.js";
import type { Backend, BackendLimits, BackendName, TextEmbeddings } from "./backends/backend.js";
import { loadBackend, type BackendChoice, BACKEND_CHOICES } from "./backends/select.js";
import type { CpuDenoiseRequest } from "./backends/cpu.js";
import { locateModelFolder, type ModelFolder } from "./model/folder.js";
import { defaultModelDir } from "./package-info.js";
import { ClipTokenizer } from "./tokenizer/index.js";
import { a1111SamplerName, canonicalSchedulerName, createScheduler, SCHEDULER_NAMES, strengthToStartStep, type SchedulerName } from "./schedulers/index.js";
import { resolveGenerateOptions, type GenerateOptions, type ProgressEvent, type ResolvedRequest } from "./pipeline/options.js";
import { NoiseSource, divideFloat32, scaleFloat32 } from "./pipeline/noise.js";
import { img2imgLatents } from "./pipeline/img2img.js";
import { readImage, type RgbImage } from "./image/read.js";
import { formatInfotext } from "./image/infotext.js";
import { oneOf } from "./validate.js";
import type { SamplerEval, SamplerProgram } from "./sampler/program.js";

export type { GenerateOptions, ProgressEvent } from "./pipeline/options.js";
export type { BackendChoice } from "./backends/select.js";

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
}

export interface GeneratedImage {
  /** 8-bit RGB, row-major, interleaved (HWC): width · height · 3 bytes. */
  rgb: Uint8Array;
  width: number;
  height: number;
  /** The image's seed as A1111 reports it: its own generator's seed, or seed + index with one generator for the batch. */
  seed: bigint;
  /** A1111's "parameters" text for this image (see `image/infotext.ts`). */
  infotext: string;
}

export interface GenerateTimings {
  /** Milliseconds per stage. */
  tokenize: number;
  textEncode: number;
  /** img2img: reading and VAE-encoding the init image (0 for txt2img). */
  imageEncode: number;
  denoise: number;
  decode: number;
  /** The whole call, including validation and queueing behind earlier calls. */
  total: number;
}

export interface GenerateResult {
  images: GeneratedImage[];
  /** The generator seeds: one (one generator for the batch) or one per image. */
  seeds: bigint[];
  /** True when no seed was given and `seeds` was drawn at random. */
  randomSeed: boolean;
  /** Final latents [batch, 4, height/8, width/8] when `returnLatents` was set. */
  latents?: Float32Array;
  width: number;
  height: number;
  steps: number;
  guidance: number;
  /** Canonical scheduler name. */
  scheduler: string;
  backend: BackendName;
  /** Model evaluations (UNet calls) made. */
  evaluations: number;
  timings: GenerateTimings;
  /** Non-fatal notes, e.g. a prompt longer than CLIP's 77 tokens was truncated. */
  warnings: string[];
}

/** Hex SHA-256 of a file, streamed. */
async function sha256File(path: string): Promise<string> {
  const hash = createHash("sha256");
  for await (const chunk of createReadStream(path)) hash.update(chunk as Buffer);
  return hash.digest("hex");
}

const TOKENS = 77;

export class Pipeline {
  readonly #backend: Backend;
  readonly #tokenizer: ClipTokenizer;
  readonly #folder: ModelFolder;
  /** Why this backend was chosen. */
  readonly backendReason: string;
  /** The scheduler used when `generate` names none (from the model's scheduler config). */
  readonly defaultScheduler: SchedulerName;
  #queue: Promise<unknown> = Promise.resolve();
  #disposed = false;
  #modelHash: Promise<string> | undefined;

  private constructor(folder: ModelFolder, backend: Backend, reason: string, tokenizer: ClipTokenizer, defaultScheduler: SchedulerName) {
    this.#folder = folder;
    this.#backend = backend;
    this.backendReason = reason;
    this.#tokenizer = tokenizer;
    this.defaultScheduler = defaultScheduler;
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
      throw new SdTrtError(
        "ERR_MODEL_FILE",
        `${folder.schedulerConfigFile ?? "the default scheduler config"} names the scheduler class ${JSON.stringify(folder.schedulerClass)}, which sd-trt does not implement (supported: ${SCHEDULER_NAMES.join(", ")})`,
      );
    }
    createScheduler(defaultScheduler, folder.schedulerConfig); // a bad config fails at load, not at the first generate
    const tokenizer = folder.tokenizer ? await ClipTokenizer.fromDirectory(dirname(folder.tokenizer.vocab)) : await ClipTokenizer.default();
    const loadOptions: { engines?: string; threads?: number } = {};
    if (options.engines !== undefined) loadOptions.engines = options.engines;
    if (options.threads !== undefined) loadOptions.threads = options.threads;
    const { backend, reason } = await loadBackend(folder, choice, loadOptions);
    return new Pipeline(folder, backend, reason, tokenizer, defaultScheduler);
  }

  /** The backend that runs: `"cpu"` or `"tensorrt"`. */
  get backendName(): BackendName {
    return this.#backend.name;
  }

  /** What the loaded models accept (batch and size limits, img2img support). */
  get limits(): BackendLimits {
    return { ...this.#backend.limits };
  }

  /** The model folder. */
  get modelDir(): string {
    return this.#folder.dir;
  }

  /** The image size generate() uses when none is given. */
  get defaultSize(): { width: number; height: number } {
    const l = this.#backend.limits;
    const clamp = (v: number, min: number, max: number) => Math.min(max, Math.max(min, v));
    return { width: clamp(this.#folder.nativeSize, l.minWidth, l.maxWidth), height: clamp(this.#folder.nativeSize, l.minHeight, l.maxHeight) };
  }

  /** @internal The backend, for benchmarks and tests. */
  get backend(): Backend {
    return this.#backend;
  }

  get disposed(): boolean {
    return this.#disposed;
  }

  /** A1111's "Model hash": the first 10 hex digits of the UNet ONNX file's SHA-256 (computed once). */
  modelHash(): Promise<string> {
    this.#modelHash ??= sha256File(this.#folder.unet.path).then((h) => h.slice(0, 10));
    return this.#modelHash;
  }

  /**
   * Generates images. Rejects with InvalidOptionError (naming the option) before any model runs
   * when an option is out of range, and with `signal.reason` / AbortError when cancelled.
   */
  async generate(options: GenerateOptions): Promise<GenerateResult> {
    const started = performance.now();
    if (this.#disposed) throw new DisposedError("Pipeline");
    const size = this.defaultSize;
    const request = resolveGenerateOptions(options, {
      limits: this.#backend.limits,
      defaultWidth: size.width,
      defaultHeight: size.height,
      defaultScheduler: this.defaultScheduler,
      schedulerNames: SCHEDULER_NAMES,
      canonicalScheduler: (name) => canonicalSchedulerName(name, this.#folder.schedulerConfig),
      hostLatents: this.#backend.name === "cpu",
    });
    throwIfAborted(request.signal);
    const run = this.#queue.then(() => this.#generate(request, started));
    this.#queue = run.catch(() => undefined);
    return run;
  }

  async #generate(r: ResolvedRequest, started: number): Promise<GenerateResult> {
    // No disposed check here: a call accepted before dispose() runs to completion (dispose waits).
    throwIfAborted(r.signal);
    const backend = this.#backend;
    const progress = (event: ProgressEvent) => r.onProgress?.(event);
    const warnings: string[] = [];
    const cfg = r.guidance > 1;
    const batch = r.batch;

    // The init image first, so an unreadable file fails before any model runs.
    let width = r.width;
    let height = r.height;
    let t = performance.now();
    let initImage: RgbImage | undefined;
    if (r.initImage !== undefined) {
      initImage = await readImage(r.initImage, width === undefined ? { multiple: backend.limits.sizeMultiple } : { width, height: height! });
      width = initImage.width;
      height = initImage.height;
      this.#checkSize(width, height);
    }
    const readImageMs = performance.now() - t;

    // Tokenize.
    t = performance.now();
    const condIds = this.#tokenize(r.prompts, "prompt", warnings);
    const uncondIds = cfg ? this.#tokenize(r.negativePrompts, "negativePrompt", warnings) : null;
    const tokenizeMs = performance.now() - t;

    // Text encoder: one call for the prompts, one for the negative prompts (diffusers' order).
    t = performance.now();
    const embeddings: TextEmbeddings[] = [];
    try {
      const cond = await backend.encodeText(condIds, batch);
      embeddings.push(cond);
      const uncond = uncondIds ? await backend.encodeText(uncondIds, batch) : null;
      if (uncond) embeddings.push(uncond);
      const textEncodeMs = performance.now() - t;
      progress({ stage: "encode-text", step: 1, total: 1 });
      throwIfAborted(r.signal);

      // The program, then every random draw in diffusers' order.
      const scheduler = createScheduler(r.scheduler, this.#folder.schedulerConfig);
      const noise = new NoiseSource(r.rng, r.generatorSeeds, r.perImageGenerators);
      const latentShape = [4, height! / 8, width! / 8];
      let latents: Float32Array;
      let imageEncodeMs = 0;
      let program: SamplerProgram;
      if (initImage !== undefined) {
        t = performance.now();
        program = scheduler.compile(r.steps, { startIndex: strengthToStartStep(r.steps, r.strength!) * scheduler.order });
        latents = await img2imgLatents({ backend, image: initImage, noise, batch, latentShape, program });
        imageEncodeMs = readImageMs + performance.now() - t;
        progress({ stage: "encode-image", step: 1, total: 1 });
        throwIfAborted(r.signal);
      } else {
        program = scheduler.compile(r.steps);
        latents = scaleFloat32(noise.draw(batch, latentShape), program.initNoiseSigma); // randn · init_noise_sigma
      }
      const latentHeight = height! / 8;
      const latentWidth = width! / 8;
      const stepNoise = program.evals.filter((e: SamplerEval) => e.drawsNoise).map(() => noise.draw(batch, [4, latentHeight, latentWidth]));

      // Denoise.
      t = performance.now();
      const total = program.evals.length;
      const denoiseRequest: CpuDenoiseRequest = {
        program,
        latents,
        batch,
        latentHeight,
        latentWidth,
        cond,
        uncond,
        guidance: new Float64Array(batch).fill(r.guidance),
        noise: stepNoise,
        onStep: (evalIndex) => progress({ stage: "denoise", step: evalIndex + 1, total, timestep: program.evals[evalIndex]!.t }),
      };
      if (r.signal) denoiseRequest.signal = r.signal;
      if (r.onLatents) {
        const observe = r.onLatents;
        observe(0, latents);
        denoiseRequest.onLatents = (evalIndex, x) => observe(evalIndex + 1, x);
      }
      const final = await backend.denoise(denoiseRequest);
      const denoiseMs = performance.now() - t;
      throwIfAborted(r.signal);

      // Decode.
      t = performance.now();
      const pixels = await backend.decode(divideFloat32(final, backend.scalingFactor), batch, latentHeight, latentWidth);
      const decodeMs = performance.now() - t;
      progress({ stage: "decode", step: 1, total: 1 });

      const modelHash = await this.modelHash();
      const sampler = a1111SamplerName(r.scheduler) ?? r.scheduler;
      const images: GeneratedImage[] = pixels.map((rgb, i) => {
        const seed = r.perImageGenerators ? r.generatorSeeds[i]! : r.generatorSeeds[0]! + BigInt(i);
        const infotext = formatInfotext({
          prompt: r.prompts[i]!,
          negativePrompt: cfg ? r.negativePrompts[i]! : "",
          steps: r.steps,
          sampler,
          cfgScale: r.guidance,
          seed,
          width: width!,
          height: height!,
          modelHash,
          ...(r.strength !== undefined ? { denoisingStrength: r.strength } : {}),
          rng: r.rng,
        });
        return { rgb, width: width!, height: height!, seed, infotext };
      });
      const result: GenerateResult = {
        images,
        seeds: [...r.generatorSeeds],
        randomSeed: r.randomSeed,
        width: width!,
        height: height!,
        steps: r.steps,
        guidance: r.guidance,
        scheduler: r.scheduler,
        backend: backend.name,
        evaluations: total,
        timings: {
          tokenize: tokenizeMs,
          textEncode: textEncodeMs,
          imageEncode: imageEncodeMs,
          denoise: denoiseMs,
          decode: decodeMs,
          total: performance.now() - started,
        },
        warnings,
      };
      if (r.returnLatents) result.latents = final;
      return result;
    } finally {
      for (const e of embeddings) e.dispose();
    }
  }

  /** Token ids [rows, 77] for a list of texts, noting truncated ones. */
  #tokenize(texts: string[], option: string, warnings: string[]): Int32Array {
    const ids = new Int32Array(texts.length * TOKENS);
    const seen = new Map<string, number[]>();
    texts.forEach((text, row) => {
      let rowIds = seen.get(text);
      if (!rowIds) {
        const tokens = this.#tokenizer.tokenize(text);
        rowIds = tokens.inputIds77;
        seen.set(text, rowIds);
        if (tokens.truncated) {
          warnings.push(`${option}${texts.length > 1 ? `[${row}]` : ""} is longer than CLIP's ${TOKENS} tokens; the last ${tokens.droppedTokens} tokens are ignored`);
        }
      }
      ids.set(rowIds, row * TOKENS);
    });
    return ids;
  }

  #checkSize(width: number, height: number): void {
    const l = this.#backend.limits;
    const fits = (v: number, min: number, max: number) => v >= min && v <= max && v % l.sizeMultiple === 0;
    if (!fits(width, l.minWidth, l.maxWidth) || !fits(height, l.minHeight, l.maxHeight)) {
      throw new InvalidOptionError(
        "initImage",
        `initImage is ${width}×${height} after rounding to a multiple of ${l.sizeMultiple}; the model takes ${l.minWidth}-${l.maxWidth} × ${l.minHeight}-${l.maxHeight}: give width and height to resize it`,
      );
    }
  }

  /** Releases the backend (sessions, engines, worker threads). Waits for a running generation. Idempotent. */
  async dispose(): Promise<void> {
    if (this.#disposed) return;
    this.#disposed = true;
    await this.#queue;
    await this.#backend.dispose();
  }

  async [Symbol.asyncDispose](): Promise<void> {
    await this.dispose();
  }
}
