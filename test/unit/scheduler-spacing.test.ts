/**
 * timestep_spacing variants against the formulas of diffusers' set_timesteps (README "Timesteps"),
 * and v_prediction, which the goldens do not cover: every scheduler compiles it, the program
 * matches the step code on real vectors, and a few coefficients match closed forms.
 */
import { describe, expect, test } from "@jest/globals";
import { runProgram } from "../../lib/sampler/index.js";
import { SCHEDULER_NAMES, SD1_SCHEDULER_CONFIG, createScheduler, isA1111TimestepSampler, type RawSchedulerConfig } from "../../lib/schedulers/index.js";
import { analyticModel, loadSchedulerGoldens, pseudoNormal, relativeError, runReference } from "../fixtures/schedulers/goldens.js";

const f32 = Math.fround;
const sd1 = (extra: RawSchedulerConfig = {}) => ({ ...SD1_SCHEDULER_CONFIG, ...extra });
const tables = loadSchedulerGoldens().schedule_tables;
const alphasCumprod = tables.alphas_cumprod.map(f32);
const trainSigmas = tables.train_sigmas.map(f32);

/** `round(arange(1000, 0, -1000/N)) - 1`, for N where no value lands on .5. */
function trailing(n: number): number[] {
  return Array.from({ length: n }, (_, i) => Math.round(1000 - (i * 1000) / n) - 1);
}

describe("timestep spacing", () => {
  test.each(["euler", "ddim", "ddpm", "heun"])("%s trailing, 20 and 30 steps", (name) => {
    const scheduler = createScheduler(name, sd1({ timestep_spacing: "trailing" }));
    for (const n of [20, 30]) {
      const expected = trailing(n);
      const timesteps = scheduler.timesteps(n);
      expect(name === "heun" ? timesteps.filter((_, i) => i === 0 || i % 2 === 1) : timesteps).toEqual(expected);
    }
  });

  test("trailing on DPM-Solver and UniPC uses the same formula", () => {
    for (const name of ["dpmpp_2m", "unipc"]) {
      expect(createScheduler(name, sd1({ timestep_spacing: "trailing" })).timesteps(25)).toEqual(trailing(25));
    }
  });

  test("leading: arange(N) · (1000 // N) + steps_offset, and 1000 // (N + 1) for DPM-Solver / UniPC", () => {
    const leading = (n: number, ratio: number) => Array.from({ length: n }, (_, i) => (n - 1 - i) * ratio + 1);
    expect(createScheduler("euler", sd1({ timestep_spacing: "leading" })).timesteps(20)).toEqual(leading(20, 50));
    expect(createScheduler("lms", sd1({ timestep_spacing: "leading" })).timesteps(30)).toEqual(leading(30, 33));
    expect(createScheduler("ddim").timesteps(30)).toEqual(leading(30, 33));
    expect(createScheduler("dpmpp_2m", sd1({ timestep_spacing: "leading" })).timesteps(20)).toEqual(
      Array.from({ length: 20 }, (_, i) => (20 - i) * 47 + 1),
    );
    expect(createScheduler("unipc", sd1({ timestep_spacing: "leading" })).timesteps(20)[0]).toBe(20 * 47 + 1);
  });

  test("linspace: float32 fractions for Euler-type, rounded N+1 points for DPM-Solver", () => {
    const euler = createScheduler("euler").timesteps(20);
    expect(euler[1]).toBe(f32((999 * 18) / 19));
    expect(euler.at(-1)).toBe(0);
    const dpm = createScheduler("dpmpp_2m").timesteps(20);
    expect(dpm.slice(0, 3)).toEqual([999, 949, 899]);
    expect(dpm.at(-1)).toBe(50);
    expect(createScheduler("ddim", sd1({ timestep_spacing: "linspace" })).timesteps(4)).toEqual([999, 666, 333, 0]);
  });

  test("init_noise_sigma is sqrt(σ_max² + 1) for leading, σ_max otherwise", () => {
    const sigmaMax = trainSigmas[999]!;
    expect(createScheduler("euler").compile(20).initNoiseSigma).toBe(sigmaMax);
    expect(createScheduler("euler", sd1({ timestep_spacing: "trailing" })).compile(20).initNoiseSigma).toBe(sigmaMax);
    const leading = createScheduler("euler", sd1({ timestep_spacing: "leading" })).compile(20);
    // σ at t = 951 (leading + offset 1), not the training maximum.
    expect(leading.initNoiseSigma).toBe(f32(Math.sqrt(f32(f32(trainSigmas[951]! ** 2) + 1))));
  });

  test("DDIM keeps prev_t = t − 1000 // N even when trailing makes that differ from the next timestep", () => {
    const ddim = createScheduler("ddim", sd1({ timestep_spacing: "trailing" }));
    const program = ddim.compile(30);
    // Call 1: t = 966 steps to 966 − 33 = 933, while the next scheduled timestep is 932.
    const t = program.evals[1]!.t;
    const prev = t - 33;
    expect(t).toBe(966);
    expect(ddim.timesteps(30)[2]).not.toBe(prev);
    const a = Math.sqrt(alphasCumprod[prev]!) / Math.sqrt(alphasCumprod[t]!);
    expect(program.evals[1]!.a[0]).toBeCloseTo(a, 6);
  });
});

describe("v_prediction", () => {
  const x0 = pseudoNormal(64, 3);
  const noise = (j: number) => pseudoNormal(64, 500 + j);

  // A1111's own DDIM, DDIM CFG++, PLMS and LCM refuse v_prediction (scheduler-a1111-timesteps / -ddim-cfgpp / -kdiffusion tests).
  test.each(SCHEDULER_NAMES.filter((n) => !isA1111TimestepSampler(n) && n !== "a1111_ddim_cfgpp" && n !== "a1111_unipc" && n !== "k_lcm"))("%s compiles v_prediction and the program matches its step code", (name) => {
    const scheduler = createScheduler(name, sd1({ prediction_type: "v_prediction" }));
    const program = scheduler.compile(20);
    const epsilon = createScheduler(name).compile(20);
    expect(program.evals[0]!.b[0]).not.toBeCloseTo(epsilon.evals[0]!.b[0]!, 3);
    const model = analyticModel("float64");
    const start = Float64Array.from(x0, (v) => v * program.initNoiseSigma);
    const expected = runReference(scheduler, 20, start, model, noise);
    const steps: Float64Array[] = [];
    runProgram(program, start, model, noise, { onStep: (_j, x) => steps.push(x.slice()) });
    steps.forEach((x, j) => {
      expect(relativeError(x, expected[j]!)).toBeLessThan(1e-11);
    });
  });

  test("DDIM: x0 = √ᾱ·x − √(1−ᾱ)·v, ε = √ᾱ·v + √(1−ᾱ)·x (closed form of the first update)", () => {
    const program = createScheduler("ddim", sd1({ prediction_type: "v_prediction" })).compile(20);
    const [t, prev] = [951, 901];
    const [sa, sb] = [Math.sqrt(alphasCumprod[t]!), Math.sqrt(1 - alphasCumprod[t]!)];
    const [pa, pb] = [Math.sqrt(alphasCumprod[prev]!), Math.sqrt(1 - alphasCumprod[prev]!)];
    expect(program.evals[0]!.a[0]).toBeCloseTo(pa * sa + pb * sb, 6);
    expect(program.evals[0]!.b[0]).toBeCloseTo(-pa * sb + pb * sa, 6);
  });

  test("Euler: x0 = −σ/√(σ²+1)·v + x/(σ²+1) (closed form of the first update)", () => {
    const program = createScheduler("euler", sd1({ prediction_type: "v_prediction" })).compile(20);
    const sigma = trainSigmas[999]!;
    const next = program.evals[1]!.cIn; // 1/√(σ₁² + 1)
    const sigmaNext = Math.sqrt(1 / (next * next) - 1);
    const dt = sigmaNext - sigma;
    const s2 = sigma * sigma + 1;
    expect(program.evals[0]!.a[0]).toBeCloseTo(1 + (dt * (1 - 1 / s2)) / sigma, 5);
    expect(program.evals[0]!.b[0]).toBeCloseTo(dt / Math.sqrt(s2), 5);
  });

  test("Euler with timestep_type continuous feeds the UNet 0.25·log σ", () => {
    const program = createScheduler("euler", sd1({ prediction_type: "v_prediction", timestep_type: "continuous" })).compile(10);
    expect(program.evals[0]!.t).toBeCloseTo(0.25 * Math.log(trainSigmas[999]!), 6);
    expect(program.timestepDtype).toBe("float32");
  });
});
