/** How the CPU backend builds the tensors diffusers would feed, for every I/O contract it accepts. */
import { describe, expect, test } from "@jest/globals";
import { combineGuidance, timestepTensor } from "../../lib/backends/cpu/backend.js";
import { splitPosterior } from "../../lib/sampler/latents.js";

describe("timestepTensor: the program's t in the graph's dtype and layout", () => {
  test("float32 [1] (diffusers' convert script, the tiny model): [t] rounded to float32, broadcast over the batch", () => {
    const t = timestepTensor({ timestepType: "float32", timestepLayout: "single" }, 946.4210815429688, 2);
    expect(t).toEqual({ type: "float32", dims: [1], data: Float32Array.of(946.4210815429688) });
  });

  test("float32 scalar (optimum ≥ 1.24): rank 0", () => {
    expect(timestepTensor({ timestepType: "float32", timestepLayout: "scalar" }, 999, 2)).toEqual({ type: "float32", dims: [], data: Float32Array.of(999) });
  });

  test("int64 (optimum ≤ 1.22): truncated like np.array([t], dtype=np.int64)", () => {
    expect(timestepTensor({ timestepType: "int64", timestepLayout: "single" }, 946.42, 2)).toEqual({ type: "int64", dims: [1], data: BigInt64Array.of(946n) });
    expect(timestepTensor({ timestepType: "int32", timestepLayout: "single" }, 0.9, 1)).toEqual({ type: "int32", dims: [1], data: Int32Array.of(0) });
  });

  test("a timestep on the batch axis gets one value per UNet row", () => {
    expect(timestepTensor({ timestepType: "float64", timestepLayout: "per-row" }, 501, 4)).toEqual({ type: "float64", dims: [4], data: Float64Array.of(501, 501, 501, 501) });
  });
});

describe("combineGuidance: u + g·(c − u) with the uncond rows first", () => {
  test("applies each image's scale to its own rows, in float32", () => {
    // batch 2, 2 values per image: rows [u0, u1, c0, c1]
    const output = Float32Array.of(1, 2, 3, 4, 2, 4, 6, 8);
    const guided = combineGuidance(output, 2, Float64Array.of(7.5, 1));
    expect(Array.from(guided)).toEqual([1 + 7.5 * (2 - 1), 2 + 7.5 * (4 - 2), 6, 8]);
  });

  test("rounds like torch's float32 ops: (c − u), g·diff and the sum each to float32", () => {
    const u = 0.1;
    const c = 0.30000001192092896;
    const g = 7.3;
    const output = Float32Array.of(u, c);
    const diff = Math.fround(Math.fround(c) - Math.fround(u));
    const expected = Math.fround(Math.fround(u) + Math.fround(Math.fround(g) * diff));
    expect(combineGuidance(output, 1, Float64Array.of(g))[0]).toBe(expected);
  });
});

describe("splitPosterior: latent_parameters → mean and std", () => {
  test("mean = first 4 channels, std = exp(0.5 · clamp(logvar, −30, 20)) per image", () => {
    const plane = 4; // 4 channels × 1 × 1
    const parameters = new Float32Array(2 * 2 * plane);
    parameters.set([1, 2, 3, 4], 0); // image 0 mean
    parameters.set([0, -2, 100, -100], plane); // image 0 logvar
    parameters.set([5, 6, 7, 8], 2 * plane); // image 1 mean
    parameters.set([2, 2, 2, 2], 3 * plane); // image 1 logvar
    const { mean, std } = splitPosterior(parameters, 2, 1, 1);
    expect(Array.from(mean)).toEqual([1, 2, 3, 4, 5, 6, 7, 8]);
    expect(Array.from(std)).toEqual([1, Math.exp(-1), Math.exp(10), Math.exp(-15), Math.E, Math.E, Math.E, Math.E].map(Math.fround));
  });
});
