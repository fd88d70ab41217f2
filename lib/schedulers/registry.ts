/**
 * `createScheduler(name, config?)`: the scheduler names sd-trt knows, diffusers' class names, and
 * the `Scheduler` object that compiles sampler programs.
 */
import { integerInRange, invalidOption } from "../validate.js";
import type { AddNoiseSpec, SamplerProgram } from "../sampler/program.js";
import { symbolicAlgebra, type LinearAlgebra } from "./algebra.js";
import type { RawSchedulerConfig } from "./config.js";
import { traceProgram } from "./compile.js";
import { ddim } from "./ddim.js";
import { ddpm } from "./ddpm.js";
import { dpmSolver } from "./dpm-solver.js";
import { euler } from "./euler.js";
import { eulerAncestral } from "./euler-ancestral.js";
import { heun } from "./heun.js";
import { A1111_TIMESTEP_DEFINITIONS, A1111_TIMESTEP_SAMPLER_NAMES } from "./a1111-timesteps.js";
import { A1111_DDIM_CFGPP, A1111_DDIM_CFGPP_DEFINITION } from "./a1111-ddim-cfgpp.js";
import { a1111UniPc } from "./a1111-unipc.js";
import { KDIFFUSION_DEFINITIONS, KDIFFUSION_SAMPLER_NAMES } from "./kdiffusion.js";
import { lms } from "./lms.js";
import { pndm } from "./pndm.js";
import type { SchedulePlan, SchedulerDefinition, SchedulerRun } from "./types.js";
import { uniPc } from "./unipc.js";

/** Canonical scheduler names. */
export const SCHEDULER_NAMES = [
  "lms",
  "euler",
  "euler_a",
  "ddim",
  "pndm",
  "dpmpp_2m",
  "dpmpp_2m_karras",
  "heun",
  "ddpm",
  "unipc",
  // A1111's k-diffusion samplers (kdiffusion.ts); `sigmaSchedule` in the config picks the schedule.
  ...KDIFFUSION_SAMPLER_NAMES,
  // A1111's own DDIM and PLMS (a1111-timesteps.ts).
  ...A1111_TIMESTEP_SAMPLER_NAMES,
  // A1111's DDIM CFG++ (a1111-ddim-cfgpp.ts).
  A1111_DDIM_CFGPP,
  // A1111's own UniPC (a1111-unipc.ts); its uni_pc_* options are config keys.
  "a1111_unipc",
] as const;

export type SchedulerName = (typeof SCHEDULER_NAMES)[number];

/**
 * The scheduler config SD 1.x checkpoints ship (`scheduler/scheduler_config.json`, a PNDM config),
 * used when `createScheduler` gets no config — the same base diffusers' pipelines build every
 * scheduler from with `from_config`.
 */
export const SD1_SCHEDULER_CONFIG: RawSchedulerConfig = Object.freeze({
  _class_name: "PNDMScheduler",
  _diffusers_version: "0.7.0.dev0",
  beta_end: 0.012,
  beta_schedule: "scaled_linear",
  beta_start: 0.00085,
  clip_sample: false,
  num_train_timesteps: 1000,
  set_alpha_to_one: false,
  skip_prk_steps: true,
  steps_offset: 1,
  trained_betas: null,
});

/** Each definition has its own config and plan types; the registry only passes them through. */
type AnyDefinition = SchedulerDefinition<unknown, SchedulePlan>;

interface Entry {
  definition: AnyDefinition;
  /** Config values the name implies (a name wins over the config). */
  forced?: RawSchedulerConfig;
}

const ENTRIES: Record<SchedulerName, Entry> = {
  lms: { definition: lms },
  euler: { definition: euler },
  euler_a: { definition: eulerAncestral },
  ddim: { definition: ddim },
  pndm: { definition: pndm },
  dpmpp_2m: { definition: dpmSolver, forced: { use_karras_sigmas: false } },
  dpmpp_2m_karras: { definition: dpmSolver, forced: { use_karras_sigmas: true } },
  heun: { definition: heun },
  ddpm: { definition: ddpm },
  unipc: { definition: uniPc },
  ...kdiffusionEntries(),
  a1111_ddim: { definition: A1111_TIMESTEP_DEFINITIONS.a1111_ddim as unknown as AnyDefinition },
  a1111_plms: { definition: A1111_TIMESTEP_DEFINITIONS.a1111_plms as unknown as AnyDefinition },
  a1111_ddim_cfgpp: { definition: A1111_DDIM_CFGPP_DEFINITION as unknown as AnyDefinition },
  a1111_unipc: { definition: a1111UniPc as unknown as AnyDefinition },
};

function kdiffusionEntries(): Record<(typeof KDIFFUSION_SAMPLER_NAMES)[number], Entry> {
  const out = {} as Record<(typeof KDIFFUSION_SAMPLER_NAMES)[number], Entry>;
  for (const name of KDIFFUSION_SAMPLER_NAMES) out[name] = { definition: KDIFFUSION_DEFINITIONS[name] as unknown as AnyDefinition };
  return out;
}

/** diffusers class name → canonical name (DPM-Solver by its config's `use_karras_sigmas`). */
const CLASS_NAMES: Record<string, (config: RawSchedulerConfig) => SchedulerName> = {
  LMSDiscreteScheduler: () => "lms",
  EulerDiscreteScheduler: () => "euler",
  EulerAncestralDiscreteScheduler: () => "euler_a",
  DDIMScheduler: () => "ddim",
  PNDMScheduler: () => "pndm",
  DPMSolverMultistepScheduler: (config) => (config.use_karras_sigmas === true ? "dpmpp_2m_karras" : "dpmpp_2m"),
  HeunDiscreteScheduler: () => "heun",
  DDPMScheduler: () => "ddpm",
  UniPCMultistepScheduler: () => "unipc",
};

export interface CompileOptions {
  /**
   * Compile for img2img starting at this index of `timesteps(steps)` — diffusers' img2img
   * `t_start * scheduler.order` (see `strengthToStartStep`). The program then runs
   * `timesteps[startIndex:]` with fresh scheduler state, as the img2img pipeline does, and carries
   * `addNoise` (given even for 0, which is strength 1). Must be a multiple of `order`.
   * For A1111's k_* samplers it is an index into the sigmas (`a1111Img2imgStartIndex`): the
   * sampler runs fresh over `sigmas[startIndex:]` and `addNoise` is x = image + σ_start · n.
   * Omit for txt2img.
   */
  startIndex?: number;
}

/** A scheduler run on concrete vectors (the reference the compiled program is checked against). */
export interface SchedulerReferenceRun<V> {
  /** The timesteps this run iterates (sliced for img2img). */
  timesteps: number[];
  initNoiseSigma: number;
  addNoise?: AddNoiseSpec;
  run: SchedulerRun<V>;
}

export interface Scheduler {
  /** Canonical name. */
  readonly name: SchedulerName;
  /** The diffusers class this scheduler reproduces. */
  readonly className: string;
  /** diffusers' `scheduler.order`: 2 for Heun, 1 otherwise. */
  readonly order: 1 | 2;
  /** The resolved config: every key of the class, defaults filled in (frozen). */
  readonly config: Readonly<Record<string, unknown>>;
  /** Every UNet call's timestep for `steps` inference steps, duplicates included. */
  timesteps(steps: number): number[];
  /** Compiles `steps` inference steps to a sampler program. No state is kept between calls. */
  compile(steps: number, options?: CompileOptions): SamplerProgram;
  /** Runs the scheduler's step code on vectors of the given algebra (tests, debugging). */
  reference<V>(steps: number, algebra: LinearAlgebra<V>, options?: CompileOptions): SchedulerReferenceRun<V>;
}

class DiffusersScheduler implements Scheduler {
  readonly className: string;
  readonly order: 1 | 2;

  constructor(
    readonly name: SchedulerName,
    private readonly definition: AnyDefinition,
    readonly config: Readonly<Record<string, unknown>>,
  ) {
    this.className = definition.className;
    this.order = definition.order;
  }

  #plan(steps: number): SchedulePlan {
    const T = this.config.num_train_timesteps as number;
    return this.definition.plan(this.config, integerInRange("steps", steps, 1, T));
  }

  #startIndex(plan: SchedulePlan, startIndex: number | undefined): number {
    if (startIndex === undefined) return 0;
    const last = plan.timesteps.length - 1;
    if (typeof startIndex !== "number" || !Number.isInteger(startIndex) || startIndex < 0 || startIndex > last || startIndex % this.order !== 0) {
      const multiple = this.order === 1 ? "" : ` and a multiple of ${this.order} (t_start · order)`;
      throw invalidOption("startIndex", `an integer from 0 to ${last}${multiple}`, startIndex);
    }
    return startIndex;
  }

  /** For samplers whose img2img run is a fresh run over the schedule's tail: that run's plan. */
  #img2imgPlan(steps: number, startIndex: number | undefined): SchedulePlan | undefined {
    if (startIndex === undefined || this.definition.img2imgPlan === undefined) return undefined;
    return this.definition.img2imgPlan(this.config, this.#plan(steps), startIndex);
  }

  timesteps(steps: number): number[] {
    return [...this.#plan(steps).timesteps];
  }

  compile(steps: number, options: CompileOptions = {}): SamplerProgram {
    const tail = this.#img2imgPlan(steps, options.startIndex);
    if (tail) {
      const program = traceProgram({
        scheduler: this.name,
        steps,
        plan: tail,
        startIndex: 0,
        run: this.definition.start(this.config, tail, symbolicAlgebra, 0),
        addNoise: this.definition.addNoise(this.config, tail, 0),
      });
      return { ...program, startIndex: options.startIndex! };
    }
    const plan = this.#plan(steps);
    const startIndex = this.#startIndex(plan, options.startIndex);
    return traceProgram({
      scheduler: this.name,
      steps,
      plan,
      startIndex,
      run: this.definition.start(this.config, plan, symbolicAlgebra, startIndex),
      addNoise: options.startIndex === undefined ? undefined : this.definition.addNoise(this.config, plan, startIndex),
    });
  }

  reference<V>(steps: number, algebra: LinearAlgebra<V>, options: CompileOptions = {}): SchedulerReferenceRun<V> {
    const tail = this.#img2imgPlan(steps, options.startIndex);
    if (tail) {
      return {
        timesteps: [...tail.timesteps],
        initNoiseSigma: tail.initNoiseSigma,
        addNoise: { t: tail.timesteps[0]!, ...this.definition.addNoise(this.config, tail, 0) },
        run: this.definition.start(this.config, tail, algebra, 0),
      };
    }
    const plan = this.#plan(steps);
    const startIndex = this.#startIndex(plan, options.startIndex);
    const result: SchedulerReferenceRun<V> = {
      timesteps: plan.timesteps.slice(startIndex),
      initNoiseSigma: plan.initNoiseSigma,
      run: this.definition.start(this.config, plan, algebra, startIndex),
    };
    if (options.startIndex !== undefined) {
      result.addNoise = { t: plan.timesteps[startIndex]!, ...this.definition.addNoise(this.config, plan, startIndex) };
    }
    return result;
  }
}

function isPlainObject(value: unknown): value is RawSchedulerConfig {
  return typeof value === "object" && value !== null && !Array.isArray(value);
}

/** Canonical name for a canonical or diffusers class name, or undefined. */
export function canonicalSchedulerName(name: string, config: RawSchedulerConfig = {}): SchedulerName | undefined {
  if ((SCHEDULER_NAMES as readonly string[]).includes(name)) return name as SchedulerName;
  return Object.hasOwn(CLASS_NAMES, name) ? CLASS_NAMES[name]!(config) : undefined;
}

/**
 * Builds a scheduler from a name and a diffusers `scheduler_config.json` object.
 *
 * @param name A canonical name (`lms`, `euler`, `euler_a`, `ddim`, `pndm`, `dpmpp_2m`,
 *   `dpmpp_2m_karras`, `heun`, `ddpm`, `unipc`) or a diffusers class name
 *   (`DPMSolverMultistepScheduler` is `dpmpp_2m_karras` when the config sets `use_karras_sigmas`).
 * @param config The model's scheduler config, diffusers keys. Keys other classes use are ignored,
 *   missing keys take the class defaults (as `from_config` does). Defaults to
 *   `SD1_SCHEDULER_CONFIG`. `dpmpp_2m` / `dpmpp_2m_karras` set `use_karras_sigmas` themselves.
 * @throws InvalidOptionError for an unknown name or a config value sd-trt cannot reproduce.
 */
export function createScheduler(name: string, config: RawSchedulerConfig = SD1_SCHEDULER_CONFIG): Scheduler {
  if (!isPlainObject(config)) throw invalidOption("schedulerConfig", "an object of diffusers scheduler config keys", config);
  const canonical = typeof name === "string" ? canonicalSchedulerName(name, config) : undefined;
  if (canonical === undefined) {
    const names = SCHEDULER_NAMES.map((n) => JSON.stringify(n)).join(", ");
    throw invalidOption("scheduler", `one of ${names} or a diffusers class name (${Object.keys(CLASS_NAMES).join(", ")})`, name);
  }
  const entry = ENTRIES[canonical];
  const resolved = entry.definition.resolveConfig({ ...config, ...entry.forced }) as Readonly<Record<string, unknown>>;
  return new DiffusersScheduler(canonical, entry.definition, resolved);
}
