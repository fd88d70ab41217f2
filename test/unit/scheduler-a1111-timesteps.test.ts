/**
 * A1111's own DDIM and PLMS (a1111_ddim, a1111_plms) against A1111's sd_samplers_timesteps_impl
 * `ddim` / `plms` driven as its CompVisSampler drives them, txt2img and img2img, on the analytic
 * model (test/fixtures/a1111/timesteps_goldens.json, scripts/reference/gen_a1111_kdiffusion_goldens.py timesteps), and
 * on it read as v through A1111's CompVisTimestepsVDenoiser (timesteps_v_goldens.json, gen_a1111_unipc_goldens.py timesteps-v).
 */
import { describe, expect, test } from "@jest/globals";
import { a1111Img2imgStartIndex, a1111SamplerName, a1111SamplerSelection, createScheduler } from "../../lib/schedulers/index.js";
import { runProgram } from "../../lib/sampler/index.js";
import { TorchGenerator } from "../../lib/rng/index.js";
import { analyticModel, relativeError } from "../fixtures/schedulers/goldens.js";
import { compileA1111Run, etaRunConfig, expectA1111Start, loadDdimPlmsGoldens, type DdimPlmsRun } from "../fixtures/a1111/timestep-runs.js";

const golden = { runs: loadDdimPlmsGoldens() };
const SHAPE = [1, 4, 8, 8];

function compile(run: DdimPlmsRun) {
  return compileA1111Run(createScheduler(run.key, etaRunConfig(run)), run);
}

describe.each(golden.runs.map((r) => [r.id, r] as const))("%s", (_id, run) => {
  const program = compile(run);

  test("evaluates the UNet at A1111's integer timesteps, unscaled, drawing where A1111 draws", () => {
    expect(program.evals.map((e) => e.t)).toEqual(run.evals);
    expect(program.evals.every((e) => e.cIn === 1)).toBe(true);
    expect(program.evals.filter((e) => e.drawsNoise)).toHaveLength(run.draw_count);
  });

  test("reproduces A1111's result within 1e-5 relative", () => {
    const generator = new TorchGenerator(run.seed);
    const noise = generator.randn(SHAPE);
    expect(Array.from(noise)).toEqual(run.noise);
    const x0 = expectA1111Start(program, run, noise);
    const final = runProgram(program, x0, analyticModel(run.dtype), () => generator.randn(SHAPE));
    expect(relativeError(final, run.final)).toBeLessThan(1e-5);
  });
});

test("A1111's names DDIM and PLMS select its own samplers, and name them back", () => {
  expect(a1111SamplerSelection("DDIM")).toEqual({ scheduler: "a1111_ddim" });
  expect(a1111SamplerSelection("plms", "Automatic")).toEqual({ scheduler: "a1111_plms" });
  expect(a1111SamplerSelection("DDIM", "Karras")).toBeNull();
  expect(a1111SamplerName("a1111_ddim")).toBe("DDIM");
  expect(a1111SamplerName("a1111_plms")).toBe("PLMS");
});

test("img2img whose t_enc leaves no step, PLMS's eta and other prediction types are refused, naming the option", () => {
  expect(() => createScheduler("a1111_ddim").compile(10, { startIndex: a1111Img2imgStartIndex(10, 0.15) })).toThrow(/strength.*t_enc = 1, no step/);
  expect(() => createScheduler("a1111_plms", { eta: 0.5 })).toThrow(/eta must be 0 \(PLMS takes no eta\)/);
  expect(() => createScheduler("a1111_plms", { prediction_type: "sample" })).toThrow(/prediction_type must be one of "epsilon", "v_prediction"/);
});

test("a v model's output is not its eps: reading the v runs as eps misses A1111", () => {
  const run = golden.runs.find((r) => r.id === "a1111_plms/10/float32/v")!;
  const program = createScheduler(run.key).compile(run.steps);
  const final = runProgram(program, Float32Array.from(run.x0), analyticModel(run.dtype), () => new Float32Array(256));
  expect(relativeError(final, run.final)).toBeGreaterThan(1e-2);
});
