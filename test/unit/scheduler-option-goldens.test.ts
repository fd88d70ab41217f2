/**
 * The options and img2img paths the shared goldens do not cover, against diffusers' own classes:
 * test/fixtures/schedulers/option_goldens.json, made by scripts/reference/gen_option_goldens.py (same
 * recipe and analytic model as the shared goldens, on a [1,4,2,2] latent). That script reproduces
 * the shared goldens' float64 runs to 2e-7, so its harness around diffusers' files is faithful.
 */
import { readFileSync } from "node:fs";
import { fileURLToPath } from "node:url";
import { describe, expect, test } from "@jest/globals";
import { runProgram } from "../../lib/sampler/index.js";
import { createScheduler, strengthToStartStep } from "../../lib/schedulers/index.js";
import { analyticModel, relativeError } from "../fixtures/schedulers/goldens.js";

interface OptionRun {
  key: string;
  scheduler: string;
  overrides: Record<string, unknown>;
  num_inference_steps: number;
  timesteps_full: number[];
  timesteps: number[];
  init_noise_sigma?: number;
  strength?: number;
  start_index?: number;
  image?: number[];
  add_noise_noise?: number[];
  add_noise_signal_scale?: number;
  add_noise_noise_scale?: number;
  eta: number | null;
  x0: number[];
  steps: { t: number; scale: number; x: number[]; noise?: number[] }[];
}

const goldens = JSON.parse(
  readFileSync(fileURLToPath(new URL("../fixtures/schedulers/option_goldens.json", import.meta.url)), "utf8"),
) as { sd1_scheduler_config: Record<string, unknown>; runs: OptionRun[] };

const label = (run: OptionRun) =>
  `${run.key} ${run.num_inference_steps} steps ${JSON.stringify(run.overrides)}` +
  (run.strength !== undefined ? ` img2img strength ${run.strength}` : "") +
  (run.eta !== null ? ` eta ${run.eta}` : "");

/**
 * Timesteps equal diffusers' — exactly, except the fractional ones of Karras sigma-to-timestep
 * conversions, which interpolate in numpy's float32 `log` table (a SIMD approximation that is
 * neither correctly rounded nor the same on every CPU): those may differ by a few float32 ulps,
 * i.e. by less than 1e-4 of a timestep, which changes nothing the UNet can notice.
 */
function expectTimesteps(actual: number[], expected: number[]): void {
  expect(actual).toHaveLength(expected.length);
  actual.forEach((t, i) => {
    const want = Math.fround(expected[i]!);
    if (Number.isInteger(want)) expect(t).toBe(want);
    else expect(Math.abs(t - want)).toBeLessThan(1e-4);
  });
}

describe.each(goldens.runs.map((run) => [label(run), run] as const))("%s", (_label, run) => {
  const config = { ...goldens.sd1_scheduler_config, ...run.overrides, ...(run.eta !== null ? { eta: run.eta } : {}) };
  const scheduler = createScheduler(run.key, config);
  const steps = run.num_inference_steps;
  const startIndex = run.strength === undefined ? undefined : strengthToStartStep(steps, run.strength) * scheduler.order;
  const program = scheduler.compile(steps, startIndex === undefined ? {} : { startIndex });

  test("schedule: diffusers' timesteps, sliced at t_start · order for img2img", () => {
    expectTimesteps(scheduler.timesteps(steps), run.timesteps_full);
    expectTimesteps(program.evals.map((e) => e.t), run.timesteps);
    expect(startIndex).toBe(run.start_index);
    program.evals.forEach((e, j) => {
      expect(Math.abs(e.cIn / run.steps[j]!.scale - 1)).toBeLessThan(1e-6);
    });
    expect(program.evals.map((e) => e.drawsNoise)).toEqual(run.steps.map((s) => s.noise !== undefined));
  });

  test("start: init_noise_sigma, or add_noise's scales for img2img", () => {
    if (run.strength === undefined) {
      expect(program.initNoiseSigma).toBe(Math.fround(run.init_noise_sigma!));
      expect(program.addNoise).toBeUndefined();
      return;
    }
    const { signal, noise } = program.addNoise!;
    expect(Math.abs(signal / run.add_noise_signal_scale! - 1)).toBeLessThan(1e-6);
    expect(Math.abs(noise / run.add_noise_noise_scale! - 1)).toBeLessThan(1e-6);
    const x0 = run.image!.map((v, i) => signal * v + noise * run.add_noise_noise![i]!);
    expect(relativeError(x0, run.x0)).toBeLessThan(1e-6);
  });

  test("trajectory: every step within 1e-5 of diffusers", () => {
    const errors: number[] = [];
    runProgram(program, Float64Array.from(run.x0), analyticModel("float64"), (j) => run.steps[j]!.noise!, {
      onStep: (j, x) => errors.push(relativeError(x, run.steps[j]!.x)),
    });
    expect(errors).toHaveLength(run.steps.length);
    expect(Math.max(...errors)).toBeLessThan(1e-5);
  });
});
