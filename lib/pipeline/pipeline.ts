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
import { basename, dirname } from "node:path";
import { ModelFileError, DisposedError, InvalidOptionError, throwIfAborted } from "../errors.js";
import { Lifecycle } from "../lifecycle.js";
import type { Backend, BackendLimits, BackendName } from "../backends/backend.js";
import { loadBackend, type BackendChoice, type BackendLoadOptions, BACKEND_CHOICES } from "../backends/select.js";
import { checkLoraScale, type LoraSpec } from "../convert/lora/set.js";
import { addnetHash, loraHashesInfotext } from "../convert/lora/hash.js";
import { LoraLibrary, type LoraEntry } from "../convert/lora/library.js";
import { locateModelFolder, type ModelFolder } from "../model/folder.js";
import { defaultModelDir } from "../package-info.js";
import { ClipTokenizer } from "../tokenizer/index.js";
import { canonicalSchedulerName, createScheduler, SCHEDULER_NAMES, type SchedulerName } from "../schedulers/index.js";
import { limitsForModel, resolveGenerateOptions, type GenerateOptions, type ResolvedRequest } from "./options.js";
import { executeBatch, prepareRequest, type BatchHooks, type GenerateResult, type GenerationContext } from "./generation.js";
import { ProgramCache } from "./program-cache.js";
import { sdxlRequestTimeIds, type SdxlModelFacts } from "./sdxl-options.js";
import { checkNotRefiner, checkRefinerMatchesBase } from "./sdxl-refiner.js";
import { integerInRange, numberInRange, oneOf } from "../validate.js";
import { loadTextualInversions, type TextualInversion } from "../model/textual-inversion.js";
import { EmbeddingVocabulary } from "../prompt/embeddings.js";
import { tokenizePrompt, type TokenizedPrompt } from "../prompt/chunks.js";
import type { Emphasis } from "../prompt/emphasis.js";

/** What `Pipeline.promptConditioning` reads the prompt with. */
export type PromptConditioningOptions = Pick<GenerateOptions, "promptSyntax" | "emphasis" | "commaPaddingBacktrack" | "clipSkip" | "steps" | "width" | "height" | "sdxlClipLSkip"> & {
  /** SDXL: read the prompt as a negative prompt. */
  negative?: boolean;
};

/** A prompt's conditioning as `generate` gives it to the UNet. */
export interface PromptConditioning {
  /** [77 · chunks, hidden] of `values` (evaluation 0's text). */
  shape: [number, number];
  values: Float32Array;
  /**
   * SDXL: the pooled `text_embeds` and the time ids of this side, and every text of the prompt's
   * schedule (one without prompt editing) with the last evaluation index it holds for.
   */
  sdxl?: { pooled: Float32Array; timeIds: Float32Array; schedule: Array<{ endAtStep: number; values: Float32Array; pooled: Float32Array }> };
}
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
  /** SDXL: a refiner model folder run after the base in generations that ask for it (`refiner` option). */
  refiner?: string;
  /**
   * TensorRT only: the refiner's engine folder. `engines` names the base's; without this the refiner's
   * engines are looked for where `sd-trt build --model <refiner>` puts them by default.
   */
  refinerEngines?: string;
  /**
   * A folder of A1111 textual-inversion embeddings (`.safetensors`, subfolders included): a prompt
   * word equal to a file's name (without `.safetensors`) stands for its vectors, as in A1111. A
   * pickle (`.pt`, `.bin`, …), a corrupt file or one of another width fails the load, naming the
   * file. TensorRT engines must have been built with the embedding input (this version's `sd-trt build`).
   */
  embeddingsDir?: string;
  /**
   * LoRAs merged into the model's weights for every generation of this pipeline, each
   * `{ path, scale }`, in order (`--lora FILE[:SCALE]`). The model must be a converted folder
   * (`sd-trt convert`: weights named by diffusers keys). CPU backend: merged graphs cached under
   * `loraCacheDir`.
   */
  loras?: readonly LoraSpec[];
  /** Where LoRA-merged graphs are cached. Defaults to `$XDG_CACHE_HOME/sd-trt/lora` (`~/.cache/sd-trt/lora`). */
  loraCacheDir?: string;
  /**
   * A folder of LoRAs (`.safetensors`, searched recursively) that A1111's `<lora:NAME:SCALE>`
   * prompt tags name by file name or alias (`--lora-dir`). Without it such a tag is an error.
   */
  loraDir?: string;
  /**
   * Called once only the backend's model loading is left, which runs on another thread (ONNX
   * Runtime's worker) or the GPU while this thread waits: a caller can load what it needs next
   * meanwhile (`sd-trt generate` imports its image encoder).
   */
  onWaitingForModel?: () => void;
}

/** The textual-inversion embeddings a pipeline loaded, and what its prompts and text encoder use of them. */
interface LoadedEmbeddings {
  list: TextualInversion[];
  vocabulary: EmbeddingVocabulary;
  vectors: Float32Array;
  /** SDXL: text_encoder_2's vectors (clip_g), rows as `vectors`. */
  vectorsClipG?: Float32Array;
  shorthash: Map<string, string>;
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
  readonly #embeddings: LoadedEmbeddings | undefined;

  /** SDXL models: the second tokenizer and the pipeline facts options are validated against. */
  readonly #sdxl: SdxlModelFacts | undefined;
  /** SDXL: the refiner's backend, owned by this pipeline. */
  readonly #refinerBackend: Backend | undefined;

  readonly #loras: readonly LoraSpec[];
  readonly #loraFileHashes = new Map<string, Promise<string>>();
  #loraLibrary: LoraLibrary | undefined;
  /** The prompt-tag LoRAs the backend's weights hold now (JSON of paths and scales). */
  #taggedLoras = "[]";

  private constructor(
    folder: ModelFolder,
    backend: Backend,
    reason: string,
    tokenizer: ClipTokenizer,
    defaultScheduler: SchedulerName,
    device: number,
    embeddings: LoadedEmbeddings | undefined,
    sdxl?: SdxlModelFacts,
    refiner?: { backend: Backend; folder: ModelFolder },
    loras: readonly LoraSpec[] = [],
  ) {
    this.#sdxl = sdxl;
    this.#refinerBackend = refiner?.backend;
    this.#folder = folder;
    this.#embeddings = embeddings;
    this.device = device;
    this.#backend = backend;
    this.#limits = limitsForModel(backend.limits, folder.sizeMultiple);
    this.backendReason = reason;
    this.defaultScheduler = defaultScheduler;
    this.#loras = loras;
    this.#generation = {
      backend,
      limits: this.#limits,
      tokenizer,
      programs: new ProgramCache(folder.schedulerConfig),
      ...(folder.sourceCheckpoint !== undefined ? { modelName: folder.sourceCheckpoint.name } : {}),
      modelHash: () => this.modelHash(),
      ...(embeddings ? { embeddings: { vectors: embeddings.vectors, shorthash: embeddings.shorthash, ...(embeddings.vectorsClipG ? { vectorsClipG: embeddings.vectorsClipG } : {}) } } : {}),
      loraHashes: (tagged) => this.loraHashes(tagged),
      useLoras: (tagged) => this.#useLoras(tagged),
    };
    if (refiner) {
      const config = refiner.folder.schedulerConfig;
      const train = config["num_train_timesteps"];
      this.#generation.refiner = { backend: refiner.backend, programs: new ProgramCache(config), numTrainTimesteps: typeof train === "number" ? train : 1000 };
    }
  }

  /**
   * Loads a model folder (optimum ONNX layout or TensorRT demo naming) on a backend.
   * @param modelDir Defaults to the tiny test model shipped with the package (`models/tiny-sd`).
   * @throws ModelFileError naming the folder or file that is missing or unsupported.
   */
  static async load(modelDir: string = defaultModelDir, options: PipelineLoadOptions = {}): Promise<Pipeline> {
    const choice = oneOf("backend", options.backend ?? "auto", BACKEND_CHOICES);
    const folder = await locateModelFolder(modelDir);
    checkNotRefiner(folder);
    const defaultScheduler = canonicalSchedulerName(folder.schedulerClass, folder.schedulerConfig);
    if (!defaultScheduler) {
      throw new ModelFileError(folder.schedulerConfigFile ?? folder.dir, `${folder.schedulerConfigFile ?? "the default scheduler config"} names the scheduler class ${JSON.stringify(folder.schedulerClass)}, which sd-trt does not implement (supported: ${SCHEDULER_NAMES.join(", ")})`);
    }
    createScheduler(defaultScheduler, folder.schedulerConfig); // a bad config fails at load, not at the first generate
    const loadOptions: BackendLoadOptions = {};
    if (options.memoryLimit !== undefined) loadOptions.memoryLimit = numberInRange("memoryLimit", options.memoryLimit, 1, Number.MAX_SAFE_INTEGER);
    if (options.device !== undefined) loadOptions.device = options.device;
    if (options.engines !== undefined) loadOptions.engines = options.engines;
    if (options.threads !== undefined) loadOptions.threads = integerInRange("threads", options.threads, 1, 1024);
    if (options.useGraphs !== undefined) loadOptions.useGraphs = options.useGraphs;
    if (options.loras?.length) {
      for (const [i, lora] of options.loras.entries()) checkLoraScale(lora.scale, `loras[${i}].scale`);
      loadOptions.loras = options.loras;
    }
    if (options.loraCacheDir !== undefined) loadOptions.loraCacheDir = options.loraCacheDir;
    const embeddingsDir = options.embeddingsDir === undefined ? undefined : nonEmptyString("embeddingsDir", options.embeddingsDir);
    // A refiner that does not fit the base is refused before anything loads.
    const refinerFolder = options.refiner === undefined ? undefined : await locateModelFolder(options.refiner);
    // A1111 gives the refiner's text_encoder_2 the files' clip_g vectors too; the refiner's encoder is not edited for them yet.
    if (refinerFolder && options.embeddingsDir !== undefined) throw new InvalidOptionError("embeddingsDir", "textual-inversion embeddings (embeddingsDir) are not supported with a refiner yet");
    if (refinerFolder) checkRefinerMatchesBase(folder, refinerFolder);
    if (options.refinerEngines !== undefined) {
      if (!refinerFolder) throw new InvalidOptionError("refinerEngines", "refinerEngines needs refiner (the refiner whose engines they are)");
      if (choice === "cpu") throw new InvalidOptionError("refinerEngines", 'refinerEngines applies to the TensorRT backend; it cannot be used with backend "cpu"');
    }
    const readTokenizer = () => (folder.tokenizer ? ClipTokenizer.fromDirectory(dirname(folder.tokenizer.vocab)) : ClipTokenizer.default());
    // Textual-inversion vectors take the ids from the tokenizer's vocabulary size on, which the
    // backend's text-encoder edit needs: then the tokenizer comes first.
    const earlyTokenizer = embeddingsDir !== undefined ? await readTokenizer() : undefined;
    // The backend creates its sessions on another thread (ONNX Runtime's worker, or the GPU), so
    // the tokenizer's tables (~0.4 s of BPE set-up) are built here meanwhile, not before.
    const loading = loadBackend(folder, choice, { ...loadOptions, ...(earlyTokenizer ? { tokenVocabularySize: earlyTokenizer.vocabSize } : {}) });
    loading.catch(() => undefined); // its failure is reported below, once the tokenizer is built
    let tokenizer: ClipTokenizer;
    let sdxl: SdxlModelFacts | undefined;
    let refiner: { backend: Backend; folder: ModelFolder } | undefined;
    try {
      tokenizer = earlyTokenizer ?? (await readTokenizer());
      if (folder.sdxl) sdxl = { tokenizer2: await ClipTokenizer.fromDirectory(dirname(folder.sdxl.tokenizer2.vocab)), forceZerosForEmptyPrompt: folder.sdxl.forceZerosForEmptyPrompt };
      if (refinerFolder) {
        const refinerTokenizer = await ClipTokenizer.fromDirectory(dirname(refinerFolder.tokenizer!.vocab));
        sdxl!.refiner = { tokenizer: refinerTokenizer, forceZerosForEmptyPrompt: refinerFolder.sdxl!.forceZerosForEmptyPrompt };
        // The base's engine folder holds the base's engines only: the refiner's are its own.
        const refinerLoadOptions: BackendLoadOptions = { ...loadOptions };
        delete refinerLoadOptions.engines;
        if (options.refinerEngines !== undefined) refinerLoadOptions.engines = options.refinerEngines;
        refiner = { backend: (await loadBackend(refinerFolder, choice, refinerLoadOptions)).backend, folder: refinerFolder };
      }
    } catch (error) {
      await loading.then(({ backend }) => backend.dispose(), () => undefined);
      throw error;
    }
    let loaded: Awaited<typeof loading>;
    try {
      options.onWaitingForModel?.();
      loaded = await loading;
    } catch (error) {
      await refiner?.backend.dispose();
      throw error;
    }
    let embeddings: LoadedEmbeddings | undefined;
    try {
      if (embeddingsDir !== undefined) embeddings = await loadEmbeddings(embeddingsDir, loaded.backend, tokenizer, folder.sdxl !== undefined);
    } catch (error) {
      await loaded.backend.dispose();
      await refiner?.backend.dispose();
      throw error;
    }
    const pipeline = new Pipeline(folder, loaded.backend, loaded.reason, tokenizer, defaultScheduler, options.device ?? 0, embeddings, sdxl, refiner, options.loras ?? []);
    if (options.loraDir !== undefined) {
      try {
        pipeline.#loraLibrary = await LoraLibrary.scan(options.loraDir);
      } catch (error) {
        await pipeline.dispose();
        throw error;
      }
    }
    return pipeline;
  }

  /**
   * A1111's reading of one prompt with this pipeline's tokenizer and embeddings (`tokenize_line`):
   * parsed spans, chunks (an embedding's vectors as ids from the vocabulary size on), token count.
   */
  readPrompt(prompt: string, options: { emphasis?: Emphasis; commaPaddingBacktrack?: number } = {}): TokenizedPrompt {
    return tokenizePrompt(this.#generation.tokenizer, prompt, { ...options, ...(this.#embeddings ? { embeddings: this.#embeddings.vocabulary } : {}) });
  }

  /** The textual-inversion embeddings loaded with `embeddingsDir` (name, file, vector count, hashes), sorted by name. */
  get embeddings(): readonly Omit<TextualInversion, "vectors">[] {
    return (this.#embeddings?.list ?? []).map(({ vectors: _, ...rest }) => rest);
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
  /** The LoRAs of `loraDir` (empty without one), in A1111's `GET /sdapi/v1/loras` shape. */
  get loraLibrary(): readonly LoraEntry[] {
    return this.#loraLibrary?.entries ?? [];
  }

  /**
   * Puts the weights of the pipeline's LoRAs plus a batch's prompt-tag LoRAs in the backend (a
   * refit or a switch of merged graphs), when they are not there already. Called between batches.
   */
  async #useLoras(tagged: readonly LoraSpec[]): Promise<void> {
    const key = JSON.stringify(tagged.map((l) => [l.path, l.scale]));
    if (key === this.#taggedLoras) return;
    if (!this.#backend.setLoras) throw new InvalidOptionError("prompt", `the ${this.#backend.name} backend cannot apply LoRAs named in prompts`);
    await this.#backend.setLoras([...this.#loras, ...tagged]);
    this.#taggedLoras = key;
  }

  /**
   * A1111's "Lora hashes": the pipeline's LoRAs and then `tagged` (a request's prompt tags), each
   * by the name its tag used (else its file name without extension) with its addnet short hash
   * (each file hashed once); undefined when there are none.
   */
  loraHashes(tagged: readonly LoraSpec[] = []): Promise<string | undefined> {
    const hash = (path: string) => {
      let known = this.#loraFileHashes.get(path);
      if (!known) {
        known = addnetHash(path);
        this.#loraFileHashes.set(path, known);
      }
      return known;
    };
    const all = [...this.#loras, ...tagged];
    return Promise.all(all.map(async (l) => ({ name: l.name ?? basename(l.path).replace(/\.[^.]*$/, ""), hash: await hash(l.path) }))).then(loraHashesInfotext);
  }

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
      ...(this.#sdxl ? { sdxl: this.#sdxl } : {}),
      ...(this.#embeddings ? { embeddings: this.#embeddings.vocabulary } : {}),
      ...(this.#loraLibrary ? { findLora: (name: string) => this.#loraLibrary!.find(name)?.path, loraFolder: this.#loraLibrary.dir } : {}),
    });
  }

  /**
   * The text conditioning `generate` would give the UNet for this prompt, read with these options
   * (`promptSyntax`, `emphasis`, `commaPaddingBacktrack`, `clipSkip`): [77 · chunks, hidden] values. For
   * inspection and comparison with A1111 (`sd-trt tokenize --model DIR --embeddings`).
   *
   * SDXL (`sdxl` in the result): both encoders joined per token, the pooled `text_embeds` and the
   * time ids, for the prompt as a prompt or (`negative: true`) as a negative prompt — A1111 gives an
   * empty negative prompt zeros — and every text of its schedule (prompt editing needs `steps`);
   * `width`/`height` and `sdxlClipLSkip` as `generate` takes them.
   * @throws InvalidOptionError naming the option; when the backend keeps embeddings on the device
   *   only (TensorRT), naming `backend`.
   */
  async promptConditioning(prompt: string, options: PromptConditioningOptions = {}): Promise<PromptConditioning> {
    if (this.#sdxl) return this.#sdxlPromptConditioning(prompt, options);
    const { negative: _negative, ...rest } = options;
    const request = this.resolveOptions({ ...rest, prompt, guidance: 1 });
    const encode = this.#backend.encodePrompts?.bind(this.#backend);
    if (!encode) throw new InvalidOptionError("backend", `the ${this.#backend.name} backend keeps text embeddings on the device; load the pipeline with backend "cpu" to read them`);
    const { shape, values } = await this.#life.exclusive(() => encode(request.cond.batch, request.promptReading.emphasis, request.clipSkip, this.#embeddings?.vectors));
    return { shape: [shape[1], shape[2]], values };
  }

  async #sdxlPromptConditioning(prompt: string, options: PromptConditioningOptions): Promise<PromptConditioning> {
    const { negative, ...rest } = options;
    // The negative side is read as `generate` reads a negative prompt (A1111's zeros for "").
    const request = this.resolveOptions(negative ? { ...rest, prompt: "", negativePrompt: prompt, guidance: 2 } : { ...rest, prompt, guidance: 1 });
    const sdxl = request.sdxl!;
    const encode = this.#backend.encodeSdxlTexts?.bind(this.#backend);
    if (!encode) throw new InvalidOptionError("backend", `the ${this.#backend.name} backend keeps text embeddings on the device; load the pipeline with backend "cpu" to read them`);
    const first = negative ? request.uncond!.batch : request.cond.batch;
    const second = negative ? sdxl.uncond2!.batch : sdxl.cond2.batch;
    const zero = negative && sdxl.zeroUncondRows?.[0] === 1;
    const embeddings = this.#embeddings;
    const encodeOptions = {
      ...(sdxl.clipLSkip !== undefined ? { clipLSkip: sdxl.clipLSkip } : {}),
      ...(zero ? { zeroTexts: new Uint8Array(first.prompts).fill(1) } : {}),
      ...(embeddings?.vectorsClipG ? { tokenVectors: embeddings.vectors, tokenVectors2: embeddings.vectorsClipG } : {}),
    };
    const { shape, values, pooled } = await this.#life.exclusive(() => encode(first, second, request.promptReading.emphasis, encodeOptions));
    const [, tokens, hidden] = shape;
    const pooledSize = pooled.length / shape[0];
    const text = (t: number) => ({ values: values.slice(t * tokens * hidden, (t + 1) * tokens * hidden), pooled: pooled.slice(t * pooledSize, (t + 1) * pooledSize) });
    const schedule = (first.schedules?.[0] ?? [[request.steps, first.rowOf[0]!]]).map(([endAtStep, t]) => ({ endAtStep, ...text(t) }));
    const ids = sdxlRequestTimeIds(sdxl, request.width!, request.height!);
    return { shape: [tokens, hidden], values: schedule[0]!.values, sdxl: { pooled: schedule[0]!.pooled, timeIds: negative ? ids.negativeTimeIds : ids.timeIds, schedule } };
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
    return this.#life.dispose(async () => {
      await this.#backend.dispose();
      await this.#refinerBackend?.dispose();
    });
  }

  async [Symbol.asyncDispose](): Promise<void> {
    await this.dispose();
  }
}

function nonEmptyString(option: string, value: unknown): string {
  if (typeof value !== "string" || value === "") throw new InvalidOptionError(option, `${option} must be a folder path, got ${JSON.stringify(value)}`);
  return value;
}

/**
 * The embeddings under `dir`, checked against the text encoder's width, with the vocabulary the
 * prompts are read with and the vectors every text-encoder call takes.
 * @throws InvalidOptionError when the backend's text encoder cannot take them; ModelFileError naming a bad file.
 */
async function loadEmbeddings(dir: string, backend: Backend, tokenizer: ClipTokenizer, sdxl: boolean): Promise<LoadedEmbeddings> {
  const width = backend.limits.tokenVectorWidth;
  if (width === undefined) {
    throw new InvalidOptionError(
      "embeddingsDir",
      sdxl && backend.name === "tensorrt"
        ? "embeddingsDir (textual inversion) on SDXL runs on the CPU backend only: the TensorRT engines of SDXL's two text encoders are built without the embedding input"
        : backend.name === "tensorrt"
          ? "embeddingsDir (textual inversion) needs text-encoder engines built with the embedding input: rebuild them with this version's sd-trt build --force"
          : `embeddingsDir (textual inversion) needs a text encoder that takes embedding vectors; the ${backend.name} backend's does not`,
    );
  }
  // SDXL: each file's clip_l goes to text_encoder, its clip_g to text_encoder_2.
  const width2 = backend.limits.tokenVectorWidth2;
  const list = await loadTextualInversions(dir, width2 === undefined ? width : { clipL: width, clipG: width2 });
  const rows = (part: (e: TextualInversion) => Float32Array) => {
    const out = new Float32Array(list.reduce((n, e) => n + part(e).length, 0));
    let at = 0;
    for (const e of list) {
      out.set(part(e), at);
      at += part(e).length;
    }
    return out;
  };
  const loaded: LoadedEmbeddings = { list, vocabulary: new EmbeddingVocabulary(tokenizer, list), vectors: rows((e) => e.vectors), shorthash: new Map(list.map((e) => [e.name, e.shorthash])) };
  if (width2 !== undefined) loaded.vectorsClipG = rows((e) => e.vectorsClipG!);
  return loaded;
}
