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
import { InternalError, InvalidArgumentError, InvalidOptionError, ModelFileError, throwIfAborted } from "../../errors.js";
import { Lifecycle } from "../../lifecycle.js";
import type { Backend, BackendLimits, GenerationJob, GenerationOutput } from "../backend.js";
import { locateModelFolder, type ModelFile, type ModelFolder } from "../../model/folder.js";
import {
  describeTextEncoder,
  describeUnet,
  describeVaeDecoder,
  describeVaeEncoder,
  type TextEncoderIo,
  type UnetIo,
  type VaeDecoderIo,
  type VaeEncoderIo,
} from "../../model/graph-io.js";
import { splitPosterior } from "../../sampler/latents.js";
import { defaultMemoryLimit, estimateCpuMemory, formatBytes } from "./memory.js";
import { startLatents } from "../start-latents.js";
import { OrtHost, type GenerateJob, type HostGenerateOptions, type HostTensor, type SessionOptions } from "./ort-host.js";
import type { PromptRows } from "./ort-protocol.js";
import { checkDenoiseJob, TOKENS } from "./denoise-loop.js";
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
  readonly #vaeDecoder: Session<VaeDecoderIo>;
  readonly #vaeEncoder: Session<VaeEncoderIo> | null;
  #stats = emptyStats();
  readonly #memoryLimit: number;
  #sessionOptions: SessionOptions = {};

  private constructor(
    folder: ModelFolder,
    host: OrtHost,
    sessions: {
      textEncoder: Session<TextEncoderIo>;
      unet: Session<UnetIo>;
      vaeDecoder: Session<VaeDecoderIo>;
      vaeEncoder: Session<VaeEncoderIo> | null;
    },
    hiddenSize: number,
    memoryLimit: number,
  ) {
    this.folder = folder;
    this.#memoryLimit = memoryLimit;
    this.#host = host;
    this.#textEncoder = sessions.textEncoder;
    this.#unet = sessions.unet;
    this.#vaeDecoder = sessions.vaeDecoder;
    this.#vaeEncoder = sessions.vaeEncoder;
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
      canEncodeImages: sessions.vaeEncoder !== null,
      canObserveLatents: true,
      fractionalTimesteps: unet.timestepType === "float32" || unet.timestepType === "float64",
      maxPromptChunks: CPU_MAX_PROMPT_CHUNKS,
    };
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
      const open = async <Io>(file: ModelFile, describe: (s: Parameters<typeof describeUnet>[0], f: string) => Io): Promise<Session<Io>> => {
        const { handle, signature } = await host.load(file.path, options);
        return { handle, file, io: describe(signature, file.path) };
      };
      const textEncoder = await open(folder.textEncoder, describeTextEncoder);
      const unet = await open(folder.unet, describeUnet);
      const vaeDecoder = await open(folder.vaeDecoder, describeVaeDecoder);
      const vaeEncoder = folder.vaeEncoder ? await open(folder.vaeEncoder, describeVaeEncoder) : null;

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
      const backend = new CpuBackend(folder, host, { textEncoder, unet, vaeDecoder, vaeEncoder }, hiddenSize, options.memoryLimit ?? defaultMemoryLimit());
      backend.#baseFolder = located;
      backend.#loraCacheDir = options.loraCacheDir;
      backend.#sessionOptions = options.intraOpThreads ? { intraOpThreads: options.intraOpThreads } : {};
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
   * Switches the text encoder and UNet to the graphs with `set` merged in (lib/convert/lora/
   * merged-folder.ts, from its cache when the set was merged before), or back to the model's own
   * graphs for an empty set; the old sessions are released once the new ones are loaded.
   * @throws ModelFileError naming a LoRA that does not fit the model (the current weights stay).
   */
  setLoras(set: readonly LoraSpec[]): Promise<void> {
    return this.#life.exclusive(async () => {
      const folder = set.length > 0 ? await withMergedLoras(this.#baseFolder!, set, this.#loraCacheDir) : this.#baseFolder!;
      const textEncoder = await this.#host.load(folder.textEncoder.path, this.#sessionOptions);
      const unet = await this.#host.load(folder.unet.path, this.#sessionOptions).catch(async (error: unknown) => {
        await this.#host.release(textEncoder.handle);
        throw error;
      });
      const old = [this.#textEncoder.handle, this.#unet.handle];
      this.#textEncoder = { ...this.#textEncoder, handle: textEncoder.handle, file: folder.textEncoder };
      this.#unet = { ...this.#unet, handle: unet.handle, file: folder.unet };
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
      const { program, batch, latentHeight, latentWidth, guidance, noise, cond: condPrompts, uncond: uncondPrompts } = job;
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
      const denoise = { program, latents, noise, batch, latentHeight, latentWidth, hiddenSize: this.hiddenSize, guidance: cfg ? guidance : null, io: this.#unet.io };
      // Here, so a bad job fails with the caller's stack before it travels.
      const condTokens = cond.chunks * TOKENS;
      const uncondTokens = uncond ? uncond.chunks * TOKENS : condTokens;
      checkDenoiseJob({ ...denoise, condTokens, uncondTokens, context: new Float32Array(batch * ((cfg ? uncondTokens : 0) + condTokens) * this.hiddenSize) });
      // Guidance doubles the UNet batch unless cond and uncond differ in length (then each half runs alone).
      const unetBatch = this.#checkUnetBatch(batch, cfg && condTokens === uncondTokens);
      const te = this.#textEncoder;
      const vae = this.#vaeDecoder;
      const request: GenerateJob = {
        textEncoder: { handle: te.handle, idsName: te.io.idsName, hiddenName: te.io.hiddenName },
        cond,
        uncond,
        emphasis: job.emphasis,
        unet: this.#unet.handle,
        denoise,
        decoder: { handle: vae.handle, latentName: vae.io.latentName, imageName: vae.io.imageName, scalingFactor: this.scalingFactor, source: vae.file.path },
      };
      const options: HostGenerateOptions = {};
      if (job.signal) options.signal = job.signal;
      if (job.onStep) options.onStep = job.onStep;
      const { onStage, onLatents } = job;
      if (onStage) options.onTextEncoded = () => onStage("encode-text");
      if (onLatents) {
        onLatents(0, latents);
        options.onLatents = (evalIndex, x) => onLatents(evalIndex + 1, x);
      }
      const result = await this.#host.generate(request, { textEncoder: te.file, unet: this.#unet.file, vaeDecoder: vae.file }, options);
      const { textEncoder, unet, vaeDecoder } = result.calls;
      const encodedRows = [cond, uncond].slice(0, textEncoder.calls).reduce((n, p) => n + (p?.ids.dims[0] ?? 0), 0);
      this.#add("textEncoder", textEncoder.calls, encodedRows, textEncoder.ms);
      this.#count("unet", unetBatch, unet.ms, unet.calls);
      this.#count("vaeDecoder", batch, vaeDecoder.ms, vaeDecoder.calls);
      if (result.latents === null) {
        throwIfAborted(job.signal); // stopped by the signal: reject with its reason
        throw new InternalError("generate: the ONNX Runtime worker stopped, but the signal did not abort");
      }
      this.#checkImageDims(result.imageDims, batch, latentHeight, latentWidth);
      onStage?.("decode");
      const { textEncode, denoise: denoiseMs, decode } = result.stageMs;
      const output: GenerationOutput = { images: result.images, timings: { textEncode, imageEncode, denoise: denoiseMs, decode } };
      if (job.returnLatents) output.latents = result.latents;
      return output;
    });
  }

  /**
   * The text conditioning of one prompt list, as the denoise loop gets it: each chunk encoded,
   * weighted by `emphasis`, the chunks joined — [rows, 77 · chunks, hidden], row r for image r.
   * For inspection (`sd-trt tokenize --model`) and tests; `generate` never brings it back.
   */
  encodePrompts(prompts: PromptBatch, emphasis: Emphasis): Promise<{ shape: [number, number, number]; values: Float32Array }> {
    return this.#life.exclusive(async () => {
      const rows = prompts.rowOf.length;
      checkPromptBatch(prompts, rows, "prompts");
      const te = this.#textEncoder;
      const { embeddings, ms } = await this.#host.encode(te.file, {
        textEncoder: { handle: te.handle, idsName: te.io.idsName, hiddenName: te.io.hiddenName },
        prompts: promptRows(te.io, prompts),
        emphasis,
        hiddenSize: this.hiddenSize,
      });
      this.#add("textEncoder", 1, prompts.prompts * prompts.chunks, ms);
      return { shape: [rows, prompts.chunks * TOKENS, this.hiddenSize], values: embeddings };
    });
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
    if (!this.#vaeEncoder) {
      throw new ModelFileError(this.folder.dir, `model folder ${this.folder.dir} has no VAE encoder (vae_encoder/model.onnx), which img2img needs`);
    }
    const { io, handle, file } = this.#vaeEncoder;
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

/** Checks a prompt list of a job: [prompts, chunks, 77] ids and weights, one prompt index per image. */
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

/** The folder with its text encoder and UNet replaced by their LoRA-merged copies (everything else, configs included, unchanged). */
async function withMergedLoras(folder: ModelFolder, loras: readonly LoraSpec[], cacheDir: string | undefined): Promise<ModelFolder> {
  const merged = await mergedLoraGraphs(folder, loras, cacheDir);
  const file = (base: ModelFile, path: string): ModelFile => ({ ...base, path, externalData: [`${path}_data`] });
  return { ...folder, textEncoder: file(folder.textEncoder, merged.textEncoder), unet: file(folder.unet, merged.unet) };
}
