/**
 * The TensorRT part of the addon (`native/trt`), present as `binding.tensorrt` only when the addon
 * was compiled with TensorRT headers (`TENSORRT_ROOT=… npm run build:native`). Hand-written like
 * `types.ts`, which this file extends; `lib/native/load.ts` stays the one loader.
 *
 * Threading and ownership (native/README.md): every long call is one named AsyncWorker
 * (SdEngineBuildWorker, SdEngineLoadWorker, SdClipEncodeWorker, SdVaeDecodeWorker,
 * SdVaeEncodeWorker, SdConcatEmbeddingsWorker) returning a Promise; borrowed typed arrays are pinned
 * until it settles; every output is a new allocation. Failures reject with `code` / `stage` /
 * `status` (NativeErrorShape): ERR_TENSORRT_MISSING (libnvinfer or libnvonnxparser not found),
 * ERR_TENSORRT (a TensorRT call failed; the message carries what TensorRT logged), ERR_ONNX_PARSE
 * (with every parser error: node index, name, operator and the parser's code in `status`),
 * ERR_INVALID_PROFILE, ERR_SHAPE (no optimization profile fits), ERR_VAE_NAN, ERR_CUDA, ERR_DISPOSED,
 * ABORT_ERR (a cancelled build), ERR_RUNNER_OWNED (a second Denoiser on a UNet context that already
 * has one; see native/README.md "The UNet runner seam").
 */
import type { NativeBinding, NativeDeviceTensor, NativeTensorRtInfo } from "./types.js";

/** Element types TensorRT reports for engine tensors. */
export type TrtDataType = "float32" | "float16" | "int32" | "int64" | "int8" | "uint8" | "bool" | "bfloat16" | "fp8" | "other";

/** One I/O tensor of a network or engine; -1 marks a dynamic axis. */
export interface TrtTensorInfo {
  name: string;
  mode: "input" | "output";
  dtype: TrtDataType;
  shape: number[];
}

export interface TrtShapeRange {
  min: number[];
  opt: number[];
  max: number[];
}

/** One optimization profile: the shape range of each input with a dynamic axis. */
export type TrtProfile = Record<string, TrtShapeRange>;

export interface TrtLogMessage {
  severity: "internal-error" | "error" | "warning" | "info" | "verbose";
  message: string;
}

export interface TrtBuildOptions {
  /** The ONNX file (its external data is read from the same folder). */
  onnxPath: string;
  /** At least one profile; every input with a dynamic axis must appear in each. */
  profiles: TrtProfile[];
  /** A timing cache from an earlier build (the bytes of the file). A cache from another GPU or
   *  TensorRT version is replaced by a new one (`timingCacheReset` in the result). Copied. */
  timingCache?: Uint8Array;
  /** Builder workspace limit in bytes; 0 or absent = TensorRT's default (the device's memory). */
  workspaceBytes?: number;
  /** TensorRT builder optimization level 0…5 (default 3). */
  optimizationLevel?: number;
  /** CUDA device index. Defaults to 0. */
  device?: number;
  /** ProfilingVerbosity::kDETAILED: keep each layer's tactic and fused ops for `engine.inspect()`. */
  detailedProfiling?: boolean;
  /** The network outputs to keep (the others are unmarked, so TensorRT prunes what only they need). */
  keepOutputs?: string[];
  /** BuilderFlag::kREFIT: the weights can be replaced later with `engine.refit` (LoRA sets). */
  refittable?: boolean;
}

/** What `engine.refit` did (native/trt/refitter.h). */
export interface TrtRefitResult {
  /** False when TensorRT needs more weights refitted together with the given ones (`missing`); nothing changed then. */
  refitted: boolean;
  /** Weights TensorRT fused with the given ones: add them (their current values) and call again. */
  missing: string[];
  /** How many weights were refitted. */
  weights: number;
}

/** A builder progress event (TensorRT's IProgressMonitor phases and steps). */
export interface TrtBuildProgress {
  kind: "start" | "step" | "finish";
  phase: string;
  /** The enclosing phase of a "start" event, null at the top level. */
  parent: string | null;
  /** Steps done ("step") — 1-based. */
  step: number;
  /** Steps of the phase ("start"). */
  steps: number;
}

export interface TrtGpuIdentity {
  device: number;
  name: string;
  /** "8.9" */
  computeCapability: string;
  /** "580.65.06" (NVML) or "CUDA 13.0" when NVML is not available. */
  driverVersion: string;
  totalMemory: number;
}

export interface TrtBuildResult {
  /** The serialized engine. */
  plan: Buffer;
  /** The timing cache after the build (write it back to its file). */
  timingCache: Buffer;
  /** The cache given did not fit this GPU/TensorRT and was replaced. */
  timingCacheReset: boolean;
  /** The network's inputs and outputs (types as the strongly typed network inferred them). */
  io: TrtTensorInfo[];
  /** TensorRT's warnings and errors during the build. */
  log: TrtLogMessage[];
  /** The GPU the plan was built for. */
  gpu: TrtGpuIdentity;
  /** libnvinfer's version ("11.1.0"). */
  tensorrtVersion: string;
}

export interface TrtBuildJob {
  promise: Promise<TrtBuildResult>;
  /** Asks TensorRT to abandon the build (through its progress monitor); the promise then rejects
   *  with code ABORT_ERR. Safe to call at any time, more than once. */
  cancel(): void;
}

export interface TrtLoadOptions {
  /** A name for messages ("unet"). */
  name: string;
  device?: number;
}

export interface TrtEngine {
  readonly name: string;
  readonly device: number;
  readonly io: TrtTensorInfo[];
  readonly profiles: TrtProfile[];
  /** Activation memory a context of this engine needs (getDeviceMemorySizeV2). */
  readonly deviceMemoryBytes: number;
  readonly disposed: boolean;
  /** A context on `scratch` (which must hold at least deviceMemoryBytes). */
  createContext(scratch: TrtDeviceScratch): TrtContext;
  /** The engine's layers as IEngineInspector reports them (JSON text, what trtexec --dumpLayerInfo
   *  prints): tactics, formats and fused ops with `verbosity` "detailed" (plans built with
   *  `detailedProfiling`), else layer names only. */
  inspect(): { verbosity: "detailed" | "layer_names_only" | "none"; layers: string };
  /** Whether the engine was built refittable (ICudaEngine::isRefittable). */
  readonly refittable: boolean;
  /**
   * Replaces weights, each named as its ONNX initializer and given as float32 in the initializer's
   * layout (converted to the engine's type natively). The engine must not run meanwhile.
   * Rejects (NativeError) for an engine built without the refit flag, an unknown weight or a
   * wrong count.
   */
  refit(weights: Record<string, Float32Array>): Promise<TrtRefitResult>;
  /** Drops this handle; contexts keep the engine alive until they are disposed. Idempotent. */
  dispose(): void;
}

export interface TrtDeviceScratch {
  readonly bytes: number;
  readonly disposed: boolean;
  dispose(): void;
}

export interface TrtDeviceScratchConstructor {
  /** Allocates `bytes` of device memory for the contexts of one pipeline. */
  new (bytes: number, options?: { device?: number }): TrtDeviceScratch;
}

export interface TrtEncodeTextOptions {
  /** Token ids [rows, 77]. Borrowed until the promise settles. */
  ids: Int32Array;
  rows: number;
  input: string;
  output: string;
  /** Chunk row r of the result is computed row outputRows[r]. */
  outputRows: Int32Array;
  /**
   * 77-token chunks per prompt: the result is [outputRows.length / chunks, 77 · chunks, hidden]
   * (consecutive output rows joined along the sequence). Defaults to 1.
   */
  chunks?: number;
  /**
   * A1111's per-token weights [rows, 77] (float32), applied to each computed row's output by the
   * `emphasis` rule before the rows are gathered. Borrowed until the promise settles.
   */
  multipliers?: Float32Array;
  /** "original": z·m, then the row rescaled to its mean before; "no-norm": z·m. Needs `multipliers`. */
  emphasis?: "original" | "no-norm";
  /** "original" only: one group id per computed row; rows of one id are rescaled by one ratio, the
   *  means taken over all of them (A1111 encodes the texts of a prompt's schedule in one call, and
   *  `z.mean()` spans them, per chunk index). Omitted: every row on its own. Copied at the call. */
  emphasisGroups?: Int32Array;
  /**
   * The edited graph's other inputs (lib/onnx/text-encoder-edit.ts): `clip_skip` int32 [1],
   * `extra_token_vectors` float32 [rows, hidden]. Copied at the call.
   */
  extraInputs?: { name: string; dims: number[]; data: Int32Array | Float32Array }[];
  /** SDXL's text_encoder_2: its pooled `text_embeds` output, returned to the host as `pooled`
   *  [rows, P] (every computed row, float32). The engine must have kept it as an output. */
  pooledOutput?: string;
}

export interface TrtImageIoOptions {
  input: string;
  output: string;
  batch: number;
  height: number;
  width: number;
}

/** decodeImage's input. */
export interface TrtDecodeImageOptions extends TrtImageIoOptions {
  /**
   * Latents [batch, 4, height, width]: a Float32Array (borrowed until the promise settles), or a
   * float32 / float16 device tensor of exactly that shape on the engine's device, e.g. the result of
   * `Denoiser.run({ output: "device" })` — then the latents never leave the GPU. The tensor is pinned
   * (not consumed) by the call: the caller still disposes it.
   */
  latents: Float32Array | NativeDeviceTensor;
  /**
   * When given (a finite number > 0), the latents are divided by it on the device before the VAE:
   * diffusers' `latents / scaling_factor`, a float32 division (not a multiply by the reciprocal),
   * bit-identical to `Math.fround(x / Math.fround(scalingFactor))` in TypeScript, then cast to the
   * decoder's input dtype. Omitted: the latents go in as they are (host latents the caller divided).
   */
  scalingFactor?: number;
}

export interface TrtDecodedImage {
  /** uint8 RGB HWC, image after image. */
  pixels: Buffer;
  width: number;
  height: number;
  gpuMs: number;
}

export interface TrtUnetOptions {
  sample: string;
  timestep: string;
  hidden: string;
  out: string;
  timestepLayout: "scalar" | "single" | "per-row";
  hiddenSize: number;
  /** SDXL: the engine's text_embeds and time_ids inputs (both or neither); their widths are read off the engine. */
  textEmbeds?: string;
  timeIds?: string;
}

/** A UNet engine for `Denoiser.create({ unet })`. */
export interface TrtUnet {
  readonly disposed: boolean;
  readonly types: { sample: TrtDataType; timestep: TrtDataType; hidden: TrtDataType; out: TrtDataType };
  dispose(): void;
}

export interface TrtContext {
  readonly disposed: boolean;
  /** Text embeddings on the device [outputRows.length / chunks, 77 · chunks, hidden], in the engine's output type.
   *  `gpuMs` (every call here): GPU time on the context's stream from CUDA events, transfers included. */
  encodeText(options: TrtEncodeTextOptions): Promise<{ embeddings: NativeDeviceTensor; gpuMs: number; pooled?: Float32Array }>;
  /** Latents [batch, 4, height, width] (host or device; divided by `scalingFactor` on the device
   *  when given, else already divided) → uint8 RGB HWC. Rejects with ERR_VAE_NAN on NaN/Inf. */
  decodeImage(options: TrtDecodeImageOptions): Promise<TrtDecodedImage>;
  /** Pixels [batch, 3, height, width] in [-1, 1] → the encoder's output as float32. */
  encodeImage(options: TrtImageIoOptions & { pixels: Float32Array }): Promise<{ data: Float32Array; shape: number[]; gpuMs: number }>;
  createUnet(options: TrtUnetOptions): TrtUnet;
  dispose(): void;
}

export interface TensorRtBinding {
  /** TensorRT's run-time status (the same object `info().tensorrt` holds). Never throws. */
  runtimeInfo(): NativeTensorRtInfo;
  buildEngine(options: TrtBuildOptions, onProgress?: (event: TrtBuildProgress) => void): TrtBuildJob;
  loadEngine(plan: Uint8Array, options: TrtLoadOptions): Promise<TrtEngine>;
  DeviceScratch: TrtDeviceScratchConstructor;
  /** Joins embedding rows on the device (uncond first), converting to `dtype`, into a new tensor.
   *  For the denoiser this step is unnecessary: `Denoiser.run` takes the parts as a list. */
  concatEmbeddings(parts: NativeDeviceTensor[], options: { dtype: "float32" | "float16" }): Promise<NativeDeviceTensor>;
}

/** The addon's binding with its optional TensorRT part. */
export type NativeBindingWithTensorRt = NativeBinding & { tensorrt?: TensorRtBinding };

/** The TensorRT part of a loaded binding, or undefined when the addon was built without it. */
export function tensorRtBindingOf(binding: NativeBinding): TensorRtBinding | undefined {
  const trt = (binding as NativeBindingWithTensorRt).tensorrt;
  return typeof trt === "object" && trt !== null && typeof trt.buildEngine === "function" ? trt : undefined;
}
