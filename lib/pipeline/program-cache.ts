/**
 * Compiled sampler programs of one model, kept for reuse. Compiling a scheduler runs its step
 * math symbolically in float64 (about half a millisecond for 20 steps), which is several percent
 * of a small generation and the same every time for a given scheduler, step count and img2img
 * start, so a service repeating a few settings compiles each once.
 *
 * Cached programs are deeply frozen: every request shares them, and none may change them.
 */
import { a1111Img2imgStartIndex, createScheduler, isA1111Sampler, strengthToStartStep, type RawSchedulerConfig, type SchedulerName, type SigmaSchedule } from "../schedulers/index.js";
import type { SamplerProgram } from "../sampler/program.js";

export interface CompiledProgram {
  program: SamplerProgram;
  /** Equal keys mean equal programs (scheduler, steps, img2img start, k-diffusion schedule). */
  key: string;
}

function deepFreeze<T>(value: T): T {
  if (typeof value === "object" && value !== null && !Object.isFrozen(value)) {
    Object.freeze(value);
    for (const child of Object.values(value)) deepFreeze(child);
  }
  return value;
}

export class ProgramCache {
  readonly #config: Record<string, unknown>;
  readonly #capacity: number;
  /** Insertion order is recency order: a hit moves its entry to the end. */
  readonly #entries = new Map<string, SamplerProgram>();

  /**
   * @param schedulerConfig the model's `scheduler_config.json`.
   * @param capacity programs kept (least recently used first out).
   */
  constructor(schedulerConfig: Record<string, unknown>, capacity = 32) {
    this.#config = schedulerConfig;
    this.#capacity = capacity;
  }

  /**
   * The program for `steps` of `scheduler`; for img2img (`strength` given) the program that
   * starts at diffusers' `t_start · order` (A1111's `steps − t_enc − 1` for its own samplers,
   * k-diffusion's, DDIM and PLMS) and carries `addNoise`. `sigmaSchedule`: the schedule type of an A1111 k-diffusion sampler.
   * `settings`: more config keys of the scheduler (A1111's uni_pc_* settings for a1111_unipc).
   */
  get(scheduler: SchedulerName, steps: number, strength?: number, sigmaSchedule?: SigmaSchedule, eta?: number, settings?: RawSchedulerConfig): CompiledProgram {
    let startStep: number | null = null;
    if (strength !== undefined) startStep = isA1111Sampler(scheduler) ? a1111Img2imgStartIndex(steps, strength) : strengthToStartStep(steps, strength);
    return this.#get(scheduler, steps, startStep, sigmaSchedule, eta, settings);
  }

  /** An A1111 program starting at `startIndex` of its sigmas / timesteps (hires fix's second pass). */
  getFrom(scheduler: SchedulerName, steps: number, startIndex: number, sigmaSchedule: SigmaSchedule | undefined, eta?: number, settings?: RawSchedulerConfig): CompiledProgram {
    return this.#get(scheduler, steps, startIndex, sigmaSchedule, eta, settings);
  }

  #get(scheduler: SchedulerName, steps: number, startStep: number | null, sigmaSchedule: SigmaSchedule | undefined, eta: number | undefined, settings: RawSchedulerConfig | undefined): CompiledProgram {
    const key = JSON.stringify([scheduler, steps, startStep, sigmaSchedule ?? null, eta ?? null, settings ?? null]);
    let program = this.#entries.get(key);
    if (program) {
      this.#entries.delete(key);
    } else {
      const options = { ...settings, ...(sigmaSchedule !== undefined ? { sigmaSchedule } : {}), ...(eta !== undefined ? { eta } : {}) };
      const compiler = createScheduler(scheduler, { ...this.#config, ...options });
      program = deepFreeze(startStep === null ? compiler.compile(steps) : compiler.compile(steps, { startIndex: startStep * compiler.order }));
      if (this.#entries.size >= this.#capacity) this.#entries.delete(this.#entries.keys().next().value!);
    }
    this.#entries.set(key, program);
    return { program, key };
  }
}
