/** Sampler programs: the contract (program.ts), the CPU executor and the flat native layout. */
export * from "./program.js";
export { checkProgram } from "./check.js";
export {
  ProgramExecution,
  runProgram,
  runProgramAsync,
  type AsyncProgramModel,
  type GuidedOutput,
  type LatentArray,
  type NoiseSource,
  type ProgramModel,
  type RunProgramAsyncOptions,
  type RunProgramOptions,
  type StepObserver,
} from "./execute.js";
export { packProgram, unpackProgram, type UnpackMetadata } from "./pack.js";
