/**
 * The ONNX Runtime CPU backend: runs a model folder's ONNX graphs (optimum or TensorRT demo
 * layout) the way diffusers' ONNX pipeline feeds them, with the shared TypeScript sampler
 * executor driving the UNet. It is the reference the TensorRT engines are checked against and
 * the fallback on machines without an NVIDIA GPU.
 *
 * How each model is fed (diffusers `OnnxStableDiffusionPipeline` / `StableDiffusionPipeline`):
 * - text encoder: `input_ids` as the graph's integer type, one call per list of prompts;
 *   identical rows (one prompt repeated for a batch, the empty negative prompt) are encoded once
 *   and repeated, as diffusers repeats `num_images_per_prompt`.
 * - UNet with classifier-free guidance: `sample = cat([x, x])`, `encoder_hidden_states =
 *   cat([uncond, cond])` (uncond **first**), then `m = u + g·(c − u)` in float32. Without
 *   guidance (scale ≤ 1) the batch is B and the raw output is used.
 * - timestep: the program's value cast to the graph's type (float32, float64, or int64/int32 by
 *   truncation, as `np.array([t], dtype)` does) in the graph's layout: rank 0, `[1]` broadcast
 *   over the batch, or one value per row.
 * - VAE decoder: latents already divided by the scaling factor; the output goes to uint8 RGB
 *   with diffusers' `(x·0.5 + 0.5).clamp(0, 1)`, `round(x·255)` (half to even).
 *
 * Every graph runs on one worker thread (`OrtHost`), so the event loop stays free while
 * ONNX Runtime computes. A whole generation (text encoder, denoise loop — `denoise-loop.ts`: the
 * shared sampler executor, the UNet feeds and the guidance — and the decoder, whose output
 * becomes RGB there) is one message to the worker; img2img first encodes its init images there
 * (one more round trip per image). The embeddings never leave the worker. `runtimeStats` adds up the time inside `session.run`
 * as the worker measures it.
 */
import { join } from "node:path";
import { InternalError, InvalidArgumentError, InvalidOptionError, ModelFileError, throwIfAborted } from "../../errors.js";
import { Lifecycle } from "../../lifecycle.js";
import type { Backend, BackendLimits, GenerationJob, GenerationOutput } from "../backend.js";
import { locateModelFolder, type ModelFile, type ModelFolder } from "../../model/folder.js";
import {
  describeSdxlTextEncoder,
  describeTextEncoder,
  onnxSignature,
  describeUnet,
  describeVaeDecoder,
  describeVaeEncoder,
  type SdxlTextEncoderIo,
  type TextEncoderIo,
  type UnetIo,
  type VaeDecoderIo,
  type VaeEncoderIo,
} from "../../model/graph-io.js";
import { splitPosterior } from "../../sampler/latents.js";
import { defaultMemoryLimit, estimateCpuMemory, formatBytes } from "./memory.js";
import { startLatents } from "../start-latents.js";
import { OrtHost, type GenerateJob, type HostGenerateOptions, type HostTensor, type SessionOptions } from "./ort-host.js";
import type { PromptRows, SdxlGenerateJob, TextEncoderCall } from "./ort-protocol.js";
import { ExternalDataReader, OnnxModel } from "../../onnx/model.js";
import { inlineExternal } from "../../onnx/convert-fp16.js";
import { CLIP_SKIP_INPUT, editTextEncoder, EXTRA_VECTORS_INPUT } from "../../onnx/text-encoder-edit.js";
import { checkDenoiseJob, TOKENS } from "./denoise-loop.js";
import { noiseDrawCount, stepNoiseOf } from "../../sampler/step-noise.js";
import type { PromptBatch } from "../../prompt/conditioning.js";
import type { Emphasis } from "../../prompt/emphasis.js";
import { mergedLoraGraphs } from "../../convert/lora/merged-folder.js";
import type { LoraSpec } from "../../convert/lora/set.js";

export { combineGuidance, timestepTensor } from "./denoise-loop.js";

/** Image size limits of the CPU backend when the UNet export leaves the size dynamic. */
export const CPU_SIZE_LIMITS = { min: 64, max: 2048, multiple: 8 } as const;
/** Largest batch the CPU backend accepts when the export leaves the batch dynamic. */
export const CPU_MAX_BATCH = 16;
/**
 * Most 77-token chunks per prompt on the CPU (2400 prompt tokens). ONNX Runtime takes any text
 * length; the limit only turns a runaway prompt into a clear error instead of a slow UNet.
 */
export const CPU_MAX_PROMPT_CHUNKS = 32;

export interface CpuBackendOptions extends SessionOptions {
  /** Most memory a generation may need, in bytes (see memory.ts). Defaults to this machine's memory. */
  memoryLimit?: number;
  /**
   * Textual inversion: the tokenizer's vocabulary size. The text encoder then takes the vectors of
   * `GenerationJob.tokenVectors`, a prompt token id `vocabSize + r` standing for row r (lib/prompt
   * puts them there). Needs the text-encoder edit; a graph it cannot edit fails the load.
   */
  tokenVocabularySize?: number;
  /**
   * LoRAs merged into the text encoder and UNet weights (lib/convert/lora/merged-folder.ts: the
   * merged graphs are cached per model and set). The folder must be a converted one (weights named
   * by diffusers keys).
   */
  loras?: readonly LoraSpec[];
  /** Where merged graphs are cached. Defaults to `defaultLoraCacheDir()`. */
  loraCacheDir?: string;
}

/** ONNX Runtime calls of one model: how many, the batch rows they processed, and the time inside `run`. */
export interface ModelCallStats {
  calls: number;
  rows: number;
  ms: number;
}

/** Time spent inside ONNX Runtime, per model. */
export interface RuntimeStats {
  textEncoder: ModelCallStats;
  unet: ModelCallStats;
  vaeDecoder: ModelCallStats;
  vaeEncoder: ModelCallStats;
}

interface Session<Io> {
  handle: number;
  file: ModelFile;
  io: Io;
  /** Inputs an edited graph needs besides its ids when it is probed for an output's size (zero textual-inversion vectors). */
  probeFeeds?: Record<string, HostTensor>;
}

/** An SDXL model's second encoder and the sizes that tie the three graphs together (checked at load). */
interface SdxlSessions {
  textEncoder2: Session<SdxlTextEncoderIo>;
  hiddenSizes: [number, number];
  pooledSize: number;
  timeIdsSize: number;
}

function emptyStats(): RuntimeStats {
  return {
    textEncoder: { calls: 0, rows: 0, ms: 0 },
    unet: { calls: 0, rows: 0, ms: 0 },
    vaeDecoder: { calls: 0, rows: 0, ms: 0 },
    vaeEncoder: { calls: 0, rows: 0, ms: 0 },
  };
}

export class CpuBackend implements Backend {
  readonly name = "cpu" as const;
  readonly limits: BackendLimits;
  /** Hidden size of the text encoder output (768 for SD 1.x, 32 for the tiny fixture). */
  readonly hiddenSize: number;
  readonly scalingFactor: number;
  readonly folder: ModelFolder;
  readonly #host: OrtHost;
  readonly #life = new Lifecycle("CPU backend");
  #textEncoder: Session<TextEncoderIo>;
  #unet: Session<UnetIo>;
  /** The folder as given (without LoRAs), and where merged graphs are cached: for `setLoras`. */
  #baseFolder: ModelFolder | undefined;
  #loraCacheDir: string | undefined;
  /** The textual-inversion vocabulary size the text encoder was edited for (re-applied by `setLoras`). */
  #tokenVocabularySize: number | undefined;
  readonly #vaeDecoder: Session<VaeDecoderIo>;
  /** Made at the first img2img (txt2img never needs it; not loading it saves cold-start time). */
  #vaeEncoder: Promise<Session<VaeEncoderIo>> | null = null;
  readonly #sdxl: SdxlSessions | null;
  #stats = emptyStats();
  /** How the sessions were made, for the VAE encoder's made later. */
  readonly #sessionOptions: SessionOptions;
  readonly #memoryLimit: number;
  /** The text encoder's edited inputs: clip skip (when its layers were found) and the textual-inversion vectors. */
  readonly #textEncoderFeeds: TextEncoderFeeds;

  private constructor(
    folder: ModelFolder,
    host: OrtHost,
    sessions: {
      textEncoder: Session<TextEncoderIo>;
      unet: Session<UnetIo>;
      vaeDecoder: Session<VaeDecoderIo>;
      sdxl: SdxlSessions | null;
    },
    hiddenSize: number,
    memoryLimit: number,
    sessionOptions: SessionOptions,
    textEncoderFeeds: TextEncoderFeeds,
  ) {
    this.#sdxl = sessions.sdxl;
    this.folder = folder;
    this.#sessionOptions = sessionOptions;
    this.#textEncoderFeeds = textEncoderFeeds;
    this.#memoryLimit = memoryLimit;
    this.#host = host;
    this.#textEncoder = sessions.textEncoder;
    this.#unet = sessions.unet;
    this.#vaeDecoder = sessions.vaeDecoder;
    this.hiddenSize = hiddenSize;
    this.scalingFactor = folder.scalingFactor;
    const unet = sessions.unet.io;
    // Sizes the UNet can take: multiples of what its downsamplings need (the model folder's
    // `sizeMultiple`, at least 8), inside the CPU limits rounded to that multiple.
    const multiple = Math.max(CPU_SIZE_LIMITS.multiple, folder.sizeMultiple);
    const size = (fixed: number | undefined) =>
      fixed === undefined
        ? { min: Math.ceil(CPU_SIZE_LIMITS.min / multiple) * multiple, max: Math.floor(CPU_SIZE_LIMITS.max / multiple) * multiple }
        : { min: fixed * 8, max: fixed * 8 };
    const height = size(unet.staticHeight);
    const width = size(unet.staticWidth);
    this.limits = {
      maxBatch: unet.staticBatch ?? CPU_MAX_BATCH,
      minWidth: width.min,
      maxWidth: width.max,
      minHeight: height.min,
      maxHeight: height.max,
      sizeMultiple: multiple,
      canEncodeImages: folder.vaeEncoder !== undefined,
      canObserveLatents: true,
      fractionalTimesteps: unet.timestepType === "float32" || unet.timestepType === "float64",
      maxPromptChunks: CPU_MAX_PROMPT_CHUNKS,
      maxClipSkip: textEncoderFeeds.sdxlHiddenStates ?? textEncoderFeeds.layers,
      // SDXL: text_encoder takes the clip_l vectors, text_encoder_2 the clip_g ones.
      ...(textEncoderFeeds.tokenVectors ? (sessions.sdxl ? { tokenVectorWidth: sessions.sdxl.hiddenSizes[0], tokenVectorWidth2: sessions.sdxl.hiddenSizes[1] } : { tokenVectorWidth: hiddenSize }) : {}),
    };
    if (sessions.sdxl) {
      // A refiner has no CLIP-L to skip layers of.
      if (textEncoderFeeds.sdxlHiddenStates === undefined) this.limits.sdxlClipLSkipUnavailable = "this model has no text_encoder (CLIP-L)";
    } else if (textEncoderFeeds.unavailable) {
      this.limits.clipSkipUnavailable = textEncoderFeeds.unavailable;
    }
  }

  /**
   * Loads a model folder: finds its graphs, checks each one's I/O contract, and creates the
   * ONNX Runtime sessions on a worker thread.
   * @param model a folder path, or a folder already located with `locateModelFolder`.
   * @throws ModelFileError naming the folder or file that is missing or unsupported.
   */
  static async load(model: string | ModelFolder, options: CpuBackendOptions = {}): Promise<CpuBackend> {
    const located = typeof model === "string" ? await locateModelFolder(model) : model;
    const folder = options.loras?.length ? await withMergedLoras(located, options.loras, options.loraCacheDir) : located;
    const host = new OrtHost();
    try {
      const sdxlFolder = folder.sdxl;
      // SD 1.x/2.x: the text encoder's graph is read and edited on this thread (clip skip, textual
      // inversion) while the worker creates the other sessions; its one session is made after.
      const editing = sdxlFolder ? undefined : editTextEncoderGraph(folder.textEncoder, options);
      editing?.catch(() => undefined); // awaited below; a failure is reported there
      // Every load is posted at once: the worker makes the sessions one after the other without
      // waiting for this thread, which meanwhile builds the tokenizer and edits the text encoder.
      // A refiner's only encoder is text_encoder_2 (folder.textEncoder is then that file).
      const loads = {
        sdxlTextEncoder: sdxlFolder ? openSdxlTextEncoder(host, folder.textEncoder, sdxlFolder.secondEncoderOnly, options) : undefined,
        unet: openSession(host, folder.unet, describeUnet, options),
        vaeDecoder: openSession(host, folder.vaeDecoder, describeVaeDecoder, options),
      };
      for (const load of Object.values(loads)) load?.catch(() => undefined); // awaited below, in this order
      const sdxlTextEncoder = await loads.sdxlTextEncoder;
      const unet = await loads.unet;
      const vaeDecoder = await loads.vaeDecoder;
      const sessionOptions: SessionOptions = options.intraOpThreads ? { intraOpThreads: options.intraOpThreads } : {};
      if (sdxlFolder && sdxlTextEncoder) {
        const textEncoder = sdxlTextEncoder;
        const textEncoder2 = sdxlFolder.secondEncoderOnly ? textEncoder : await openSdxlTextEncoder(host, sdxlFolder.textEncoder2, true, options);
        const sdxl = await sdxlSessions(host, folder, textEncoder, textEncoder2, unet);
        const hidden = sdxl.hiddenSizes[0] + sdxl.hiddenSizes[1];
        if (options.tokenVocabularySize !== undefined && sdxlFolder.secondEncoderOnly) {
          throw new ModelFileError(folder.dir, `textual-inversion embeddings are not supported for an SDXL refiner (text_encoder_2 alone) yet: load ${folder.dir} without embeddingsDir`);
        }
        // SDXL's encoders are not edited: text_encoder returns every hidden state, and A1111's clip
        // skip on CLIP-L (sdxlClipLSkip) picks one of them (`#sdxlJob`).
        const noEdit: TextEncoderFeeds = { layers: 1, unavailable: "SDXL's text encoders are not edited" };
        if (!sdxlFolder.secondEncoderOnly) noEdit.sdxlHiddenStates = penultimateIndex(textEncoder.io) + 2;
        if (options.tokenVocabularySize !== undefined) noEdit.tokenVectors = true;
        const backend = new CpuBackend(folder, host, { textEncoder, unet, vaeDecoder, sdxl }, hidden, options.memoryLimit ?? defaultMemoryLimit(), sessionOptions, noEdit);
        backend.#baseFolder = located;
        backend.#loraCacheDir = options.loraCacheDir;
        if (options.tokenVocabularySize !== undefined) backend.#tokenVocabularySize = options.tokenVocabularySize;
        return backend;
      }
      if (unet.io.addedConditioning) {
        throw new ModelFileError(folder.unet.path, `${folder.unet.path} takes text_embeds and time_ids (an SDXL UNet), but model folder ${folder.dir} has no text_encoder_2/model.onnx`);
      }
      const prepared = await editing!;
      const textEncoder: Session<TextEncoderIo> = { handle: (await host.load(folder.textEncoder.path, options, prepared.bytes)).handle, file: folder.textEncoder, io: prepared.io };
      const feeds = prepared.feeds;

      if (textEncoder.io.sequenceLength !== undefined && textEncoder.io.sequenceLength !== TOKENS) {
        throw new ModelFileError(folder.textEncoder.path, `${folder.textEncoder.path}: input_ids must take ${TOKENS} tokens, the graph fixes ${textEncoder.io.sequenceLength}`);
      }
      const a = textEncoder.io.hiddenSize;
      const b = unet.io.contextSize;
      if (a !== undefined && b !== undefined && a !== b) {
        throw new ModelFileError(
          folder.unet.path,
          `${folder.unet.path} expects text embeddings of size ${b}, but the text encoder ${folder.textEncoder.path} produces ${a}`,
        );
      }
      let hiddenSize = a ?? b;
      if (hiddenSize === undefined) {
        // Neither graph declares it: ask the text encoder once.
        const probe = await host.run(textEncoder.handle, folder.textEncoder.name, { [textEncoder.io.idsName]: idsTensor(textEncoder.io, new Int32Array(TOKENS), 1) }, [textEncoder.io.hiddenName]);
        hiddenSize = probe.outputs[textEncoder.io.hiddenName]!.dims[2]!;
      }
      const backend = new CpuBackend(folder, host, { textEncoder, unet, vaeDecoder, sdxl: null }, hiddenSize, options.memoryLimit ?? defaultMemoryLimit(), sessionOptions, feeds);
      backend.#baseFolder = located;
      backend.#loraCacheDir = options.loraCacheDir;
      if (options.tokenVocabularySize !== undefined) backend.#tokenVocabularySize = options.tokenVocabularySize;
      return backend;
    } catch (error) {
      await host.dispose();
      throw error;
    }
  }

  get disposed(): boolean {
    return this.#life.disposed;
  }

  /**
   * Switches the text encoder(s) and UNet to the graphs with `set` merged in (lib/convert/lora/
   * merged-folder.ts, from its cache when the set was merged before), or back to the model's own
   * graphs for an empty set; the old sessions are released once the new ones are loaded.
   * @throws ModelFileError naming a LoRA that does not fit the model (the current weights stay).
   */
  setLoras(set: readonly LoraSpec[]): Promise<void> {
    return this.#life.exclusive(async () => {
      const base = this.#baseFolder;
      if (!base) throw new InvalidOptionError("loras", `LoRAs are not supported for ${this.folder.dir}`);
      const folder = set.length > 0 ? await withMergedLoras(base, set, this.#loraCacheDir) : base;
      const sdxl = this.#sdxl;
      // SDXL's second encoder is a session of its own unless it is the only one (a refiner).
      const separateEncoder2 = sdxl !== null && sdxl.textEncoder2 !== this.#textEncoder;
      const loaded: Session<unknown>[] = [];
      let textEncoderSession: Session<TextEncoderIo>;
      let textEncoder2Session: Session<SdxlTextEncoderIo> | undefined;
      let unet: Awaited<ReturnType<OrtHost["load"]>>;
      try {
        const vocabulary = this.#tokenVocabularySize !== undefined ? { tokenVocabularySize: this.#tokenVocabularySize } : {};
        // SDXL's encoders (textual inversion edits them too) are opened as at load.
        const textEncoder = sdxl ? await openSdxlTextEncoder(this.#host, folder.textEncoder, !separateEncoder2, { ...this.#sessionOptions, ...vocabulary }) : await this.#host.load(folder.textEncoder.path, this.#sessionOptions);
        textEncoderSession = { ...this.#textEncoder, handle: textEncoder.handle, file: folder.textEncoder };
        loaded.push(textEncoderSession);
        // The merged text encoder gets the same edit as the model's own (clip skip, textual inversion).
        if (!sdxl && !this.#textEncoderFeeds.unavailable) {
          await editedTextEncoder(this.#host, textEncoderSession, { ...this.#sessionOptions, ...vocabulary });
        }
        if (sdxl && separateEncoder2) {
          const file = folder.sdxl!.textEncoder2;
          textEncoder2Session = { ...sdxl.textEncoder2, handle: (await openSdxlTextEncoder(this.#host, file, true, { ...this.#sessionOptions, ...vocabulary })).handle, file };
          loaded.push(textEncoder2Session);
        }
        unet = await this.#host.load(folder.unet.path, this.#sessionOptions);
      } catch (error) {
        for (const session of loaded) await this.#host.release(session.handle);
        throw error;
      }
      const old = [this.#textEncoder.handle, this.#unet.handle, ...(sdxl && separateEncoder2 ? [sdxl.textEncoder2.handle] : [])];
      this.#textEncoder = textEncoderSession;
      this.#unet = { ...this.#unet, handle: unet.handle, file: folder.unet };
      if (sdxl) sdxl.textEncoder2 = textEncoder2Session ?? (textEncoderSession as Session<SdxlTextEncoderIo>);
      for (const handle of old) await this.#host.release(handle);
    });
  }


  checkMemory(request: { batch: number; width: number; height: number; guidance: boolean }): void {
    const estimate = estimateCpuMemory({ unet: this.folder.unetConfig, vae: this.folder.vaeConfig }, request);
    if (estimate.bytes <= this.#memoryLimit) return;
    const images = request.batch === 1 ? "1 image" : `${request.batch} images`;
    throw new InvalidOptionError(
      "size",
      `${request.width}x${request.height} × ${images} needs about ${formatBytes(estimate.bytes)} of memory on the CPU backend (${estimate.detail}), more than the limit of ${formatBytes(this.#memoryLimit)}; use a smaller size or batch, or raise the limit (memoryLimit, --memory-limit)`,
    );
  }

  /** Time spent inside ONNX Runtime since load (or the last `resetRuntimeStats`). */
  get runtimeStats(): RuntimeStats {
    return structuredClone(this.#stats);
  }

  resetRuntimeStats(): void {
    this.#stats = emptyStats();
  }

  /**
   * A whole generation: img2img's init images through the VAE encoder (one worker call each),
   * then one request to the worker for the rest — text encoder (each distinct prompt row once,
   * repeated as diffusers repeats `num_images_per_prompt`), the denoise loop, the VAE decoder
   * (latents divided by the scaling factor there, output to RGB there).
   * @throws the signal's reason when it aborts (the worker stops between stages or evaluations).
   */
  generate(job: GenerationJob): Promise<GenerationOutput> {
    return this.#life.exclusive(async () => {
      throwIfAborted(job.signal);
      const { program, batch, latentHeight, latentWidth, guidance, cond: condPrompts, uncond: uncondPrompts } = job;
      const noise = stepNoiseOf(job.noise);
      const cfg = uncondPrompts !== null;
      const prompts = (p: PromptBatch, name: string): PromptRows => {
        checkPromptBatch(p, batch, name);
        return promptRows(this.#textEncoder.io, p);
      };
      const cond = prompts(condPrompts, "cond");
      const uncond = uncondPrompts ? prompts(uncondPrompts, "uncond") : null;

      const imageEncode: number[] = [];
      const latents = await startLatents(job, (pixels, height, width) => this.#encodeImage(pixels, height, width), this.scalingFactor, imageEncode);
      if (imageEncode.length > 0) job.onStage?.("encode-image");
      // The step noise is drawn on this thread while the worker runs the models (OrtHost.generate).
      const denoise = { program, latents, noise: [], batch, latentHeight, latentWidth, hiddenSize: this.hiddenSize, guidance: cfg ? guidance : null, io: this.#unet.io };
      if (noise.count !== noiseDrawCount(program)) throw new InvalidArgumentError(`generate: the program draws noise ${noiseDrawCount(program)} times, the job brings ${noise.count} draws`);
      // Here, so a bad job fails with the caller's stack before it travels.
      const condTokens = cond.chunks * TOKENS;
      const uncondTokens = uncond ? uncond.chunks * TOKENS : condTokens;
      checkDenoiseJob({ ...denoise, condTokens, uncondTokens, context: new Float32Array(batch * ((cfg ? uncondTokens : 0) + condTokens) * this.hiddenSize) }, true);
      // Guidance doubles the UNet batch unless cond and uncond differ in length (then each half runs alone).
      const unetBatch = this.#checkUnetBatch(batch, cfg && condTokens === uncondTokens);
      const te = this.#textEncoder;
      const vae = this.#vaeDecoder;
      const request: GenerateJob = {
        textEncoder: this.#sdxl ? this.#sdxlFirstEncoderCall(job.sdxl?.clipLSkip, job.tokenVectors) : this.#textEncoderCall(job.clipSkip ?? 1, job.tokenVectors),
        cond,
        uncond,
        emphasis: job.emphasis,
        unet: this.#unet.handle,
        denoise,
        decoder: { handle: vae.handle, latentName: vae.io.latentName, imageName: vae.io.imageName, scalingFactor: this.scalingFactor, source: vae.file.path },
      };
      const sdxl = this.#sdxlJob(job, cond, uncond);
      if (sdxl) request.sdxl = sdxl;
      const options: HostGenerateOptions = {};
      if (job.signal) options.signal = job.signal;
      if (job.onStep) options.onStep = job.onStep;
      const { onStage, onLatents } = job;
      if (onStage) options.onTextEncoded = () => onStage("encode-text");
      if (onLatents) {
        onLatents(0, latents);
        options.onLatents = (evalIndex, x) => onLatents(evalIndex + 1, x);
      }
      const result = await this.#host.generate(request, { textEncoder: te.file, unet: this.#unet.file, vaeDecoder: vae.file }, noise, options);
      const { textEncoder, unet, vaeDecoder } = result.calls;
      const encodedRows = [cond, uncond].slice(0, textEncoder.calls).reduce((n, p) => n + (p?.ids.dims[0] ?? 0), 0);
      this.#add("textEncoder", textEncoder.calls, encodedRows, textEncoder.ms);
      this.#count("unet", unetBatch, unet.ms, unet.calls);
      this.#add("vaeDecoder", vaeDecoder.calls, batch, vaeDecoder.ms);
      if (result.latents === null) {
        throwIfAborted(job.signal); // stopped by the signal: reject with its reason
        throw new InternalError("generate: the ONNX Runtime worker stopped, but the signal did not abort");
      }
      this.#checkImageDims(result.imageDims, batch, latentHeight, latentWidth);
      onStage?.("decode");
      const { textEncode, denoise: denoiseMs, decode } = result.stageMs;
      const output: GenerationOutput = { images: result.images, timings: { textEncode, imageEncode, denoise: denoiseMs, decode, stepNoise: result.stepNoiseMs } };
      if (job.returnLatents) output.latents = result.latents;
      return output;
    });
  }

  /**
   * The text conditioning of one prompt list, as the denoise loop gets it: each chunk encoded,
   * weighted by `emphasis`, the chunks joined — [rows, 77 · chunks, hidden], row r for image r.
   * For inspection (`sd-trt tokenize --model`) and tests; `generate` never brings it back.
   */
  /**
   * The SDXL part of a generate request; null for SD 1.x/2.x. The second encoder's prompts must
   * have the first's chunk count (the rows are joined token by token).
   */
  #sdxlJob(job: GenerationJob, cond: PromptRows, uncond: PromptRows | null): SdxlGenerateJob | null {
    const model = this.#sdxl;
    if (!model) {
      if (job.sdxl) throw new InvalidArgumentError("generate: the job carries SDXL conditioning, but the model is not SDXL");
      return null;
    }
    const x = job.sdxl;
    if (!x) throw new InvalidArgumentError("generate: an SDXL model needs the job's sdxl conditioning (second prompts, time ids)");
    const { batch } = job;
    const te2 = model.textEncoder2;
    const cond2 = promptRows(te2.io, checkedPromptBatch(x.cond2, batch, "sdxl.cond2"));
    if (cond2.chunks !== cond.chunks) throw new InvalidArgumentError(`generate: sdxl.cond2 has ${cond2.chunks} chunks, cond ${cond.chunks}; they must match`);
    let uncond2: PromptRows | null = null;
    if (uncond && !x.zeroUncond) {
      if (!x.uncond2) throw new InvalidArgumentError("generate: guidance without zeroUncond needs sdxl.uncond2");
      uncond2 = promptRows(te2.io, checkedPromptBatch(x.uncond2, batch, "sdxl.uncond2"));
      if (uncond2.chunks !== uncond.chunks) throw new InvalidArgumentError(`generate: sdxl.uncond2 has ${uncond2.chunks} chunks, uncond ${uncond.chunks}; they must match`);
    }
    if (uncond && x.zeroUncond && uncond.chunks !== cond.chunks) throw new InvalidArgumentError("generate: zero uncond embeddings take the cond side's shape, so uncond must have cond's chunk count");
    for (const [name, ids] of [["timeIds", x.timeIds], ["negativeTimeIds", x.negativeTimeIds]] as const) {
      if (ids.length !== batch * model.timeIdsSize) throw new InvalidArgumentError(`generate: sdxl.${name} must be [${batch}, ${model.timeIdsSize}], got ${ids.length} values`);
    }
    if (x.zeroUncondRows && x.zeroUncondRows.length !== batch) throw new InvalidArgumentError(`generate: sdxl.zeroUncondRows must have one flag per image (${batch}), got ${x.zeroUncondRows.length}`);
    const added = this.#unet.io.addedConditioning!;
    return {
      textEncoder2: { handle: te2.handle, idsName: te2.io.idsName, hiddenName: te2.io.hiddenName, pooledName: te2.io.pooledName!, ...this.#sdxlVectorsFeed(x.tokenVectors2, model.hiddenSizes[1]) },
      cond2,
      uncond2,
      zeroUncond: x.zeroUncond,
      ...(x.zeroUncondRows && uncond2 ? { zeroUncondRows: x.zeroUncondRows } : {}),
      hiddenSizes: model.hiddenSizes,
      pooledSize: model.pooledSize,
      timeIds: x.timeIds,
      negativeTimeIds: x.negativeTimeIds,
      timeIdsSize: model.timeIdsSize,
      textEmbedsName: added.textEmbedsName,
      timeIdsName: added.timeIdsName,
    };
  }

  encodePrompts(prompts: PromptBatch, emphasis: Emphasis, clipSkip = 1, tokenVectors?: Float32Array): Promise<{ shape: [number, number, number]; values: Float32Array }> {
    if (this.#sdxl) return Promise.reject(new InvalidOptionError("model", "reading the text conditioning of an SDXL model (two text encoders) is not supported yet"));
    return this.#life.exclusive(async () => {
      const rows = prompts.rowOf.length;
      checkPromptBatch(prompts, rows, "prompts");
      const te = this.#textEncoder;
      const { embeddings, ms } = await this.#host.encode(te.file, {
        textEncoder: this.#textEncoderCall(clipSkip, tokenVectors),
        prompts: promptRows(te.io, prompts),
        emphasis,
        hiddenSize: this.hiddenSize,
      });
      this.#add("textEncoder", 1, prompts.prompts * prompts.chunks, ms);
      return { shape: [rows, prompts.chunks * TOKENS, this.hiddenSize], values: embeddings };
    });
  }

  encodeSdxlTexts(
    first: PromptBatch,
    second: PromptBatch,
    emphasis: Emphasis,
    options: { clipLSkip?: number; zeroTexts?: Uint8Array; tokenVectors?: Float32Array; tokenVectors2?: Float32Array } = {},
  ): Promise<{ shape: [number, number, number]; values: Float32Array; pooled: Float32Array }> {
    const sdxl = this.#sdxl;
    if (!sdxl) return Promise.reject(new InvalidOptionError("model", "encodeSdxlTexts needs an SDXL model (text_encoder_2)"));
    return this.#life.exclusive(async () => {
      const texts = first.prompts;
      if (second.prompts !== texts || second.chunks !== first.chunks) {
        throw new InvalidArgumentError(`encodeSdxlTexts: both prompt lists must hold the same texts (${texts} and ${second.prompts} texts, ${first.chunks} and ${second.chunks} chunks)`);
      }
      if (options.zeroTexts && options.zeroTexts.length !== texts) throw new InvalidArgumentError(`encodeSdxlTexts: zeroTexts needs one flag per text (${texts})`);
      // Every text once: the rows are the texts themselves.
      const allTexts = (p: PromptBatch): PromptBatch => ({ ...p, rowOf: Int32Array.from({ length: texts }, (_, i) => i) });
      const te = this.#textEncoder;
      const te2 = sdxl.textEncoder2;
      const { embeddings, pooled, ms } = await this.#host.encode(te.file, {
        textEncoder: this.#sdxlFirstEncoderCall(options.clipLSkip, options.tokenVectors),
        prompts: promptRows(te.io, allTexts(first)),
        emphasis,
        hiddenSize: this.hiddenSize,
        sdxl: {
          textEncoder2: { handle: te2.handle, idsName: te2.io.idsName, hiddenName: te2.io.hiddenName, pooledName: te2.io.pooledName!, ...this.#sdxlVectorsFeed(options.tokenVectors2, sdxl.hiddenSizes[1]) },
          prompts2: promptRows(te2.io, allTexts(second)),
          hiddenSizes: sdxl.hiddenSizes,
          pooledSize: sdxl.pooledSize,
          ...(options.zeroTexts ? { zeroTexts: options.zeroTexts } : {}),
        },
      });
      this.#add("textEncoder", 2, 2 * texts * first.chunks, ms);
      return { shape: [texts, first.chunks * TOKENS, this.hiddenSize], values: embeddings, pooled: pooled! };
    });
  }

  /**
   * The text encoder's session with its extra feeds: `clipSkip` (validated against
   * `limits.maxClipSkip` by the pipeline) and the textual-inversion vectors (one zero row when
   * there are none: the input takes at least one).
   */
  #textEncoderCall(clipSkip: number, tokenVectors: Float32Array | undefined): TextEncoderCall {
    const te = this.#textEncoder;
    const feeds = this.#textEncoderFeeds;
    const call: TextEncoderCall = { handle: te.handle, idsName: te.io.idsName, hiddenName: te.io.hiddenName };
    if (clipSkip > feeds.layers || (clipSkip !== 1 && feeds.unavailable)) {
      throw new InvalidArgumentError(`clipSkip ${clipSkip} is beyond this text encoder's ${feeds.layers} layers`);
    }
    if (tokenVectors && (!feeds.tokenVectors || tokenVectors.length % this.hiddenSize !== 0)) {
      throw new InvalidArgumentError(`tokenVectors needs a text encoder loaded with tokenVocabularySize and whole rows of ${this.hiddenSize} values`);
    }
    if (feeds.unavailable) return call;
    call.extraFeeds = { [CLIP_SKIP_INPUT]: { type: "int32", dims: [1], data: Int32Array.of(clipSkip) } };
    if (feeds.tokenVectors) {
      const vectors = tokenVectors && tokenVectors.length > 0 ? tokenVectors : new Float32Array(this.hiddenSize);
      call.extraFeeds[EXTRA_VECTORS_INPUT] = { type: "float32", dims: [vectors.length / this.hiddenSize, this.hiddenSize], data: vectors };
    }
    return call;
  }

  /**
   * SDXL's text_encoder call: its penultimate hidden state, or with A1111's clip skip on CLIP-L
   * (`clipLSkip`) `hidden_states[-clipLSkip]` of its N + 1 hidden states.
   */
  #sdxlFirstEncoderCall(clipLSkip: number | undefined, tokenVectors: Float32Array | undefined): TextEncoderCall {
    const te = this.#textEncoder;
    const call: TextEncoderCall = { handle: te.handle, idsName: te.io.idsName, hiddenName: te.io.hiddenName, ...this.#sdxlVectorsFeed(tokenVectors, this.#sdxl!.hiddenSizes[0] || this.#sdxl!.hiddenSizes[1]) };
    if (clipLSkip === undefined) return call;
    const states = this.#textEncoderFeeds.sdxlHiddenStates;
    if (states === undefined || !Number.isInteger(clipLSkip) || clipLSkip < 1 || clipLSkip > states) {
      throw new InvalidArgumentError(`sdxl.clipLSkip ${clipLSkip} is beyond this text_encoder's ${states ?? 0} hidden states`);
    }
    return { ...call, hiddenName: `hidden_states.${states - clipLSkip}` };
  }

  /** SDXL textual inversion: an encoder's `extra_token_vectors` feed ([rows, width]; one zero row when there are none), when its graph takes it. */
  #sdxlVectorsFeed(vectors: Float32Array | undefined, width: number): Pick<TextEncoderCall, "extraFeeds"> {
    if (!this.#textEncoderFeeds.tokenVectors) {
      if (vectors) throw new InvalidArgumentError("tokenVectors needs an SDXL model loaded with tokenVocabularySize");
      return {};
    }
    if (vectors && vectors.length % width !== 0) throw new InvalidArgumentError(`tokenVectors must hold whole rows of ${width} values, got ${vectors.length}`);
    const data = vectors && vectors.length > 0 ? vectors : new Float32Array(width);
    return { extraFeeds: { [EXTRA_VECTORS_INPUT]: { type: "float32", dims: [data.length / width, width], data } } };
  }

  /** The UNet batch for `batch` images (doubled when one call takes both halves of classifier-free guidance), checked against a batch fixed at export. */
  #checkUnetBatch(batch: number, cfg: boolean): number {
    const unetBatch = cfg ? 2 * batch : batch;
    const { io, file } = this.#unet;
    if (io.staticBatch !== undefined && io.staticBatch !== unetBatch) {
      throw new InvalidOptionError(
        "batch",
        `batch must make a UNet batch of ${io.staticBatch} for ${file.path} (fixed at export), got a UNet batch of ${unetBatch}` +
          (cfg ? " (classifier-free guidance doubles it)" : ""),
      );
    }
    return unetBatch;
  }

  /** The decoder output must be [batch, 3, 8·h, 8·w]. */
  #checkImageDims(dims: number[], batch: number, latentHeight: number, latentWidth: number): void {
    const [, channels, height, width] = dims;
    if (dims.length !== 4 || channels !== 3 || height !== latentHeight * 8 || width !== latentWidth * 8) {
      const { path } = this.#vaeDecoder.file;
      throw new ModelFileError(path, `${path} returned an image of shape [${dims.join(", ")}], expected [${batch}, 3, ${latentHeight * 8}, ${latentWidth * 8}]`);
    }
  }

  /** The VAE encoder on one image [1, 3, H, W]: the posterior mean (and std when the graph returns latent parameters). */
  async #encodeImage(pixels: Float32Array, height: number, width: number): Promise<{ mean: Float32Array; std?: Float32Array }> {
    const encoderFile = this.folder.vaeEncoder;
    if (!encoderFile) {
      throw new ModelFileError(this.folder.dir, `model folder ${this.folder.dir} has no VAE encoder (vae_encoder/model.onnx), which img2img needs`);
    }
    // A failed load is not kept: the next img2img tries again (and fails with the same message).
    this.#vaeEncoder ??= openSession(this.#host, encoderFile, describeVaeEncoder, this.#sessionOptions).catch((error: unknown) => {
      this.#vaeEncoder = null;
      throw error;
    });
    const { io, handle, file } = await this.#vaeEncoder;
    const result = await this.#host.run(handle, file.name, { [io.imageName]: { type: "float32", dims: [1, 3, height, width], data: pixels } }, [io.outputName]);
    this.#count("vaeEncoder", 1, result.ms);
    const out = result.outputs[io.outputName]!;
    const data = out.data as Float32Array;
    if (io.outputKind === "sample") return { mean: data };
    return splitPosterior(data, 1, out.dims[2]!, out.dims[3]!);
  }

  /** Counts `calls` ONNX Runtime calls of `rows` rows each. */
  #count(model: keyof RuntimeStats, rows: number, ms: number, calls = 1): void {
    this.#add(model, calls, rows * calls, ms);
  }

  #add(model: keyof RuntimeStats, calls: number, rows: number, ms: number): void {
    this.#stats[model].calls += calls;
    this.#stats[model].rows += rows;
    this.#stats[model].ms += ms;
  }

  /** Waits for a running generation, then stops the worker (its sessions go with it). Idempotent. */
  dispose(): Promise<void> {
    return this.#life.dispose(() => this.#host.dispose());
  }

  async [Symbol.asyncDispose](): Promise<void> {
    await this.dispose();
  }
}

/** Creates a session on the worker and checks its graph's I/O contract (`describe`). */
async function openSession<Io>(host: OrtHost, file: ModelFile, describe: (s: Parameters<typeof describeUnet>[0], f: string) => Io, options: SessionOptions): Promise<Session<Io>> {
  const { handle, signature } = await host.load(file.path, options);
  return { handle, file, io: describe(signature, file.path) };
}

/** Checks a prompt list of a job: [prompts, chunks, 77] ids and weights, one prompt index per image. */
function checkedPromptBatch(p: PromptBatch, batch: number, name: string): PromptBatch {
  checkPromptBatch(p, batch, name);
  return p;
}

/** A graph's static size, or what one call of it returns (its output's last axis). */
async function outputSize(host: OrtHost, session: Session<TextEncoderIo>, output: string, axis: number, declared: number | undefined): Promise<number> {
  if (declared !== undefined) return declared;
  const { io, handle, file } = session;
  const probe = await host.run(handle, file.name, { ...session.probeFeeds, [io.idsName]: idsTensor(io, new Int32Array(TOKENS), 1) }, [output]);
  return probe.outputs[output]!.dims[axis]!;
}

/**
 * The sizes an SDXL model's graphs must agree on: the UNet's context = text_encoder's hidden +
 * text_encoder_2's; its text_embeds = text_encoder_2's pooled size; 6 time ids (the base model's
 * original size, crop, target size). Each mismatch names both files.
 */
async function sdxlSessions(host: OrtHost, folder: ModelFolder, te1: Session<SdxlTextEncoderIo>, te2: Session<SdxlTextEncoderIo>, unet: Session<UnetIo>): Promise<SdxlSessions> {
  const added = unet.io.addedConditioning;
  if (!added) {
    throw new ModelFileError(folder.unet.path, `${folder.unet.path} has no text_embeds and time_ids inputs, but the model folder has text_encoder_2 (SDXL); export the UNet with SDXL's added conditioning`);
  }
  for (const te of [te1, te2]) {
    if (te.io.sequenceLength !== undefined && te.io.sequenceLength !== TOKENS) {
      throw new ModelFileError(te.file.path, `${te.file.path}: input_ids must take ${TOKENS} tokens, the graph fixes ${te.io.sequenceLength}`);
    }
  }
  // A refiner (text_encoder_2 alone) contributes nothing from a first encoder.
  const h1 = folder.sdxl!.secondEncoderOnly ? 0 : await outputSize(host, te1, te1.io.hiddenName, 2, te1.io.hiddenSize);
  const h2 = await outputSize(host, te2, te2.io.hiddenName, 2, te2.io.hiddenSize);
  const pooledSize = await outputSize(host, te2, te2.io.pooledName!, 1, undefined);
  if (unet.io.contextSize !== undefined && unet.io.contextSize !== h1 + h2) {
    const produced = h1 === 0 ? `text_encoder_2 produces ${h2}` : `the text encoders produce ${h1} + ${h2} = ${h1 + h2}`;
    throw new ModelFileError(folder.unet.path, `${folder.unet.path} expects text embeddings of size ${unet.io.contextSize}, but ${produced}`);
  }
  if (added.textEmbedsSize !== undefined && added.textEmbedsSize !== pooledSize) {
    throw new ModelFileError(folder.unet.path, `${folder.unet.path} expects text_embeds of size ${added.textEmbedsSize}, but ${te2.file.path} returns ${pooledSize}`);
  }
  // The time-id layout: 6 (original size, crop, target size) for a base model, 5 (original size,
  // crop, aesthetic score) where model_index.json says requires_aesthetics_score (a refiner).
  const aesthetic = folder.sdxl!.requiresAestheticsScore;
  const expected = aesthetic ? 5 : 6;
  const timeIdsSize = added.timeIdsSize ?? expected;
  if (timeIdsSize !== expected) {
    throw new ModelFileError(
      folder.unet.path,
      `${folder.unet.path} takes ${timeIdsSize} time ids, but ${join(folder.dir, "model_index.json")} says requires_aesthetics_score: ${aesthetic}, which makes ${expected}; the UNet and the pipeline config do not belong together`,
    );
  }
  return { textEncoder2: te2, hiddenSizes: [h1, h2], pooledSize, timeIdsSize };
}

function checkPromptBatch(p: PromptBatch, batch: number, name: string): void {
  const size = p.prompts * p.chunks * TOKENS;
  if (!Number.isInteger(p.chunks) || p.chunks < 1 || p.ids.length !== size || p.multipliers.length !== size) {
    throw new InvalidArgumentError(`generate: ${name} must hold [${p.prompts}, ${p.chunks}, ${TOKENS}] token ids and multipliers, got ${p.ids.length} ids and ${p.multipliers.length} multipliers`);
  }
  if (p.rowOf.length !== batch || p.rowOf.some((r) => r < 0 || r >= p.prompts)) {
    throw new InvalidArgumentError(`generate: ${name}.rowOf must give each of the ${batch} images one of its ${p.prompts} prompts`);
  }
}

/** A prompt list as the worker takes it. */
function promptRows(io: TextEncoderIo, p: PromptBatch): PromptRows {
  const rows: PromptRows = { ids: idsTensor(io, p.ids, p.prompts * p.chunks), chunks: p.chunks, multipliers: p.multipliers, rowOf: p.rowOf, groupOf: p.groupOf };
  if (p.schedules) rows.schedules = p.schedules;
  return rows;
}

/** input_ids [rows, 77] in the graph's integer type. */
function idsTensor(io: TextEncoderIo, ids: Int32Array, rows: number): HostTensor {
  const dims = [rows, TOKENS];
  if (io.idsType === "int32") return { type: "int32", dims, data: ids };
  return { type: "int64", dims, data: BigInt64Array.from(ids, (v) => BigInt(v)) };
}

/** What the text-encoder edit gave: its layer count, whether it takes textual-inversion vectors, or why clip skip is unavailable. */
interface TextEncoderFeeds {
  layers: number;
  tokenVectors?: boolean;
  unavailable?: string;
  /** SDXL (not edited): how many hidden states text_encoder returns (`hidden_states.0…N`: N + 1), what A1111's clip skip on CLIP-L indexes from the end. */
  sdxlHiddenStates?: number;
}

/** N − 1 of an SDXL text encoder's penultimate output `hidden_states.{N−1}` (describeSdxlTextEncoder). */
function penultimateIndex(io: TextEncoderIo): number {
  const index = /^hidden_states\.(\d+)$/.exec(io.hiddenName);
  if (!index) throw new InternalError(`an SDXL text encoder's conditioning output is ${io.hiddenName}, not hidden_states.N`);
  return Number(index[1]);
}

/**
 * An SDXL text encoder's session. With `tokenVocabularySize` its graph is edited to take
 * textual-inversion vectors (lib/onnx/text-encoder-edit.ts, without the clip_skip input: SDXL's
 * clip skip picks among the hidden states it returns); the edit finds the layers from its
 * `last_hidden_state` output.
 */
async function openSdxlTextEncoder(host: OrtHost, file: ModelFile, pooled: boolean, options: CpuBackendOptions): Promise<Session<SdxlTextEncoderIo>> {
  const vocabSize = options.tokenVocabularySize;
  if (vocabSize === undefined) return openSession(host, file, (sig, f) => describeSdxlTextEncoder(sig, f, pooled), options);
  const model = await readInlined(file);
  const io = describeSdxlTextEncoder(onnxSignature(model), file.path, pooled);
  if (!model.io().outputs.some((o) => o.name === "last_hidden_state")) {
    throw new ModelFileError(file.path, `${file.path} has no last_hidden_state output, which textual inversion needs to find the encoder's layers; load the model without embeddingsDir`);
  }
  editTextEncoder(model, { idsName: io.idsName, hiddenName: "last_hidden_state", vocabSize, clipSkip: false });
  const width = model.io().inputs.find((i) => i.name === EXTRA_VECTORS_INPUT)!.shape[1] as number;
  const { handle } = await host.load(file.path, options, model.encode());
  return { handle, file, io, probeFeeds: { [EXTRA_VECTORS_INPUT]: { type: "float32", dims: [1, width], data: new Float32Array(width) } } };
}

/** A graph read with our codec, its external data inlined (ONNX Runtime resolves it next to a file, not for a model given as bytes). */
async function readInlined(file: ModelFile): Promise<OnnxModel> {
  const model = await OnnxModel.read(file.path);
  if (model.externalDataFiles().length > 0) {
    const reader = new ExternalDataReader();
    try {
      for (const t of model.tensors()) await inlineExternal(t, model, reader);
    } finally {
      await reader.close();
    }
  }
  return model;
}

/**
 * Replaces the text encoder's session by its edited graph (lib/onnx/text-encoder-edit.ts): a
 * `clip_skip` input always, an `extra_token_vectors` input with `tokenVocabularySize`. A graph whose layers cannot be found keeps its session; clip skip is then unavailable
 * (the reason goes into the limits), and textual inversion fails the load.
 */
async function editedTextEncoder(host: OrtHost, session: Session<TextEncoderIo>, options: CpuBackendOptions): Promise<TextEncoderFeeds> {
  const prepared = await editTextEncoderGraph(session.file, options);
  if (!prepared.bytes) return prepared.feeds;
  const edited = await host.load(session.file.path, options, prepared.bytes);
  await host.release(session.handle);
  session.handle = edited.handle;
  return prepared.feeds;
}

/**
 * A text encoder's graph read with our codec, its I/O contract, and the edited graph's bytes
 * (lib/onnx/text-encoder-edit.ts): a `clip_skip` input always, an `extra_token_vectors` input with
 * `tokenVocabularySize`. No bytes when its layers cannot be found: then the file is used as it is,
 * clip skip is unavailable (the reason goes into the limits), and textual inversion fails the load.
 */
async function editTextEncoderGraph(file: ModelFile, options: CpuBackendOptions): Promise<{ io: TextEncoderIo; bytes?: Uint8Array; feeds: TextEncoderFeeds }> {
  const vocabSize = options.tokenVocabularySize;
  const model = await readInlined(file);
  const io = describeTextEncoder(onnxSignature(model), file.path);
  let layers: number;
  try {
    layers = editTextEncoder(model, { idsName: io.idsName, hiddenName: io.hiddenName, ...(vocabSize !== undefined ? { vocabSize } : {}) }).layout.layers;
  } catch (error) {
    if (vocabSize !== undefined || !(error instanceof ModelFileError)) throw error;
    return { io, feeds: { layers: 1, unavailable: error.message } };
  }
  return { io, bytes: model.encode(), feeds: vocabSize !== undefined ? { layers, tokenVectors: true } : { layers } };
}

/** The folder with its text encoder(s) and UNet replaced by their LoRA-merged copies (everything else, configs included, unchanged). */
async function withMergedLoras(folder: ModelFolder, loras: readonly LoraSpec[], cacheDir: string | undefined): Promise<ModelFolder> {
  const { graphs } = await mergedLoraGraphs(folder, loras, cacheDir);
  const file = (base: ModelFile, path: string): ModelFile => ({ ...base, path, externalData: [`${path}_data`] });
  const sdxl = folder.sdxl;
  // A refiner's folder.textEncoder is its text_encoder_2.
  const textEncoder = file(folder.textEncoder, (graphs.text_encoder ?? graphs.text_encoder_2)!);
  const merged: ModelFolder = { ...folder, textEncoder, unet: file(folder.unet, graphs.unet!) };
  if (sdxl) merged.sdxl = { ...sdxl, textEncoder2: sdxl.secondEncoderOnly ? textEncoder : file(sdxl.textEncoder2, graphs.text_encoder_2!) };
  return merged;
}
