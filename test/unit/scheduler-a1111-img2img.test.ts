/**
 * A1111's img2img step rule for its k-diffusion samplers (KDiffusionSampler.sample_img2img and
 * setup_img2img_steps) against k-diffusion's own samplers on the analytic model
 * (test/fixtures/a1111/kdiffusion_img2img.json).
 */
import { readFileSync } from "node:fs";
import { describe, expect, test } from "@jest/globals";
import { a1111Img2imgStartIndex, createScheduler } from "../../lib/schedulers/index.js";
import { runProgram } from "../../lib/sampler/index.js";
import { TorchGenerator } from "../../lib/rng/index.js";
import { analyticModel, relativeError } from "../fixtures/schedulers/goldens.js";

interface Run {
  id: string;
  key: string;
  schedule: string;
  steps: number;
  strength: number;
  seed: number;
  t_enc: number;
  start_index: number;
  sigma_sched: number[];
  init_latent: number[];
  noise: number[];
  evals: number;
  final: number[];
}

const golden = JSON.parse(readFileSync(new URL("../fixtures/a1111/kdiffusion_img2img.json", import.meta.url), "utf8")) as { runs: Run[] };

describe.each(golden.runs.map((r) => [r.id, r] as const))("%s", (_id, run) => {
  test("starts where A1111 starts: t_enc = int(min(strength, 0.999) · steps), sigmas[steps − t_enc − 1:]", () => {
    expect(a1111Img2imgStartIndex(run.steps, run.strength)).toBe(run.start_index);
  });

  test("runs the sampler fresh over the tail of the schedule, x = image + σ_start · noise, within 1e-5", () => {
    const program = createScheduler(run.key, { sigmaSchedule: run.schedule }).compile(run.steps, { startIndex: run.start_index });
    expect(program.startIndex).toBe(run.start_index);
    expect(program.evals).toHaveLength(run.evals);
    expect(program.addNoise?.signal).toBe(1);
    // σ_start to float32 rounding (a few ulps at 50 steps, where torch's float32 arithmetic rounds differently).
    expect(Math.abs(program.addNoise!.noise - run.sigma_sched[0]!) / run.sigma_sched[0]!).toBeLessThan(1e-6);
    // A1111: init_latent + noise * sigma_sched[0] in float32; the later draws continue the image's generator.
    const x0 = Float32Array.from(run.init_latent, (v, i) => v + Math.fround(run.noise[i]! * run.sigma_sched[0]!));
    const generator = new TorchGenerator(run.seed);
    generator.randn([1, 4, 8, 8]);
    const final = runProgram(program, x0, analyticModel("float32"), () => generator.randn([1, 4, 8, 8]));
    expect(relativeError(final, run.final)).toBeLessThan(1e-5);
  });
});

test("startIndex past the last step of a k-diffusion schedule is refused, naming it", () => {
  expect(() => createScheduler("k_euler").compile(10, { startIndex: 10 })).toThrow(/startIndex must be an integer from 0 to 9/);
});
