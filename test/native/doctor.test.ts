/**
 * `sd-trt doctor`: on this machine it must name each missing piece and what to do; the report
 * builder's other branches (a GPU machine, an old GPU, TensorRT compiled in but not installed, …)
 * are checked with the addon's info() shape filled in by hand.
 */
import { describe, expect, jest, test } from "@jest/globals";
import { Writable } from "node:stream";
import yargs from "yargs";
import doctorCommand, { formatDoctorReport, runDoctor } from "../../lib/cli/commands/doctor.js";
import { buildNativeCommand } from "../../lib/package-info.js";
import { buildDoctorReport, compareReleases, cudaVersionString, kernelSupport, parseDriverRelease } from "../../lib/native/doctor-report.js";
import type { NativeLoadResult } from "../../lib/native/load.js";
import type { NativeBinding } from "../../lib/native/types.js";
import { healthyNativeInfo } from "../fixtures/native/info.js";
import { builtAddon } from "./support.js";

const addon = builtAddon();
const info = addon.info();

function capture() {
  let text = "";
  const stream = new Writable({
    write(chunk, _encoding, done) {
      text += String(chunk);
      done();
    },
  });
  return { stream, text: () => text };
}

describe("on this machine", () => {
  test("the text report lists every check, and a fix for each missing one", () => {
    const out = capture();
    const report = runDoctor({ json: false }, out.stream);
    const text = out.text();
    expect(text).toContain("sd-trt doctor");
    expect(report.addon.loaded).toBe(true);
    for (const check of report.checks) {
      expect(text).toContain(check.summary);
      if (check.status !== "ok") expect(text).toContain(`→ ${check.fix}`);
    }
    if (info.devices.length === 0 && info.cudaCompiledIn) {
      // CI: no driver, no GPU.
      expect(report.checks.find((c) => c.name === "gpu")?.status).toBe("missing");
      if (info.cudaDriverVersion === 0) {
        expect(report.checks.find((c) => c.name === "driver")).toMatchObject({ status: "missing" });
        expect(text).toMatch(/Install the NVIDIA driver/);
      }
      expect(text).toMatch(/TensorRT backend: not usable/);
      expect(text).toMatch(/CPU backend: ready/);
    }
    if (!info.tensorrtCompiledIn) {
      expect(text).toMatch(/TensorRT support was not compiled in/);
      expect(text).toMatch(/TENSORRT_ROOT=\/path\/to\/TensorRT npm run build:native/);
    }
  });

  test("--json gives the same report as machine-readable fields", () => {
    const out = capture();
    const report = runDoctor({ json: true }, out.stream);
    const parsed = JSON.parse(out.text()) as typeof report;
    expect(parsed).toEqual(JSON.parse(JSON.stringify(report)));
    expect(parsed.cuda.compiledIn).toBe(info.cudaCompiledIn);
    expect(parsed.tensorrt.compiledIn).toBe(info.tensorrtCompiledIn);
    expect(typeof parsed.tensorrtUsable).toBe("boolean");
  });

  test("the yargs command exits 0 whatever it finds (it is a report)", async () => {
    const write = jest.spyOn(process.stdout, "write").mockImplementation(() => true);
    const before = process.exitCode;
    try {
      await yargs(["doctor", "--json"]).command(doctorCommand).strict().parseAsync();
      expect(process.exitCode).toBe(0);
      const printed = write.mock.calls.map((c) => String(c[0])).join("");
      expect(JSON.parse(printed).checks.length).toBeGreaterThan(0);
    } finally {
      write.mockRestore();
      process.exitCode = before;
    }
  });
});

const loaded: NativeLoadResult = { loaded: true, binding: {} as NativeBinding, path: "/x/build/Release/sd_trt.node" };

describe("report branches", () => {
  test("everything present: TensorRT usable, no fixes", () => {
    const report = buildDoctorReport(loaded, healthyNativeInfo({}));
    expect(report.tensorrtUsable).toBe(true);
    expect(report.checks.every((c) => c.status === "ok" && c.fix === undefined)).toBe(true);
    expect(report.gpus[0]).toMatchObject({ supported: true, kernels: "sm_90 binary" });
    expect(report.tensorrt).toMatchObject({ compiledIn: true, runtimeLoaded: true, runtimeVersion: "11.1.0", library: "libnvinfer.so.11" });
    expect(formatDoctorReport(report)).toMatch(/TensorRT backend: ready/);
  });

  test("the addon did not load: its attempts and solutions are the report", () => {
    const report = buildDoctorReport({
      loaded: false,
      attempts: [{ source: "node-gyp-build", error: "No native build was found for platform=linux" }],
      solutions: ["Build the addon: `npm run build:native`"],
      message: "",
    });
    expect(report.tensorrtUsable).toBe(false);
    expect(report.checks).toEqual([
      { name: "addon", status: "missing", summary: "not loaded: No native build was found for platform=linux", fix: "Build the addon: `npm run build:native`" },
    ]);
    expect(formatDoctorReport(report)).toContain("Load attempts:");
  });

  test("built without CUDA: says how to rebuild", () => {
    const report = buildDoctorReport(loaded, healthyNativeInfo({ cudaCompiledIn: false, cudaRuntimeVersion: 0, cudaDriverVersion: 0, devices: [] }));
    expect(report.checks.find((c) => c.name === "cuda")).toMatchObject({ status: "missing", fix: expect.stringContaining("npm run build:native") });
  });

  test("a driver older than the runtime's floor is named in driver releases, with the CUDA 12 rebuild as the other way out", () => {
    const report = buildDoctorReport(loaded, healthyNativeInfo({ cudaDriverVersion: 12080 }), undefined, { driverRelease: "570.86.15" });
    expect(report.cuda).toMatchObject({ driverRelease: "570.86.15", driverFloor: "580.65.06" });
    const driver = report.checks.find((c) => c.name === "driver");
    expect(driver).toMatchObject({
      status: "missing",
      summary: "driver 570.86.15 (supports CUDA 12.8) is older than the addon's CUDA 13.0 runtime needs: driver 580.65.06 or newer (r580+)",
    });
    expect(driver?.fix).toMatch(/^Upgrade the NVIDIA driver to 580\.65\.06 or newer, or rebuild the addon with a CUDA 12 toolkit/);
    expect(driver?.fix).toMatch(/r550\/r570/);
  });

  test("without the driver's release (no /proc entry) the CUDA version the driver supports still decides", () => {
    const report = buildDoctorReport(loaded, healthyNativeInfo({ cudaDriverVersion: 12040 }));
    expect(report.checks.find((c) => c.name === "driver")).toMatchObject({
      status: "missing",
      summary: "the driver (supports CUDA 12.4; release unknown) is older than the addon's CUDA 13.0 runtime needs: driver 580.65.06 or newer (r580+)",
    });
  });

  test("a CUDA 12 build on an r550 driver is fine, and says which floor it checked", () => {
    const report = buildDoctorReport(loaded, healthyNativeInfo({ cudaRuntimeVersion: 12080, cudaDriverVersion: 12040 }), undefined, { driverRelease: "550.127.05" });
    expect(report.checks.find((c) => c.name === "driver")).toEqual({
      name: "driver",
      status: "ok",
      summary: "driver 550.127.05 (supports CUDA 12.4); the addon's CUDA 12.8 runtime needs driver 525.60.13 or newer (r525+)",
    });
  });

  test("fixes name a command the reader has: npm run build:native in a checkout, npm rebuild sd-trt in an installed package", () => {
    expect(buildNativeCommand("TENSORRT_ROOT=/opt/trt", true)).toBe("TENSORRT_ROOT=/opt/trt npm run build:native");
    expect(buildNativeCommand("TENSORRT_ROOT=/opt/trt", false)).toBe("TENSORRT_ROOT=/opt/trt SDTRT_BUILD_FROM_SOURCE=1 npm rebuild sd-trt");
    expect(buildNativeCommand()).toBe("npm run build:native"); // this test runs in the checkout
  });

  test("the driver release is read from the kernel module's version line", () => {
    expect(parseDriverRelease("NVRM version: NVIDIA UNIX x86_64 Kernel Module  580.65.06  Sun Jul 27 07:09:29 UTC 2025\nGCC version: gcc 12")).toBe("580.65.06");
    expect(parseDriverRelease("NVRM version: NVIDIA UNIX Open Kernel Module for x86_64  570.86.15  Release Build")).toBe("570.86.15");
    expect(parseDriverRelease("something else")).toBeUndefined();
    expect(compareReleases("570.86.15", "580.65.06")).toBe(-1);
    expect(compareReleases("580.65.06", "580.65.06")).toBe(0);
    expect(compareReleases("580.95", "580.65.06")).toBe(1);
  });

  test("GPUs the kernels do not cover, and newer GPUs that run the PTX", () => {
    const turing = buildDoctorReport(loaded, healthyNativeInfo({ devices: [{ index: 0, name: "Tesla T4", computeCapability: "7.5", totalMemory: 16e9, freeMemory: null, multiprocessors: 40 }] }));
    expect(turing.checks.find((c) => c.name === "gpu")).toMatchObject({ status: "missing", fix: expect.stringContaining("8.0 (Ampere)") });
    expect(kernelSupport("80-real 86-real 89-real 90-real 90-virtual", "8.7")).toEqual({ supported: true, kernels: "sm_86 binary" });
    expect(kernelSupport("80-real 86-real 89-real 90-real 90-virtual", "12.0").kernels).toMatch(/JIT from compute_90 PTX/);
    expect(kernelSupport("80-real", "9.0").supported).toBe(false);
  });

  test("TensorRT compiled in but libnvinfer missing; ONNX parser missing is only a warning", () => {
    const report = buildDoctorReport(
      loaded,
      healthyNativeInfo({
        tensorrt: {
          compiledVersion: "11.1.0",
          infer: { loaded: false, error: "libnvinfer.so.11: cannot open shared object file: No such file or directory" },
          parser: { loaded: false, error: "libnvonnxparser.so.11: cannot open shared object file" },
        },
      }),
    );
    expect(report.tensorrtUsable).toBe(false);
    expect(report.checks.find((c) => c.name === "tensorrt-runtime")).toMatchObject({
      status: "missing",
      summary: expect.stringContaining("libnvinfer.so.11: cannot open shared object file"),
      fix: expect.stringContaining("libnvinfer.so.11 visible to the loader"),
    });
    expect(report.checks.find((c) => c.name === "onnx-parser")?.status).toBe("warning");
  });

  test("no driver and no device: the GPU fix points at the driver first", () => {
    const report = buildDoctorReport(
      loaded,
      healthyNativeInfo({
        cudaDriverVersion: 0,
        cudaDriverError: "no NVIDIA driver is installed (libcuda.so.1 was not found)",
        devices: [],
        deviceError: "CUDA driver version is insufficient for CUDA runtime version (cudaErrorInsufficientDriver)",
        tensorrtCompiledIn: false,
        tensorrt: null,
        tensorrtError: "TensorRT support was not compiled in (the addon was built without TensorRT headers)",
      }),
    );
    expect(report.checks.map((c) => [c.name, c.status])).toEqual([
      ["addon", "ok"],
      ["cuda", "ok"],
      ["driver", "missing"],
      ["gpu", "missing"],
      ["tensorrt", "missing"],
    ]);
    expect(report.checks.find((c) => c.name === "gpu")?.fix).toMatch(/Install the NVIDIA driver first/);
  });

  test("info() failing is reported, not thrown", () => {
    const report = buildDoctorReport(loaded, undefined, "boom");
    expect(report.checks[0]).toMatchObject({ name: "addon", status: "missing", summary: expect.stringContaining("info() failed: boom") });
  });

  test("CUDA version numbers read like CUDA's", () => {
    expect(cudaVersionString(13000)).toBe("13.0");
    expect(cudaVersionString(12080)).toBe("12.8");
    expect(cudaVersionString(0)).toBeNull();
  });
});
