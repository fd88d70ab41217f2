/**
 * `sd-trt/numerics`: the exact numerics core, usable without any model — openai/CLIP's tokenizer,
 * A1111's prompt parser and chunker,
 * torch.randn on the CPU and A1111's NV source bit for bit, diffusers' schedulers compiled to
 * sampler programs (the table both backends run), the CPU program executor, and the float32
 * latent arithmetic around it.
 */

// First: fails with a clear message on an unsupported Node.js (lib/node-version.ts).
import "./node-check.js";
export { ClipTokenizer, CLIP_MAX_LENGTH, DEFAULT_VOCABULARY_DIR, normalizeClipText } from "./tokenizer/index.js";
export type { ClipTokenization, ClipTokenizerOptions } from "./tokenizer/index.js";

export { parsePromptAttention, tokenizePrompt, applyEmphasis, buildPromptBatch, EMPHASIS_MODES, PROMPT_SYNTAXES } from "./prompt/index.js";
export type { AttentionSpan, ChunkOptions, Emphasis, PromptBatch, PromptChunk, PromptReading, PromptSyntax, TokenizedPrompt } from "./prompt/index.js";

export { TorchGenerator, NvGenerator, randn, randnRows, createGenerator, validateSeed, RNG_SOURCES, MAX_SEED } from "./rng/index.js";
export type { Generator, RngSource } from "./rng/index.js";

export {
  createScheduler,
  canonicalSchedulerName,
  SCHEDULER_NAMES,
  SD1_SCHEDULER_CONFIG,
  strengthToStartStep,
  a1111SamplerName,
  a1111SamplerSelection,
  KDIFFUSION_SAMPLER_NAMES,
  SIGMA_SCHEDULES,
  SIGMA_SCHEDULE_LABELS,
} from "./schedulers/index.js";
export { A1111ImageRng, a1111Slerp, type ImageRngOptions } from "./rng/a1111-image-rng.js";
export { BrownianNoiseSampler } from "./rng/brownian-tree.js";
export type { A1111SamplerSelection, CompileOptions, KDiffusionSamplerName, RawSchedulerConfig, Scheduler, SchedulerName, SigmaSchedule } from "./schedulers/index.js";

export { checkProgram, packProgram, unpackProgram, runProgram, runProgramAsync, ProgramExecution, SAMPLER_PROGRAM_FORMAT } from "./sampler/index.js";
export type {
  AddNoiseSpec,
  AsyncProgramModel,
  BrownianNoiseSpec,
  LatentArray,
  NoiseSource,
  ProgramModel,
  RunProgramAsyncOptions,
  RunProgramOptions,
  SamplerEval,
  SamplerProgram,
  StepObserver,
  UnpackMetadata,
} from "./sampler/index.js";
export { addNoise, divideFloat32, img2imgStartLatents, samplePosterior, scaleFloat32, splitPosterior } from "./sampler/latents.js";
