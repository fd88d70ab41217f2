/**
 * Can TensorRT run here — and if not, what is missing and what to do. The answer is the
 * `sd-trt doctor` report (lib/native/doctor-report.ts) narrowed to what building or running
 * engines needs: building also needs TensorRT's ONNX parser, which only warns in `doctor`.
 */
import { buildDoctorReport, type DoctorCheck, type DoctorReport } from "../../native/doctor-report.js";
import { loadNativeBinding, type NativeLoadResult } from "../../native/load.js";
import { tensorRtBindingOf, type TensorRtBinding } from "../../native/tensorrt-types.js";
import type { NativeInfo } from "../../native/types.js";
import { TensorRtUnavailableError } from "../../errors.js";
import { buildNativeCommand } from "../../package-info.js";

export type TensorRtPurpose = "build" | "run";

export interface TensorRtAvailability {
  usable: boolean;
  /** One line: why not, or what was found. */
  reason: string;
  /** Each missing piece (empty when usable). */
  problems: string[];
  /** What to do about each. */
  fixes: string[];
  report: DoctorReport;
  /** The TensorRT binding when usable. */
  binding?: TensorRtBinding;
  /** The addon's info() when the addon loaded. */
  info?: NativeInfo;
}

function blocking(check: DoctorCheck, purpose: TensorRtPurpose): boolean {
  if (check.status === "missing") return true;
  // doctor only warns about the ONNX parser (running engines does not need it); building does.
  return purpose === "build" && check.name === "onnx-parser" && check.status === "warning";
}

/**
 * Pure: the verdict for `purpose` from what the loader found and what the addon reported. Tested
 * without a GPU on every branch (missing addon, no CUDA, no driver, no GPU, no TensorRT headers,
 * no libnvinfer, no ONNX parser).
 */
export function assessTensorRt(load: NativeLoadResult, info: NativeInfo | undefined, purpose: TensorRtPurpose, infoError?: string): TensorRtAvailability {
  const report = buildDoctorReport(load, info, infoError);
  const missing = report.checks.filter((c) => blocking(c, purpose));
  if (purpose === "build" && report.tensorrt.runtimeLoaded && report.tensorrt.parserLoaded === undefined) {
    missing.push({ name: "onnx-parser", status: "missing", summary: "libnvonnxparser was not reported by the addon", fix: "Rebuild the addon" });
  }
  const problems = missing.map((c) => `${c.name}: ${c.summary}`);
  const fixes = missing.map((c) => c.fix).filter((f): f is string => typeof f === "string" && f.length > 0);
  const binding = load.loaded ? tensorRtBindingOf(load.binding) : undefined;
  if (missing.length === 0 && binding === undefined) {
    problems.push("tensorrt: the addon reports TensorRT but has no `tensorrt` module");
    fixes.push(`Rebuild the addon with TensorRT headers: \`${buildNativeCommand("TENSORRT_ROOT=/path/to/TensorRT")}\``);
  }
  const usable = problems.length === 0;
  const found = report.checks
    .filter((c) => c.status === "ok" && (c.name === "tensorrt-runtime" || c.name === "gpu"))
    .map((c) => c.summary)
    .join("; ");
  return {
    usable,
    reason: usable ? found || "TensorRT and a GPU are available" : problems.join("; "),
    problems,
    fixes,
    report,
    ...(usable && binding ? { binding } : {}),
    ...(info ? { info } : {}),
  };
}

/** Loads the addon (once per process) and assesses TensorRT on this machine. Never throws. */
export function checkTensorRt(purpose: TensorRtPurpose): TensorRtAvailability {
  const load = loadNativeBinding();
  if (!load.loaded) return assessTensorRt(load, undefined, purpose);
  try {
    return assessTensorRt(load, load.binding.info(), purpose);
  } catch (error) {
    return assessTensorRt(load, undefined, purpose, error instanceof Error ? error.message : String(error));
  }
}

/** The TensorRT binding, or TensorRtUnavailableError saying what is missing and what to do. */
export function requireTensorRt(purpose: TensorRtPurpose, what: string): Required<Pick<TensorRtAvailability, "binding" | "info">> & TensorRtAvailability {
  const availability = checkTensorRt(purpose);
  if (!availability.usable || !availability.binding || !availability.info) {
    throw new TensorRtUnavailableError(what, availability.problems, availability.fixes);
  }
  return availability as Required<Pick<TensorRtAvailability, "binding" | "info">> & TensorRtAvailability;
}
