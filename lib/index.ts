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
