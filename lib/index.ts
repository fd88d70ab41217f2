/**
 * sd-trt: Stable Diffusion for Node.js — the package root, what a service author needs: load a
 * model (`Pipeline`), generate, serve it (`PipelineService`, `SdServer`), write the images, and
 * branch on typed errors. Everything else is in a tier of its own:
 *
 * - `sd-trt/numerics`: CLIP tokenizer, torch-compatible noise, schedulers compiled to sampler
 *   programs, the CPU executor — exact against diffusers, no model needed.
 * - `sd-trt/engines`: the backends themselves, model folders, TensorRT engine builds and manifests.
 * - `sd-trt/native`: the C++ addon's loader, the native Denoiser, the machine report (`doctor`).
 * - `sd-trt/fleet`: many machines on a BullMQ queue in Redis (`createWorker`, `RedisQueueClient`).
 */

// First: fails with a clear message on an unsupported Node.js (lib/node-version.ts).
import "./node-check.js";

export * from "./errors.js";

// Generation
export { Pipeline } from "./pipeline/pipeline.js";
export type { BackendChoice, PipelineLoadOptions } from "./pipeline/pipeline.js";
export type { GenerateOptions, ProgressEvent } from "./pipeline/options.js";
export type { GeneratedImage, GenerateResult, GenerateTimings } from "./pipeline/generation.js";
export type { BackendLimits, BackendName } from "./backends/backend.js";
export { SCHEDULER_NAMES } from "./schedulers/index.js";
export type { SchedulerName } from "./schedulers/index.js";
export { RNG_SOURCES } from "./rng/index.js";
export type { RngSource } from "./rng/index.js";

// Serving
export { PipelineService } from "./service/index.js";
export type { DeviceCounters, GenerationService, PipelineServiceOptions, RunningState, ServiceCallOptions, ServiceCounters, ServiceRequest, ServiceResult } from "./service/index.js";
export { SdServer, DEFAULT_MAX_BODY_BYTES } from "./server/index.js";
export type { ErrorBody, ListenOptions, SdServerOptions } from "./server/index.js";

// Image files
export { encodeImage, formatFromExtension, IMAGE_FORMATS, readPngText } from "./image/index.js";
export type { EncodeOptions, ImageFormat, PngText } from "./image/index.js";
