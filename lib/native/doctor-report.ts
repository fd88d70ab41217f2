/**
 * What this machine has for the TensorRT backend, and what to do about each missing piece: the
 * data behind `sd-trt doctor` (node-llama-cpp's `inspect gpu`). {@link buildDoctorReport} is a pure
 * function of the loader's result and the addon's `info()`, so every branch is testable without a
 * GPU; {@link collectDoctorReport} gathers both on this machine and never throws.
 */
import { readFileSync } from "node:fs";
import { buildNativeCommand } from "../package-info.js";
import { loadNativeBinding, type NativeLoadAttempt, type NativeLoadResult } from "./load.js";
import type { NativeBuildInfo, NativeInfo, NativeTensorRtInfo, NativeTensorRtLibraryInfo } from "./types.js";

/** The oldest GPU generation the kernels are built for (Ampere, sm_80). */
export const MIN_COMPUTE_CAPABILITY = 8.0;

export type CheckName = "addon" | "cuda" | "driver" | "gpu" | "tensorrt" | "tensorrt-runtime" | "onnx-parser";

export interface DoctorCheck {
  name: CheckName;
  /** "ok"; "missing" blocks the TensorRT backend; "warning" does not (e.g. ONNX parser, needed only to build engines). */
  status: "ok" | "missing" | "warning";
  /** One line on what was found. */
  summary: string;
  /** What to do about it (absent when ok). */
  fix?: string;
}

export interface DoctorGpu {
  index: number;
  name: string;
  computeCapability: string;
  totalMemory: number;
  freeMemory: number | null;
  /** Whether the addon's kernels run on it (a compiled SASS of the same major version, or PTX to JIT). */
  supported: boolean;
  /** How the kernels run there ("sm_90 binary", "JIT from compute_90 PTX") or why they cannot. */
  kernels: string;
}

export interface DoctorReport {
  addon: {
    loaded: boolean;
    path?: string;
    version?: string;
    napi?: number;
    attempts?: NativeLoadAttempt[];
    solutions?: string[];
  };
  build?: NativeBuildInfo;
  cuda: {
    compiledIn: boolean;
    /** "13.0" */
    runtimeVersion: string | null;
    /** Newest CUDA version the driver supports ("13.0"), null when there is no driver. */
    driverVersion: string | null;
    /** The driver's own release ("570.86.15", from /proc/driver/nvidia/version), when readable. */
    driverRelease?: string;
    /** The oldest driver release the addon's CUDA runtime runs on ("580.65.06"), when known. */
    driverFloor?: string;
    driverError?: string;
  };
  gpus: DoctorGpu[];
  gpuError?: string;
  tensorrt: {
    compiledIn: boolean;
    compiledVersion?: string;
    runtimeLoaded: boolean;
    runtimeVersion?: string;
    library?: string;
    error?: string;
    parserLoaded?: boolean;
  };
  checks: DoctorCheck[];
  /** Everything the TensorRT backend needs is there (engines still have to be built per GPU). */
  tensorrtUsable: boolean;
}

/**
 * The oldest Linux driver release each CUDA runtime major version runs on (CUDA release notes,
 * "minor version compatibility": any 12.x runtime on r525+, any 13.x runtime on r580+). The addon
 * links the CUDA runtime statically, so its toolkit sets the floor: an addon built with CUDA 13
 * needs r580 even where TensorRT 10 for CUDA 12 would run on r550/r570 (docs/build-matrix in
 * native/README.md).
 */
export const DRIVER_FLOORS: Readonly<Record<number, string>> = { 12: "525.60.13", 13: "580.65.06" };

/** "570.86.15" from /proc/driver/nvidia/version ("NVRM version: NVIDIA UNIX x86_64 Kernel Module  570.86.15  …"). */
export function parseDriverRelease(procVersion: string): string | undefined {
  return /Kernel Module(?:\s+for\s+\S+)?\s+(\d+\.\d+(?:\.\d+)?)/.exec(procVersion)?.[1];
}

/** -1, 0, 1 for dotted driver releases ("570.86.15" < "580.65.06"). */
export function compareReleases(a: string, b: string): number {
  const pa = a.split(".").map(Number);
  const pb = b.split(".").map(Number);
  for (let i = 0; i < Math.max(pa.length, pb.length); i++) {
    const d = (pa[i] ?? 0) - (pb[i] ?? 0);
    if (d !== 0) return Math.sign(d);
  }
  return 0;
}

/** 13000 → "13.0", 12040 → "12.4". */
export function cudaVersionString(version: number): string | null {
  if (!version) return null;
  return `${Math.floor(version / 1000)}.${Math.floor((version % 1000) / 10)}`;
}

/** Whether kernels compiled for `architectures` ("80-real 90-virtual …") run on a GPU of capability `cc`. */
export function kernelSupport(architectures: string, computeCapability: string): { supported: boolean; kernels: string } {
  const [major, minor] = computeCapability.split(".").map(Number) as [number, number];
  const cc = major * 10 + minor;
  const entries = architectures
    .split(/[\s;]+/)
    .filter(Boolean)
    .map((entry) => {
      const match = /^(\d+)(?:-(real|virtual))?$/.exec(entry);
      return match ? { arch: Number(match[1]), kind: match[2] ?? "both" } : undefined;
    })
    .filter((e): e is { arch: number; kind: string } => e !== undefined);
  // SASS runs on GPUs of the same major version and an equal or newer minor version.
  const binary = entries
    .filter((e) => e.kind !== "virtual" && Math.floor(e.arch / 10) === major && e.arch <= cc)
    .sort((a, b) => b.arch - a.arch)[0];
  if (binary) return { supported: true, kernels: `sm_${binary.arch} binary` };
  // PTX is JIT-compiled by the driver for any GPU at least as new.
  const ptx = entries.filter((e) => e.kind !== "real" && e.arch <= cc).sort((a, b) => b.arch - a.arch)[0];
  if (ptx) return { supported: true, kernels: `JIT from compute_${ptx.arch} PTX (the first launch compiles; later ones are cached)` };
  const oldest = Math.min(...entries.map((e) => e.arch));
  return {
    supported: false,
    kernels: entries.length
      ? `no kernels for sm_${cc}: this addon targets sm_${oldest} and newer`
      : "the addon was built without CUDA kernels",
  };
}

function libraryOf(info: NativeTensorRtInfo | null): NativeTensorRtLibraryInfo | undefined {
  if (!info) return undefined;
  if (info.infer) return info.infer;
  // Tolerate a flat shape ({ loaded, version, error, library }).
  if (typeof info.loaded === "boolean") return info as unknown as NativeTensorRtLibraryInfo;
  return undefined;
}

function versionText(v: unknown): string | undefined {
  if (typeof v === "string" && v) return v;
  if (typeof v === "number" && v > 0) return `${Math.floor(v / 10000)}.${Math.floor(v / 100) % 100}.${v % 100}`;
  return undefined;
}

/**
 * @param machine what the addon cannot tell: the driver's release, read from
 *   /proc/driver/nvidia/version by {@link collectDoctorReport}.
 */
export function buildDoctorReport(load: NativeLoadResult, info?: NativeInfo, infoError?: string, machine: { driverRelease?: string } = {}): DoctorReport {
  const checks: DoctorCheck[] = [];
  const report: DoctorReport = {
    addon: { loaded: load.loaded },
    cuda: { compiledIn: false, runtimeVersion: null, driverVersion: null },
    gpus: [],
    tensorrt: { compiledIn: false, runtimeLoaded: false },
    checks,
    tensorrtUsable: false,
  };

  if (!load.loaded) {
    report.addon.attempts = load.attempts;
    report.addon.solutions = load.solutions;
    checks.push({
      name: "addon",
      status: "missing",
      summary: `not loaded: ${load.attempts.map((a) => a.error).join("; ") || "no addon found"}`,
      fix: load.solutions.join("; "),
    });
    return report;
  }
  report.addon.path = load.path;
  if (!info) {
    checks.push({
      name: "addon",
      status: "missing",
      summary: `loaded from ${load.path}, but info() failed: ${infoError ?? "unknown error"}`,
      fix: `Rebuild the addon (\`${buildNativeCommand()}\`) and report the error if it persists`,
    });
    return report;
  }
  report.addon.version = info.version;
  report.addon.napi = info.napi;
  report.build = info.build;
  checks.push({ name: "addon", status: "ok", summary: `${load.path} (sd-trt ${info.version}, Node-API ${info.napi})` });

  // CUDA compiled in
  const floor = info.cudaCompiledIn ? DRIVER_FLOORS[Math.floor(info.cudaRuntimeVersion / 1000)] : undefined;
  report.cuda = {
    compiledIn: info.cudaCompiledIn,
    runtimeVersion: cudaVersionString(info.cudaRuntimeVersion),
    driverVersion: cudaVersionString(info.cudaDriverVersion),
    ...(machine.driverRelease ? { driverRelease: machine.driverRelease } : {}),
    ...(floor ? { driverFloor: floor } : {}),
    ...(info.cudaDriverError ? { driverError: info.cudaDriverError } : {}),
  };
  if (!info.cudaCompiledIn) {
    checks.push({
      name: "cuda",
      status: "missing",
      summary: "CUDA support was not compiled in (the addon was built without the CUDA toolkit)",
      fix: `Install the CUDA toolkit (nvcc, CUDA 12.4 or newer) and rebuild: \`${buildNativeCommand()}\``,
    });
  } else {
    checks.push({
      name: "cuda",
      status: "ok",
      summary: `compiled in: CUDA ${report.cuda.runtimeVersion} runtime (static), kernels for ${info.build.cudaArchitectures || "the default architectures"}`,
    });
  }

  // Driver: said in driver releases (what `nvidia-smi` shows and what people upgrade), against the
  // floor of the CUDA runtime linked into the addon.
  if (info.cudaCompiledIn) {
    const runtime = info.cudaRuntimeVersion;
    const floorText = floor ? `driver ${floor} or newer (r${floor.split(".")[0]}+)` : `a driver supporting CUDA ${report.cuda.runtimeVersion}`;
    const driverText = machine.driverRelease
      ? `driver ${machine.driverRelease}${report.cuda.driverVersion ? ` (supports CUDA ${report.cuda.driverVersion})` : ""}`
      : `the driver${report.cuda.driverVersion ? ` (supports CUDA ${report.cuda.driverVersion}; release unknown)` : ""}`;
    const cuda12Hint =
      Math.floor(runtime / 1000) >= 13
        ? `, or rebuild the addon with a CUDA 12 toolkit (\`${buildNativeCommand("SDTRT_CUDA_TOOLKIT=/usr/local/cuda-12.x")}\`, r525+; TensorRT 10 for CUDA 12 runs on r550/r570)`
        : "";
    const tooOld =
      (machine.driverRelease !== undefined && floor !== undefined && compareReleases(machine.driverRelease, floor) < 0) ||
      (info.cudaDriverVersion > 0 && Math.floor(info.cudaDriverVersion / 1000) < Math.floor(runtime / 1000));
    if (!info.cudaDriverVersion) {
      checks.push({
        name: "driver",
        status: "missing",
        summary: info.cudaDriverError ?? "no NVIDIA driver found",
        fix: `Install the NVIDIA driver: the addon's CUDA ${report.cuda.runtimeVersion ?? "13.0"} runtime needs ${floorText} (check with \`nvidia-smi\`). In a container, run it with the GPU exposed (e.g. \`docker run --gpus all\`)`,
      });
    } else if (tooOld) {
      checks.push({
        name: "driver",
        status: "missing",
        summary: `${driverText} is older than the addon's CUDA ${report.cuda.runtimeVersion} runtime needs: ${floorText}`,
        fix: `Upgrade the NVIDIA driver to ${floor ?? `one supporting CUDA ${report.cuda.runtimeVersion}`} or newer${cuda12Hint}`,
      });
    } else {
      checks.push({ name: "driver", status: "ok", summary: `${driverText}; the addon's CUDA ${report.cuda.runtimeVersion} runtime needs ${floorText}` });
    }
  }

  // GPUs
  if (info.cudaCompiledIn) {
    report.gpus = info.devices.map((d) => ({
      index: d.index,
      name: d.name,
      computeCapability: d.computeCapability,
      totalMemory: d.totalMemory,
      freeMemory: d.freeMemory,
      ...kernelSupport(info.build.cudaArchitectures, d.computeCapability),
    }));
    if (info.deviceError) report.gpuError = info.deviceError;
    const usable = report.gpus.filter((g) => g.supported);
    if (report.gpus.length === 0) {
      checks.push({
        name: "gpu",
        status: "missing",
        summary: `no usable GPU: ${info.deviceError ?? "CUDA reports no device"}`,
        fix: info.cudaDriverVersion
          ? "Check `nvidia-smi` and CUDA_VISIBLE_DEVICES; in a container, expose the GPU (`--gpus all`)"
          : "Install the NVIDIA driver first (see above); the GPU is listed once CUDA can talk to it",
      });
    } else if (usable.length === 0) {
      checks.push({
        name: "gpu",
        status: "missing",
        summary: report.gpus.map((g) => `${g.name} (sm ${g.computeCapability}): ${g.kernels}`).join("; "),
        fix: `sd-trt needs an NVIDIA GPU of compute capability ${MIN_COMPUTE_CAPABILITY.toFixed(1)} (Ampere) or newer`,
      });
    } else {
      checks.push({
        name: "gpu",
        status: "ok",
        summary: report.gpus.map((g) => `#${g.index} ${g.name} (sm ${g.computeCapability}, ${(g.totalMemory / 2 ** 30).toFixed(1)} GiB)`).join(", "),
      });
    }
  }

  // TensorRT
  const lib = libraryOf(info.tensorrt);
  const parser = info.tensorrt?.parser;
  report.tensorrt = {
    compiledIn: info.tensorrtCompiledIn,
    runtimeLoaded: lib?.loaded === true,
    ...(versionText(info.tensorrt?.compiledVersion) ? { compiledVersion: versionText(info.tensorrt?.compiledVersion)! } : {}),
    ...(versionText(lib?.version) ? { runtimeVersion: versionText(lib?.version)! } : {}),
    ...(lib?.library ? { library: lib.library } : {}),
    ...(lib?.error ? { error: lib.error } : {}),
    ...(parser ? { parserLoaded: parser.loaded === true } : {}),
  };
  if (!info.tensorrtCompiledIn) {
    checks.push({
      name: "tensorrt",
      status: "missing",
      summary: info.tensorrtError ?? "TensorRT support was not compiled in",
      fix: `Install TensorRT (10.13+ or 11.x) and rebuild with its headers: \`${buildNativeCommand("TENSORRT_ROOT=/path/to/TensorRT")}\``,
    });
  } else {
    const compiled = report.tensorrt.compiledVersion;
    checks.push({ name: "tensorrt", status: "ok", summary: `compiled in${compiled ? ` (headers ${compiled})` : ""}` });
    const major = compiled?.split(".")[0];
    if (!report.tensorrt.runtimeLoaded) {
      checks.push({
        name: "tensorrt-runtime",
        status: "missing",
        summary: `libnvinfer could not be loaded${lib?.error ? `: ${lib.error}` : ""}`,
        fix: `Install the TensorRT ${major ? `${major}.x ` : ""}runtime and make libnvinfer.so${major ? `.${major}` : ""} visible to the loader (LD_LIBRARY_PATH=<TensorRT>/lib, or ldconfig)`,
      });
    } else {
      checks.push({
        name: "tensorrt-runtime",
        status: "ok",
        summary: `${lib?.library ?? "libnvinfer"}${report.tensorrt.runtimeVersion ? ` ${report.tensorrt.runtimeVersion}` : ""} loaded`,
      });
    }
    if (parser && !parser.loaded) {
      checks.push({
        name: "onnx-parser",
        status: "warning",
        summary: `libnvonnxparser could not be loaded${parser.error ? `: ${parser.error}` : ""}`,
        fix: "Only `sd-trt build` needs it: install TensorRT's ONNX parser (libnvonnxparser) next to libnvinfer",
      });
    }
  }
  report.tensorrtUsable = checks.every((c) => c.status !== "missing");
  return report;
}

/** Loads the addon and asks it; never throws. */
export function collectDoctorReport(): DoctorReport {
  const load = loadNativeBinding();
  if (!load.loaded) return buildDoctorReport(load);
  const machine = readDriverRelease();
  try {
    return buildDoctorReport(load, load.binding.info({ freeMemory: true }), undefined, machine);
  } catch (error) {
    return buildDoctorReport(load, undefined, error instanceof Error ? error.message : String(error), machine);
  }
}

/** The driver's release from the kernel module (Linux); {} where there is none. */
function readDriverRelease(): { driverRelease?: string } {
  try {
    const release = parseDriverRelease(readFileSync("/proc/driver/nvidia/version", "utf8"));
    return release ? { driverRelease: release } : {};
  } catch {
    return {};
  }
}
