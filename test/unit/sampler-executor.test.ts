/**
 * The CPU executor: what the model sees, noise handling, inputs left alone, no shared state
 * between programs or runs, cancellation, and the structural checks of programs.
 */
import { describe, expect, test } from "@jest/globals";
import { AbortError, SdTrtError } from "../../lib/errors.js";
import {
  ProgramExecution,
  runProgram,
  runProgramAsync,
  type SamplerProgram,
} from "../../lib/sampler/index.js";
import { createScheduler } from "../../lib/schedulers/index.js";
import { analyticModel, pseudoNormal, relativeError } from "../fixtures/schedulers/goldens.js";

const model = analyticModel("float32");
const latents = (seed: number, scale = 1) => Float32Array.from(pseudoNormal(256, seed), (v) => v * scale);
const noiseSource = (j: number) => Float32Array.from(pseudoNormal(256, 9000 + j));

describe("runProgram", () => {
  test("hands the model cIn · x_j and diffusers' timestep, in order", () => {
    const program = createScheduler("euler").compile(10);
    const x0 = latents(1, program.initNoiseSigma);
    const calls: { t: number; j: number; first: number }[] = [];
    runProgram(program, x0, (input, t, j) => {
      calls.push({ t, j, first: input[0]! });
      return model(input, t);
    });
    expect(calls.map((c) => c.j)).toEqual([...program.evals.keys()]);
    expect(calls.map((c) => c.t)).toEqual(program.evals.map((e) => e.t));
    expect(calls[0]!.first).toBe(Math.fround(program.evals[0]!.cIn * x0[0]!));
  });

  test("returns a new array of the latents' type and leaves the inputs untouched", () => {
    const program = createScheduler("dpmpp_2m").compile(8);
    const x0 = latents(2);
    const copy = x0.slice();
    const result = runProgram(program, x0, model);
    expect(result).not.toBe(x0);
    expect(result).toBeInstanceOf(Float32Array);
    expect(x0).toEqual(copy);
    const wide = runProgram(program, Float64Array.from(x0), analyticModel("float64"));
    expect(wide).toBeInstanceOf(Float64Array);
    expect(relativeError(result, wide)).toBeLessThan(1e-5);
  });

  test("calls onStep with x_{j+1} after every evaluation", () => {
    const program = createScheduler("heun").compile(5);
    const seen: number[] = [];
    let last: Float32Array | undefined;
    const result = runProgram(program, latents(3, program.initNoiseSigma), model, undefined, {
      onStep: (j, x) => {
        seen.push(j);
        last = x.slice();
      },
    });
    expect(seen).toEqual([...program.evals.keys()]);
    expect(last).toEqual(result);
  });

  test("uses the noise of every drawing evaluation, and says so when none is given", () => {
    const program = createScheduler("euler_a").compile(6);
    const drawn: number[] = [];
    runProgram(program, latents(4, program.initNoiseSigma), model, (j) => {
      drawn.push(j);
      return noiseSource(j);
    });
    expect(drawn).toEqual([0, 1, 2, 3, 4, 5]);
    expect(() => runProgram(program, latents(4), model)).toThrow(/euler_a program draws noise at evaluation 0; pass a noise source/);
  });

  test("rejects a model output or noise of the wrong size", () => {
    const program = createScheduler("euler_a").compile(3);
    expect(() => runProgram(program, latents(5), () => new Float32Array(10), noiseSource)).toThrow(
      /model output for evaluation 0 has 10 values, expected 256/,
    );
    expect(() => runProgram(program, latents(5), model, () => new Float32Array(3))).toThrow(/noise for evaluation 0 has 3 values/);
  });
});

describe("the update x_{j+1} = Σ a·x + Σ b·m + c·n", () => {
  /** A program of `depth` history entries, every x coefficient non-zero; m terms and noise as asked. */
  function denseProgram(depth: number, evals: number, useModel: boolean, noise: boolean): SamplerProgram {
    return {
      format: "sd-trt-sampler/1",
      scheduler: "dense-test",
      steps: evals,
      startIndex: 0,
      initNoiseSigma: 1,
      timestepDtype: "float32",
      historyDepth: depth,
      evals: Array.from({ length: evals }, (_, j) => ({
        t: 999 - j,
        cIn: 1 / (1 + j),
        a: Array.from({ length: depth }, (_, k) => (k === 0 ? 0.9 : 0.05 / (k + j + 1))),
        b: Array.from({ length: depth }, (_, k) => (useModel ? -0.1 / (k + 1) + j * 1e-3 : 0)),
        c: noise ? 0.01 * (j + 1) : 0,
        drawsNoise: noise,
      })),
    };
  }

  /** The update written out element by element, as program_math.h's updateElement sums it. */
  function reference(program: SamplerProgram, x0: Float32Array): Float32Array {
    const K = program.historyDepth;
    const xs: Float32Array[] = [x0.slice()];
    const ms: Float32Array[] = [];
    program.evals.forEach((e, j) => {
      const input = Float32Array.from(xs[j]!, (v) => e.cIn * v);
      ms.push(Float32Array.from(model(input, e.t)));
      const n = noiseSource(j);
      const next = new Float32Array(x0.length);
      for (let i = 0; i < x0.length; i++) {
        let acc = 0;
        for (let k = 0; k < Math.min(K, j + 1); k++) if (e.a[k] !== 0) acc += e.a[k]! * xs[j - k]![i]!;
        for (let k = 0; k < Math.min(K, j + 1); k++) if (e.b[k] !== 0) acc += e.b[k]! * ms[j - k]![i]!;
        if (e.drawsNoise) acc += e.c * n[i]!;
        next[i] = acc;
      }
      xs.push(next);
    });
    return xs[program.evals.length]!;
  }

  test.each([
    [1, false, false],
    [1, true, false],
    [1, true, true],
    [2, true, false],
    [2, true, true],
    [3, true, false],
    [3, true, true],
    [4, true, true],
  ])("is the element-wise float64 sum in program order (history depth %i, m terms %s, noise %s)", (depth, useModel, noise) => {
    // From 1 term (x only) to 9 (4 x, 4 m, noise): every unrolled case and the general loop.
    const program = denseProgram(depth, 6, useModel, noise);
    const x0 = latents(5);
    expect(Array.from(runProgram(program, x0, model, noiseSource))).toEqual(Array.from(reference(program, x0)));
  });

  test("a model output written into modelOutputBuffer is used in place", () => {
    const program = createScheduler("dpmpp_2m").compile(6);
    const x0 = latents(6);
    const run = new ProgramExecution(program, x0);
    while (!run.done) {
      const output = model(run.modelInput(), run.timestep);
      const slot = run.modelOutputBuffer();
      slot.set(output);
      run.advance(slot);
    }
    expect(Array.from(run.result())).toEqual(Array.from(runProgram(program, x0, model)));
  });
});

describe("no shared state", () => {
  test("compiling twice, or interleaved with other compiles, gives identical programs", () => {
    const scheduler = createScheduler("unipc");
    const first = scheduler.compile(20);
    scheduler.compile(7, { startIndex: 3 });
    createScheduler("unipc").compile(13);
    expect(scheduler.compile(20)).toEqual(first);
  });

  test("two programs executed interleaved, evaluation by evaluation, give their separate results", () => {
    const a = createScheduler("pndm").compile(10);
    const b = createScheduler("dpmpp_2m_karras").compile(12);
    const xa = latents(6);
    const xb = latents(7);
    const alone = [runProgram(a, xa, model), runProgram(b, xb, model)];
    const runs = [new ProgramExecution(a, xa), new ProgramExecution(b, xb)];
    while (runs.some((r) => !r.done)) {
      for (const run of runs) {
        if (run.done) continue;
        run.advance(model(run.modelInput(), run.timestep));
      }
    }
    expect(runs.map((r) => r.result())).toEqual(alone);
  });

  test("two async runs of one program awaiting concurrently do not interfere", async () => {
    const program = createScheduler("lms").compile(10);
    const slowModel = async (input: Float32Array, t: number, j: number) => {
      await new Promise((resolve) => setTimeout(resolve, j % 3));
      return model(input, t);
    };
    const [x1, x2] = [latents(8, program.initNoiseSigma), latents(9, program.initNoiseSigma)];
    const together = await Promise.all([runProgramAsync(program, x1, slowModel), runProgramAsync(program, x2, slowModel)]);
    expect(together).toEqual([runProgram(program, x1, model), runProgram(program, x2, model)]);
  });
});

describe("runProgramAsync", () => {
  test("matches runProgram and passes noise and onStep through", async () => {
    const program = createScheduler("ddpm").compile(8);
    const steps: number[] = [];
    const result = await runProgramAsync(program, latents(10), async (input, t) => model(input, t), {
      noise: noiseSource,
      onStep: (j) => steps.push(j),
    });
    expect(result).toEqual(runProgram(program, latents(10), model, noiseSource));
    expect(steps).toHaveLength(8);
  });

  test("stops between evaluations when the signal aborts, with its reason", async () => {
    const program = createScheduler("euler").compile(10);
    const controller = new AbortController();
    let calls = 0;
    const reason = new AbortError("stop here");
    const pending = runProgramAsync(program, latents(11), async (input, t) => {
      if (++calls === 2) controller.abort(reason);
      return model(input, t);
    }, { signal: controller.signal });
    await expect(pending).rejects.toBe(reason);
    expect(calls).toBe(2);
  });

  test("does not call the model when the signal is already aborted", async () => {
    const controller = new AbortController();
    controller.abort();
    let called = false;
    const pending = runProgramAsync(createScheduler("euler").compile(4), latents(12), async (input, t) => {
      called = true;
      return model(input, t);
    }, { signal: controller.signal });
    await expect(pending).rejects.toThrow();
    expect(called).toBe(false);
  });
});

describe("program checks", () => {
  const good = () => createScheduler("euler").compile(4);
  const broken: [string, (p: SamplerProgram) => void, RegExp][] = [
    ["a wrong format", (p) => ((p as { format: string }).format = "other/1"), /format must be "sd-trt-sampler\/1"/],
    ["no evaluations", (p) => (p.evals = []), /evals must be a non-empty array/],
    ["a short coefficient row", (p) => (p.evals[1]!.a = []), /evaluation 1: a must hold historyDepth \(1\) finite numbers/],
    ["a NaN coefficient", (p) => (p.evals[2]!.b[0] = Number.NaN), /evaluation 2: b must hold/],
    ["noise coefficient without a draw", (p) => (p.evals[0]!.c = 0.5), /evaluation 0 has a noise coefficient but draws no noise/],
    ["a bad history depth", (p) => (p.historyDepth = 0), /historyDepth must be an integer ≥ 1/],
    ["an unknown timestep dtype", (p) => ((p as { timestepDtype: string }).timestepDtype = "float16"), /timestepDtype must be/],
    ["a fractional startIndex", (p) => (p.startIndex = 0.5), /startIndex must be an integer ≥ 0/],
  ];

  test.each(broken)("rejects %s", (_what, breakIt, message) => {
    const program = good();
    breakIt(program);
    let caught: unknown;
    try {
      runProgram(program, latents(13), model);
    } catch (error) {
      caught = error;
    }
    expect(caught).toBeInstanceOf(SdTrtError);
    expect((caught as SdTrtError).code).toBe("ERR_INVALID_PROGRAM");
    expect((caught as Error).message).toMatch(message);
  });

  test("rejects latents that are not float arrays", () => {
    expect(() => runProgram(good(), [1, 2, 3] as unknown as Float32Array, model)).toThrow(/Float32Array or Float64Array/);
  });
});
