/**
 * Scheduler names and configs: diffusers' from_config semantics (class defaults, foreign keys
 * ignored) and one throws-test per value sd-trt cannot reproduce.
 */
import { describe, expect, test } from "@jest/globals";
import { InvalidOptionError } from "../../lib/errors.js";
import {
  SCHEDULER_NAMES,
  SD1_SCHEDULER_CONFIG,
  createScheduler,
  type RawSchedulerConfig,
} from "../../lib/schedulers/index.js";

/** Expects an InvalidOptionError naming `option` whose message contains every fragment. */
function expectInvalid(fn: () => unknown, option: string, ...fragments: string[]): void {
  let caught: unknown;
  try {
    fn();
  } catch (error) {
    caught = error;
  }
  expect(caught).toBeInstanceOf(InvalidOptionError);
  const error = caught as InvalidOptionError;
  expect(error.option).toBe(option);
  expect(error.code).toBe("ERR_INVALID_OPTION");
  for (const fragment of fragments) expect(error.message).toContain(fragment);
}

const sd1 = (extra: RawSchedulerConfig = {}) => ({ ...SD1_SCHEDULER_CONFIG, ...extra });

describe("names", () => {
  test("every canonical name builds, with diffusers' order (2 for Heun)", () => {
    for (const name of SCHEDULER_NAMES) {
      const scheduler = createScheduler(name);
      expect(scheduler.name).toBe(name);
      expect(scheduler.order).toBe(name === "heun" ? 2 : 1);
    }
  });

  test.each([
    ["LMSDiscreteScheduler", {}, "lms"],
    ["EulerDiscreteScheduler", {}, "euler"],
    ["EulerAncestralDiscreteScheduler", {}, "euler_a"],
    ["DDIMScheduler", {}, "ddim"],
    ["PNDMScheduler", {}, "pndm"],
    ["DPMSolverMultistepScheduler", {}, "dpmpp_2m"],
    ["DPMSolverMultistepScheduler", { use_karras_sigmas: true }, "dpmpp_2m_karras"],
    ["HeunDiscreteScheduler", {}, "heun"],
    ["DDPMScheduler", {}, "ddpm"],
    ["UniPCMultistepScheduler", {}, "unipc"],
  ] as const)("diffusers class %s with %j is %s", (className, extra, name) => {
    const scheduler = createScheduler(className, sd1(extra));
    expect(scheduler.name).toBe(name);
    expect(scheduler.className).toBe(className);
  });

  test("the name decides Karras for DPM++ 2M, whatever the config says", () => {
    expect(createScheduler("dpmpp_2m", sd1({ use_karras_sigmas: true })).config.use_karras_sigmas).toBe(false);
    expect(createScheduler("dpmpp_2m_karras", sd1({ use_karras_sigmas: false })).config.use_karras_sigmas).toBe(true);
  });

  test("an unknown name is rejected with the list of names", () => {
    expectInvalid(() => createScheduler("euler_karras"), "scheduler", '"euler_karras"', '"lms"', '"dpmpp_2m_karras"', "DDIMScheduler");
    expectInvalid(() => createScheduler(42 as unknown as string), "scheduler", "42 (number)");
  });
});

describe("config resolution (from_config)", () => {
  test("without a config, schedulers are built from SD 1.x's scheduler config", () => {
    const pndm = createScheduler("pndm");
    expect(pndm.timesteps(20).slice(0, 4)).toEqual([951, 901, 901, 851]);
    expect(pndm.config).toMatchObject({ beta_schedule: "scaled_linear", beta_start: 0.00085, steps_offset: 1, skip_prk_steps: true });
  });

  test("missing keys take the class defaults (Heun's differ from the others)", () => {
    expect(createScheduler("euler", {}).config).toMatchObject({
      num_train_timesteps: 1000,
      beta_start: 0.0001,
      beta_end: 0.02,
      beta_schedule: "linear",
      timestep_spacing: "linspace",
      steps_offset: 0,
    });
    expect(createScheduler("heun", {}).config).toMatchObject({ beta_start: 0.00085, beta_end: 0.012 });
    expect(createScheduler("ddim", sd1()).config).toMatchObject({ timestep_spacing: "leading", set_alpha_to_one: false, eta: 0 });
    expect(createScheduler("ddpm", sd1()).config).toMatchObject({ variance_type: "fixed_small", timestep_spacing: "leading" });
  });

  test("keys of other classes are ignored, and the resolved config is frozen", () => {
    const euler = createScheduler("euler", sd1({ _class_name: "PNDMScheduler", solver_order: 7, some_future_key: true }));
    for (const key of ["skip_prk_steps", "set_alpha_to_one", "clip_sample", "_class_name", "_diffusers_version", "solver_order", "some_future_key"]) {
      expect(euler.config).not.toHaveProperty(key);
    }
    expect(Object.isFrozen(euler.config)).toBe(true);
  });

  test("diffusers' aliases: DEIS settings on DPM-Solver++, DPM solver types on UniPC", () => {
    const dpm = createScheduler("dpmpp_2m", sd1({ algorithm_type: "deis", solver_type: "logrho" }));
    expect(dpm.config).toMatchObject({ algorithm_type: "dpmsolver++", solver_type: "midpoint" });
    expect(createScheduler("unipc", sd1({ solver_type: "midpoint" })).config.solver_type).toBe("bh2");
  });

  test("lambda_min_clipped: null (JSON's rendering of -Infinity) means no clipping", () => {
    const dpm = createScheduler("dpmpp_2m", sd1({ lambda_min_clipped: null }));
    expect(dpm.config.lambda_min_clipped).toBe(-Infinity);
    expect(dpm.timesteps(20)[0]).toBe(999);
  });

  test("trained_betas replace the beta range", () => {
    const betas = Array.from({ length: 1000 }, (_, i) => 0.0001 + (0.02 - 0.0001) * (i / 999));
    const trained = createScheduler("ddim", sd1({ trained_betas: betas })).compile(10);
    const linear = createScheduler("ddim", sd1({ beta_schedule: "linear", beta_start: 0.0001, beta_end: 0.02 })).compile(10);
    trained.evals.forEach((e, j) => {
      expect(e.a[0]).toBeCloseTo(linear.evals[j]!.a[0]!, 6);
    });
  });

  test("the cosine schedule (squaredcos_cap_v2) compiles", () => {
    const program = createScheduler("dpmpp_2m_karras", sd1({ beta_schedule: "squaredcos_cap_v2" })).compile(20);
    expect(program.evals).toHaveLength(20);
    expect(program.evals.every((e) => Number.isInteger(e.t))).toBe(true);
  });
});

describe("bad options", () => {
  test.each([0, 1.5, 1001, -3, Number.NaN])("steps %p", (steps) => {
    expectInvalid(() => createScheduler("euler").compile(steps), "steps", "an integer from 1 to 1000");
    expectInvalid(() => createScheduler("euler").timesteps(steps), "steps");
  });

  test("steps are bounded by num_train_timesteps", () => {
    const small = createScheduler("ddim", sd1({ num_train_timesteps: 100, steps_offset: 0 }));
    expect(small.compile(100).evals).toHaveLength(100);
    expectInvalid(() => small.compile(101), "steps", "from 1 to 100");
  });

  test("clip_sample true (the DDIM/DDPM class default) is rejected as non-linear", () => {
    expectInvalid(() => createScheduler("ddim", sd1({ clip_sample: true })), "clip_sample", "DDIMScheduler", "not linear", "got true");
    expectInvalid(() => createScheduler("ddpm", {}), "clip_sample", "DDPMScheduler");
    expectInvalid(() => createScheduler("heun", sd1({ clip_sample: true })), "clip_sample");
  });

  test.each(["ddim", "ddpm", "dpmpp_2m", "unipc"])("thresholding true on %s is rejected as non-linear", (name) => {
    expectInvalid(() => createScheduler(name, sd1({ thresholding: true })), "thresholding", "not linear");
  });

  test("an unsupported beta_schedule lists the supported ones", () => {
    expectInvalid(() => createScheduler("ddpm", sd1({ beta_schedule: "sigmoid" })), "beta_schedule", '"linear", "scaled_linear", "squaredcos_cap_v2"', '"sigmoid"');
  });

  test("trained_betas must have num_train_timesteps entries in (0, 1)", () => {
    expectInvalid(() => createScheduler("euler", sd1({ trained_betas: [0.1, 0.2] })), "trained_betas", "num_train_timesteps (1000)", "length 2");
    expectInvalid(() => createScheduler("euler", sd1({ trained_betas: new Array(1000).fill(1.5) })), "trained_betas", "between 0 and 1");
  });

  test("timestep_spacing must be linspace, leading or trailing", () => {
    expectInvalid(() => createScheduler("euler", sd1({ timestep_spacing: "karras" })), "timestep_spacing", '"linspace", "leading", "trailing"');
  });

  test.each(["sample", "flow_prediction", "eps"])("prediction_type %p", (value) => {
    expectInvalid(() => createScheduler("euler_a", sd1({ prediction_type: value })), "prediction_type", '"epsilon", "v_prediction"');
  });

  test.each([
    ["dpmpp_2m", { algorithm_type: "sde-dpmsolver++" }, "algorithm_type", '"dpmsolver++"'],
    ["dpmpp_2m", { algorithm_type: "dpmsolver" }, "algorithm_type", '"dpmsolver++"'],
    ["dpmpp_2m", { variance_type: "learned_range" }, "variance_type", "null"],
    ["dpmpp_2m", { solver_order: 4 }, "solver_order", "1, 2, 3"],
    ["dpmpp_2m", { use_lu_lambdas: true }, "use_lu_lambdas", "not supported"],
    ["pndm", { skip_prk_steps: false }, "skip_prk_steps", "Runge-Kutta"],
    ["ddpm", { variance_type: "learned" }, "variance_type", '"fixed_small"'],
    ["ddpm", { variance_type: "fixed_large_log" }, "variance_type", "NaN"],
    ["euler", { use_exponential_sigmas: true }, "use_exponential_sigmas", "not supported"],
    ["lms", { use_beta_sigmas: true }, "use_beta_sigmas", "not supported"],
    ["euler", { interpolation_type: "log_linear" }, "interpolation_type", "log_linear"],
    ["euler_a", { rescale_betas_zero_snr: true }, "rescale_betas_zero_snr", "not supported"],
    ["unipc", { solver_p: {} }, "solver_p", "null"],
    ["unipc", { use_flow_sigmas: true }, "use_flow_sigmas", "not supported"],
    ["ddim", { eta: 2 }, "eta", "from 0 to 1"],
    ["euler", { steps_offset: -1 }, "steps_offset", "an integer"],
    ["euler", { num_train_timesteps: 0 }, "num_train_timesteps", "an integer"],
    ["euler", { use_karras_sigmas: "yes" }, "use_karras_sigmas", "true or false"],
    ["euler", { sigma_min: -1 }, "sigma_min", "positive"],
  ] as const)("%s with %j names %s", (name, extra, option, fragment) => {
    expectInvalid(() => createScheduler(name, sd1(extra)), option, fragment);
  });

  test("a config that is not an object", () => {
    expectInvalid(() => createScheduler("euler", [] as unknown as RawSchedulerConfig), "schedulerConfig");
    expectInvalid(() => createScheduler("euler", null as unknown as RawSchedulerConfig), "schedulerConfig");
  });

  test("startIndex must index the schedule (and a Heun predictor call)", () => {
    expectInvalid(() => createScheduler("euler").compile(20, { startIndex: 20 }), "startIndex", "from 0 to 19");
    expectInvalid(() => createScheduler("euler").compile(20, { startIndex: -1 }), "startIndex");
    expectInvalid(() => createScheduler("euler").compile(20, { startIndex: 2.5 }), "startIndex");
    expectInvalid(() => createScheduler("heun").compile(20, { startIndex: 3 }), "startIndex", "multiple of 2");
    expect(createScheduler("heun").compile(20, { startIndex: 4 }).evals).toHaveLength(35);
  });
});

describe("schedules diffusers would get wrong", () => {
  test("trailing spacing where np.arange adds a timestep -1 (N = 61) is rejected", () => {
    expectInvalid(() => createScheduler("euler", sd1({ timestep_spacing: "trailing" })).compile(61), "steps", "62 timesteps", "try 60 or 62");
    expect(createScheduler("euler", sd1({ timestep_spacing: "trailing" })).compile(62).evals).toHaveLength(62);
  });

  test("leading spacing past the last training timestep is rejected for table-indexed schedulers", () => {
    // 1000 steps: arange(1000) * 1 + steps_offset 1 reaches t = 1000.
    expectInvalid(() => createScheduler("ddim").compile(1000), "steps", "within 0…999", "give timestep 1000)");
    expect(createScheduler("ddim", sd1({ steps_offset: 0 })).compile(1000).evals).toHaveLength(1000);
  });

  test("DPM-Solver needs distinct sigmas (1000 linspace steps repeat timesteps)", () => {
    expectInvalid(() => createScheduler("dpmpp_2m").compile(1000), "steps", "distinct sigmas");
    expect(createScheduler("dpmpp_2m").compile(999).evals).toHaveLength(999);
  });

  test("UniPC without lower_order_final cannot end at sigma 0 (diffusers divides by zero)", () => {
    expectInvalid(() => createScheduler("unipc", sd1({ lower_order_final: false })).compile(20), "scheduler", "non-finite");
    expect(createScheduler("unipc", sd1({ lower_order_final: false, final_sigmas_type: "sigma_min" })).compile(20).evals).toHaveLength(20);
  });
});
