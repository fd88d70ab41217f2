/**
 * `sd-trt/engines`: the layer under `Pipeline` — the backends behind the one `Backend` seam (ONNX
 * Runtime on the CPU, TensorRT engines), model folders and their graph contracts, and TensorRT
 * engine builds with their manifests and optimization profiles.
 */

// First: fails with a clear message on an unsupported Node.js (lib/node-version.ts).
import "./node-check.js";
export type { Backend, BackendLimits, BackendName, GenerationJob, GenerationOutput, GenerationStage, InitImage } from "./backends/backend.js";
export { loadBackend, BACKEND_CHOICES } from "./backends/select.js";
export type { BackendChoice } from "./backends/select.js";
export { CpuBackend } from "./backends/cpu/backend.js";
export type { CpuBackendOptions, ModelCallStats, RuntimeStats } from "./backends/cpu/backend.js";
export { TensorRtBackend, defaultEnginesDir } from "./backends/tensorrt/backend.js";
export type { TensorRtBackendOptions, TensorRtDenoiseStats, TensorRtStageTimings } from "./backends/tensorrt/backend.js";

export { locateModelFolder, readExternalTensorRefs } from "./model/index.js";
export type { ExternalTensorRef, ModelFolder } from "./model/index.js";

export { buildEngines } from "./backends/tensorrt/build.js";
export type { BuildEnginesOptions, BuildEvent } from "./backends/tensorrt/build.js";
export { parseShapeOptions } from "./backends/tensorrt/profiles.js";
export { readManifest } from "./backends/tensorrt/manifest.js";
export type { EngineManifest } from "./backends/tensorrt/manifest.js";
