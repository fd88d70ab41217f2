/**
 * Internal contracts between the scheduler registry, the compiler and the per-algorithm files.
 *
 * A scheduler file ports one diffusers class in three parts:
 * - `plan(config, steps)`: `set_timesteps` — the timesteps of every UNet call and whatever
 *   tables the step needs (sigmas, …). Pure data, shared read-only by every run.
 * - `start(config, plan, algebra, beginIndex)`: a fresh `SchedulerRun`, i.e. the mutable state
 *   diffusers keeps on the scheduler object (step index, history, counters) — but owned by one
 *   run only, so compiling or executing twice concurrently never interferes (diffusers #5749).
 * - `addNoise(config, plan, beginIndex)`: `add_noise` as two scalars.
 */
import type { BrownianNoiseSpec } from "../sampler/program.js";
import type { LinearAlgebra } from "./algebra.js";

export interface SchedulePlan {
  /** Every UNet call's timestep, duplicates included (`scheduler.timesteps`). */
  timesteps: number[];
  /** How diffusers holds `scheduler.timesteps`. */
  timestepDtype: "float32" | "int64";
  /** `scheduler.init_noise_sigma` as a number (float32 value where diffusers has a tensor). */
  initNoiseSigma: number;
  /** A1111's SDE samplers: their step noise is Brownian (the program's `brownian`). */
  brownian?: BrownianNoiseSpec;
}

/** One denoising run's scheduler state, stepping call by call like diffusers' loop. */
export interface SchedulerRun<V> {
  /** `scale_model_input` for the current call: the UNet sees inputScale() · x. */
  inputScale(): number;
  /**
   * `scheduler.step(model_output, t, sample, generator)` for the current call: returns
   * `prev_sample` and moves to the next call. `drawNoise()` returns one fresh standard-normal draw
   * of the latent shape; call it exactly where diffusers calls `randn_tensor`.
   * `uncond` is the unconditional model output of the same call, for samplers that renoise with
   * it (A1111's DDIM CFG++); omitted, it is `modelOutput` (no guidance: one prediction).
   */
  step(modelOutput: V, sample: V, drawNoise: () => V, uncond?: V): V;
}

/** `add_noise(original, noise, t) = signal · original + noise · n`. */
export interface NoiseScales {
  signal: number;
  noise: number;
}

export interface SchedulerDefinition<C, P extends SchedulePlan> {
  /** diffusers' class name. */
  readonly className: string;
  /** diffusers' `scheduler.order` (model calls per step in img2img's `t_start * order`). */
  readonly order: 1 | 2;
  /** Validates a raw config (diffusers keys, class defaults); throws InvalidOptionError. */
  resolveConfig(raw: Readonly<Record<string, unknown>>): C;
  /** `set_timesteps(steps)`; `steps` is already an integer from 1 to num_train_timesteps. */
  plan(config: C, steps: number): P;
  /** Fresh run state after `set_timesteps` (+ `set_begin_index(beginIndex)` where diffusers has it). */
  start<V>(config: C, plan: P, algebra: LinearAlgebra<V>, beginIndex: number): SchedulerRun<V>;
  /** `add_noise` at `plan.timesteps[beginIndex]`, as the img2img pipeline calls it. */
  addNoise(config: C, plan: P, beginIndex: number): NoiseScales;
  /**
   * Samplers whose img2img run is a fresh run over the tail of the schedule (A1111's k-diffusion
   * samplers): the plan of that run, starting at `startIndex` of `plan`'s schedule. Its
   * evaluations count from 0, `start` is called with beginIndex 0 and `addNoise` with this plan.
   */
  img2imgPlan?(config: C, plan: P, startIndex: number): P;
}
