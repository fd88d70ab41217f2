/**
 * A1111's own UniPC (a1111_unipc) against A1111's sd_samplers_timesteps_impl.unipc (its uni_pc.py
 * port) driven as its CompVisSampler drives it — txt2img and img2img, each variant, skip type,
 * order and lower_order_final, eps and v models — on the analytic model (test/fixtures/a1111/unipc_goldens.json,
 * scripts/reference/gen_a1111_unipc_goldens.py).
 */
import { describe, expect, test } from "@jest/globals";
import { a1111SamplerName, a1111SamplerSelection, createScheduler } from "../../lib/schedulers/index.js";
import { runProgram } from "../../lib/sampler/index.js";
import { TorchGenerator } from "../../lib/rng/index.js";
import { analyticModel, relativeError } from "../fixtures/schedulers/goldens.js";
import { compileA1111Run, expectA1111Start, loadUniPcGoldens, uniPcRunConfig, type UniPcRun } from "../fixtures/a1111/timestep-runs.js";

const golden = { runs: loadUniPcGoldens() };
const SHAPE = [1, 4, 8, 8];

function compile(run: UniPcRun) {
  return compileA1111Run(createScheduler("a1111_unipc", uniPcRunConfig(run)), run);
}

const ran = golden.runs.filter((r) => r.refused === undefined);

describe.each(ran.map((r) => [r.id, r] as const))("%s", (_id, run) => {
  const program = compile(run);

  test("evaluates the UNet at A1111's fractional timesteps, unscaled, never drawing noise", () => {
    expect(program.evals).toHaveLength(run.evals.length);
    // float32 values; where A1111's log/exp/linspace round differently from ours they differ by an ulp (6.1e-5 at 512 … 1024).
    const worst = Math.max(...program.evals.map((e, j) => Math.abs(e.t - run.evals[j]!)));
    expect(worst).toBeLessThanOrEqual(2 ** -13);
    expect(program.evals.every((e) => e.cIn === 1 && !e.drawsNoise)).toBe(true);
  });

  test("reproduces A1111's result within 1e-5 relative", () => {
    const generator = new TorchGenerator(run.seed);
    const noise = generator.randn(SHAPE);
    expect(Array.from(noise)).toEqual(run.noise);
    const x0 = expectA1111Start(program, run, noise);
    const final = runProgram(program, x0, analyticModel(run.dtype), () => {
      throw new Error("UniPC draws no noise");
    });
    expect(relativeError(final, run.final)).toBeLessThan(1e-5);
  });
});


test("settings A1111's UniPC cannot run are refused naming the option, where A1111 asserts", () => {
  const refused = golden.runs.filter((r) => r.refused !== undefined);
  expect(refused.length).toBeGreaterThanOrEqual(3);
  for (const run of refused) {
    expect(run.refused).toBe("UniPC order must be < sampling steps");
    expect(() => compile(run)).toThrow(run.strength === null ? /at least uni_pc_order.*steps = .*raise steps/ : /at least uni_pc_order.*t_enc = .*raise strength/);
  }
});

test("options outside A1111's choices are refused, naming the key and its values", () => {
  expect(() => createScheduler("a1111_unipc", { uni_pc_variant: "bh3" })).toThrow(/uni_pc_variant must be one of "bh1", "bh2", "vary_coeff"/);
  expect(() => createScheduler("a1111_unipc", { uni_pc_skip_type: "karras" })).toThrow(/uni_pc_skip_type must be one of "time_uniform", "time_quadratic", "logSNR"/);
  expect(() => createScheduler("a1111_unipc", { uni_pc_order: 0 })).toThrow(/uni_pc_order must be an integer from 1 to 15/);
  expect(() => createScheduler("a1111_unipc", { uni_pc_order: 16 })).toThrow(/uni_pc_order must be an integer from 1 to 15 \(A1111's slider goes to 50; sd-trt's executors keep 16 steps of history/);
  expect(createScheduler("a1111_unipc", { uni_pc_order: 15 }).compile(50).historyDepth).toBe(16);
  expect(() => createScheduler("a1111_unipc", { uni_pc_lower_order_final: "yes" })).toThrow(/uni_pc_lower_order_final must be true or false/);
  expect(() => createScheduler("a1111_unipc", { prediction_type: "sample" })).toThrow(/prediction_type must be one of "epsilon", "v_prediction"/);
});

test("A1111's name UniPC selects its own port and names it back; diffusers' UniPC stays `unipc`", () => {
  expect(a1111SamplerSelection("UniPC")).toEqual({ scheduler: "a1111_unipc" });
  expect(a1111SamplerSelection("unipc", "Automatic")).toEqual({ scheduler: "a1111_unipc" });
  expect(a1111SamplerName("a1111_unipc")).toBe("UniPC");
  expect(a1111SamplerName("unipc")).toBe("UniPC");
  expect(createScheduler("unipc").compile(10).evals).toHaveLength(10);
});
