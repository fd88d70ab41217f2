import { readFileSync } from "node:fs";

import { describe, expect, test } from "@jest/globals";

import { InvalidOptionError } from "../../lib/errors.js";
import {
  createGenerator,
  NvGenerator,
  randn,
  randnRows,
  TorchGenerator,
  validateSeed,
  validateShape,
  type Generator,
} from "../../lib/rng/index.js";

interface TinySdCase {
  id: string;
  seed: number;
  generator_seeds: number[];
  latent_shape: number[];
  initial_latents: number[];
  step_noise: number[][] | null;
}

const tinySd = JSON.parse(
  readFileSync(new URL("../fixtures/goldens/tiny_sd_reference.json", import.meta.url), "utf8"),
) as { cases: TinySdCase[] };

function tinySdCase(id: string): TinySdCase {
  const found = tinySd.cases.find((c) => c.id === id);
  if (!found) throw new Error(`tiny_sd_reference case ${id} not found`);
  return found;
}

function expectSameFloat32(actual: Float32Array, expected: readonly number[]): void {
  expect(actual.length).toBe(expected.length);
  expect([...actual]).toEqual(expected.map((v) => Math.fround(v)));
}

describe("randn and randnRows follow diffusers' randn_tensor (tiny_sd_reference draws)", () => {
  // These cases use PNDM, whose init_noise_sigma is 1: the initial latents are the draw itself.
  test("one generator for the batch: a single [B, 4, h, w] draw", () => {
    const c = tinySdCase("c_batch2_one_generator");
    expectSameFloat32(randn(c.latent_shape, new TorchGenerator(c.generator_seeds[0]!)), c.initial_latents);
  });

  test("a generator list: row i is a [1, 4, h, w] draw from generator i", () => {
    const c = tinySdCase("d_batch2_generator_list");
    const generators = c.generator_seeds.map((seed) => new TorchGenerator(seed));
    expectSameFloat32(randnRows(c.latent_shape, generators), c.initial_latents);
    // Not the same as one batch draw from the first generator.
    expect([...randn(c.latent_shape, new TorchGenerator(c.generator_seeds[0]!))]).not.toEqual(
      c.initial_latents.map((v) => Math.fround(v)),
    );
  });

  test("ancestral step noise continues the stream of the initial-latents generator", () => {
    const c = tinySdCase("e_euler_a_shared_generator");
    const generator = new TorchGenerator(c.generator_seeds[0]!);
    randn(c.latent_shape, generator); // the initial latents
    for (const noise of c.step_noise!) expectSameFloat32(randn(c.latent_shape, generator), noise);
  });

  test("the NV source in place of the torch generator", () => {
    const c = tinySdCase("f_nv_rng");
    expectSameFloat32(randnRows(c.latent_shape, [new NvGenerator(c.generator_seeds[0]!)]), c.initial_latents);
  });

  test("randnRows advances each generator by one call", () => {
    const generators = [new TorchGenerator(3), new NvGenerator(4)];
    randnRows([2, 5], generators);
    const second = randnRows([2, 5], generators);
    const torch = new TorchGenerator(3);
    const nv = new NvGenerator(4);
    torch.randn([1, 5]);
    nv.randn([1, 5]);
    expect([...second]).toEqual([...torch.randn([1, 5]), ...nv.randn([1, 5])]);
  });
});

describe("shape validation", () => {
  const generator = new TorchGenerator(0);
  test.each([
    ["an empty array", []],
    ["a zero dimension", [1, 0, 8]],
    ["a negative dimension", [-4]],
    ["a fractional dimension", [2.5]],
    ["a string dimension", [1, "4"]],
    ["more than 2^31 elements", [2 ** 16, 2 ** 16]],
    ["not an array", 16],
  ])("rejects %s", (_label, shape) => {
    for (const draw of [
      () => randn(shape as number[], generator),
      () => generator.randn(shape as number[]),
      () => new NvGenerator(1).randn(shape as number[]),
      () => randnRows(shape as number[], [generator]),
    ]) {
      expect(draw).toThrow(InvalidOptionError);
      expect(draw).toThrow(/^shape must be a non-empty array of positive integers with at most 2147483648 elements/);
    }
  });

  test("names the received dimensions", () => {
    expect(() => validateShape([1, 0, "8"])).toThrow('shape must be a non-empty array of positive integers with at most 2147483648 elements in all, got [1, 0, "8"]');
    expect(validateShape([2, 4, 64, 64])).toBe(32768);
    expect(validateShape([2 ** 31])).toBe(2 ** 31);
  });

  test("does not draw when the shape is invalid", () => {
    const a = new TorchGenerator(9);
    expect(() => a.randn([0])).toThrow(InvalidOptionError);
    expect(a.randn([20])).toEqual(new TorchGenerator(9).randn([20]));
    const b = new NvGenerator(9);
    expect(() => b.randn([])).toThrow(InvalidOptionError);
    expect(b.offset).toBe(0);
  });
});

describe("generator arguments", () => {
  test("randnRows needs exactly one generator per row", () => {
    const draw = () => randnRows([3, 4], [new TorchGenerator(1), new TorchGenerator(2)]);
    expect(draw).toThrow(InvalidOptionError);
    expect(draw).toThrow(/^generators must be an array of 3 generators/);
  });

  test("randn and randnRows reject something that is not a generator", () => {
    expect(() => randn([4], {} as Generator)).toThrow(/^generator must be a Generator/);
    expect(() => randnRows([2, 4], [new TorchGenerator(1), null as unknown as Generator])).toThrow(
      /^generators\[1\] must be a Generator/,
    );
  });

  test("createGenerator picks the source by name", () => {
    const cpu = createGenerator("cpu", 5);
    const nv = createGenerator("nv", 5n);
    expect(cpu).toBeInstanceOf(TorchGenerator);
    expect(nv).toBeInstanceOf(NvGenerator);
    expect(cpu.randn([8])).toEqual(new TorchGenerator(5).randn([8]));
    expect(() => createGenerator("cuda" as "cpu", 1)).toThrow('rng must be one of "cpu", "nv", got "cuda" (string)');
  });

  test("validateSeed names the option it checks", () => {
    expect(validateSeed("seeds[2]", 2 ** 53)).toBe(2n ** 53n);
    expect(() => validateSeed("seeds[2]", -3)).toThrow(
      "seeds[2] must be an integer from 0 to 18446744073709551615 (a number or a bigint), got -3 (number)",
    );
  });
});
