/**
 * `sd-trt/native`: the C++ addon — its one loader (a diagnosis, not a crash, when CUDA, TensorRT
 * or a GPU is missing), the native Denoiser that runs a sampler program under CUDA graphs, and
 * the machine report behind `sd-trt doctor`.
 */

// First: fails with a clear message on an unsupported Node.js (lib/node-version.ts).
import "./node-check.js";
export { loadNativeBinding, cancelNativeWork } from "./native/load.js";
export type { NativeLoadResult } from "./native/load.js";
export { Denoiser } from "./native/denoiser.js";
export type { DenoiserOptions, DenoiseRunOptions, DenoiseRunResult } from "./native/denoiser.js";
export { collectDoctorReport } from "./native/doctor-report.js";
export type { DoctorReport } from "./native/doctor-report.js";
