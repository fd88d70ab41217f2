/**
 * The sampler program's coefficient d on an evaluation's unconditional output u_j (A1111's DDIM
 * CFG++): how the CPU executor applies it, u_j = m_j without guidance, the checks that refuse a
 * malformed d, and its packed form. Programs without d are untouched (they carry no `d` key).
 */
import { describe, expect, test } from "@jest/globals";
import { InvalidArgumentError, SdTrtError } from "../../lib/errors.js";
import { checkProgram, packProgram, ProgramExecution, runProgram, unpackProgram, SAMPLER_PROGRAM_FORMAT, type SamplerProgram } from "../../lib/sampler/index.js";
import { createScheduler, SCHEDULER_NAMES } from "../../lib/schedulers/index.js";

/** x_1 = 0.5·x_0 + 0.25·m_0 + d·u_0 + c·n_0 (one evaluation, depth 1). */
function oneStep(d: unknown, c = 0): SamplerProgram {
  return {
    format: SAMPLER_PROGRAM_FORMAT,
    scheduler: "test",
    steps: 1,
    startIndex: 0,
    initNoiseSigma: 1,
    timestepDtype: "float32",
    historyDepth: 1,
    evals: [{ t: 1, cIn: 1, a: [0.5], b: [0.25], c, drawsNoise: c !== 0, d: d as number }],
  };
}

const x0 = Float64Array.of(1, 2, 3);
const m = Float64Array.of(10, 20, 30);
const u = Float64Array.of(100, 200, 300);

describe("the executor's d · u_j term", () => {
  test("adds d times the unconditional output, after the m terms and before the noise", () => {
    expect(Array.from(runProgram(oneStep(2), x0, () => ({ guided: m, uncond: u })))).toEqual([0.5 + 2.5 + 200, 1 + 5 + 400, 1.5 + 7.5 + 600]);
    const n = Float64Array.of(1000, 2000, 3000);
    expect(Array.from(runProgram(oneStep(2, 0.5), x0, () => ({ guided: m, uncond: u }), () => n))).toEqual([703, 1406, 2109]);
  });

  test("takes u_j = m_j when the model gives only its one prediction (no guidance)", () => {
    expect(Array.from(runProgram(oneStep(2), x0, () => m))).toEqual([0.5 + 2.5 + 20, 1 + 5 + 40, 1.5 + 7.5 + 60]);
  });

  test("ignores the unconditional output where d is absent, so existing programs are unchanged", () => {
    const program = createScheduler("euler").compile(6);
    const start = Float64Array.from({ length: 8 }, (_, i) => i - 3);
    const guided = (x: ArrayLike<number>) => Float64Array.from(x, (v) => 0.3 * v);
    const plain = runProgram(program, start, (x) => guided(x));
    expect(runProgram(program, start, (x) => ({ guided: guided(x), uncond: Float64Array.from(x, () => Number.NaN) }))).toEqual(plain);
  });

  test("refuses an unconditional output of the wrong length, naming the evaluation", () => {
    const run = new ProgramExecution(oneStep(2), x0);
    expect(() => run.advance(m, undefined, Float64Array.of(1, 2))).toThrow(InvalidArgumentError);
    expect(() => run.advance(m, undefined, Float64Array.of(1, 2))).toThrow(/unconditional output for evaluation 0 has 2 values, expected 3/);
  });
});

describe("checkProgram on d", () => {
  test.each([[Number.NaN], [Number.POSITIVE_INFINITY], ["2"], [[2]], [null]])("refuses d = %p with ERR_INVALID_PROGRAM, naming the evaluation", (d) => {
    let caught: unknown;
    try {
      checkProgram(oneStep(d));
    } catch (error) {
      caught = error;
    }
    expect(caught).toBeInstanceOf(SdTrtError);
    expect((caught as SdTrtError).code).toBe("ERR_INVALID_PROGRAM");
    expect((caught as Error).message).toMatch(/evaluation 0: d \(the coefficient on the unconditional output\) must be a finite number/);
  });

  test("accepts d absent or finite", () => {
    expect(() => checkProgram(oneStep(undefined))).not.toThrow();
    expect(() => checkProgram(oneStep(-0.75))).not.toThrow();
  });
});

describe("d in the packed layout", () => {
  test("round-trips DDIM CFG++'s d and leaves other programs without one", () => {
    const cfgpp = createScheduler("a1111_ddim_cfgpp", { eta: 0.5 }).compile(8);
    expect(unpackProgram(packProgram(cfgpp), { scheduler: cfgpp.scheduler })).toEqual(cfgpp);
    for (const name of SCHEDULER_NAMES.filter((n) => n !== "a1111_ddim_cfgpp")) {
      expect(createScheduler(name).compile(5).evals.some((e) => "d" in e)).toBe(false);
    }
  });

  test("a packed d that is not finite is refused", () => {
    const words = packProgram(oneStep(2));
    words[8 + 4] = Number.NaN;
    expect(() => unpackProgram(words, { scheduler: "test" })).toThrow(/evaluation 0: d .* must be a finite number/);
  });
});
