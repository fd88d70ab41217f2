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
 * ONNX Runtime computes.
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
import { OrtHost, type HostTensor, type SessionOptions } from "../model/ort-host.js";
import { runProgramAsync } from "../sampler/index.js";
import { decodedToRgb } from "../image/pixels.js";

/** Image size limits of the CPU backend when the UNet export leaves the size dynamic. */
export const CPU_SIZE_LIMITS = { min: 64, max: 2048, multiple: 8 } as const;
/** Largest batch the CPU backend accepts when the export leaves the batch dynamic. */
export const CPU_MAX_BATCH = 16;
/** CLIP's token count. */
const TOKENS = 77;

export interface CpuBackendOptions extends SessionOptions {}

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
   * Called after each model evaluation with x_{j+1} (a view valid only during the call: copy it
   * to keep it). Host backends only; it lets tests and previews see every step's latents.
   */
  onLatents?: (evalIndex: number, latents: Float32Array) => void;
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

/** Tensor for the UNet timestep, in the graph's dtype and layout. */
export function timestepTensor(io: Pick<UnetIo, "timestepType" | "timestepLayout">, t: number, unetBatch: number): HostTensor {
  const count = io.timestepLayout === "per-row" ? unetBatch : 1;
  const dims = io.timestepLayout === "scalar" ? [] : [count];
  switch (io.timestepType) {
    case "float32":
      return { type: "float32", dims, data: new Float32Array(count).fill(t) };
    case "float64":
      return { type: "float64", dims, data: new Float64Array(count).fill(t) };
    case "int32":
      return { type: "int32", dims, data: new Int32Array(count).fill(Math.trunc(t)) };
    case "int64":
      return { type: "int64", dims, data: new BigInt64Array(count).fill(BigInt(Math.trunc(t))) };
  }
}

/**
 * Classifier-free guidance on a UNet output [2B, …] laid out uncond rows first:
 * m = u + g·(c − u), each operation rounded to float32 as torch does.
 */
export function combineGuidance(output: Float32Array, batch: number, guidance: Float64Array): Float32Array {
  const perImage = output.length / (2 * batch);
  const guided = new Float32Array(batch * perImage);
  const condOffset = batch * perImage;
  for (let image = 0; image < batch; image++) {
    const g = Math.fround(guidance[image]!);
    const start = image * perImage;
    for (let i = start; i < start + perImage; i++) {
      const u = output[i]!;
      const diff = Math.fround(output[condOffset + i]! - u);
      guided[i] = u + Math.fround(g * diff); // the Float32Array store rounds the sum
    }
  }
  return guided;
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
  ) {
    this.folder = folder;
    this.#host = host;
    this.#textEncoder = sessions.textEncoder;
    this.#unet = sessions.unet;
    this.#vaeDecoder = sessions.vaeDecoder;
    this.#vaeEncoder = sessions.vaeEncoder;
    this.hiddenSize = hiddenSize;
    this.scalingFactor = folder.scalingFactor;
    const unet = sessions.unet.io;
    const size = (fixed: number | undefined) => (fixed === undefined ? CPU_SIZE_LIMITS : { min: fixed * 8, max: fixed * 8 });
    const height = size(unet.staticHeight);
    const width = size(unet.staticWidth);
    this.limits = {
      maxBatch: unet.staticBatch ?? CPU_MAX_BATCH,
      minWidth: width.min,
      maxWidth: width.max,
      minHeight: height.min,
      maxHeight: height.max,
      sizeMultiple: CPU_SIZE_LIMITS.multiple,
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
      return new CpuBackend(folder, host, { textEncoder, unet, vaeDecoder, vaeEncoder }, hiddenSize);
    } catch (error) {
      await host.dispose();
      throw error;
    }
  }

  get disposed(): boolean {
    return this.#host === null;
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
    const keys = new Map<string, number>();
    const rowOf: number[] = [];
    const unique: number[] = [];
    for (let r = 0; r < rows; r++) {
      const key = ids.subarray(r * TOKENS, (r + 1) * TOKENS).join(",");
      let index = keys.get(key);
      if (index === undefined) {
        index = unique.length;
        keys.set(key, index);
        unique.push(r);
      }
      rowOf.push(index);
    }
    const uniqueIds = new Int32Array(unique.length * TOKENS);
    unique.forEach((r, i) => uniqueIds.set(ids.subarray(r * TOKENS, (r + 1) * TOKENS), i * TOKENS));
    const { io, handle, file } = this.#textEncoder;
    const result = await host.run(handle, file.name, { [io.idsName]: idsTensor(io, uniqueIds, unique.length) }, [io.hiddenName], true);
    this.#count("textEncoder", unique.length, result.ms);
    const hidden = result.outputs[io.hiddenName]!;
    const rowSize = TOKENS * this.hiddenSize;
    if (hidden.data.length !== unique.length * rowSize) {
      throw new ModelFileError(file.path, `${file.path} returned ${io.hiddenName} of shape [${hidden.dims.join(", ")}], expected [${unique.length}, ${TOKENS}, ${this.hiddenSize}]`);
    }
    const data = hidden.data as Float32Array;
    if (unique.length === rows) return new CpuTextEmbeddings(rows, data);
    const out = new Float32Array(rows * rowSize);
    rowOf.forEach((u, r) => out.set(data.subarray(u * rowSize, (u + 1) * rowSize), r * rowSize));
    return new CpuTextEmbeddings(rows, out);
  }

  async denoise(request: CpuDenoiseRequest): Promise<Float32Array> {
    const host = this.#hostOrThrow();
    const { program, latents, batch, latentHeight, latentWidth, cond, uncond, guidance, noise } = request;
    const perImage = 4 * latentHeight * latentWidth;
    if (latents.length !== batch * perImage) {
      throw new SdTrtError("ERR_INVALID_ARGUMENT", `denoise: latents hold ${latents.length} values, expected [${batch}, 4, ${latentHeight}, ${latentWidth}]`);
    }
    const cfg = uncond !== null;
    const unetBatch = cfg ? 2 * batch : batch;
    const { io, handle, file } = this.#unet;
    if (io.staticBatch !== undefined && io.staticBatch !== unetBatch) {
      throw new InvalidOptionError(
        "batch",
        `batch must make a UNet batch of ${io.staticBatch} for ${file.path} (fixed at export), got a UNet batch of ${unetBatch}` +
          (cfg ? " (classifier-free guidance doubles it)" : ""),
      );
    }
    // The UNet's three inputs are built once and then travel to the worker and back with every
    // call (transferred, never copied); only the sample's values change between calls.
    const condHost = hostEmbeddings(cond, batch, "cond");
    const context = new Float32Array(unetBatch * TOKENS * this.hiddenSize);
    if (cfg) {
      context.set(hostEmbeddings(uncond, batch, "uncond"));
      context.set(condHost, batch * TOKENS * this.hiddenSize);
    } else {
      context.set(condHost);
    }
    let feeds: Record<string, HostTensor> = {
      [io.sampleName]: { type: "float32", dims: [unetBatch, 4, latentHeight, latentWidth], data: new Float32Array(unetBatch * perImage) },
      [io.timestepName]: timestepTensor(io, 0, unetBatch),
      [io.contextName]: { type: "float32", dims: [unetBatch, TOKENS, this.hiddenSize], data: context },
    };

    // The k-th evaluation that draws noise gets the k-th pre-drawn array.
    const noiseFor = new Map<number, Float32Array>();
    let drawn = 0;
    program.evals.forEach((e, j) => {
      if (e.drawsNoise) noiseFor.set(j, noise[drawn++]!);
    });
    if (drawn !== noise.length || noise.some((n) => n.length !== latents.length)) {
      throw new SdTrtError("ERR_INVALID_ARGUMENT", `denoise: the program draws noise ${drawn} times, got ${noise.length} arrays (each must match the latents)`);
    }

    const model = async (input: Float32Array, t: number): Promise<Float32Array> => {
      // The executor checks the signal after each evaluation; check before one too, so an abort
      // from a progress callback never starts another UNet call.
      throwIfAborted(request.signal);
      const sample = feeds[io.sampleName]!.data as Float32Array;
      sample.set(input);
      if (cfg) sample.set(input, batch * perImage);
      feeds[io.timestepName] = timestepTensor(io, t, unetBatch);
      const result = await host.run(handle, file.name, feeds, [io.outputName], true);
      feeds = Object.fromEntries(Object.entries(feeds).map(([name, tensor]) => [name, { ...tensor, data: result.feeds![name]! }]));
      this.#count("unet", unetBatch, result.ms);
      const out = result.outputs[io.outputName]!.data as Float32Array;
      return cfg ? combineGuidance(out, batch, guidance) : out;
    };

    return runProgramAsync(program, latents, model, {
      noise: (evalIndex: number) => noiseFor.get(evalIndex)!,
      signal: request.signal,
      onStep: (evalIndex: number, x: Float32Array) => {
        request.onLatents?.(evalIndex, x);
        request.onStep?.(evalIndex, program.evals.length);
      },
    });
  }

  async decode(latents: Float32Array, batch: number, latentHeight: number, latentWidth: number): Promise<Uint8Array[]> {
    const host = this.#hostOrThrow();
    const { io, handle, file } = this.#vaeDecoder;
    const result = await host.run(
      handle,
      file.name,
      { [io.latentName]: { type: "float32", dims: [batch, 4, latentHeight, latentWidth], data: latents } },
      [io.imageName],
    );
    this.#count("vaeDecoder", batch, result.ms);
    const image = result.outputs[io.imageName]!;
    const [, channels, height, width] = image.dims;
    if (channels !== 3 || height !== latentHeight * 8 || width !== latentWidth * 8) {
      throw new ModelFileError(file.path, `${file.path} returned an image of shape [${image.dims.join(", ")}], expected [${batch}, 3, ${latentHeight * 8}, ${latentWidth * 8}]`);
    }
    return decodedToRgb(image.data as Float32Array, batch, height, width, file.path);
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

  #count(model: keyof RuntimeStats, rows: number, ms: number): void {
    this.#stats[model].calls++;
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
