/**
 * A UNet that overflows (NaN/±Inf outputs) is caught in the denoise loop and reported as the UNet's
 * fault (UnetOverflowError, ERR_UNET_NAN), not left to reach the VAE and be blamed on it. The count
 * is made by the fused kernel's per-element code (native/denoiser/loop_math.h fusedElement), whose
 * host path runs here; the CUDA kernel adds the same per-element flags with atomics.
 */
import { describe, expect, test } from "@jest/globals";
import { UnetOverflowError } from "../../lib/errors.js";
import { toTypedError } from "../../lib/native/load.js";
import { packProgram } from "../../lib/sampler/index.js";
import { createScheduler } from "../../lib/schedulers/index.js";
import { builtAddon } from "./support.js";

const addon = builtAddon();
const program = createScheduler("euler", {}).compile(6);
const packed = packProgram(program);
const n = 4 * 4 * 4;

describe("the denoise loop counts non-finite UNet outputs", () => {
  test("a healthy run counts none and returns what hostRunProgram returns", () => {
    const latents = Float32Array.from({ length: n }, (_, i) => Math.sin(i));
    const plain = addon.hostRunProgram({ program: packed, latents, noise: new Float32Array(0), batch: 1, height: 4, width: 4 });
    const stats = addon.hostRunProgramStats({ program: packed, latents, noise: new Float32Array(0), batch: 1, height: 4, width: 4 });
    expect(stats.unetNonFinite).toBe(0);
    expect(stats.firstNonFiniteEvaluation).toBe(-1);
    expect(stats.latents).toEqual(plain);
  });

  test("a float16 UNet whose input overflows is counted from the first evaluation it overflows in", () => {
    // The stand-in UNet computes in float16: inputs beyond 65504 become Inf, and so do its outputs.
    const latents = new Float32Array(n).fill(1);
    latents[5] = 1e9;
    const stats = addon.hostRunProgramStats({
      program: packed,
      latents,
      noise: new Float32Array(0),
      batch: 1,
      height: 4,
      width: 4,
      guidance: new Float64Array([7.5]),
      sampleType: "float16",
    });
    expect(stats.firstNonFiniteEvaluation).toBe(0);
    expect(stats.unetNonFinite).toBeGreaterThanOrEqual(1);
  });

  test("the addon's ERR_UNET_NAN becomes a UnetOverflowError with the evaluation, the count and UNet advice (not --fp32-vae)", () => {
    const native = Object.assign(new Error(`denoise: ${UnetOverflowError.describe(12, 3, 20)}`), { code: "ERR_UNET_NAN", stage: "denoise", status: "nan" });
    const typed = toTypedError(native, new Error());
    expect(typed).toBeInstanceOf(UnetOverflowError);
    const error = typed as UnetOverflowError;
    expect(error.code).toBe("ERR_UNET_NAN");
    expect(error.evaluation).toBe(3);
    expect(error.count).toBe(12);
    expect(error.message).toContain("first at evaluation 4 of 20");
    expect(error.message).toContain("not the VAE");
    expect(error.message).toMatch(/--fp32-vae will not help/);
  });
});

describe("which libnvinfer the TensorRT module accepts (native/common/trt_version.h)", () => {
  test("a library older than the headers is refused, naming both versions", () => {
    const problem = addon.hostTensorRtVersionProblem(100000, 101600);
    expect(problem).toContain("TensorRT 10.0.0");
    expect(problem).toContain("(10.16.0)");
    expect(problem).toMatch(/older than the headers/);
    expect(addon.hostTensorRtVersionProblem(111000, 111001)).toMatch(/11\.10\.0, older than the headers this addon was compiled against \(11\.10\.1\)/);
  });

  test("the same version or a newer one of the same major version is accepted", () => {
    expect(addon.hostTensorRtVersionProblem(101600, 101600)).toBe("");
    expect(addon.hostTensorRtVersionProblem(101703, 101600)).toBe("");
    expect(addon.hostTensorRtVersionProblem(110100, 110100)).toBe("");
  });

  test("another major version is refused either way, with what to install or rebuild against", () => {
    const newer = addon.hostTensorRtVersionProblem(110100, 101600);
    expect(newer).toContain("libnvinfer.so.11 is TensorRT 11.1.0, but this addon was compiled for TensorRT 10.x (headers 10.16.0)");
    expect(newer).toContain("rebuild the addon against the headers of TensorRT 11.1.0");
    expect(addon.hostTensorRtVersionProblem(101600, 110100)).toContain("compiled for TensorRT 11.x");
  });
});
