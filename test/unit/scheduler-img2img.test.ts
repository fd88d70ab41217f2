/**
 * img2img: strength → t_start, the sliced schedule with fresh scheduler state (diffusers'
 * StableDiffusionImg2ImgPipeline), PNDM's warm-up quirk, add_noise coefficients.
 */
import { readFileSync } from "node:fs";
import { fileURLToPath } from "node:url";
import { describe, expect, test } from "@jest/globals";
import { InvalidOptionError } from "../../lib/errors.js";
import { runProgram } from "../../lib/sampler/index.js";
import { SCHEDULER_NAMES, createScheduler, isA1111Sampler, strengthToStartStep } from "../../lib/schedulers/index.js";
import { analyticModel, loadSchedulerGoldens, pseudoNormal, relativeError, runReference } from "../fixtures/schedulers/goldens.js";

const f32 = Math.fround;

interface Img2ImgCase {
  id: string;
  num_inference_steps: number;
  strength: number;
  timesteps: number[];
  scheduler_timesteps_full: number[];
  t_start: number;
  latent_timestep: number;
  image_latents: number[];
  add_noise_noise: number[];
  initial_latents: number[];
}

const reference = JSON.parse(
  readFileSync(fileURLToPath(new URL("../fixtures/goldens/tiny_sd_reference.json", import.meta.url)), "utf8"),
) as { cases: (Img2ImgCase & { id: string })[] };
const img2img = reference.cases.find((c) => c.id === "g_img2img_s0.6")!;
const tables = loadSchedulerGoldens().schedule_tables;
const alphasCumprod = tables.alphas_cumprod.map(f32);

describe("strengthToStartStep", () => {
  test.each([
    [20, 0.6, 8], // int(12.000000000000002) = 12
    [10, 0.29, 8], // int(2.9) truncates
    [3, 0.7, 1], // 3 × 0.7 = 2.0999999999999996
    [50, 1, 0],
    [50, 0.02, 49],
  ])("steps %i, strength %p → t_start %i", (steps, strength, tStart) => {
    expect(strengthToStartStep(steps, strength)).toBe(tStart);
  });

  test("strength that leaves no step, or outside [0, 1], is rejected", () => {
    expect(() => strengthToStartStep(20, 0.01)).toThrow(InvalidOptionError);
    expect(() => strengthToStartStep(20, 0)).toThrow(/strength must be at least 1\/steps/);
    expect(() => strengthToStartStep(20, 1.5)).toThrow(/strength must be a number from 0 to 1/);
    expect(() => strengthToStartStep(0, 0.5)).toThrow(/steps must be an integer/);
  });

  test("matches the tiny-SD img2img reference (PNDM 20 steps, strength 0.6)", () => {
    expect(strengthToStartStep(img2img.num_inference_steps, img2img.strength)).toBe(img2img.t_start);
  });
});

describe("PNDM img2img (the warm-up quirk diffusers really has)", () => {
  const pndm = createScheduler("pndm");
  const startIndex = img2img.t_start * pndm.order;
  const program = pndm.compile(20, { startIndex });

  test("iterates scheduler.timesteps[t_start · order:] like the reference", () => {
    expect(pndm.timesteps(20)).toEqual(img2img.scheduler_timesteps_full);
    expect(program.evals.map((e) => e.t)).toEqual(img2img.timesteps);
    expect(program.startIndex).toBe(8);
    expect(program.steps).toBe(20);
  });

  test("add_noise at timesteps[0] reproduces the reference's initial latents", () => {
    const { addNoise } = program;
    expect(addNoise).toEqual({
      t: img2img.latent_timestep,
      signal: f32(Math.sqrt(alphasCumprod[601]!)),
      noise: f32(Math.sqrt(f32(1 - alphasCumprod[601]!))),
    });
    const x0 = img2img.image_latents.map((v, i) => f32(addNoise!.signal * v + addNoise!.noise * img2img.add_noise_noise[i]!));
    expect(relativeError(x0, img2img.initial_latents)).toBeLessThan(1e-6);
  });

  test("call 1 restarts from the 601 latents with (e0 + e1)/2; call 2 is AB2 from 501 to 451 on the 551 latents", () => {
    const [call0, call1, call2] = program.evals;
    // Call 1 reads x_0 (lag 1), not x_1, and weights m_1, m_0 equally.
    expect(call1!.a[0]).toBe(0);
    expect(call1!.a[1]).toBe(call0!.a[0]);
    expect(call1!.b[0]).toBeCloseTo(call0!.b[0]! / 2, 12);
    expect(call1!.b[1]).toBeCloseTo(call0!.b[0]! / 2, 12);
    // Call 2 steps the 551 latents with PNDM's 501 → 451 coefficient, AB2 over [e0, e2] (e1 dropped).
    expect(call2!.a[0]).toBeCloseTo(Math.sqrt(alphasCumprod[451]! / alphasCumprod[501]!), 6);
    expect(call2!.b[1]).toBe(0);
    expect(call2!.b[0]! / call2!.b[2]!).toBeCloseTo(-3, 12);
  });
});

describe("every scheduler's img2img program", () => {
  const steps = 20;
  const tStart = strengthToStartStep(steps, 0.6);
  const x0 = pseudoNormal(64, 11);
  const noise = (j: number) => pseudoNormal(64, 1000 + j);

  // A1111's own samplers follow its rule instead (scheduler-a1111-img2img.test.ts, scheduler-a1111-timesteps.test.ts).
  test.each(SCHEDULER_NAMES.filter((n) => !isA1111Sampler(n)))("%s runs timesteps[t_start · order:] with fresh state, like its reference run", (name) => {
    const scheduler = createScheduler(name);
    const startIndex = tStart * scheduler.order;
    const program = scheduler.compile(steps, { startIndex });
    const full = scheduler.timesteps(steps);
    expect(program.evals.map((e) => e.t)).toEqual(full.slice(startIndex));
    expect(program.addNoise!.t).toBe(full[startIndex]);

    const model = analyticModel("float64");
    const expected = runReference(scheduler, steps, x0, model, noise, { startIndex });
    const actual = runProgram(program, Float64Array.from(x0), model, noise);
    expect(relativeError(actual, expected.at(-1)!)).toBeLessThan(1e-11);
  });

  test("add_noise: sqrt(ᾱ)/sqrt(1 − ᾱ) for DDPM-type, 1/σ for sigma-space, α_t/σ_t for DPM-type", () => {
    for (const name of ["ddim", "ddpm", "pndm"]) {
      const program = createScheduler(name).compile(steps, { startIndex: tStart });
      const t = program.addNoise!.t;
      expect(program.addNoise).toEqual({ t, signal: f32(Math.sqrt(alphasCumprod[t]!)), noise: f32(Math.sqrt(f32(1 - alphasCumprod[t]!))) });
    }
    for (const name of ["lms", "euler", "euler_a", "heun"]) {
      const scheduler = createScheduler(name);
      const program = scheduler.compile(steps, { startIndex: tStart * scheduler.order });
      expect(program.addNoise!.signal).toBe(1);
      // The sigma at begin_index: the UNet input scale there is 1/sqrt(σ² + 1).
      const sigma = program.addNoise!.noise;
      expect(1 / program.evals[0]!.cIn).toBeCloseTo(Math.sqrt(sigma * sigma + 1), 5);
    }
    for (const name of ["dpmpp_2m", "dpmpp_2m_karras", "unipc"]) {
      const { signal, noise: sigmaT } = createScheduler(name).compile(steps, { startIndex: tStart }).addNoise!;
      expect(signal * signal + sigmaT * sigmaT).toBeCloseTo(1, 6);
    }
  });

  test("strength 1 (startIndex 0) is img2img over the whole schedule", () => {
    const program = createScheduler("euler").compile(steps, { startIndex: 0 });
    expect(program.evals).toHaveLength(steps);
    // linspace: σ at index 0 is the largest sigma, init_noise_sigma.
    expect(program.addNoise).toEqual({ t: 999, signal: 1, noise: program.initNoiseSigma });
    expect(createScheduler("euler").compile(steps).addNoise).toBeUndefined();
  });

  test("LMS starts at order 4 with only the newest derivative (diffusers' zip over the derivative list)", () => {
    const lms = createScheduler("lms");
    const program = lms.compile(steps, { startIndex: tStart });
    const first = program.evals[0]!;
    expect(first.b.filter((b) => b !== 0)).toHaveLength(1);
    // ∫ over [σ_s, σ_{s+1}] of the order-4 Lagrange basis polynomial of node σ_s, integrated exactly.
    const sigmas = [tStart - 3, tStart - 2, tStart - 1, tStart, tStart + 1].map((i) => sigmaAt(lms, i));
    const [s3, s2, s1, s0, next] = sigmas as [number, number, number, number, number];
    const basis = (tau: number) => ((tau - s1) * (tau - s2) * (tau - s3)) / ((s0 - s1) * (s0 - s2) * (s0 - s3));
    expect(first.b[0]! / simpson(basis, s0, next)).toBeCloseTo(1, 5);
    // A first-order start would have used σ_{s+1} − σ_s instead.
    expect(Math.abs(first.b[0]! - (next - s0))).toBeGreaterThan(0.01);
  });
});

/** σ_i of a sigma-space scheduler, read back through add_noise at startIndex i. */
function sigmaAt(scheduler: ReturnType<typeof createScheduler>, i: number): number {
  return scheduler.compile(20, { startIndex: i }).addNoise!.noise;
}

/** Simpson's rule, exact for cubics. */
function simpson(f: (x: number) => number, a: number, b: number): number {
  return ((b - a) / 6) * (f(a) + 4 * f((a + b) / 2) + f(b));
}
