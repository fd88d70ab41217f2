import { describe, expect, test } from "@jest/globals";

import { InvalidOptionError } from "../../lib/errors.js";
import { NvGenerator } from "../../lib/rng/nv-generator.js";
import { philox4x32, philoxOut } from "../../lib/rng/philox.js";
import { expectMatchesGolden, loadRandnGoldens, type RandnGoldenCall, type RandnGoldenFile } from "../fixtures/rng/goldens.js";

interface GoldenCall extends RandnGoldenCall {
  offset: number;
}

const golden = loadRandnGoldens<RandnGoldenFile<GoldenCall>>("nv_randn.json");

/**
 * Independent reference for one element: Philox4x32-10 with BigInt products and the float64
 * Box–Muller of A1111's rng_philox.py, straight from nv_randn.md.
 */
function referenceElement(seed: bigint, offset: number, index: number): number {
  const mask = 0xffff_ffffn;
  let c = [BigInt(offset), 0n, BigInt(index), 0n];
  let k0 = seed & mask;
  let k1 = seed >> 32n;
  for (let round = 0; round < 10; round++) {
    const p0 = 0xd2511f53n * c[0]!;
    const p1 = 0xcd9e8d57n * c[2]!;
    c = [(p1 >> 32n) ^ c[1]! ^ k0, p1 & mask, (p0 >> 32n) ^ c[3]! ^ k1, p0 & mask];
    k0 = (k0 + 0x9e3779b9n) & mask;
    k1 = (k1 + 0xbb67ae85n) & mask;
  }
  const u = Number(c[0]!) * 2 ** -32 + 2 ** -33;
  const k = Math.fround(2.3283064e-10 * 6.2831855);
  const v = Number(c[1]!) * k + k / 2;
  return Math.fround(Math.sqrt(-2 * Math.log(u)) * Math.sin(v));
}

describe("Philox4x32-10", () => {
  // Known-answer vectors of the Random123 distribution (kat_vectors, philox4x32 10 rounds).
  test.each([
    [[0, 0, 0, 0], [0, 0], [0x6627e8d5, 0xe169c58d, 0xbc57ac4c, 0x9b00dbd8]],
    [
      [0xffffffff, 0xffffffff, 0xffffffff, 0xffffffff],
      [0xffffffff, 0xffffffff],
      [0x408f276d, 0x41c83b0e, 0xa20bc7c6, 0x6d5451fd],
    ],
    [
      [0x243f6a88, 0x85a308d3, 0x13198a2e, 0x03707344],
      [0xa4093822, 0x299f31d0],
      [0xd16cfe09, 0x94fdcceb, 0x5001e420, 0x24126ea1],
    ],
  ])("counter %j, key %j gives the Random123 answer", (counter, key, expected) => {
    philox4x32(counter[0]!, counter[1]!, counter[2]!, counter[3]!, key[0]!, key[1]!);
    expect([...philoxOut]).toEqual(expected);
  });
});

describe("NvGenerator reproduces A1111's NV source bit for bit", () => {
  for (const result of golden.results) {
    for (const goldenCase of result.cases) {
      test(`seed ${result.seed}, ${goldenCase.name}`, () => {
        const generator = new NvGenerator(BigInt(result.seed));
        for (const call of goldenCase.calls) {
          expect(generator.offset).toBe(call.offset); // +1 per call, whatever its size
          expectMatchesGolden(generator.randn(call.shape), call);
        }
      });
    }
  }

  test("matches an independent BigInt implementation, including large element indices", () => {
    const out = new NvGenerator(1234).randn([70000]);
    for (const i of [0, 1, 2, 65535, 65536, 69999]) expect(out[i]).toBe(referenceElement(1234n, 0, i));
  });
});

describe("NvGenerator seeds", () => {
  test("uses all 64 bits of the seed as the Philox key", () => {
    const low = new NvGenerator(5).randn([64]);
    for (const seed of [2n ** 32n + 5n, 0xffff_ffff_ffff_ffffn, 0x0123_4567_89ab_cdefn]) {
      const out = new NvGenerator(seed).randn([64]);
      expect(out).not.toEqual(low);
      for (const i of [0, 1, 33, 63]) expect(out[i]).toBe(referenceElement(seed, 0, i));
    }
    // A number above 2³² works the same as the bigint.
    expect(new NvGenerator(2 ** 40 + 3).randn([16])).toEqual(new NvGenerator(2n ** 40n + 3n).randn([16]));
  });

  test("later calls use the next counter offset", () => {
    const generator = new NvGenerator(2n ** 33n + 1n);
    generator.randn([3]);
    generator.randn([1]);
    const third = generator.randn([8]);
    expect(generator.offset).toBe(3);
    for (let i = 0; i < 8; i++) expect(third[i]).toBe(referenceElement(2n ** 33n + 1n, 2, i));
  });

  test("reports the seed as a bigint", () => {
    expect(new NvGenerator(2024).seed).toBe(2024n);
  });

  test.each([[-1], [0.5], [2 ** 64], [2n ** 64n], [-1n], ["7"], [null]])("rejects %p as a seed", (seed) => {
    const make = () => new NvGenerator(seed as number);
    expect(make).toThrow(InvalidOptionError);
    expect(make).toThrow(/^seed must be an integer from 0 to 18446744073709551615/);
  });
});
