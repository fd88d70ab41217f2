/**
 * The CPU mirror of the addon's built-in stand-in UNet (native/denoiser/analytic_model.h), as a
 * model for `runProgram` (lib/sampler). The GPU self-test and the host-path tests compare the native
 * denoise loop against `runProgram(program, x0, analyticReferenceModel(...))`.
 *
 * Per image b and element k of its [4, h, w] latent, with t the timestep as the model sees it
 * (a float32 buffer):
 *   f      = 0.3 · inp[k] · cos(t / 300) + 0.05 · sin(t / 50 + k)          (float64)
 *   cond   = cast(f),  uncond = cast(0.9 · f)                               (model dtype)
 *   m      = uncond + g_b · (cond − uncond)   in float32, diffusers' order   (with guidance)
 *          = cond                                                           (without)
 * cast = float32 rounding, then float16 rounding for `sampleType: "float16"` (the input is cast
 * the same way). So guidance 1 reproduces the scheduler goldens' analytic model up to float32
 * rounding, and other scales give u ≠ c, which exercises the guidance arithmetic.
 */
import type { GuidedOutput } from "../../lib/sampler/index.js";

/** The stand-in's uncond output is this factor times its cond output. */
export const ANALYTIC_UNCOND_FACTOR = 0.9;

const f32 = new Float32Array(1);
const u32 = new Uint32Array(f32.buffer);

function roundHalfEven(v: number): number {
  const floor = Math.floor(v);
  const diff = v - floor;
  if (diff < 0.5) return floor;
  if (diff > 0.5) return floor + 1;
  return floor % 2 === 0 ? floor : floor + 1;
}

/**
 * `x` rounded to float32, then to the nearest IEEE binary16 value (ties to even), as a number:
 * what the kernels' float → half conversion keeps. ±Infinity above the float16 range, NaN stays NaN.
 */
export function roundToFloat16(x: number): number {
  f32[0] = x;
  const v = f32[0]!;
  if (!Number.isFinite(v) || v === 0) return v;
  const exponent = ((u32[0]! >>> 23) & 0xff) - 127;
  // Spacing of float16 values around v: 2^(e−10) for normals, 2^−24 for subnormals (e < −14).
  const quantum = 2 ** (Math.max(exponent, -14) - 10);
  const magnitude = roundHalfEven(Math.abs(v) / quantum) * quantum;
  if (magnitude > 65504) return v > 0 ? Infinity : -Infinity;
  return v < 0 ? -magnitude : magnitude;  // keeps −0 for tiny negatives, like IEEE
}

export interface AnalyticReferenceOptions {
  /** Images in the batch. */
  batch: number;
  /** Elements of one image's latent (4 · h · w). */
  imageElems: number;
  /** One scale per image, or null/undefined for no classifier-free guidance. */
  guidance?: Float64Array | null;
  /** The stand-in's dtype (analyticDtype). Defaults to "float32". */
  sampleType?: "float32" | "float16";
}

/**
 * A `runProgram` model computing what the native stand-in plus the fused guidance compute: with
 * guidance the guided m and the uncond half u it came from (programs with `d` read u), else m.
 */
export function analyticReferenceModel(options: AnalyticReferenceOptions): (input: ArrayLike<number>, t: number) => Float32Array | GuidedOutput {
  const { batch, imageElems, guidance } = options;
  const cast = options.sampleType === "float16" ? (x: number) => roundToFloat16(x) : (x: number) => Math.fround(x);
  const scales = guidance ? Array.from(guidance, (g) => Math.fround(g)) : undefined;
  return (input, t) => {
    const tModel = Math.fround(t);
    const c = Math.cos(tModel / 300);
    const out = new Float32Array(batch * imageElems);
    const uncondOut = new Float32Array(scales ? batch * imageElems : 0);
    for (let b = 0; b < batch; b++) {
      for (let k = 0; k < imageElems; k++) {
        const i = b * imageElems + k;
        const f = 0.3 * cast(input[i]!) * c + 0.05 * Math.sin(tModel / 50 + k);
        const cond = cast(f);
        if (!scales) {
          out[i] = cond;
          continue;
        }
        const uncond = cast(ANALYTIC_UNCOND_FACTOR * f);
        uncondOut[i] = uncond;
        const g = scales[b]!;
        out[i] = Math.fround(uncond + Math.fround(g * Math.fround(cond - uncond)));
      }
    }
    return scales ? { guided: out, uncond: uncondOut } : out;
  };
}
