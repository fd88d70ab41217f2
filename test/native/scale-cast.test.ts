/**
 * The VAE input scaling (kernels::launchScaleCast, shared per-element code vae::scaleCastElement)
 * through its host path `hostScaleCast`: `latents / scaling_factor` is a float32 division, bit for
 * bit what the TypeScript path (lib/pipeline's divideFloat32: `x / Math.fround(s)` stored in a
 * Float32Array) computes, and not a multiplication by the reciprocal. The device run of the same
 * code is compared with this in test/gpu/device-latents.test.ts. Also: DeviceTensor.toHost exists.
 */
import { describe, expect, test } from "@jest/globals";
import { divideInTs, floatBits, halfBits, scaleCastInputs } from "./float-bits.js";
import { builtAddon } from "./support.js";

const addon = builtAddon();
const info = addon.info();

const FACTORS = [0.18215, 0.13025, 1 / 0.18215, 0.3611, 1.5305];

describe("hostScaleCast: the VAE input scaling's host path", () => {
  test.each(FACTORS)("divide by %d equals the TypeScript float32 division bit for bit (float32 out)", (factor) => {
    const values = scaleCastInputs();
    const native = addon.hostScaleCast({ values, factor, op: "divide" }) as Float32Array;
    expect(native).toBeInstanceOf(Float32Array);
    expect(floatBits(native)).toEqual(floatBits(divideInTs(values, factor)));
  });

  test("the check tells division from multiplication by the reciprocal", () => {
    // If the kernel computed x · (1/s), some of these would differ in the last bit: make sure the
    // inputs are ones where that shows, so the equality above means something.
    const values = scaleCastInputs();
    const d = Math.fround(0.18215);
    const reciprocal = Math.fround(1 / d);
    const viaReciprocal = Float32Array.from(values, (x) => x * reciprocal);
    const divided = floatBits(divideInTs(values, 0.18215));
    const differing = floatBits(viaReciprocal).filter((b, i) => b !== divided[i]).length;
    expect(differing).toBeGreaterThan(100);
  });

  test("float16 out: the float32 quotient rounded to nearest even (like hostFloatToHalf)", () => {
    const values = scaleCastInputs();
    const native = addon.hostScaleCast({ values, factor: 0.18215, op: "divide", dtype: "float16" });
    expect(native).toBeInstanceOf(Uint16Array);
    expect(halfBits(native as Uint16Array)).toEqual(halfBits(addon.hostFloatToHalf(divideInTs(values, 0.18215))));
  });

  test("float16 in: widened exactly, then divided", () => {
    const bits = addon.hostFloatToHalf(scaleCastInputs());
    const native = addon.hostScaleCast({ values: bits, factor: 0.18215, op: "divide" }) as Float32Array;
    expect(floatBits(native)).toEqual(floatBits(divideInTs(addon.hostHalfToFloat(bits), 0.18215)));
  });

  test("multiply: Math.fround(x · Math.fround(s))", () => {
    const values = scaleCastInputs();
    const s = Math.fround(0.18215);
    const native = addon.hostScaleCast({ values, factor: 0.18215, op: "multiply" }) as Float32Array;
    expect(floatBits(native)).toEqual(floatBits(Float32Array.from(values, (x) => x * s)));
  });

  test("argument types and values are checked", () => {
    const call = (options: unknown) => {
      try {
        (addon.hostScaleCast as (o: unknown) => unknown)(options);
      } catch (e) {
        return e as Error & { code?: string };
      }
      throw new Error("expected a throw");
    };
    expect(call({ values: [1], factor: 1, op: "divide" })).toMatchObject({ name: "TypeError", code: "ERR_INVALID_ARG_TYPE" });
    expect(call({ values: new Float32Array(1), factor: "1", op: "divide" }).message).toMatch(/options\.factor must be a number/);
    expect(call({ values: new Float32Array(1), factor: 1, op: "modulo" })).toMatchObject({ name: "RangeError", code: "ERR_OUT_OF_RANGE" });
    expect(call({ values: new Float32Array(1), factor: 1, op: "divide", dtype: "bfloat16" }).message).toMatch(/dtype must be "float32" or "float16"/);
  });
});

describe("device entry points exist in CUDA builds", () => {
  (info.cudaCompiledIn ? test : test.skip)("DeviceTensor.prototype.toHost and deviceScaleCast", () => {
    const ctor = addon.DeviceTensor as unknown as { prototype: Record<string, unknown> };
    expect(typeof ctor.prototype.toHost).toBe("function");
    expect(typeof addon.deviceScaleCast).toBe("function");
  });
});
