/**
 * The Brownian noise of A1111's SDE samplers, bit for bit against torchsde 0.2.6 driven by
 * k-diffusion's BrownianTreeNoiseSampler with A1111's patched _randn
 * (test/fixtures/a1111/sde_goldens.json), and numpy's SeedSequence words it seeds the tree from.
 */
import { describe, expect, test } from "@jest/globals";
import { BrownianNoiseSampler, roundToTolerance } from "../../lib/rng/brownian-tree.js";
import { seedSequenceState } from "../../lib/rng/seed-sequence.js";
import { float32Of, loadSdeGoldens, torchNoiseOf, type SdeNoiseCall } from "../fixtures/a1111/sde-goldens.js";

const goldens = loadSdeGoldens();

/** How many elements differ in their bits (NaN-safe, -0 ≠ 0). */
function bitDifferences(actual: Float32Array, expected: Float32Array): number {
  if (actual.length !== expected.length) return Infinity;
  const a = new Uint32Array(actual.buffer, actual.byteOffset, actual.length);
  const b = new Uint32Array(expected.buffer, expected.byteOffset, expected.length);
  let n = 0;
  for (let i = 0; i < a.length; i++) if (a[i] !== b[i]) n++;
  return n;
}

/**
 * Each query: the tree's increments bit for bit; the noise bit for bit wherever torch's square root
 * of |σ_next − σ| was correctly rounded, and one float32 ulp of the divisor away where it was not
 * (MKL's vsSqrt; see lib/rng/brownian-tree.ts).
 */
function expectQueries(sampler: BrownianNoiseSampler, queries: readonly SdeNoiseCall[]): void {
  expect(queries.length).toBeGreaterThan(0);
  for (const q of queries) {
    expect(bitDifferences(sampler.increment(q.sigma, q.sigma_next), float32Of(q.increment))).toBe(0);
    const ours = Math.fround(Math.sqrt(Math.abs(Math.fround(q.sigma_next - q.sigma))));
    const noise = sampler.noise(q.sigma, q.sigma_next);
    if (ours === q.divisor) {
      expect(bitDifferences(noise, torchNoiseOf(q))).toBe(0);
    } else {
      expect(Math.abs(ours - q.divisor)).toBeLessThanOrEqual(2 ** (Math.floor(Math.log2(ours)) - 23));
      expect(maxRelative(noise, torchNoiseOf(q))).toBeLessThan(3e-7);
    }
  }
}

function maxRelative(a: Float32Array, b: Float32Array): number {
  let worst = 0;
  for (let i = 0; i < a.length; i++) worst = Math.max(worst, Math.abs(a[i]! - b[i]!) / Math.max(Math.abs(b[i]!), 1e-30));
  return worst;
}

test.each(goldens.seed_sequences.map((c) => [`${c.entropy} spawn_key ${JSON.stringify(c.spawn_key)}`, c] as const))(
  "SeedSequence(%s, pool_size=24).generate_state gives numpy's words",
  (_name, c) => {
    const state = seedSequenceState(BigInt(c.entropy), c.spawn_key ?? [], 24, c.state.length);
    expect(Array.from(state)).toEqual(c.state);
  },
);

test("times round to 6 decimals as Python's round(x, 6) does, ties to even", () => {
  expect(roundToTolerance(14.614642143249512)).toBe(14.614642);
  expect(roundToTolerance(0.02916753850877285)).toBe(0.029168);
  // k/128 with k odd: an exact tie at the 7th decimal.
  expect(roundToTolerance(0.0078125)).toBe(0.007812);
  expect(roundToTolerance(0.0234375)).toBe(0.023438);
  expect(roundToTolerance(2.5)).toBe(2.5);
});

describe.each(goldens.brownian.map((c) => [c.name, c] as const))("BrownianTreeNoiseSampler alone: %s", (_name, c) => {
  test("every query's increment is torchsde's bit for bit, its noise too up to torch's square root", () => {
    const rng = c.randn_source === "NV" ? "nv" : "cpu";
    expectQueries(new BrownianNoiseSampler(rng, c.seeds.map(BigInt), c.shape, c.sigma_min, c.sigma_max), c.queries);
  });
});

const samplerRuns = goldens.runs.filter((r) => r.noise !== null);
describe.each(samplerRuns.map((r) => [r.id, r] as const))("the noise a sampler asked for: %s", (_id, run) => {
  test("every call's increment is torchsde's bit for bit, its noise too up to torch's square root, in any query order", () => {
    const rng = run.randn_source === "NV" ? "nv" : "cpu";
    const positive = run.sigmas.filter((s) => s > 0);
    const make = () => new BrownianNoiseSampler(rng, run.seeds.map(BigInt), [4, 8, 8], Math.min(...positive), Math.max(...run.sigmas));
    expectQueries(make(), run.noise!);
    // A node's value depends only on its place in the tree: reversed queries give the same numbers.
    expectQueries(make(), [...run.noise!].reverse());
  });
});
