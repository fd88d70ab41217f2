/**
 * Schedulers: diffusers' schedulers (LMS, Euler, Euler a, DDIM, PNDM, DPM++ 2M [Karras], Heun,
 * DDPM, UniPC) built from `scheduler_config.json` and compiled to sampler programs.
 */
export {
  SCHEDULER_NAMES,
  SD1_SCHEDULER_CONFIG,
  canonicalSchedulerName,
  createScheduler,
  type CompileOptions,
  type Scheduler,
  type SchedulerName,
  type SchedulerReferenceRun,
} from "./registry.js";
export type { RawSchedulerConfig } from "./config.js";
export { strengthToStartStep } from "./img2img.js";
export { a1111SamplerName, a1111SamplerSelection, isA1111Sampler, type A1111SamplerSelection } from "./a1111.js";
export { A1111_TIMESTEP_SAMPLER_NAMES, isA1111TimestepSampler, type A1111TimestepSamplerName } from "./a1111-timesteps.js";
export { A1111_DDIM_CFGPP, samplerNeedsUncond } from "./a1111-ddim-cfgpp.js";
export {
  A1111_UNI_PC_DEFAULTS,
  UNI_PC_SKIP_TYPES,
  UNI_PC_VARIANTS,
  isA1111UniPc,
  type A1111UniPcSettings,
  type UniPcSkipType,
  type UniPcVariant,
} from "./a1111-unipc.js";
export { float64Algebra, symbolicAlgebra, SymbolicVector, type LinearAlgebra, type Term } from "./algebra.js";
export type { NoiseScales, SchedulerRun } from "./types.js";
export {
  KDIFFUSION_SAMPLER_NAMES,
  REFUSED_KDIFFUSION_SAMPLERS,
  a1111Img2imgStartIndex,
  refusedA1111SamplerReason,
  isKDiffusionSampler,
  kdiffusionDefaultSchedule,
  kdiffusionFractionalTimesteps,
  kdiffusionLabel,
  kdiffusionTotalSteps,
  kdiffusionUsesEnsd,
  kdiffusionUsesEta,
  sigmaScheduleLabel,
  type KDiffusionSamplerName,
} from "./kdiffusion.js";
export {
  REFUSED_SIGMA_SCHEDULES,
  SIGMA_SCHEDULES,
  SIGMA_SCHEDULE_LABELS,
  findSigmaSchedule,
  resolveSigmaSchedule,
  type SigmaSchedule,
} from "./kdiffusion-schedule.js";
