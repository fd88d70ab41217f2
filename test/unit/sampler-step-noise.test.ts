import { describe, expect, test } from "@jest/globals";
import { drawAllStepNoise, joinStepNoise, lazyStepNoise, noiseDrawCount, stepNoiseOf } from "../../lib/sampler/step-noise.js";
import { createScheduler } from "../../lib/schedulers/index.js";

const counter = (start: number, size: number) => {
  let next = start;
  return () => Float32Array.from({ length: size }, () => next++);
};

describe("step noise drawn on demand", () => {
  test("a program's draw count is its evaluations that draw noise (Euler a: every step; Euler: none)", () => {
    expect(noiseDrawCount(createScheduler("euler_a").compile(5))).toBe(5);
    expect(noiseDrawCount(createScheduler("euler").compile(5))).toBe(0);
  });

  test("draws are made only when asked, in order, and no more than the count", () => {
    let made = 0;
    const noise = lazyStepNoise(2, () => Float32Array.of(++made));
    expect(made).toBe(0);
    expect(Array.from(noise.next())).toEqual([1]);
    expect(Array.from(noise.next())).toEqual([2]);
    expect(() => noise.next()).toThrow(/all 2 draws were taken/);
    expect(made).toBe(2);
  });

  test("joining requests' noise puts each request's draw k in its rows of the batch's draw k", () => {
    const joined = joinStepNoise([lazyStepNoise(2, counter(0, 2)), lazyStepNoise(2, counter(100, 3))]);
    expect(drawAllStepNoise(joined).map((d) => Array.from(d))).toEqual([
      [0, 1, 100, 101, 102],
      [2, 3, 103, 104, 105],
    ]);
  });

  test("requests that draw a different number of times cannot share a batch", () => {
    expect(() => joinStepNoise([lazyStepNoise(2, counter(0, 1)), lazyStepNoise(3, counter(0, 1))])).toThrow(/draw equally often/);
  });

  test("the caller's arrays are handed out as they are, marked as not to be moved, and can be read again", () => {
    const arrays = [Float32Array.of(1), Float32Array.of(2)];
    const first = stepNoiseOf(arrays);
    expect(first.fresh).toBe(false);
    expect(drawAllStepNoise(first)).toEqual(arrays);
    expect(drawAllStepNoise(stepNoiseOf(arrays))[1]).toBe(arrays[1]);
    const lazy = lazyStepNoise(1, counter(0, 1));
    expect(stepNoiseOf(lazy)).toBe(lazy);
    expect(lazy.fresh).toBe(true);
  });
});
