/**
 * A1111's k-diffusion samplers (k_* schedulers) against k-diffusion's own code as A1111 v1.10.1
 * drives it (test/fixtures/a1111/kdiffusion_goldens.json): every sampler × schedule type on the
 * analytic model, float32 and float64 latents, the noise from A1111's ImageRNG (CPU source, ENSD).
 */
import { describe, expect, test } from "@jest/globals";
import { createScheduler } from "../../lib/schedulers/index.js";
import { runProgram } from "../../lib/sampler/index.js";
import { TorchGenerator } from "../../lib/rng/index.js";
import { compVisSchedule } from "../../lib/schedulers/kdiffusion-schedule.js";
import { analyticModel, relativeError } from "../fixtures/schedulers/goldens.js";
import { loadKDiffusionGoldens, type KDiffusionGoldenRun } from "../fixtures/a1111/kdiffusion-goldens.js";

const goldens = loadKDiffusionGoldens();
/** The bar: within 1e-5 relative at every checked point, both dtypes. */
const TOLERANCE = 1e-5;
const SHAPE = [1, 4, 8, 8];

function schedulerFor(run: KDiffusionGoldenRun) {
  const prediction_type = run.parameterization === "v" ? "v_prediction" : "epsilon";
  return createScheduler(run.key, { sigmaSchedule: run.schedule, prediction_type, ...run.extra });
}

/** A1111's ImageRNG for one image, CPU source: seed for the first draw, seed + ENSD after it. */
function imageRngDraws(run: KDiffusionGoldenRun, count: number): Float32Array[] {
  const first = new TorchGenerator(run.seed);
  first.randn(SHAPE);
  const generator = run.ensd ? new TorchGenerator(run.seed + run.ensd) : first;
  return Array.from({ length: count }, () => generator.randn(SHAPE));
}

/** Largest |actual − expected| / max(|expected|, 1) (timesteps run down to 0). */
function maxRelative(actual: readonly number[], expected: readonly number[]): number {
  let worst = 0;
  for (const [i, e] of expected.entries()) worst = Math.max(worst, Math.abs(actual[i]! - e) / Math.max(Math.abs(e), 1));
  return actual.length === expected.length ? worst : Infinity;
}

test("CompVisDenoiser's sigma table is ldm's SD 1.x schedule", () => {
  const { sigmas, logSigmas } = compVisSchedule(0.00085, 0.012, 1000);
  // torch's float32 sqrt/log against ours: at most one float32 ulp (2⁻²³ ≈ 1.2e-7) apart.
  expect(maxRelative(Array.from(sigmas), goldens.model_sigmas)).toBeLessThan(2.5e-7);
  expect(maxRelative(Array.from(logSigmas), goldens.model_log_sigmas)).toBeLessThan(1e-6);
});

test("the goldens cover every implemented sampler with every schedule type, both dtypes", () => {
  // DPM fast integrates over the model's sigma range; a schedule only scales its start.
  // LCM takes the schedule types that need no σ ↔ t mapping of the model (its denoiser has its own): checked below.
  const keys = new Set(goldens.runs.map((r) => r.key).filter((k) => k !== "k_dpm_fast" && k !== "k_lcm"));
  expect([...keys].sort()).toEqual(["k_dpm_2", "k_dpm_2_a", "k_dpmpp_2m", "k_dpmpp_2s_a", "k_euler", "k_euler_a", "k_heun", "k_lms", "k_restart"]);
  const lcmSchedules = new Set(goldens.runs.filter((r) => r.key === "k_lcm").map((r) => `${r.schedule}/${r.dtype}`));
  for (const schedule of ["automatic", "karras", "exponential", "polyexponential", "kl_optimal", "align_your_steps"]) {
    for (const dtype of ["float32", "float64"]) expect(lcmSchedules.has(`${schedule}/${dtype}`)).toBe(true);
  }
  expect(goldens.runs.filter((r) => r.key === "k_dpm_fast").map((r) => r.dtype)).toEqual(expect.arrayContaining(["float32", "float64"]));
  const schedules = new Set(goldens.runs.map((r) => r.schedule));
  expect(schedules.size).toBe(11);
  for (const key of keys) {
    for (const schedule of schedules) {
      for (const dtype of ["float32", "float64"]) {
        expect(goldens.runs.some((r) => r.key === key && r.schedule === schedule && r.dtype === dtype)).toBe(true);
      }
    }
  }
});

describe.each(goldens.runs.map((run) => [run.id, run] as const))("%s", (_id, run) => {
  const scheduler = schedulerFor(run);
  const program = scheduler.compile(run.steps);

  test("evaluates the model at k-diffusion's sigmas: same count, fractional timesteps and c_in", () => {
    expect(program.evals).toHaveLength(run.evals.length);
    expect(program.initNoiseSigma).toBe(run.sigmas[0]);
    // Mid-step sigmas go through torch's vectorised float32 log/exp, one ulp from ours at most;
    // at the low end of the table an ulp of σ moves t by up to ~1e-5.
    expect(maxRelative(program.evals.map((e) => e.t), run.evals.map((e) => e.t))).toBeLessThan(2e-5);
    expect(maxRelative(program.evals.map((e) => e.cIn), run.evals.map((e) => e.c_in))).toBeLessThan(1e-6);
    expect(program.evals.filter((e) => e.drawsNoise)).toHaveLength(usesItsDraws(run) ? run.draw_count : 0);
  });

  test("reproduces the trajectory within 1e-5 relative", () => {
    const draws = imageRngDraws(run, program.evals.filter((e) => e.drawsNoise).length);
    if (run.draws) for (const [i, d] of draws.entries()) expect(Array.from(d)).toEqual(run.draws[i]);
    const drawIndex: number[] = [];
    let d = 0;
    for (const e of program.evals) drawIndex.push(e.drawsNoise ? d++ : -1);
    const f32 = run.dtype === "float32";
    const x0 = f32 ? Float32Array.from(run.x0) : Float64Array.from(run.x0);
    const atStep: number[][] = [];
    // The evaluations k-diffusion's callback marks as the first of a step.
    const stepStarts = new Set(run.evals.flatMap((e, j) => (e.starts_step === null ? [] : [j])));
    const final = runProgram(program, x0, analyticModel(run.dtype), (j) => draws[drawIndex[j]!]!, {
      onStep: (j, latents) => {
        if (stepStarts.has(j + 1)) atStep.push(Array.from(latents));
      },
    });
    if (run.x_at_step) {
      expect(atStep).toHaveLength(run.x_at_step.length);
      for (const [i, x] of run.x_at_step.entries()) expect(relativeError(atStep[i]!, x)).toBeLessThan(TOLERANCE);
    }
    expect(relativeError(final, run.final)).toBeLessThan(TOLERANCE);
  });
});

test("sigmaSchedule takes A1111's labels too, and refuses others listing the names", () => {
  expect(createScheduler("k_dpmpp_2m", { sigmaSchedule: "Karras" }).compile(10)).toEqual(createScheduler("k_dpmpp_2m", { sigmaSchedule: "karras" }).compile(10));
  expect(() => createScheduler("k_euler", { sigmaSchedule: "beta" })).toThrow(/sigmaSchedule must be one of "automatic", .* \(the Beta schedule needs scipy/);
  expect(() => createScheduler("k_euler", { sigmaSchedule: "linear" })).toThrow(/sigmaSchedule must be one of "automatic", "uniform", .*got "linear"/);
  expect(() => createScheduler("k_euler", { s_churn: 0.5 })).toThrow(/s_churn must be 0 \(s_churn > 0 is not supported/);
  expect(() => createScheduler("k_lcm", { sigmaSchedule: "uniform" }).compile(8)).toThrow(/sigmaSchedule "uniform" is not supported with LCM: it maps σ ↔ t through LCM's own denoiser/);
  expect(() => createScheduler("k_lcm", { prediction_type: "v_prediction" }).compile(8)).toThrow(/A1111's LCM \(LCMCompVisDenoiser\) takes eps-prediction models only/);
});

/**
 * Samplers whose draws change x: ancestral ones every step (eta 0 included), Restart once per
 * restart segment, LCM every step but the last. Euler, Heun and DPM2 draw an unused eps every step (s_churn = 0), which no
 * later draw of theirs depends on, so their programs draw nothing.
 */
function usesItsDraws(run: KDiffusionGoldenRun): boolean {
  return ["k_euler_a", "k_dpm_2_a", "k_dpmpp_2s_a", "k_dpm_fast", "k_restart", "k_lcm"].includes(run.key);
}
