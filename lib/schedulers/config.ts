/**
 * Scheduler configs: diffusers' `scheduler_config.json` keys, per-class defaults, validation.
 *
 * Like diffusers' `from_config`, a config may carry keys that belong to other classes (a PNDM
 * config handed to Euler carries `skip_prk_steps`, `set_alpha_to_one`, `_class_name`, …); they
 * are ignored. A key the class does know is validated: a value sd-trt cannot reproduce exactly —
 * above all the non-linear options (`clip_sample`, `thresholding`) that cannot be compiled into a
 * linear sampler program — is an InvalidOptionError naming the key and the supported values,
 * never silently ignored.
 */
import { InvalidOptionError } from "../errors.js";
import { invalidOption } from "../validate.js";
import type { BetaScheduleConfig } from "./tables.js";

/** Validates one value (already defaulted) and returns it, normalised. */
export type KeyCheck = (value: unknown, fail: (expected: string) => never) => unknown;

export interface KeySpec {
  default: unknown;
  check: KeyCheck;
}

export type ConfigSpec<C> = { readonly [K in keyof C]: KeySpec };

/** A raw config as read from `scheduler_config.json` (any keys). */
export type RawSchedulerConfig = Readonly<Record<string, unknown>>;

const LINEAR_PROGRAM_NOTE = "sd-trt compiles schedulers to linear sampler programs";

/** Reusable key checks. */
export const check = {
  integer(min: number, max: number): KeyCheck {
    return (v, fail) => (typeof v === "number" && Number.isInteger(v) && v >= min && v <= max ? v : fail(`an integer from ${min} to ${max}`));
  },
  number(min: number, max: number): KeyCheck {
    return (v, fail) => (typeof v === "number" && Number.isFinite(v) && v >= min && v <= max ? v : fail(`a number from ${min} to ${max}`));
  },
  boolean: ((v, fail) => (typeof v === "boolean" ? v : fail("true or false"))) as KeyCheck,
  oneOf(values: readonly (string | number)[], note = ""): KeyCheck {
    const list = values.map((v) => JSON.stringify(v)).join(", ");
    return (v, fail) => (values.includes(v as string | number) ? v : fail(`one of ${list}${note}`));
  },
  /** The only supported value of a key whose other values sd-trt does not implement. */
  only(value: unknown, why: string): KeyCheck {
    return (v, fail) => (v === value ? v : fail(`${JSON.stringify(value)} (${why})`));
  },
  positiveOrNull: ((v, fail) => (v === null || (typeof v === "number" && Number.isFinite(v) && v > 0) ? v : fail("a positive number or null"))) as KeyCheck,
  anyString: ((v, fail) => (typeof v === "string" ? v : fail("a string"))) as KeyCheck,
  nonLinear(name: string): KeyCheck {
    return (v, fail) => (v === false ? v : fail(`false (${name} is not linear in the latents; ${LINEAR_PROGRAM_NOTE})`));
  },
  trainedBetas: ((v, fail) => {
    if (v === null) return null;
    if (!Array.isArray(v) || !v.every((b) => typeof b === "number" && b > 0 && b < 1)) {
      return fail("null or an array of numbers between 0 and 1 (exclusive)");
    }
    return Object.freeze([...v]);
  }) as KeyCheck,
};

function describeFailure(className: string, key: string, expected: string, actual: unknown): InvalidOptionError {
  return new InvalidOptionError(key, `${className} config: ${invalidOption(key, expected, actual).message}`);
}

/** Throws the InvalidOptionError for `key` of `className`. */
export function configError(className: string, key: string, expected: string, actual: unknown): never {
  throw describeFailure(className, key, expected, actual);
}

/**
 * diffusers' `from_config`: every key of `spec` takes the raw value when present (and not
 * undefined), else the class default; other keys are ignored. Returns a frozen object holding
 * exactly the class's keys.
 */
export function resolveConfig<C>(className: string, spec: ConfigSpec<C>, raw: RawSchedulerConfig): C {
  const out: Record<string, unknown> = {};
  for (const key of Object.keys(spec) as (keyof C & string)[]) {
    const { default: fallback, check: validate } = spec[key];
    const value = Object.hasOwn(raw, key) && raw[key] !== undefined ? raw[key] : fallback;
    out[key] = validate(value, (expected) => configError(className, key, expected, value));
  }
  return Object.freeze(out) as C;
}

/** The beta-schedule keys, with diffusers' class defaults (identical in every class). */
export const BETA_KEYS: ConfigSpec<BetaScheduleConfig> = {
  num_train_timesteps: { default: 1000, check: check.integer(2, 100000) },
  beta_start: { default: 0.0001, check: check.number(Number.MIN_VALUE, 1) },
  beta_end: { default: 0.02, check: check.number(Number.MIN_VALUE, 1) },
  beta_schedule: { default: "linear", check: check.oneOf(["linear", "scaled_linear", "squaredcos_cap_v2"]) },
  trained_betas: { default: null, check: check.trainedBetas },
};

export type PredictionType = "epsilon" | "v_prediction";
export type TimestepSpacing = "linspace" | "leading" | "trailing";

export const PREDICTION_TYPE: KeyCheck = check.oneOf(
  ["epsilon", "v_prediction"],
  " (other prediction types are not supported by sd-trt)",
);
export const TIMESTEP_SPACING: KeyCheck = check.oneOf(["linspace", "leading", "trailing"]);
export const STEPS_OFFSET: KeyCheck = check.integer(0, 100000);

/** The keys besides the beta schedule's that every supported class has. */
export interface ScheduleConfig extends BetaScheduleConfig {
  prediction_type: PredictionType;
  timestep_spacing: TimestepSpacing;
  steps_offset: number;
}

/** `ScheduleConfig`'s keys: the classes agree on every default but `timestep_spacing`'s. */
export function scheduleKeys(defaultSpacing: TimestepSpacing): ConfigSpec<ScheduleConfig> {
  return {
    ...BETA_KEYS,
    prediction_type: { default: "epsilon", check: PREDICTION_TYPE },
    timestep_spacing: { default: defaultSpacing, check: TIMESTEP_SPACING },
    steps_offset: { default: 0, check: STEPS_OFFSET },
  };
}

export const ZERO_SNR: KeySpec = {
  default: false,
  check: check.only(false, "rescale_betas_zero_snr is not supported by sd-trt"),
};

/** Checks that involve more than one beta key. */
export function checkBetaSchedule(className: string, config: BetaScheduleConfig): void {
  const betas = config.trained_betas;
  if (betas !== null && betas.length !== config.num_train_timesteps) {
    configError(className, "trained_betas", `null or an array of num_train_timesteps (${config.num_train_timesteps}) betas`, betas);
  }
}

/** `use_exponential_sigmas` / `use_beta_sigmas` (not implemented) and friends. */
export function unsupportedFlag(name: string): KeySpec {
  return { default: false, check: check.only(false, `${name} is not supported by sd-trt`) };
}
