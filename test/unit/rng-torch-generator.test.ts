import { describe, expect, test } from "@jest/globals";

import { InvalidOptionError } from "../../lib/errors.js";
import { MT19937 } from "../../lib/rng/mt19937.js";
import { TorchGenerator } from "../../lib/rng/torch-generator.js";
import {
  expectMatchesGolden,
  expectSameFloat32,
  loadRandnGoldens,
  sha256F32le,
  type RandnGoldenCall,
  type RandnGoldenFile,
} from "../fixtures/rng/goldens.js";

interface GoldenCall extends RandnGoldenCall {
  path: "block16" | "scalar";
}

const golden = loadRandnGoldens<RandnGoldenFile<GoldenCall, { seed_u32: number }>>("torch_randn.json");

function goldenCase(seed: string, name: string): GoldenCall[] {
  const calls = golden.results.find((r) => r.seed === seed)?.cases.find((c) => c.name === name)?.calls;
  if (!calls) throw new Error(`golden case ${seed}/${name} not found`);
  return calls;
}

describe("MT19937", () => {
  test("reproduces std::mt19937 (seed 5489: first word 3499211612, 10000th word 4123659995)", () => {
    const mt = new MT19937(5489);
    expect(mt.nextUint32()).toBe(3499211612);
    let word = 0;
    for (let i = 2; i <= 10000; i++) word = mt.nextUint32();
    expect(word).toBe(4123659995);
  });

  test("float32 uniforms use the low 24 bits and continue the word stream", () => {
    const words = new MT19937(7);
    const uniforms = new MT19937(7);
    const out = new Float32Array(1300); // crosses two block regenerations
    uniforms.fillUniform24(out, 0, 700);
    uniforms.fillUniform24(out, 700, 600);
    for (let i = 0; i < out.length; i++) expect(out[i]).toBe((words.nextUint32() & 0xffffff) / 2 ** 24);
  });
});

describe("TorchGenerator reproduces torch.randn on the CPU bit for bit", () => {
  for (const result of golden.results) {
    for (const goldenCaseEntry of result.cases) {
      const paths = [...new Set(goldenCaseEntry.calls.map((c) => c.path))].join("+");
      test(`seed ${result.seed}, ${goldenCaseEntry.name} (${paths})`, () => {
        const generator = new TorchGenerator(BigInt(result.seed));
        // Successive calls on one generator continue its stream (the stream_* cases).
        for (const call of goldenCaseEntry.calls) expectMatchesGolden(generator.randn(call.shape), call);
      });
    }
  }

  test("only the element count matters, not the shape", () => {
    const a = new TorchGenerator(42).randn([1, 4, 8, 8]);
    const b = new TorchGenerator(42).randn([256]);
    expect(b).toEqual(a);
  });

  test("an odd scalar call leaves its sine cached for the next scalar call, across block calls", () => {
    const whole = new TorchGenerator(44).randn([6]); // three cos/sin pairs
    const split = new TorchGenerator(44);
    const first = split.randn([5]);
    split.randn([20]); // block path: neither reads nor clears the cache
    const last = split.randn([1]);
    expect([...first, ...last]).toEqual([...whole]);
  });
});

describe("TorchGenerator seeds", () => {
  test("uses only the low 32 bits of a 64-bit seed, like torch.manual_seed", () => {
    const [call] = goldenCase("42", "1x4x8x8");
    expect(sha256F32le(new TorchGenerator(2n ** 32n + 42n).randn([1, 4, 8, 8]))).toBe(call!.sha256_f32le);
    expect(sha256F32le(new TorchGenerator(0xdead_beef_0000_002an).randn([1, 4, 8, 8]))).toBe(call!.sha256_f32le);
    const [scalar] = goldenCase("0", "10");
    expectSameFloat32(new TorchGenerator(2 ** 40).randn([10]), scalar!.values!); // number above 2³²
    expect(new TorchGenerator(2n ** 63n - 1n).randn([20])).toEqual(new TorchGenerator(0xffff_ffff).randn([20]));
    expect(new TorchGenerator(2n ** 64n - 1n).randn([3])).toEqual(new TorchGenerator(0xffff_ffff).randn([3]));
  });

  test("reports the full seed as a bigint", () => {
    expect(new TorchGenerator(7).seed).toBe(7n);
    expect(new TorchGenerator(2n ** 64n - 1n).seed).toBe(18446744073709551615n);
  });

  test.each([
    ["a negative number", -1],
    ["a fraction", 1.5],
    ["NaN", Number.NaN],
    ["infinity", Infinity],
    ["2^64 as a number", 2 ** 64],
    ["2^64 as a bigint", 2n ** 64n],
    ["a negative bigint", -5n],
    ["a string", "42"],
    ["undefined", undefined],
  ])("rejects %s as a seed", (_label, seed) => {
    const make = () => new TorchGenerator(seed as number);
    expect(make).toThrow(InvalidOptionError);
    expect(make).toThrow(/^seed must be an integer from 0 to 18446744073709551615/);
  });
});
