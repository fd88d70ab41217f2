/**
 * The skeleton every scheduler file fills in:
 * - `ScheduledRun`: the state all ten classes start a run from — config, plan, algebra and the
 *   index of the current call in `plan.timesteps` (diffusers' `step_index`, from `begin_index`).
 *   The family files (sigma-family.ts, alpha-family.ts, multistep-family.ts) extend it with what
 *   their classes share; a scheduler file adds only its own `step`.
 * - `defineScheduler`: the `SchedulerDefinition` from a class's config spec, plan, run class and
 *   `add_noise`, with config resolution (`from_config` + the beta-schedule checks) done one way for
 *   every class.
 */
import type { LinearAlgebra } from "./algebra.js";
import { checkBetaSchedule, resolveConfig, type ConfigSpec } from "./config.js";
import type { BetaScheduleConfig } from "./tables.js";
import type { NoiseScales, SchedulePlan, SchedulerDefinition, SchedulerRun } from "./types.js";

export abstract class ScheduledRun<C, P extends SchedulePlan, V> implements SchedulerRun<V> {
  /** The current call's index in `plan.timesteps`; `step` moves it on. */
  protected index: number;

  constructor(
    protected readonly config: C,
    protected readonly plan: P,
    protected readonly la: LinearAlgebra<V>,
    beginIndex: number,
  ) {
    this.index = beginIndex;
  }

  abstract inputScale(): number;
  abstract step(modelOutput: V, sample: V, drawNoise: () => V): V;
}

/** A scheduler file's run class (its constructor is `ScheduledRun`'s). */
export type RunClass<C, P extends SchedulePlan> = new <V>(
  config: C,
  plan: P,
  la: LinearAlgebra<V>,
  beginIndex: number,
) => SchedulerRun<V>;

export interface SchedulerParts<C extends BetaScheduleConfig, P extends SchedulePlan> {
  /** diffusers' class name (also names the class in config errors). */
  className: string;
  /** diffusers' `scheduler.order`. */
  order: 1 | 2;
  /** The class's config keys with their defaults and checks. */
  spec: ConfigSpec<C>;
  /** Checks across keys beyond the beta schedule's; throws InvalidOptionError. */
  checkConfig?: (config: C) => void;
  /** `set_timesteps`. */
  plan(config: C, steps: number): P;
  Run: RunClass<C, P>;
  /** `add_noise` at `plan.timesteps[beginIndex]`. */
  addNoise(config: C, plan: P, beginIndex: number): NoiseScales;
}

export function defineScheduler<C extends BetaScheduleConfig, P extends SchedulePlan>(
  parts: SchedulerParts<C, P>,
): SchedulerDefinition<C, P> {
  const { className, spec, checkConfig, Run } = parts;
  return {
    className,
    order: parts.order,
    resolveConfig(raw) {
      const config = resolveConfig(className, spec, raw);
      checkBetaSchedule(className, config);
      checkConfig?.(config);
      return config;
    },
    plan: parts.plan,
    start: (config, plan, la, beginIndex) => new Run(config, plan, la, beginIndex),
    addNoise: parts.addNoise,
  };
}
