/**
 * The one typed description of the native addon (`build/Release/sd_trt.node`, built from
 * `native/`). Hand-written, like node-llama-cpp's `AddonTypes.ts`: every export of the addon is
 * described here, and only `lib/native/load.ts` loads it. The contract behind each call (what is
 * borrowed, what is copied, threading) is in `native/README.md`.
 *
 * The addon re-checks only argument types: a wrong type is a `TypeError` (code
 * `ERR_INVALID_ARG_TYPE`), an impossible size a `RangeError` (`ERR_OUT_OF_RANGE`). Values are
 * validated in TypeScript before they get here. Failures of CUDA / TensorRT reject with an Error
 * carrying `code`, `stage` and `status` (see {@link NativeErrorShape}), which
 * `lib/native/load.ts` turns into the TS `NativeError`.
 */

/** What a native failure looks like before `rethrowNative` turns it into a typed error. */
export interface NativeErrorShape extends Error {
  /** Stable code: `ERR_CUDA`, `ERR_NO_GPU`, `ERR_NO_CUDA`, `ERR_TENSORRT`, `ERR_DISPOSED`, `ERR_BUSY`,
   *  `ERR_INVALID_PROGRAM`, `ABORT_ERR`, `ERR_INVALID_ARG_TYPE`, `ERR_OUT_OF_RANGE`, … */
  code?: string;
  /** Where it happened: `denoise`, `denoiser-create`, `program`, `engine-load`, … */
  stage?: string;
  /** The CUDA / TensorRT status name when there is one (`cudaErrorMemoryAllocation`). */
  status?: string;
}

export type NativeDType = "float32" | "float16" | "int32" | "int64";

/** How the addon was compiled. */
export interface NativeBuildInfo {
  napiVersion: number;
  /** CUDA parts compiled in (nvcc was found at build time). */
  cuda: boolean;
  /** CUDART_VERSION of the toolkit the addon was built with (13000 = 13.0), 0 without CUDA. */
  cudaVersion: number;
  /** CMake architecture list, e.g. "80-real 86-real 89-real 90-real 90-virtual". */
  cudaArchitectures: string;
  /** TensorRT parts compiled in (headers were found at build time). */
  tensorrt: boolean;
}

export interface NativeDeviceInfo {
  index: number;
  name: string;
  /** "major.minor", e.g. "9.0" for H100. */
  computeCapability: string;
  /** Bytes. */
  totalMemory: number;
  /** Bytes; null unless `info({ freeMemory: true })` (it creates a CUDA context per device). */
  freeMemory: number | null;
  multiprocessors: number;
  /** Why some field of this device could not be read. */
  error?: string;
}

/** One shared library TensorRT needs, as the TensorRT module found it at run time. */
export interface NativeTensorRtLibraryInfo {
  loaded: boolean;
  /** The name or path that loaded, e.g. "libnvinfer.so.11". */
  library?: string;
  /** TensorRT version of the loaded library ("11.1.0"); libnvinfer only. */
  version?: string;
  /** libnvonnxparser only: the parser's API version (getNvOnnxParserVersion(), "0.1.0" in every
   *  TensorRT 10/11 release); not a TensorRT version, so never shown as one. */
  apiVersion?: string;
  /** Why it did not load (every attempt's dlerror). */
  error?: string;
  /** Every name tried, in order. */
  attempts?: string[];
}

/**
 * TensorRT's run-time status, reported by `native/trt` (`sdtrt::trt::RuntimeInfo`). Its fields are
 * defined by the TensorRT module; the ones below are those `doctor` reads, each optional.
 */
export interface NativeTensorRtInfo {
  /** TensorRT version of the headers the addon was compiled against ("11.1.0"). */
  compiledVersion?: string;
  /** libnvinfer. */
  infer?: NativeTensorRtLibraryInfo;
  /** libnvonnxparser (needed only to build engines). */
  parser?: NativeTensorRtLibraryInfo;
  [field: string]: unknown;
}

/** `info()`: never throws because a driver, GPU or TensorRT is missing; those are reported here. */
export interface NativeInfo {
  /** The package version the addon was built from. */
  version: string;
  /** Node-API version the addon targets. */
  napi: number;
  build: NativeBuildInfo;
  cudaCompiledIn: boolean;
  /** Version of the statically linked CUDA runtime (13000 = 13.0), 0 without CUDA. */
  cudaRuntimeVersion: number;
  /** Newest CUDA version the installed driver supports (e.g. 13000), 0 when there is no driver. */
  cudaDriverVersion: number;
  /** Why the driver version is 0. */
  cudaDriverError?: string;
  devices: NativeDeviceInfo[];
  /** Why no device could be listed ("no CUDA-capable device is detected (cudaErrorNoDevice)"). */
  deviceError?: string;
  /** CUDA status name of that failure. */
  deviceErrorStatus?: string;
  tensorrtCompiledIn: boolean;
  /** Run-time TensorRT status when compiled in, else null. */
  tensorrt: NativeTensorRtInfo | null;
  /** "TensorRT support was not compiled in …" when it was not. */
  tensorrtError?: string;
}

/**
 * A tensor that lives in GPU memory (CUDA builds): CLIP embeddings from the TensorRT module, the
 * denoiser's final latents with `output: "device"`. Each one owns its memory (no later call writes
 * it); the holder disposes it.
 */
export interface NativeDeviceTensor {
  readonly dtype: NativeDType;
  readonly shape: number[];
  readonly byteLength: number;
  readonly disposed: boolean;
  /** Idempotent. Memory in use by a running call is freed when that call is done. */
  dispose(): void;
  /** Copies the values to a new host array (`SdTensorDownloadWorker`): float32 → Float32Array,
   *  float16 → Uint16Array of bits, int32 → Int32Array, int64 → BigInt64Array. For tests and
   *  debugging; rejects with ERR_DISPOSED once disposed. */
  toHost(): Promise<Float32Array | Uint16Array | Int32Array | BigInt64Array>;
}

/**
 * A UNet engine object of the TensorRT module, accepted as `unet` by the Denoiser. Opaque here: the
 * TensorRT backend (lib/backends/tensorrt) describes its own objects.
 */
export type NativeUnetEngine = object;

export interface NativeDenoiserOptions {
  /** `"analytic"`: the built-in stand-in network of the GPU self-test; or a TensorRT UNet engine. */
  unet: "analytic" | NativeUnetEngine;
  /** The stand-in's input/output dtype. Defaults to `"float32"`. */
  analyticDtype?: "float32" | "float16";
  /** CUDA device index. Defaults to 0. */
  device?: number;
}

/** A sampler program and its inputs: what the device loop and its host path both run. */
export interface NativeProgramRunOptions {
  /** `packProgram(program)` from lib/sampler (the flat layout of native/README.md). Copied. */
  program: Float64Array;
  /** x_0 [batch, channels, height, width]. */
  latents: Float32Array;
  /** Every noise draw of the program, concatenated in order ([draws, batch, channels, h, w]); empty
   *  when the program draws none. */
  noise: Float32Array;
  batch: number;
  /** Latent height and width (pixels / 8). */
  height: number;
  width: number;
  /** Latent channels. Defaults to 4. */
  channels?: number;
}

/** Where `Denoiser.run` puts x_M: a new Float32Array (`"host"`, the default) or a new
 *  NativeDeviceTensor (`"device"`, float32 [batch, channels, height, width]) for decodeImage. */
export type NativeLatentsOutput = "host" | "device";

/** `latents` and `noise` are borrowed until the promise settles: do not transfer them. */
export interface NativeDenoiseOptions extends NativeProgramRunOptions {
  /** Guidance scale per image; omitted or null = no classifier-free guidance (UNet batch = batch). */
  guidance?: Float64Array | null;
  /** Text embeddings [unetBatch, sequenceLength, hidden], uncond rows first with guidance: host
   *  values (Float32Array, or Uint16Array of float16 bits; borrowed), a device tensor, or a list of
   *  device tensors [rows, sequenceLength, hidden] whose rows are joined in order on the device (e.g.
   *  `[uncond, cond]` as encodeText returned them; together exactly unetBatch rows). Device tensors
   *  may be float32 or float16 (converted to the UNet's type on the device) and are pinned until the
   *  promise settles. Required when the UNet has a hidden size (TensorRT); ignored by the analytic
   *  stand-in. */
  embeddings?: Float32Array | Uint16Array | NativeDeviceTensor | NativeDeviceTensor[];
  /** SDXL UNets (created with `textEmbeds`/`timeIds` names): the pooled text embedding [unetBatch, P]
   *  and the time ids [unetBatch, 6], float32, uncond rows first with guidance. Uploaded once per
   *  run and bound as UNet inputs in the captured loop. */
  textEmbeds?: Float32Array;
  timeIds?: Float32Array;
  /** Prompt editing: with this table `embeddings` (device tensors) is a bank of any number of rows —
   *  every conditioning of the run, each encoded once — and entry j · unetBatch + i is the bank row
   *  UNet row i reads at evaluation j (evaluations × unetBatch entries, uncond rows first with
   *  guidance). Every entry is checked (ERR_INVALID_PROGRAM); the table is uploaded once and the
   *  rows are gathered on the device before each UNet call, inside the captured graph. Not for SDXL. */
  embeddingRows?: Int32Array;
  /** The embeddings' text length: 77 · chunks (A1111's long prompts), 77 … 77 · 64. Defaults to 77. */
  sequenceLength?: number;
  /** A1111's prompt and negative prompt of different lengths (pad_cond_uncond off), with guidance:
   *  the uncond rows run as their own UNet call at `uncondSequenceLength` tokens, then the cond rows
   *  at `sequenceLength` (both calls inside the captured step; native/denoiser/unet_layout.h).
   *  `callRows` is the batch, or twice it for engines that take only the guidance batch (each call
   *  then computes its rows twice). `embeddings` are the batch's uncond rows, then its cond rows, no
   *  tensor holding both; with `embeddingRows`, the bank's uncond texts, then its cond texts, and
   *  the uncond UNet rows must read the first, the cond rows the second. SDXL's `textEmbeds` and
   *  `timeIds` stay [uncond; cond] (each call gets its half). */
  splitCalls?: NativeSplitCalls;
  /** Defaults to `"host"`. */
  output?: NativeLatentsOutput;
  /** Capture the loop step as a CUDA graph and replay it. Defaults to true. */
  useGraphs?: boolean;
  /** At most this many evaluations queued on the GPU ahead of the last finished one; cancellation
   *  takes effect within that many evaluations. 0 = queue the whole loop at once (cancellation then
   *  waits for the end). Defaults to 3. */
  queueDepth?: number;
  /** Called on the JS thread once per finished evaluation (completed = 1 … total). A throw rejects
   *  the run's promise with that error once the run is over. */
  onProgress?: (completed: number, total: number) => void;
}

/** How the run used CUDA graphs. */
export type NativeGraphUse =
  /** `useGraphs: false`. */
  | "disabled"
  /** This run captured the step graph after its first evaluation and replayed it for the rest. */
  | "captured"
  /** Every evaluation replayed a graph captured by an earlier run of the same shapes. */
  | "replayed"
  /** Capture failed (see graphFallbackReason); the loop ran with plain launches. */
  | "fallback";

/** `Latents` is Float32Array for `output: "host"`, NativeDeviceTensor for `output: "device"`. */
export interface NativeDenoiseResult<Latents extends Float32Array | NativeDeviceTensor = Float32Array> {
  /** x_M [batch, channels, height, width], owned by the caller: a new Float32Array, or a new
   *  float32 device tensor (a copy, never the loop's ring buffer; the caller disposes it). */
  latents: Latents;
  graph: NativeGraphUse;
  graphFallbackReason?: string;
  evaluations: number;
  /** GPU time of the loop from CUDA events (prologue → last update). */
  gpuMs: number;
  /** Wall time of the native call, uploads and download included. */
  hostMs: number;
}

export interface NativeDenoiser {
  /** One run at a time (ERR_BUSY otherwise). Runs on a libuv thread (`SdDenoiseWorker`).
   *  `latents` is a Float32Array unless `options.output` is `"device"` (lib/native/denoiser.ts
   *  narrows the type per call). */
  run(options: NativeDenoiseOptions): Promise<NativeDenoiseResult<Float32Array | NativeDeviceTensor>>;
  /** Stops the running loop between evaluations; its promise rejects with code ABORT_ERR. No-op when idle. */
  cancel(): void;
  /** Frees the GPU resources (after the running call, if any, is cancelled). Idempotent. */
  dispose(): void;
  readonly disposed: boolean;
  readonly busy: boolean;
}

export interface NativeDenoiserConstructor {
  /** Throws ERR_NO_CUDA (not compiled in) or ERR_NO_GPU (no usable GPU), stage "denoiser-create";
   *  ERR_RUNNER_OWNED when the TensorRT UNet's context already serves another Denoiser. A run
   *  rejects with ERR_UNET_NAN (→ UnetOverflowError) when the UNet produced NaN/Inf. */
  new (options: NativeDenoiserOptions): NativeDenoiser;
}

export interface NativeHostRunProgramOptions extends NativeProgramRunOptions {
  guidance?: Float64Array;
  sampleType?: "float32" | "float16";
  /** With guidance: run uncond and cond as two stand-in UNet calls of this many rows (batch or
   *  2 · batch) in the device loop's split buffer layout; 0 or omitted: one call. */
  splitCallRows?: number;
}

/** `splitCalls` of `Denoiser.run`: the uncond call's text length and the rows of each call. */
export interface NativeSplitCalls {
  uncondSequenceLength: number;
  callRows: number;
}

/** The VAE output kernel's input: decoder output NCHW in [-1, 1], float32 or float16 bits. */
export interface NativeVaeToUint8Options {
  decoded: Float32Array | Uint16Array;
  batch: number;
  /** Defaults to 3. */
  channels?: number;
  height: number;
  width: number;
}

export interface NativeVaeBytes {
  /** uint8 RGB [batch, height, width, 3]. */
  pixels: Uint8Array;
  nanCount: number;
  infCount: number;
}

/** The scale-cast kernel's input (kernels::launchScaleCast): `values / factor` (`op: "divide"`,
 *  diffusers' `latents / scaling_factor`) or `factor · values` in float32, correctly rounded, then
 *  `dtype` (default float32). `factor` is rounded to float32 first (Math.fround). */
export interface NativeScaleCastOptions {
  /** float32 values, or float16 bits. */
  values: Float32Array | Uint16Array;
  factor: number;
  op: "divide" | "multiply";
  dtype?: "float32" | "float16";
}

export interface NativeBinding {
  info(options?: { freeMemory?: boolean }): NativeInfo;
  /** Asks every in-flight denoise loop and engine build of this thread's environment to stop;
   *  returns at once, with how many were running. */
  cancelAll(): number;
  /** Cancels everything, waits for running denoise loops to stop (within their queueDepth
   *  evaluations) and frees every CUDA/TensorRT object of this environment; later calls on them
   *  fail with ERR_DISPOSED. What the environment's cleanup hook does, for process.on("exit").
   *  Returns how many loops and builds were running when it cancelled them. */
  shutdown(): number;
  /** `hostRunProgram` with what the fused kernel counts: latent elements whose UNet output was NaN/±Inf. */
  hostRunProgramStats(options: NativeHostRunProgramOptions): { latents: Float32Array; unetNonFinite: number; firstNonFiniteEvaluation: number };
  /** Why a libnvinfer reporting `library` (major·10000 + minor·100 + patch) must not be used with
   *  headers of version `headers`, or "" (native/common/trt_version.h; the rule native/trt applies). */
  hostTensorRtVersionProblem(library: number, headers: number): string;
  /** The checks `Denoiser.run` applies to `embeddingRows` (native/denoiser/embedding_rows.h):
   *  throws ERR_INVALID_PROGRAM naming the entry and the limit. */
  hostCheckEmbeddingRows(options: { table: Int32Array; evaluations: number; unetBatch: number; bankRows: number; uncondUnetRows?: number; uncondBankRows?: number }): void;
  Denoiser: NativeDenoiserConstructor;
  /** Present in CUDA builds; instances come from native calls only. */
  DeviceTensor?: abstract new () => NativeDeviceTensor;
  /**
   * Host path of the denoise loop (synchronous, for tests): the same per-element code as the CUDA
   * kernels, with the analytic stand-in as the UNet. Returns x_M.
   */
  hostRunProgram(options: NativeHostRunProgramOptions): Float32Array;
  /** Host path of the VAE output kernel: NCHW [-1, 1] (float32, or float16 bits) → uint8 HWC. */
  hostVaeToUint8(options: NativeVaeToUint8Options): NativeVaeBytes;
  /** Device run of the VAE output kernel (CUDA builds; for the GPU self-test). Input borrowed until settled. */
  deviceVaeToUint8?(options: NativeVaeToUint8Options & { device?: number }): Promise<NativeVaeBytes>;
  /** Device run of A1111's emphasis kernel on z [rows, 77, hidden] (the TensorRT text encoder's; CUDA builds, for the GPU self-test). */
  deviceEmphasis?(options: { z: Float32Array; multipliers: Float32Array; hidden: number; mode: "original" | "no-norm"; groups?: Int32Array; device?: number }): Promise<Float32Array>;
  /** Device run of the float32 → float16 cast kernel (CUDA builds; for the GPU self-test). */
  deviceFloatToHalf?(values: Float32Array, device?: number): Promise<Uint16Array>;
  /** Host path of the scale-cast kernel: Float32Array, or Uint16Array of float16 bits for dtype "float16". */
  hostScaleCast(options: NativeScaleCastOptions): Float32Array | Uint16Array;
  /** Device run of the scale-cast kernel (CUDA builds; for the GPU self-test). Input borrowed until settled. */
  deviceScaleCast?(options: NativeScaleCastOptions & { device?: number }): Promise<Float32Array | Uint16Array>;
  /** float32 → float16 bits, round to nearest even (the kernels' conversion). */
  hostFloatToHalf(values: Float32Array): Uint16Array;
  hostHalfToFloat(bits: Uint16Array): Float32Array;
}
