/**
 * A1111's SDE samplers (k_dpmpp_sde, k_dpmpp_2m_sde, k_dpmpp_2m_sde_heun, k_dpmpp_3m_sde) against
 * k-diffusion's own code with A1111's Brownian noise sampler over torchsde 0.2.6
 * (test/fixtures/a1111/sde_goldens.json): schedule types, float32 and float64 latents, CPU and NV
 * sources, batches of images with their own seeds, img2img, eta and s_noise, v-prediction.
 */
import { describe, expect, test } from "@jest/globals";
import { BrownianNoiseSampler } from "../../lib/rng/brownian-tree.js";
import { runProgram } from "../../lib/sampler/index.js";
import { createScheduler } from "../../lib/schedulers/index.js";
import { relativeError } from "../fixtures/schedulers/goldens.js";
import { loadSdeGoldens, torchNoiseOf, type SdeGoldenRun } from "../fixtures/a1111/sde-goldens.js";

const goldens = loadSdeGoldens();
/** The bar: within 1e-5 relative, both dtypes. */
const TOLERANCE = 1e-5;
const IMAGE = 4 * 8 * 8;

function programFor(run: SdeGoldenRun) {
  const prediction_type = run.parameterization === "v" ? "v_prediction" : "epsilon";
  const scheduler = createScheduler(run.key, { sigmaSchedule: run.schedule, prediction_type, ...run.extra });
  return run.strength === null ? scheduler.compile(run.steps) : scheduler.compile(run.steps, { startIndex: run.start_index });
}

/** The golden's analytic model for a batch: element k of every image sees sin(t / 50 + k mod 256). */
function batchModel(dtype: "float32" | "float64") {
  return (input: ArrayLike<number>, t: number): Float32Array | Float64Array => {
    const c = Math.cos(t / 300);
    const out = dtype === "float32" ? new Float32Array(input.length) : new Float64Array(input.length);
    for (let k = 0; k < input.length; k++) out[k] = 0.3 * input[k]! * c + 0.05 * Math.sin(t / 50 + (k % IMAGE));
    return out;
  };
}

test("the goldens cover every SDE sampler with three schedule types, both dtypes, both sources, img2img", () => {
  for (const key of ["k_dpmpp_sde", "k_dpmpp_2m_sde", "k_dpmpp_2m_sde_heun", "k_dpmpp_3m_sde"]) {
    const runs = goldens.runs.filter((r) => r.key === key);
    for (const schedule of ["automatic", "karras", "exponential"]) {
      for (const dtype of ["float32", "float64"]) expect(runs.some((r) => r.schedule === schedule && r.dtype === dtype && r.seeds.length === 2)).toBe(true);
    }
    expect(runs.some((r) => r.randn_source === "NV")).toBe(true);
    expect(runs.some((r) => r.strength !== null)).toBe(true);
  }
});

describe.each(goldens.runs.map((run) => [run.id, run] as const))("%s", (_id, run) => {
  const program = programFor(run);

  test("evaluates the model where k-diffusion does and asks the noise sampler where it asked", () => {
    expect(program.evals).toHaveLength(run.evals.length);
    const spec = program.brownian!;
    const positive = run.sigmas.filter((s) => s > 0);
    expect(spec.sigmaMin).toBe(Math.min(...positive));
    expect(spec.sigmaMax).toBe(Math.max(...run.sigmas));
    expect(spec.draws).toHaveLength(run.noise_calls);
    expect(program.evals.filter((e) => e.drawsNoise)).toHaveLength(run.noise_calls);
    if (!run.noise) return;
    // The (σ, σ_next) of every call: equal, or (where torch's float32 log/exp were not correctly
    // rounded: its uniform schedule) two float32 ulps apart at most.
    for (const [k, [sigma, next]] of spec.draws.entries()) {
      expect(Math.abs(sigma - run.noise[k]!.sigma)).toBeLessThanOrEqual(2 * ulp(sigma));
      expect(Math.abs(next - run.noise[k]!.sigma_next)).toBeLessThanOrEqual(2 * ulp(next));
    }
  });

  test("reproduces k-diffusion's final latents within 1e-5 relative from the Brownian noise", () => {
    const spec = program.brownian!;
    const sampler = samplerFor(run.randn_source, run.seeds, spec.sigmaMin, spec.sigmaMax);
    const ours = spec.draws.map(([sigma, next]) => sampler.noise(sigma, next));
    const sameQueries = run.noise === null || spec.draws.every(([sigma, next], k) => sigma === run.noise![k]!.sigma && next === run.noise![k]!.sigma_next);
    // torch's own draws, where the goldens kept them: the sampler's arithmetic alone.
    if (run.noise) expect(relativeError(finalWith(run.noise.map(torchNoiseOf)), run.final)).toBeLessThan(TOLERANCE);
    if (sameQueries) {
      expect(relativeError(finalWith(ours), run.final)).toBeLessThan(TOLERANCE);
    } else {
      // A query an ulp away can fall on another 6-decimal tree node: the draw moves by ~1e-3.
      expect(relativeError(finalWith(ours), run.final)).toBeLessThan(1e-3);
    }
  });

  function finalWith(draws: readonly Float32Array[]) {
    const drawIndex: number[] = [];
    let d = 0;
    for (const e of program.evals) drawIndex.push(e.drawsNoise ? d++ : -1);
    const x0 = run.dtype === "float32" ? Float32Array.from(run.x0) : Float64Array.from(run.x0);
    return runProgram(program, x0, batchModel(run.dtype), (j) => draws[drawIndex[j]!]!);
  }
});

/** Runs with the same seeds, source and range share their trees (a node's value is fixed by its place): faster, same numbers. */
const samplers = new Map<string, BrownianNoiseSampler>();
function samplerFor(source: "CPU" | "NV", seeds: readonly number[], sigmaMin: number, sigmaMax: number): BrownianNoiseSampler {
  const key = `${source}/${seeds.join(",")}/${sigmaMin}/${sigmaMax}`;
  let sampler = samplers.get(key);
  if (!sampler) {
    sampler = new BrownianNoiseSampler(source === "NV" ? "nv" : "cpu", seeds.map(BigInt), [4, 8, 8], sigmaMin, sigmaMax);
    samplers.set(key, sampler);
  }
  return sampler;
}

/** One float32 ulp at x. */
function ulp(x: number): number {
  return 2 ** (Math.floor(Math.log2(Math.abs(x))) - 23);
}

test("the uniform golden shows a query torch put ulps off (the only kind of difference found), and only there", () => {
  const run = goldens.runs.find((r) => r.id.startsWith("k_dpmpp_3m_sde/uniform/"))!;
  const draws = programFor(run).brownian!.draws;
  const differing = draws.filter(([sigma, next], k) => sigma !== run.noise![k]!.sigma || next !== run.noise![k]!.sigma_next);
  expect(differing.length).toBeGreaterThan(0);
  const elsewhere = goldens.runs.filter((r) => r.noise && r !== run && programFor(r).brownian!.draws.some(([sigma, next], k) => sigma !== r.noise![k]!.sigma || next !== r.noise![k]!.sigma_next));
  expect(elsewhere.map((r) => r.id)).toEqual([]);
});

test("the images of a batch each follow their own seed's tree", () => {
  const run = goldens.runs.find((r) => r.seeds.length === 2 && r.dtype === "float32" && r.noise)!;
  const spec = programFor(run).brownian!;
  const [sigma, next] = spec.draws[0]!;
  const both = new BrownianNoiseSampler("cpu", run.seeds.map(BigInt), [4, 8, 8], spec.sigmaMin, spec.sigmaMax).noise(sigma, next);
  const second = new BrownianNoiseSampler("cpu", [BigInt(run.seeds[1]!)], [4, 8, 8], spec.sigmaMin, spec.sigmaMax).noise(sigma, next);
  expect(Array.from(both.subarray(IMAGE))).toEqual(Array.from(second));
  expect(relativeError(both.subarray(0, IMAGE), second)).toBeGreaterThan(0.1);
});
