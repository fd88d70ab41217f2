/**
 * Config options beyond the goldens' SD 1.x settings: each compiles, its program equals the step
 * code run on real vectors, and where a closed form is simple the coefficients are checked by hand.
 */
import { describe, expect, test } from "@jest/globals";
import { runProgram } from "../../lib/sampler/index.js";
import { SD1_SCHEDULER_CONFIG, createScheduler, type RawSchedulerConfig } from "../../lib/schedulers/index.js";
import { analyticModel, loadSchedulerGoldens, pseudoNormal, relativeError, runReference } from "../fixtures/schedulers/goldens.js";

const f32 = Math.fround;
const sd1 = (extra: RawSchedulerConfig = {}) => ({ ...SD1_SCHEDULER_CONFIG, ...extra });
const tables = loadSchedulerGoldens().schedule_tables;
const alphasCumprod = tables.alphas_cumprod.map(f32);
const trainSigmas = tables.train_sigmas.map(f32);

const model = analyticModel("float64");
const noise = (j: number) => pseudoNormal(32, 300 + j);

/** Compiles, runs, and checks the program against the reference run of the same scheduler. */
function expectProgramMatchesReference(name: string, config: RawSchedulerConfig, steps = 15) {
  const scheduler = createScheduler(name, sd1(config));
  const program = scheduler.compile(steps);
  const x0 = Float64Array.from(pseudoNormal(32, 5), (v) => v * program.initNoiseSigma);
  const expected = runReference(scheduler, steps, x0, model, noise);
  const actual = runProgram(program, x0, model, noise);
  expect(actual.every(Number.isFinite)).toBe(true);
  expect(relativeError(actual, expected.at(-1)!)).toBeLessThan(1e-11);
  return program;
}

describe.each([
  ["dpmpp_2m", { solver_order: 3 }],
  ["dpmpp_2m", { solver_order: 1 }],
  ["dpmpp_2m", { solver_type: "heun" }],
  ["dpmpp_2m", { euler_at_final: true, final_sigmas_type: "sigma_min" }],
  ["dpmpp_2m", { lower_order_final: false, final_sigmas_type: "sigma_min" }],
  ["dpmpp_2m", { lambda_min_clipped: -2.5 }],
  ["unipc", { solver_order: 3 }],
  ["unipc", { solver_order: 1 }],
  ["unipc", { solver_type: "bh1", final_sigmas_type: "sigma_min" }],
  ["unipc", { predict_x0: false, final_sigmas_type: "sigma_min" }],
  ["unipc", { disable_corrector: [0, 3] }],
  ["unipc", { use_karras_sigmas: true }],
  ["euler", { use_karras_sigmas: true }],
  ["euler", { use_karras_sigmas: true, sigma_min: 0.1, sigma_max: 10 }],
  ["euler", { final_sigmas_type: "sigma_min" }],
  ["lms", { use_karras_sigmas: true }],
  ["heun", { use_karras_sigmas: true }],
  ["ddim", { set_alpha_to_one: true, timestep_spacing: "trailing" }],
  ["ddim", { eta: 0.7 }],
  ["ddpm", { variance_type: "fixed_large" }],
  ["ddpm", { variance_type: "fixed_small_log" }],
  ["pndm", { set_alpha_to_one: true }],
] as const)("%s with %j", (name, config) => {
  test("compiles to a program equal to its step code on real vectors", () => {
    expectProgramMatchesReference(name, config);
  });
});

describe("closed forms", () => {
  test("DDIM eta: σ_t = eta·sqrt((1 − ᾱ_prev)/(1 − ᾱ_t) · (1 − ᾱ_t/ᾱ_prev)), one draw per step", () => {
    const program = createScheduler("ddim", sd1({ eta: 1 })).compile(20);
    expect(program.evals.every((e) => e.drawsNoise)).toBe(true);
    const [a, prev] = [alphasCumprod[951]!, alphasCumprod[901]!];
    expect(program.evals[0]!.c).toBeCloseTo(Math.sqrt(((1 - prev) / (1 - a)) * (1 - a / prev)), 6);
    expect(createScheduler("ddim").compile(20).evals.some((e) => e.drawsNoise)).toBe(false);
  });

  test("DDPM fixed_large uses sqrt(β_t) and fixed_small_log equals fixed_small up to rounding", () => {
    const large = createScheduler("ddpm", sd1({ variance_type: "fixed_large" })).compile(20);
    const small = createScheduler("ddpm", sd1()).compile(20);
    const smallLog = createScheduler("ddpm", sd1({ variance_type: "fixed_small_log" })).compile(20);
    const [a, prev] = [alphasCumprod[951]!, alphasCumprod[901]!];
    expect(large.evals[0]!.c).toBeCloseTo(Math.sqrt(1 - a / prev), 6);
    smallLog.evals.forEach((e, j) => {
      expect(e.c / small.evals[j]!.c).toBeCloseTo(1, 5);
    });
  });

  test("DDPM without steps_offset reaches t = 0 and draws no noise there", () => {
    const program = createScheduler("ddpm", sd1({ steps_offset: 0 })).compile(10);
    expect(program.evals.at(-1)!.t).toBe(0);
    expect(program.evals.map((e) => e.drawsNoise)).toEqual([...new Array(9).fill(true), false]);
  });

  test("Euler with Karras sigmas spans the schedule's own sigma range (or sigma_min/sigma_max)", () => {
    const program = createScheduler("euler", sd1({ use_karras_sigmas: true })).compile(10);
    expect(program.initNoiseSigma).toBe(trainSigmas[999]);
    expect(program.evals[0]!.t).toBeCloseTo(999, 3);
    const custom = createScheduler("euler", sd1({ use_karras_sigmas: true, sigma_max: 10 })).compile(10);
    expect(custom.initNoiseSigma).toBe(f32(10));
  });

  test("DPM-Solver's first step is first order (DDIM-like) and its second uses two outputs", () => {
    const program = createScheduler("dpmpp_2m").compile(20);
    expect(program.evals[0]!.b.filter((b) => b !== 0)).toHaveLength(1);
    expect(program.evals[1]!.b.filter((b) => b !== 0)).toHaveLength(2);
    expect(program.historyDepth).toBe(2);
  });

  test("lambda_min_clipped cuts the top of the schedule", () => {
    // SD's λ = log(α/σ) falls to about −2.69 at t = 999.
    const clipped = createScheduler("dpmpp_2m", sd1({ lambda_min_clipped: -2.5 })).timesteps(20);
    expect(clipped[0]).toBeLessThan(999);
    expect(createScheduler("dpmpp_2m", sd1({ lambda_min_clipped: -5.1 })).timesteps(20)[0]).toBe(999);
  });

  test("UniPC's bh1 and noise-prediction forms cannot step to σ = 0 (diffusers returns NaN there)", () => {
    expect(() => createScheduler("unipc", sd1({ predict_x0: false }))).toThrow(/predict_x0 must be true with final_sigmas_type "zero"/);
    expect(() => createScheduler("unipc", sd1({ solver_type: "bh1" }))).toThrow(/solver_type must be "bh2" with final_sigmas_type "zero"/);
  });
});
