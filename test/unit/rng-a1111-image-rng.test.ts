/**
 * A1111's ImageRNG (variation seeds through its slerp, "resize seed from", ENSD) against
 * modules/rng.py itself (test/fixtures/a1111/image_rng.json, CPU source).
 */
import { readFileSync } from "node:fs";
import { expect, test } from "@jest/globals";
import { A1111ImageRng } from "../../lib/rng/a1111-image-rng.js";
import { TorchGenerator } from "../../lib/rng/index.js";

interface Case {
  name: string;
  shape: [number, number, number];
  seeds: number[];
  subseeds: number[] | null;
  subseed_strength: number;
  seed_resize_from_h: number;
  seed_resize_from_w: number;
  ensd: number;
  draws: number[][];
}

const golden = JSON.parse(readFileSync(new URL("../fixtures/a1111/image_rng.json", import.meta.url), "utf8")) as { cases: Case[] };

function maxAbs(a: ArrayLike<number>, b: readonly number[]): number {
  if (a.length !== b.length) return Infinity;
  let worst = 0;
  for (let i = 0; i < b.length; i++) worst = Math.max(worst, Math.abs(a[i]! - b[i]!));
  return worst;
}

test.each(golden.cases.map((c) => [c.name, c] as const))("%s", (_name, c) => {
  const rng = new A1111ImageRng((seed) => new TorchGenerator(seed), c.shape, c.seeds.map(BigInt), {
    ...(c.subseeds ? { subseeds: c.subseeds.map(BigInt) } : {}),
    subseedStrength: c.subseed_strength,
    seedResizeFromHeight: c.seed_resize_from_h,
    seedResizeFromWidth: c.seed_resize_from_w,
    ensd: c.ensd,
  });
  c.draws.forEach((draw, i) => {
    const ours = rng.next();
    // Plain draws are torch's own numbers bit for bit; slerp's float32 reductions may differ
    // from torch's in the last bits.
    if (i > 0 || c.subseed_strength === 0) expect(Array.from(ours)).toEqual(draw);
    else expect(maxAbs(ours, draw)).toBeLessThan(2e-6);
  });
});

test("an ENSD that pushes seed + ENSD past 2⁶⁴ − 1 is refused, naming ensd", () => {
  expect(() => new A1111ImageRng((seed) => new TorchGenerator(seed), [4, 8, 8], [2n ** 64n - 1n], { ensd: 1 })).toThrow(/ensd must be/);
});
