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
 * ONNX Runtime computes. The whole denoise loop runs there too, next to the UNet session
 * (`model/cpu-denoise.ts`: the shared sampler executor, the UNet feeds and the guidance), and
 * the decoder's output becomes RGB there: a generation crosses the thread boundary once per
 * stage, not once per model evaluation. `runtimeStats` adds up the time inside `session.run`
 * as the worker measures it.
 */
import { DisposedError, InvalidOptionError, ModelFileError, SdTrtError, throwIfAborted } from "../errors.js";
import type { Backend, BackendLimits, DenoiseRequest, TextEmbeddings } from "./backend.js";
import { locateModelFolder, type ModelFile, type ModelFolder } from "../model/folder.js";
import {
  describeTextEncoder,
  describeUnet,
  describeVaeDecoder,
  describeVaeEncoder,
  type TextEncoderIo,
  type UnetIo,
  type VaeDecoderIo,
  type VaeEncoderIo,
} from "../model/graph-io.js";
import { defaultMemoryLimit, estimateCpuMemory, formatBytes } from "./memory.js";
import { OrtHost, type GenerateJob, type HostDenoiseOptions, type HostGenerateOptions, type HostTensor, type SessionOptions } from "../model/ort-host.js";
import { checkDenoiseJob, TOKENS, type CpuDenoiseJob } from "../model/cpu-denoise.js";
import { distinctRows } from "../tokenizer/distinct-rows.js";

export { combineGuidance, timestepTensor } from "../model/cpu-denoise.js";

/** Image size limits of the CPU backend when the UNet export leaves the size dynamic. */
export const CPU_SIZE_LIMITS = { min: 64, max: 2048, multiple: 8 } as const;
/** Largest batch the CPU backend accepts when the export leaves the batch dynamic. */
export const CPU_MAX_BATCH = 16;

export interface CpuBackendOptions extends SessionOptions {
  /** Most memory a generation may need, in bytes (see backends/memory.ts). Defaults to this machine's memory. */
  memoryLimit?: number;
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

/** A denoise request with the CPU backend's extra, host-only observer. */
export interface CpuDenoiseRequest extends DenoiseRequest {
  /**
   * Called after each model evaluation with x_{j+1}, a copy the worker posts without waiting
   * (asking for it makes the worker copy every step's latents). Host backends only; it lets tests
   * and previews see every step's latents.
   */
  onLatents?: (evalIndex: number, latents: Float32Array) => void;
}

/**
 * A whole txt2img generation for `CpuBackend.generateImages`: a denoise request with token ids in
 * place of embeddings.
 */
export interface CpuGenerateRequest extends Omit<CpuDenoiseRequest, "cond" | "uncond"> {
  /** Token ids [batch, 77] of the prompts. */
  condIds: Int32Array;
  /** Token ids [batch, 77] of the negative prompts; null when classifier-free guidance is off. */
  uncondIds: Int32Array | null;
  /** When the prompts are encoded and the denoise begins. */
  onTextEncoded?: () => void;
}

export interface CpuGenerateResult {
  /** x_M [batch, 4, h, w], before the scaling factor. */
  latents: Float32Array;
  /** One uint8 RGB HWC image per batch row. */
  images: Uint8Array[];
  /** Wall time of each stage on the ONNX Runtime worker, ms. */
  timings: { textEncode: number; denoise: number; decode: number };
}

interface Session<Io> {
  handle: number;
  file: ModelFile;
  io: Io;
}

class CpuTextEmbeddings implements TextEmbeddings {
  #host: Float32Array | undefined;
  constructor(
    readonly rows: number,
    host: Float32Array,
  ) {
    this.#host = host;
  }
  get host(): Float32Array | undefined {
    return this.#host;
  }
  dispose(): void {
    this.#host = undefined;
  }
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
  readonly hiddenSize: number;
  readonly scalingFactor: number;
  readonly folder: ModelFolder;
  #host: OrtHost | null;
  readonly #textEncoder: Session<TextEncoderIo>;
  readonly #unet: Session<UnetIo>;
  readonly #vaeDecoder: Session<VaeDecoderIo>;
  readonly #vaeEncoder: Session<VaeEncoderIo> | null;
  #stats = emptyStats();
  readonly #memoryLimit: number;

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
    };
  }

  /**
   * Loads a model folder: finds its graphs, checks each one's I/O contract, and creates the
   * ONNX Runtime sessions on a worker thread.
   * @param model a folder path, or a folder already located with `locateModelFolder`.
   * @throws ModelFileError naming the folder or file that is missing or unsupported.
   */
  static async load(model: string | ModelFolder, options: CpuBackendOptions = {}): Promise<CpuBackend> {
    const folder = typeof model === "string" ? await locateModelFolder(model) : model;
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
      return new CpuBackend(folder, host, { textEncoder, unet, vaeDecoder, vaeEncoder }, hiddenSize, options.memoryLimit ?? defaultMemoryLimit());
    } catch (error) {
      await host.dispose();
      throw error;
    }
  }

  get disposed(): boolean {
    return this.#host === null;
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

  #hostOrThrow(): OrtHost {
    if (!this.#host) throw new DisposedError("CPU backend");
    return this.#host;
  }

  async encodeText(ids: Int32Array, rows: number): Promise<TextEmbeddings> {
    const host = this.#hostOrThrow();
    if (!Number.isInteger(rows) || rows < 1 || ids.length !== rows * TOKENS) {
      throw new SdTrtError("ERR_INVALID_ARGUMENT", `encodeText needs ${TOKENS} token ids per row, got ${ids.length} ids for ${rows} rows`);
    }
    // Encode each distinct row once: the same prompt for every image of a batch, or the empty
    // negative prompt, is one text-encoder row repeated, exactly as diffusers repeats it.
    const { uniqueIds, rowOf, distinct } = distinctIds(ids, rows);
    const { io, handle, file } = this.#textEncoder;
    const result = await host.run(handle, file.name, { [io.idsName]: idsTensor(io, uniqueIds, distinct) }, [io.hiddenName]);
    this.#count("textEncoder", distinct, result.ms);
    const hidden = result.outputs[io.hiddenName]!;
    const rowSize = TOKENS * this.hiddenSize;
    if (hidden.data.length !== distinct * rowSize) {
      throw new ModelFileError(file.path, `${file.path} returned ${io.hiddenName} of shape [${hidden.dims.join(", ")}], expected [${distinct}, ${TOKENS}, ${this.hiddenSize}]`);
    }
    const data = hidden.data as Float32Array;
    if (distinct === rows) return new CpuTextEmbeddings(rows, data);
    const out = new Float32Array(rows * rowSize);
    rowOf.forEach((u, r) => out.set(data.subarray(u * rowSize, (u + 1) * rowSize), r * rowSize));
    return new CpuTextEmbeddings(rows, out);
  }

  async denoise(request: CpuDenoiseRequest): Promise<Float32Array> {
    const host = this.#hostOrThrow();
    throwIfAborted(request.signal);
    const { program, latents, batch, latentHeight, latentWidth, cond, uncond, guidance, noise } = request;
    const cfg = uncond !== null;
    const unetBatch = this.#checkUnetBatch(batch, cfg);
    const { io, handle, file } = this.#unet;
    // encoder_hidden_states = cat([uncond, cond]), uncond first, as diffusers builds it.
    const condHost = hostEmbeddings(cond, batch, "cond");
    const context = cfg ? new Float32Array(unetBatch * TOKENS * this.hiddenSize) : condHost;
    if (cfg) {
      context.set(hostEmbeddings(uncond, batch, "uncond"));
      context.set(condHost, batch * TOKENS * this.hiddenSize);
    }
    const job: CpuDenoiseJob = { program, latents, noise, batch, latentHeight, latentWidth, context, hiddenSize: this.hiddenSize, guidance: cfg ? guidance : null, io };
    checkDenoiseJob(job); // here, so a bad request fails with the caller's stack before it travels

    // The whole loop runs on the worker, next to the UNet session.
    const options = loopHooks(request, program.evals.length);
    const result = await host.denoise(handle, file.name, job, options);
    this.#count("unet", unetBatch, result.ms, result.calls);
    if (result.latents === null) {
      throwIfAborted(request.signal); // stopped by the signal: reject with its reason
      throw new SdTrtError("ERR_INTERNAL", "denoise: the ONNX Runtime worker stopped the loop, but the signal did not abort");
    }
    return result.latents;
  }

  /** The UNet batch for `batch` images (doubled by classifier-free guidance), checked against a batch fixed at export. */
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

  /**
   * A whole txt2img generation in one request to the ONNX Runtime worker: text encoder (each
   * distinct prompt row once, as `encodeText`), the denoise loop (as `denoise`) and the VAE decoder
   * (as `decode`, with the latents divided by the scaling factor there). The same model calls as
   * the three stages one by one, without the two round trips between them; the embeddings never
   * leave the worker.
   * @throws the signal's reason when it aborts (the worker stops between stages or evaluations).
   */
  async generateImages(request: CpuGenerateRequest): Promise<CpuGenerateResult> {
    const host = this.#hostOrThrow();
    throwIfAborted(request.signal);
    const { program, latents, batch, latentHeight, latentWidth, guidance, noise, condIds, uncondIds } = request;
    const cfg = uncondIds !== null;
    const unetBatch = this.#checkUnetBatch(batch, cfg);
    const prompts = (ids: Int32Array) => {
      if (ids.length !== batch * TOKENS) {
        throw new SdTrtError("ERR_INVALID_ARGUMENT", `generateImages needs ${TOKENS} token ids per image, got ${ids.length} ids for a batch of ${batch}`);
      }
      const { uniqueIds, rowOf, distinct } = distinctIds(ids, batch);
      return { ids: idsTensor(this.#textEncoder.io, uniqueIds, distinct), rowOf };
    };
    const denoise = { program, latents, noise, batch, latentHeight, latentWidth, hiddenSize: this.hiddenSize, guidance: cfg ? guidance : null, io: this.#unet.io };
    // Here, so a bad request fails with the caller's stack before it travels.
    checkDenoiseJob({ ...denoise, context: new Float32Array(unetBatch * TOKENS * this.hiddenSize) });
    const te = this.#textEncoder;
    const vae = this.#vaeDecoder;
    const job: GenerateJob = {
      textEncoder: { handle: te.handle, idsName: te.io.idsName, hiddenName: te.io.hiddenName },
      cond: prompts(condIds),
      uncond: uncondIds ? prompts(uncondIds) : null,
      unet: this.#unet.handle,
      denoise,
      decoder: { handle: vae.handle, latentName: vae.io.latentName, imageName: vae.io.imageName, scalingFactor: this.scalingFactor, source: vae.file.path },
    };
    const options: HostGenerateOptions = loopHooks(request, program.evals.length);
    if (request.onTextEncoded) options.onTextEncoded = request.onTextEncoded;
    const result = await host.generate(job, { textEncoder: te.file, unet: this.#unet.file, vaeDecoder: vae.file }, options);
    const { textEncoder, unet, vaeDecoder } = result.calls;
    const encodedRows = [job.cond, job.uncond].slice(0, textEncoder.calls).reduce((n, p) => n + p!.ids.dims[0]!, 0);
    this.#add("textEncoder", textEncoder.calls, encodedRows, textEncoder.ms);
    this.#count("unet", unetBatch, unet.ms, unet.calls);
    this.#count("vaeDecoder", batch, vaeDecoder.ms, vaeDecoder.calls);
    if (result.latents === null) {
      throwIfAborted(request.signal); // stopped by the signal: reject with its reason
      throw new SdTrtError("ERR_INTERNAL", "generateImages: the ONNX Runtime worker stopped, but the signal did not abort");
    }
    this.#checkImageDims(result.imageDims, batch, latentHeight, latentWidth);
    return { latents: result.latents, images: result.images, timings: result.stageMs };
  }

  async decode(latents: Float32Array, batch: number, latentHeight: number, latentWidth: number): Promise<Uint8Array[]> {
    const host = this.#hostOrThrow();
    const { io, handle, file } = this.#vaeDecoder;
    // The decoder output becomes RGB on the worker (decodedToRgb), off the main thread.
    const result = await host.decode(handle, file.path, {
      latentName: io.latentName,
      imageName: io.imageName,
      latents: { type: "float32", dims: [batch, 4, latentHeight, latentWidth], data: latents },
    });
    this.#count("vaeDecoder", batch, result.ms);
    this.#checkImageDims(result.dims, batch, latentHeight, latentWidth);
    return result.images;
  }

  async encodeImage(pixels: Float32Array, batch: number, height: number, width: number): Promise<{ mean: Float32Array; std?: Float32Array }> {
    const host = this.#hostOrThrow();
    if (!this.#vaeEncoder) {
      throw new ModelFileError(this.folder.dir, `model folder ${this.folder.dir} has no VAE encoder (vae_encoder/model.onnx), which img2img needs`);
    }
    const { io, handle, file } = this.#vaeEncoder;
    const result = await host.run(handle, file.name, { [io.imageName]: { type: "float32", dims: [batch, 3, height, width], data: pixels } }, [io.outputName]);
    this.#count("vaeEncoder", batch, result.ms);
    const out = result.outputs[io.outputName]!;
    const data = out.data as Float32Array;
    if (io.outputKind === "sample") return { mean: data };
    return splitPosterior(data, batch, out.dims[2]!, out.dims[3]!);
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

  async dispose(): Promise<void> {
    const host = this.#host;
    this.#host = null;
    await host?.dispose();
  }

  async [Symbol.asyncDispose](): Promise<void> {
    await this.dispose();
  }
}

/** The distinct rows of token ids [rows, 77] packed together, and the distinct row of each row. */
function distinctIds(ids: Int32Array, rows: number): { uniqueIds: Int32Array; rowOf: Int32Array; distinct: number } {
  const { unique, rowOf } = distinctRows(ids, rows, TOKENS);
  if (unique.length === rows) return { uniqueIds: ids, rowOf, distinct: rows };
  const uniqueIds = new Int32Array(unique.length * TOKENS);
  unique.forEach((r, i) => uniqueIds.set(ids.subarray(r * TOKENS, (r + 1) * TOKENS), i * TOKENS));
  return { uniqueIds, rowOf, distinct: unique.length };
}

function idsTensor(io: TextEncoderIo, ids: Int32Array, rows: number): HostTensor {
  const dims = [rows, TOKENS];
  if (io.idsType === "int32") return { type: "int32", dims, data: ids };
  return { type: "int64", dims, data: BigInt64Array.from(ids, (v) => BigInt(v)) };
}

function hostEmbeddings(embeddings: TextEmbeddings, batch: number, which: string): Float32Array {
  const host = embeddings.host;
  if (!host) throw new SdTrtError("ERR_INVALID_ARGUMENT", `denoise: the ${which} embeddings are disposed or not host embeddings`);
  if (embeddings.rows !== batch) {
    throw new SdTrtError("ERR_INVALID_ARGUMENT", `denoise: ${which} embeddings have ${embeddings.rows} rows, expected ${batch}`);
  }
  return host;
}

/**
 * diffusers' `DiagonalGaussianDistribution` on `latent_parameters` [B, 8, h, w]: mean = the first
 * 4 channels, std = exp(0.5 · clamp(logvar, −30, 20)) in float32.
 */
export function splitPosterior(parameters: Float32Array, batch: number, height: number, width: number): { mean: Float32Array; std: Float32Array } {
  const plane = 4 * height * width;
  const mean = new Float32Array(batch * plane);
  const std = new Float32Array(batch * plane);
  for (let b = 0; b < batch; b++) {
    mean.set(parameters.subarray(2 * b * plane, (2 * b + 1) * plane), b * plane);
    for (let i = 0; i < plane; i++) {
      const logvar = Math.min(20, Math.max(-30, parameters[(2 * b + 1) * plane + i]!));
      std[b * plane + i] = Math.exp(Math.fround(0.5 * logvar));
    }
  }
  return { mean, std };
}

/** The worker-side hooks of a denoise loop: cancellation, per-step progress and latents. */
function loopHooks(
  request: Pick<CpuDenoiseRequest, "signal" | "onStep" | "onLatents">,
  total: number,
): HostDenoiseOptions {
  const options: HostDenoiseOptions = {};
  if (request.signal) options.signal = request.signal;
  if (request.onStep) {
    const onStep = request.onStep;
    options.onStep = (evalIndex) => onStep(evalIndex, total);
  }
  if (request.onLatents) options.onLatents = request.onLatents;
  return options;
}
