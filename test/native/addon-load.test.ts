/**
 * The addon as CI sees it (no GPU, no driver, usually no TensorRT): it loads through the one
 * loader, reports what is missing as data, refuses GPU work with typed errors that say what to do,
 * and re-checks argument types with TypeError/RangeError.
 */
import { writeFileSync, mkdtempSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { Worker } from "node:worker_threads";
import { afterEach, describe, expect, test } from "@jest/globals";
import { InvalidOptionError, NativeError } from "../../lib/errors.js";
import { Denoiser } from "../../lib/native/denoiser.js";
import { callNative, callNativeAsync, loadNativeBinding, requireNativeBinding, solutionsFor } from "../../lib/native/load.js";
import { packProgram } from "../../lib/sampler/index.js";
import { createScheduler } from "../../lib/schedulers/index.js";
import { ADDON_PATH, builtAddon } from "./support.js";

const addon = builtAddon();
const info = addon.info();

describe("loading", () => {
  test("the loader finds the built addon", () => {
    const result = loadNativeBinding();
    expect(result.loaded).toBe(true);
    if (result.loaded) expect(result.path).toBe(ADDON_PATH);
  });

  test("info() reports the package version and Node-API 8", () => {
    expect(info.version).toMatch(/^\d+\.\d+\.\d+/);
    expect(info.napi).toBe(8);
    expect(info.build.napiVersion).toBe(8);
    expect(info.build.cuda).toBe(info.cudaCompiledIn);
    expect(info.build.tensorrt).toBe(info.tensorrtCompiledIn);
  });

  describe("diagnosis when the addon cannot load", () => {
    const saved = process.env.SDTRT_ADDON;
    afterEach(() => {
      if (saved === undefined) delete process.env.SDTRT_ADDON;
      else process.env.SDTRT_ADDON = saved;
      loadNativeBinding({ reload: true });
    });

    test("a missing file is reported with each attempt and what to do", () => {
      process.env.SDTRT_ADDON = join(tmpdir(), "sd-trt-no-such-addon.node");
      const result = loadNativeBinding({ reload: true });
      expect(result.loaded).toBe(false);
      if (result.loaded) return;
      expect(result.attempts).toEqual([{ source: "SDTRT_ADDON", path: process.env.SDTRT_ADDON, error: "no such file" }]);
      expect(result.message).toContain("Possible solutions:");
      expect(result.solutions.join("\n")).toContain("npm run build:native");
      expect(result.solutions.join("\n")).toContain("sd-trt doctor");
      expect(() => requireNativeBinding()).toThrow(NativeError);
      try {
        requireNativeBinding();
      } catch (error) {
        expect((error as NativeError).code).toBe("ERR_NATIVE_UNAVAILABLE");
        expect((error as NativeError).stage).toBe("load");
      }
    });

    test("a file that is not a shared library is diagnosed as built for another platform", () => {
      const dir = mkdtempSync(join(tmpdir(), "sd-trt-addon-"));
      const fake = join(dir, "sd_trt.node");
      writeFileSync(fake, "not an ELF file");
      process.env.SDTRT_ADDON = fake;
      const result = loadNativeBinding({ reload: true });
      expect(result.loaded).toBe(false);
      if (result.loaded) return;
      expect(result.attempts[0]!.error).toMatch(/invalid ELF header|file too short/);
      expect(result.solutions[0]).toMatch(/another platform|Rebuild/);
    });

    test("typical load errors map to specific advice", () => {
      const advice = (error: string) => solutionsFor([{ source: "node-gyp-build", error }])[0]!;
      expect(advice("No native build was found for platform=linux arch=x64")).toContain("npm run build:native");
      expect(advice("/lib/x86_64-linux-gnu/libstdc++.so.6: version `GLIBCXX_3.4.32' not found")).toContain("newer C/C++ runtime");
      expect(advice("sd_trt.node: undefined symbol: _ZN5sdtrt3trt8RegisterEN4Napi3EnvENS1_6ObjectE")).toContain("incomplete");
      expect(advice("libnvinfer.so.11: cannot open shared object file: No such file or directory")).toContain("loads TensorRT at run time");
      expect(advice("The module was compiled against a different Node.js version using NODE_MODULE_VERSION 108")).toContain("another Node.js");
    });
  });
});

test("loads in a worker thread too, and the worker exits cleanly (per-environment state and cleanup hook)", async () => {
  const code = `
    const { parentPort, workerData } = require("node:worker_threads");
    const addon = require(workerData);
    const info = addon.info();
    let denoiser = "created";
    try { new addon.Denoiser({ unet: "analytic" }).dispose(); } catch (e) { denoiser = e.code; }
    const half = Array.from(addon.hostFloatToHalf(new Float32Array([1, 0.1])));
    parentPort.postMessage({ version: info.version, half, denoiser });
  `;
  const worker = new Worker(code, { eval: true, workerData: ADDON_PATH });
  const message = await new Promise((resolve, reject) => {
    worker.once("message", resolve);
    worker.once("error", reject);
  });
  const exitCode = await new Promise((resolve) => worker.once("exit", resolve));
  expect(message).toEqual({
    version: info.version,
    half: [0x3c00, 0x2e66],
    denoiser: info.devices.length > 0 ? "created" : info.cudaCompiledIn ? "ERR_NO_GPU" : "ERR_NO_CUDA",
  });
  expect(exitCode).toBe(0);
});

describe("what this machine lacks is reported as data", () => {
  test("CUDA: runtime version, and the driver / device errors when there is no GPU", () => {
    if (!info.cudaCompiledIn) {
      expect(info.cudaRuntimeVersion).toBe(0);
      expect(info.devices).toEqual([]);
      expect(info.deviceError).toBe("CUDA support was not compiled in");
      return;
    }
    expect(info.cudaRuntimeVersion).toBe(info.build.cudaVersion);
    expect(info.build.cudaArchitectures).toMatch(/\d+-(real|virtual)/);
    if (info.devices.length === 0) {
      // No GPU here: the failure is data, with CUDA's status name, never a crash.
      expect(info.deviceError).toMatch(/\(cudaError\w+\)$/);
      expect(info.deviceErrorStatus).toMatch(/^cudaError\w+$/);
      if (info.cudaDriverVersion === 0) expect(info.cudaDriverError).toMatch(/driver/i);
    } else {
      for (const d of info.devices) {
        expect(d.computeCapability).toMatch(/^\d+\.\d+$/);
        expect(d.totalMemory).toBeGreaterThan(0);
        expect(d.freeMemory).toBeNull();
      }
      const withMemory = addon.info({ freeMemory: true });
      expect(withMemory.devices[0]!.freeMemory).toBeGreaterThan(0);
    }
  });

  test("TensorRT: not compiled in, or compiled in and libnvinfer reported as found or missing", () => {
    if (!info.tensorrtCompiledIn) {
      expect(info.tensorrt).toBeNull();
      expect(info.tensorrtError).toMatch(/TensorRT support was not compiled in/);
    } else {
      expect(info.tensorrt).not.toBeNull();
      expect(typeof info.tensorrt).toBe("object");
    }
  });
});

describe("GPU work without a usable GPU", () => {
  const noGpu = !info.cudaCompiledIn || info.devices.length === 0;

  (noGpu ? test : test.skip)("Denoiser.create rejects with a typed error naming the stage and what to do", async () => {
    const error = await Denoiser.create({ unet: "analytic" }).then(
      () => undefined,
      (e: unknown) => e,
    );
    expect(error).toBeInstanceOf(NativeError);
    const native = error as NativeError;
    expect(native.stage).toBe("denoiser-create");
    if (info.cudaCompiledIn) {
      expect(native.code).toBe("ERR_NO_GPU");
      expect(native.status).toBe(info.deviceErrorStatus);
      expect(native.message).toContain("sd-trt doctor");
    } else {
      expect(native.code).toBe("ERR_NO_CUDA");
      expect(native.message).toContain("CUDA support was not compiled in");
    }
    // The caller's stack, not the addon's internals.
    expect(native.stack).toContain("addon-load.test.ts");
  });

  (noGpu && info.cudaCompiledIn ? test : test.skip)("device kernel runs reject with the CUDA status instead of crashing", async () => {
    const error = (await callNativeAsync(() => addon.deviceFloatToHalf!(new Float32Array([1]))).catch((e: unknown) => e)) as NativeError;
    expect(error).toBeInstanceOf(NativeError);
    expect(error).toMatchObject({ code: "ERR_CUDA", stage: "float-to-half", status: info.deviceErrorStatus });
    const vae = addon.deviceVaeToUint8!({ decoded: new Float32Array(3), batch: 1, height: 1, width: 1 });
    await expect(callNativeAsync(() => vae)).rejects.toMatchObject({ code: "ERR_CUDA", stage: "vae-to-uint8" });
  });

  (noGpu ? test : test.skip)("a denoiser for a GPU index that does not exist is refused the same way", () => {
    expect(() => callNative(() => new addon.Denoiser({ unet: "analytic", device: 3 }))).toThrow(NativeError);
  });
});

describe("argument types are re-checked natively", () => {
  const throwsNative = (name: string, code: string) => (fn: () => unknown, message: RegExp) => {
    let caught: unknown;
    try {
      fn();
    } catch (e) {
      caught = e;
    }
    // The addon's errors come from the main realm (jest runs tests in a vm context): compare names.
    expect((caught as Error).name).toBe(name);
    expect((caught as { code?: string }).code).toBe(code);
    expect((caught as Error).message).toMatch(message);
  };
  const typeError = throwsNative("TypeError", "ERR_INVALID_ARG_TYPE");
  const rangeError = throwsNative("RangeError", "ERR_OUT_OF_RANGE");
  const Native = addon.Denoiser as unknown as new (options?: unknown) => unknown;

  test("Denoiser options", () => {
    typeError(() => new Native(), /^options must be an object, got undefined$/);
    typeError(() => new Native(5), /^options must be an object, got 5 \(number\)$/);
    typeError(() => new Native({ unet: 5 }), /^options\.unet must be "analytic" or a TensorRT UNet engine object, got 5 \(number\)$/);
    rangeError(() => new Native({ unet: "tensorrt" }), /^options\.unet must be "analytic" or a TensorRT UNet engine object, got "tensorrt"$/);
    rangeError(() => new Native({ unet: "analytic", analyticDtype: "bfloat16" }), /analyticDtype must be "float32" or "float16", got "bfloat16"/);
    typeError(() => new Native({ unet: "analytic", device: "0" }), /options\.device must be an integer, got a string/);
    typeError(() => new Native({ unet: "analytic", device: 0.5 }), /options\.device must be an integer, got 0\.5 \(number\)/);
    rangeError(() => new Native({ unet: "analytic", device: -1 }), /options\.device must be an integer from 0 to 1024, got -1 \(number\)/);
    if (info.cudaCompiledIn && !info.tensorrtCompiledIn) typeError(() => new Native({ unet: {} }), /TensorRT support was not compiled in/);
  });

  test("info() and the host entry points", () => {
    const anyAddon = addon as unknown as Record<string, (...args: unknown[]) => unknown>;
    typeError(() => anyAddon.info!("x"), /^options must be an object, got a string$/);
    typeError(() => anyAddon.info!({ freeMemory: 1 }), /options\.freeMemory must be a boolean, got 1 \(number\)/);
    typeError(() => anyAddon.hostRunProgram!({ program: [1, 2] }), /options\.program must be a Float64Array, got an array/);
    typeError(
      () => anyAddon.hostRunProgram!({ program: new Float64Array(8), latents: new Float64Array(4) }),
      /options\.latents must be a Float32Array, got a typed array/,
    );
    typeError(() => anyAddon.hostVaeToUint8!({ decoded: new Uint8Array(3) }), /options\.decoded must be a Float32Array or a Uint16Array/);
    rangeError(
      () => anyAddon.hostVaeToUint8!({ decoded: new Float32Array(5), batch: 1, height: 1, width: 2 }),
      /options\.decoded must hold batch·channels·height·width = 6 values, got 5/,
    );
    typeError(() => anyAddon.hostFloatToHalf!(new Float64Array(1)), /values must be a Float32Array/);
    typeError(() => anyAddon.hostHalfToFloat!([1]), /bits must be a Uint16Array/);
    if (addon.DeviceTensor) {
      const DeviceTensor = addon.DeviceTensor as unknown as new () => unknown;
      typeError(() => new DeviceTensor(), /created by the addon/);
    }
  });

  test("the TS wrapper validates before reaching native code", async () => {
    await expect(Denoiser.create({ unet: "tensorrt" as never })).rejects.toThrow(InvalidOptionError);
    await expect(Denoiser.create({ unet: "analytic", analyticDtype: "int8" as never })).rejects.toThrow(
      /analyticDtype must be "float32" or "float16", got "int8"/,
    );
    await expect(Denoiser.create({ unet: "analytic", device: -1 })).rejects.toThrow(/device must be an integer from 0 to 1024, got -1/);
  });
});

describe("packed programs are checked before use", () => {
  const program = packProgram(createScheduler("euler").compile(4));
  const run = (words: Float64Array) =>
    callNative(() =>
      addon.hostRunProgram({ program: words, latents: new Float32Array(4), noise: new Float32Array(0), batch: 1, height: 1, width: 1 }),
    );
  const expectProgramError = (words: Float64Array, message: RegExp) => {
    let caught: unknown;
    try {
      run(words);
    } catch (e) {
      caught = e;
    }
    expect(caught).toBeInstanceOf(NativeError);
    expect((caught as NativeError).code).toBe("ERR_INVALID_PROGRAM");
    expect((caught as NativeError).stage).toBe("program");
    expect((caught as Error).message).toMatch(message);
  };

  test("a well-formed program runs", () => {
    expect(run(program)).toHaveLength(4);
  });

  test("each malformed word is named", () => {
    const withWord = (index: number, value: number) => {
      const copy = program.slice();
      copy[index] = value;
      return copy;
    };
    expectProgramError(program.subarray(0, 5), /expected at least 8 header words, got 5/);
    expectProgramError(withWord(0, 1), /layout version 1 is not supported/);
    expectProgramError(withWord(1, 0), /evaluation count \(word 1\) must be an integer from 1/);
    expectProgramError(withWord(2, 1.5), /history depth \(word 2\) must be an integer/);
    expectProgramError(program.subarray(0, program.length - 1), /expected \d+ words for 4 evaluations of history depth 1, got \d+/);
    expectProgramError(withWord(8 + 3, 0.5), /evaluation 0 drawsNoise must be 0 or 1/);
    expectProgramError(withWord(8 + 2, 0.25), /evaluation 0 has a noise coefficient c but draws no noise/);
    expectProgramError(withWord(8 + 4, NaN), /evaluation 0 word 4 is not finite/);
  });

  test("noise of the wrong size is refused", () => {
    const ancestral = packProgram(createScheduler("euler_a").compile(3));
    expect(() =>
      callNative(() =>
        addon.hostRunProgram({ program: ancestral, latents: new Float32Array(4), noise: new Float32Array(4), batch: 1, height: 1, width: 1 }),
      ),
    ).toThrow(/noise must hold 3 draws of 4 values, got 4 values/);
  });
});
