/**
 * What the A1111 end-to-end tests (test/e2e/a1111-*.test.ts) share: their golden cases
 * (test/fixtures/a1111/*.json, made by running A1111's own code: scripts/reference/), the pixel
 * measure their ±1 bar is checked with (A1111 truncates to uint8), the options every case sets the
 * same way, and an A1111 server over the test's pipeline. Each test keeps its own tolerances and
 * infotext checks; only the plumbing lives here.
 */
import { expect } from "@jest/globals";
import { readFile } from "node:fs/promises";
import sharp from "sharp";
import type { GenerateOptions, Pipeline } from "../../lib/pipeline/pipeline.js";
import { PipelineService } from "../../lib/service/pipeline-service.js";
import { SdServer } from "../../lib/server/server.js";
import { gradientInitImage } from "../fixtures/tiny-sd-cases/reference.js";

/** The `cases` of test/fixtures/a1111/<file>. */
export async function readA1111Cases<C>(file: string): Promise<C[]> {
  return (JSON.parse(await readFile(new URL(`../fixtures/a1111/${file}`, import.meta.url), "utf8")) as { cases: C[] }).cases;
}

/** The case named `id`; a missing one fails here, naming it, rather than later as `undefined`. */
export function caseById<C extends { id: string }>(cases: readonly C[], id: string): C {
  const found = cases.find((c) => c.id === id);
  if (!found) throw new Error(`no golden case "${id}" (have: ${cases.map((c) => c.id).join(", ")})`);
  return found;
}

/**
 * The fields every case of the A1111 e2e goldens has: the request (A1111's field names; `sampler`
 * is sd-trt's scheduler name for it) and what A1111 made of it. Each test's Case extends it.
 */
export interface A1111GoldenCase {
  id: string;
  sampler: string;
  steps: number;
  seeds: number[];
  prompt: string;
  negative_prompt: string;
  width: number;
  height: number;
  cfg_scale: number;
  /** A1111's final latents, the batch flattened. */
  final_latents: number[];
  /** A1111's images as uint8 RGB (HWC), one after another. */
  pixels_hwc: number[];
}

/** The options every case sets the same way: its prompts, size, steps, guidance, sampler and seeds, A1111's CPU noise, latents returned. */
export function caseBaseOptions(c: A1111GoldenCase, seeds = c.seeds): GenerateOptions {
  return {
    prompt: c.prompt,
    negativePrompt: c.negative_prompt,
    width: c.width,
    height: c.height,
    steps: c.steps,
    guidance: c.cfg_scale,
    scheduler: c.sampler,
    seeds,
    rng: "cpu",
    returnLatents: true,
  };
}

/** img2img from gradientInitImage() at the case's denoising strength (the generators' init image). */
export function gradientImg2imgOptions(c: { width: number; height: number; denoising_strength?: number }): Pick<GenerateOptions, "initImage" | "strength"> {
  return { initImage: { data: gradientInitImage(), width: c.width, height: c.height, channels: 3 }, strength: c.denoising_strength! };
}

/** gradientInitImage() as the PNG a client would send or pass to --init-image. */
export function gradientInitPng(c: { width: number; height: number }): Promise<Buffer> {
  return sharp(gradientInitImage(), { raw: { width: c.width, height: c.height, channels: 3 } }).png().toBuffer();
}

/** Largest |Δ| between the values; Infinity when the lengths differ. */
export function maxPixelDiff(actual: ArrayLike<number>, expected: readonly number[]): number {
  let worst = actual.length === expected.length ? 0 : Infinity;
  for (let i = 0; i < expected.length; i++) worst = Math.max(worst, Math.abs(actual[i]! - expected[i]!));
  return worst;
}

/** The images' RGB one after another, as the goldens' pixels_hwc holds a batch. */
export function joinedRgb(images: readonly { rgb: Uint8Array }[]): Uint8Array {
  const out = new Uint8Array(images.reduce((n, image) => n + image.rgb.length, 0));
  let offset = 0;
  for (const image of images) {
    out.set(image.rgb, offset);
    offset += image.rgb.length;
  }
  return out;
}

/** Decoded PNGs (files, or the server's images) as joinedRgb. */
export async function pngPixels(pngs: readonly Buffer[]): Promise<Uint8Array> {
  return joinedRgb(await Promise.all(pngs.map(async (png) => ({ rgb: new Uint8Array(await sharp(png).raw().toBuffer()) }))));
}

/** The server's base64 images, decoded as pngPixels. */
export function base64PngPixels(images: readonly string[]): Promise<Uint8Array> {
  return pngPixels(images.map((png) => Buffer.from(png, "base64")));
}

/** Runs `body` against an A1111 server (its own service, no batching window) over `pipe` on a free loopback port; closes it after. */
export async function withA1111Server<T>(pipe: Pipeline, body: (url: string) => Promise<T>): Promise<T> {
  const service = await PipelineService.create(pipe, { maxQueue: 8, batchWindowMs: 0 });
  const server = new SdServer({ service, ownService: true });
  try {
    const { url } = await server.listen({ host: "127.0.0.1", port: 0 });
    return await body(url);
  } finally {
    await server.close(0);
  }
}

/**
 * Sends `requests` to a service over `pipe` whose window merges them into one batch of up to
 * `maxBatch` images, and checks that they were merged and that every image is, byte for byte, what
 * `pipe.generate` gives its request alone.
 */
export async function expectMergedBatchAsAlone(pipe: Pipeline, requests: readonly GenerateOptions[], maxBatch: number): Promise<void> {
  const service = await PipelineService.create(pipe, { maxQueue: 8, batchWindowMs: 10_000, maxBatch });
  try {
    const results = await Promise.all(service.generateAll([...requests]));
    expect(service.counters()).toMatchObject({ batches: 1, batchedRequests: requests.length });
    for (const [k, request] of requests.entries()) {
      const alone = await pipe.generate(request);
      for (const [i, image] of results[k]!.images.entries()) expect(Buffer.compare(Buffer.from(image.rgb), Buffer.from(alone.images[i]!.rgb))).toBe(0);
    }
  } finally {
    await service.dispose();
  }
}

/** POSTs `body` as JSON to `${url}/sdapi/v1/${endpoint}`. */
export function postA1111(url: string, endpoint: "txt2img" | "img2img", body: unknown): Promise<Response> {
  return fetch(`${url}/sdapi/v1/${endpoint}`, { method: "POST", headers: { "Content-Type": "application/json" }, body: JSON.stringify(body) });
}

/** `text` matched literally inside a RegExp. */
export function regexLiteral(text: string): string {
  return text.replace(/[.*+?^${}()|[\]\\]/g, "\\$&");
}
