/**
 * `sd-trt generate` on the tiny SDXL folder: a diffusers reference case through the SDXL flags and
 * the files the command writes (image and latents), and a malformed SDXL flag named in the error
 * with nothing written.
 */
import { afterAll, beforeAll, describe, expect, test } from "@jest/globals";
import { mkdir, mkdtemp, readdir, readFile, rm } from "node:fs/promises";
import { tmpdir } from "node:os";
import { join } from "node:path";
import sharp from "sharp";
import generate from "../../lib/cli/commands/generate.js";
import { decodeNpyFloat32 } from "../../lib/cli/shared/npy.js";
import { runCommand } from "../support/run-cli.js";
import { imageDiff, latentError, LATENT_TOLERANCE } from "../fixtures/tiny-sd-cases/compare.js";
import { expectedPixels, loadSdxlReference, TINY_SDXL_DIR } from "../fixtures/sdxl/reference.js";

const reference = loadSdxlReference();
let scratch: string;
beforeAll(async () => {
  scratch = await mkdtemp(join(tmpdir(), "sd-trt-sdxl-cli-"));
});
afterAll(async () => {
  await rm(scratch, { recursive: true, force: true });
});

describe("sd-trt generate on an SDXL model", () => {
  test("the size-conditioning case through --original-size, --crops-coords-top-left, --target-size and the negatives", async () => {
    const c = reference.cases.find((x) => x.id === "euler_size_conditioning")!;
    const dir = join(scratch, "case");
    await mkdir(dir);
    // diffusers' sizes are (height, width); the flags are WIDTHxHEIGHT and TOP,LEFT.
    const wh = ([h, w]: [number, number]) => `${w}x${h}`;
    const run = await runCommand(generate, [
      "generate", "--model", TINY_SDXL_DIR, "--backend", "cpu", "--prompt", c.prompt as string, "--prompt-syntax", "plain",
      "--seed", String(c.seed), "--steps", String(c.num_inference_steps), "--guidance", String(c.guidance_scale), "--width", "96", "--height", "64",
      "--original-size", wh(c.original_size!), "--crops-coords-top-left", c.crops_coords_top_left!.join(","), "--target-size", wh(c.target_size!),
      "--negative-original-size", wh(c.negative_original_size!), "--negative-crops-coords-top-left", c.negative_crops_coords_top_left!.join(","),
      "--negative-target-size", wh(c.negative_target_size!),
      "--out", join(dir, "img.png"), "--latents-out", join(dir, "latents.npy"), "--quiet",
    ]);
    expect({ code: run.code, stderr: run.stderr }).toEqual({ code: 0, stderr: "" });
    const latents = decodeNpyFloat32(await readFile(join(dir, "latents.npy")));
    const err = latentError(latents.data, c.final_latents);
    expect({ shape: latents.shape, ok: err <= LATENT_TOLERANCE, err }).toEqual({ shape: c.latent_shape, ok: true, err });
    const { data, info } = await sharp(join(dir, "img.png")).raw().toBuffer({ resolveWithObject: true });
    expect([info.width, info.height, info.channels]).toEqual([96, 64, 3]);
    expect(imageDiff(data, expectedPixels(c)).maxDiff).toBeLessThanOrEqual(1);
  });

  test("base + refiner through --refiner and --refiner-switch-at", async () => {
    const c = (reference as unknown as { refiner_cases: Array<{ prompt: string; seed: number; steps: number; split: number; final_latents: number[] }> }).refiner_cases[0]!;
    const dir = join(scratch, "refiner");
    await mkdir(dir);
    const run = await runCommand(generate, [
      "generate", "--model", TINY_SDXL_DIR, "--refiner", join(TINY_SDXL_DIR, "..", "tiny-sdxl-refiner"), "--refiner-switch-at", String(c.split),
      "--backend", "cpu", "--prompt", c.prompt, "--prompt-syntax", "plain", "--seed", String(c.seed), "--steps", String(c.steps), "--guidance", "5",
      "--width", "64", "--height", "64", "--out", join(dir, "img.png"), "--latents-out", join(dir, "latents.npy"), "--quiet",
    ]);
    expect({ code: run.code, stderr: run.stderr }).toEqual({ code: 0, stderr: "" });
    const latents = decodeNpyFloat32(await readFile(join(dir, "latents.npy")));
    expect(latentError(latents.data, c.final_latents)).toBeLessThanOrEqual(LATENT_TOLERANCE);
  });

  test("--refiner-switch-at without --refiner is refused, naming both", async () => {
    const dir = join(scratch, "no-refiner");
    await mkdir(dir);
    const run = await runCommand(generate, ["generate", "--model", TINY_SDXL_DIR, "--backend", "cpu", "--prompt", "x", "--steps", "1", "--refiner-switch-at", "0.8", "--out", join(dir, "img.png")]);
    expect(run.code).not.toBe(0);
    expect(run.stderr).toMatch(/--refiner-switch-at needs --refiner/);
    expect(await readdir(dir)).toEqual([]);
  });

  test("--refiner-engines without --refiner is refused, naming both; with the cpu backend it names --refiner-engines", async () => {
    const dir = join(scratch, "no-refiner-engines");
    await mkdir(dir);
    const alone = await runCommand(generate, ["generate", "--model", TINY_SDXL_DIR, "--backend", "cpu", "--prompt", "x", "--steps", "1", "--refiner-engines", dir, "--out", join(dir, "img.png")]);
    expect(alone.code).toBe(2);
    expect(alone.stderr).toMatch(/--refiner-engines needs --refiner/);
    const refiner = join(TINY_SDXL_DIR, "..", "tiny-sdxl-refiner");
    const onCpu = await runCommand(generate, ["generate", "--model", TINY_SDXL_DIR, "--backend", "cpu", "--prompt", "x", "--steps", "2", "--refiner", refiner, "--refiner-switch-at", "0.5", "--refiner-engines", dir, "--out", join(dir, "img.png")]);
    expect(onCpu.code).toBe(2);
    expect(onCpu.stderr).toMatch(/--refiner-engines: refinerEngines applies to the TensorRT backend/);
    expect(await readdir(dir)).toEqual([]);
  });

  test("--clip-skip on SDXL takes --sdxl-clip-l-skip (A1111's sdxl_clip_l_skip); alone it is refused naming the flag", async () => {
    const dir = join(scratch, "clip-skip");
    await mkdir(dir);
    const base = ["generate", "--model", TINY_SDXL_DIR, "--backend", "cpu", "--prompt", "a castle", "--steps", "1", "--seed", "2", "--quiet"];
    const defaultSkip = await runCommand(generate, [...base, "--clip-skip", "1", "--out", join(dir, "default.png")]);
    expect(defaultSkip.code).toBe(0); // clip skip 1 is the default, accepted without the flag
    const alone = await runCommand(generate, [...base, "--clip-skip", "2", "--out", join(dir, "refused.png")]);
    expect(alone.code).not.toBe(0);
    expect(alone.stderr).toMatch(/--clip-skip: clipSkip 2 has no effect on SDXL unless sdxlClipLSkip is true/);
    const skipped = await runCommand(generate, [...base, "--clip-skip", "1", "--sdxl-clip-l-skip", "--latents-out", join(dir, "skip1.npy"), "--out", join(dir, "skip1.png")]);
    const plain = await runCommand(generate, [...base, "--latents-out", join(dir, "plain.npy"), "--out", join(dir, "plain.png")]);
    expect([skipped.code, plain.code]).toEqual([0, 0]);
    const [a, b] = await Promise.all([readFile(join(dir, "skip1.npy")), readFile(join(dir, "plain.npy"))]);
    expect(a.equals(b)).toBe(false);
    expect((await readdir(dir)).sort()).toEqual(["default.png", "plain.npy", "plain.png", "skip1.npy", "skip1.png"]);
  });

  test("a malformed --original-size names the flag and writes nothing", async () => {
    const dir = join(scratch, "bad");
    await mkdir(dir);
    const run = await runCommand(generate, ["generate", "--model", TINY_SDXL_DIR, "--backend", "cpu", "--prompt", "x", "--steps", "1", "--original-size", "1024", "--out", join(dir, "img.png")]);
    expect(run.code).not.toBe(0);
    expect(run.stderr).toMatch(/--original-size must be WIDTHxHEIGHT in pixels \(e\.g\. 1024x1024\), got "1024"/);
    expect(await readdir(dir)).toEqual([]);
  });
});
