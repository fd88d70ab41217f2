/** A1111's latent upscalers against torch.nn.functional.interpolate itself (test/fixtures/a1111/latent_upscale.json). */
import { readFileSync } from "node:fs";
import { expect, test } from "@jest/globals";
import { upscaleLatents, type LatentUpscaler } from "../../lib/sampler/latent-upscale.js";

interface Case {
  upscaler: LatentUpscaler;
  shape: [number, number, number, number];
  size: [number, number];
  input: number[];
  output: number[];
}
const golden = JSON.parse(readFileSync(new URL("../fixtures/a1111/latent_upscale.json", import.meta.url), "utf8")) as { cases: Case[] };

test.each(golden.cases.map((c) => [`${c.upscaler} ${c.shape.join("×")} → ${c.size.join("×")}`, c] as const))("%s", (_name, c) => {
  const out = upscaleLatents(Float32Array.from(c.input), c.shape, c.size[0], c.size[1], c.upscaler);
  let worst = 0;
  for (const [i, v] of c.output.entries()) worst = Math.max(worst, Math.abs(out[i]! - v));
  // Nearest copies values; the filters differ from torch's float32 accumulation in the last bits (values up to ~4, so 5e-6 is a few ulps).
  expect(out).toHaveLength(c.output.length);
  expect(worst).toBeLessThan(c.upscaler.includes("nearest") ? 1e-30 : 5e-6);
});
