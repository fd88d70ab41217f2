/**
 * A1111's DDIM CFG++ (a1111_ddim_cfgpp) against A1111's own ddim_cfgpp run through its
 * CFGDenoiserTimesteps (guidance scale / 12.5, renoising with the uncond output), txt2img and
 * img2img, float32 and float64, on the analytic model (test/fixtures/a1111/ddim_cfgpp_goldens.json,
 * scripts/reference/gen_a1111_ddim_cfgpp.py analytic).
 */
import { describe, expect, test } from "@jest/globals";
import { a1111Img2imgStartIndex, a1111SamplerName, a1111SamplerSelection, createScheduler, samplerNeedsUncond } from "../../lib/schedulers/index.js";
import { runProgram } from "../../lib/sampler/index.js";
import { TorchGenerator } from "../../lib/rng/index.js";
import { analyticModel, relativeError } from "../fixtures/schedulers/goldens.js";
import { guidedAnalyticModel64, loadDdimCfgppGoldens, type DdimCfgppRun } from "../fixtures/a1111/ddim-cfgpp-goldens.js";
import { analyticReferenceModel } from "../support/analytic-reference.js";
import { compileA1111Run, etaRunConfig, expectA1111Img2imgStart } from "../fixtures/a1111/timestep-runs.js";

const SHAPE = [1, 4, 8, 8];
const golden = loadDdimCfgppGoldens();

function compile(run: DdimCfgppRun) {
  return compileA1111Run(createScheduler("a1111_ddim_cfgpp", etaRunConfig(run)), run);
}

describe.each(golden.runs.map((r) => [r.id, r] as const))("%s", (_id, run) => {
  const program = compile(run);

  test("evaluates the UNet at A1111's integer timesteps and reads each evaluation's unconditional output", () => {
    expect(program.evals.map((e) => e.t)).toEqual(run.evals);
    expect(program.evals.filter((e) => e.drawsNoise)).toHaveLength(run.draw_count);
    expect(program.evals.every((e) => e.cIn === 1 && e.d !== undefined && e.d !== 0)).toBe(true);
  });

  test("reproduces A1111's result within 1e-5 relative", () => {
    const generator = new TorchGenerator(run.seed);
    const noise = generator.randn(SHAPE);
    expect(Array.from(noise)).toEqual(run.noise);
    let x0: Float32Array | Float64Array = run.dtype === "float32" ? Float32Array.from(run.x0) : Float64Array.from(run.x0);
    if (run.strength === null) {
      expect(relativeError(x0, noise)).toBe(0);
    } else {
      x0 = expectA1111Img2imgStart(program, run, noise);
    }
    const model =
      run.dtype === "float32" ? analyticReferenceModel({ batch: 1, imageElems: 256, guidance: Float64Array.of(run.cfg_scale) }) : guidedAnalyticModel64(run.cfg_scale);
    const final = runProgram(program, x0, model, () => generator.randn(SHAPE));
    expect(relativeError(final, run.final)).toBeLessThan(1e-5);
  });
});

test("the unconditional output matters: renoising with the guided one instead misses A1111", () => {
  const run = golden.runs.find((r) => r.id === "a1111_ddim_cfgpp/20/float64/cfg=7.5")!;
  const program = compile(run);
  const generator = new TorchGenerator(run.seed);
  generator.randn(SHAPE);
  const model = guidedAnalyticModel64(run.cfg_scale);
  const guidedOnly = runProgram(program, Float64Array.from(run.x0), (x, t) => model(x, t).guided, () => generator.randn(SHAPE));
  expect(relativeError(guidedOnly, run.final)).toBeGreaterThan(1e-2);
});

test("without an unconditional output (guidance off) it is A1111's DDIM, as when A1111 skips the uncond", () => {
  const x0 = Float64Array.from({ length: 256 }, (_, i) => Math.sin(i));
  const draws = (seed: number) => {
    const generator = new TorchGenerator(seed);
    return () => Float64Array.from(generator.randn(SHAPE));
  };
  const cfgpp = runProgram(createScheduler("a1111_ddim_cfgpp").compile(10), x0, analyticModel("float64"), draws(3));
  const ddim = runProgram(createScheduler("a1111_ddim").compile(10), x0, analyticModel("float64"), draws(3));
  expect(relativeError(cfgpp, ddim)).toBeLessThan(1e-12);
});

test("A1111's name DDIM CFG++ selects it, takes no schedule type, and names it back; it always needs the uncond", () => {
  expect(a1111SamplerSelection("DDIM CFG++")).toEqual({ scheduler: "a1111_ddim_cfgpp" });
  expect(a1111SamplerSelection("ddim cfg++", "Automatic")).toEqual({ scheduler: "a1111_ddim_cfgpp" });
  expect(a1111SamplerSelection("DDIM CFG++", "Karras")).toBeNull();
  expect(a1111SamplerName("a1111_ddim_cfgpp")).toBe("DDIM CFG++");
  expect(samplerNeedsUncond("a1111_ddim_cfgpp")).toBe(true);
  expect(samplerNeedsUncond("a1111_ddim")).toBe(false);
});

test("img2img whose t_enc leaves no step and other prediction types are refused, naming the option", () => {
  expect(() => createScheduler("a1111_ddim_cfgpp").compile(10, { startIndex: a1111Img2imgStartIndex(10, 0.15) })).toThrow(/DDIM CFG\+\+ img2img .*t_enc = 1, no step/);
  expect(() => createScheduler("a1111_ddim_cfgpp", { prediction_type: "sample" })).toThrow(/prediction_type must be one of "epsilon", "v_prediction"/);
  expect(() => createScheduler("a1111_ddim_cfgpp", { eta: -1 })).toThrow(/eta/);
});
