/** Sampler programs as data: the flat Float64Array the native addon reads, and JSON. */
import { describe, expect, test } from "@jest/globals";
import {
  PACKED_HEADER_WORDS,
  PACKED_LAYOUT_VERSION,
  PACKED_ROW_FIXED_WORDS,
  packProgram,
  runProgram,
  unpackProgram,
  type SamplerProgram,
} from "../../lib/sampler/index.js";
import { SCHEDULER_NAMES, createScheduler } from "../../lib/schedulers/index.js";
import { analyticModel, pseudoNormal } from "../fixtures/schedulers/goldens.js";

const programs: [string, SamplerProgram][] = [
  ...SCHEDULER_NAMES.map((name) => [`${name} txt2img`, createScheduler(name).compile(12)] as [string, SamplerProgram]),
  ["pndm img2img", createScheduler("pndm").compile(20, { startIndex: 8 })],
  ["heun img2img", createScheduler("heun").compile(10, { startIndex: 4 })],
];

describe("packProgram / unpackProgram", () => {
  test.each(programs)("%s round-trips (scheduler, addNoise and brownian travel as metadata)", (_name, program) => {
    const words = packProgram(program);
    const K = program.historyDepth;
    expect(words.length).toBe(PACKED_HEADER_WORDS + program.evals.length * (PACKED_ROW_FIXED_WORDS + 2 * K));
    expect(unpackProgram(words, { scheduler: program.scheduler, addNoise: program.addNoise, brownian: program.brownian })).toEqual(program);
  });

  test("header and rows follow the documented layout", () => {
    const program = createScheduler("euler_a").compile(3);
    const words = packProgram(program);
    expect(Array.from(words.subarray(0, PACKED_HEADER_WORDS))).toEqual([
      PACKED_LAYOUT_VERSION,
      3,
      program.historyDepth,
      program.initNoiseSigma,
      0, // float32 timesteps
      3,
      0,
      0,
    ]);
    const e = program.evals[1]!;
    const stride = 5 + 2 * program.historyDepth;
    const row = Array.from(words.subarray(PACKED_HEADER_WORDS + stride, PACKED_HEADER_WORDS + 2 * stride));
    expect(row).toEqual([e.t, e.cIn, e.c, 1, 0, ...e.a, ...e.b]);
    // DDIM CFG++ puts its coefficient on the unconditional output in word 4 of each row.
    const cfgpp = createScheduler("a1111_ddim_cfgpp").compile(3);
    const cfgppWords = packProgram(cfgpp);
    const cfgppStride = 5 + 2 * cfgpp.historyDepth;
    expect(cfgppWords[PACKED_HEADER_WORDS + cfgppStride + 4]).toBe(cfgpp.evals[1]!.d);
    expect(packProgram(createScheduler("ddim").compile(3))[4]).toBe(1); // int64 timesteps
  });

  test("rejects a wrong version or length", () => {
    const words = packProgram(createScheduler("euler").compile(4));
    const wrongVersion = words.slice();
    wrongVersion[0] = 1;
    expect(() => unpackProgram(wrongVersion, { scheduler: "euler" })).toThrow(/layout version 1 is not 2/);
    expect(() => unpackProgram(words.subarray(0, words.length - 1), { scheduler: "euler" })).toThrow(/expected \d+ words/);
    expect(() => unpackProgram(new Float64Array(3), { scheduler: "euler" })).toThrow(/at least 8 words/);
  });
});

test.each(programs)("%s survives JSON and runs the same", (_name, program) => {
  const copy = JSON.parse(JSON.stringify(program)) as SamplerProgram;
  expect(copy).toEqual(program);
  const x0 = Float32Array.from(pseudoNormal(256, 21), (v) => v * program.initNoiseSigma);
  const noise = (j: number) => Float32Array.from(pseudoNormal(256, 77 + j));
  const model = analyticModel("float32");
  expect(runProgram(copy, x0, model, noise)).toEqual(runProgram(program, x0, model, noise));
});
