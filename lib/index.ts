/**
 * sd-trt: Stable Diffusion text-to-image for Node.js.
 *
 * The public API. Everything exported here is the contract external code (and external checks)
 * rely on; internal modules may move.
 */

// Errors
export {
  SdTrtError,
  InvalidOptionError,
  ModelFileError,
  AbortError,
  DisposedError,
  NativeError,
} from "./errors.js";

// Tokenizer
export { ClipTokenizer, CLIP_MAX_LENGTH } from "./tokenizer/index.js";
export type { ClipTokenization, ClipTokenizerOptions } from "./tokenizer/index.js";

// Noise
export {
  TorchGenerator,
  NvGenerator,
  randn,
  randnRows,
  createGenerator,
  validateSeed,
  RNG_SOURCES,
  MAX_SEED,
} from "./rng/index.js";
export type { Generator, RngSource } from "./rng/index.js";

// Schedulers and sampler programs
export {
  createScheduler,
  SCHEDULER_NAMES,
  SD1_SCHEDULER_CONFIG,
  strengthToStartStep,
  a1111SamplerName,
  schedulerFromA1111Name,
} from "./schedulers/index.js";
export type { Scheduler, SchedulerName, RawSchedulerConfig } from "./schedulers/index.js";
export {
  runProgram,
  runProgramAsync,
  packProgram,
  unpackProgram,
  SAMPLER_PROGRAM_FORMAT,
} from "./sampler/index.js";
export type { SamplerProgram, SamplerEval, AddNoiseSpec } from "./sampler/index.js";

// Pipeline (the main entry point) and its backends
export { Pipeline } from "./pipeline/pipeline.js";
export type {
  GenerateOptions,
  GenerateResult,
  GeneratedImage,
  GenerateTimings,
  ProgressEvent,
  PipelineLoadOptions,
  BackendChoice,
} from "./pipeline/pipeline.js";
export type { Backend, BackendLimits, BackendName, DenoiseRequest, TextEmbeddings } from "./backends/backend.js";
export { CpuBackend } from "./backends/cpu/backend.js";
export type { CpuBackendOptions, RuntimeStats } from "./backends/cpu/backend.js";
export { TensorRtBackend } from "./backends/tensorrt/backend.js";
export type { TensorRtBackendOptions } from "./backends/tensorrt/backend.js";

// Model folders and image output
export { locateModelFolder, readExternalTensorRefs } from "./model/index.js";
export type { ModelFolder } from "./model/index.js";
export * from "./image/index.js";

// Serving and benchmarking
export * from "./service/index.js";
export { SdServer, DEFAULT_MAX_BODY_BYTES } from "./server/index.js";
export type { ListenOptions, SdServerOptions } from "./server/index.js";
export { runBench, formatBenchReport } from "./bench/index.js";
export type { BenchOptions, BenchReport } from "./bench/index.js";

// Native addon, engines and diagnostics
export { Denoiser } from "./native/denoiser.js";
export type { DenoiserOptions, DenoiseRunOptions, DenoiseRunResult } from "./native/denoiser.js";
export { loadNativeBinding } from "./native/load.js";
export type { NativeLoadResult } from "./native/load.js";
export { collectDoctorReport } from "./native/doctor-report.js";
export type { DoctorReport } from "./native/doctor-report.js";
export { buildEngines } from "./backends/tensorrt/build.js";
export type { BuildEnginesOptions, BuildEvent } from "./backends/tensorrt/build.js";
export { parseShapeOptions } from "./backends/tensorrt/profiles.js";
export { readManifest } from "./backends/tensorrt/manifest.js";
export type { EngineManifest } from "./backends/tensorrt/manifest.js";
export { EngineMismatchError, TensorRtUnavailableError, EngineBuildError, VaeOverflowError } from "./backends/tensorrt/errors.js";
