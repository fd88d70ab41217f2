/**
 * `GenerationService`: what the HTTP server needs from whatever runs its generations.
 *
 * Two implementations: `PipelineService` (pipelines in this process, one per device) and the
 * fleet's `RedisQueueClient` (lib/fleet: jobs on a BullMQ queue, run by `sd-trt worker`
 * processes that each run a PipelineService). The server, its A1111 handlers and the web page
 * are written once against this interface.
 */
import type { BackendLimits, BackendName } from "../backends/backend.js";
import type { GenerateOptions, GenerateResult, ProgressEvent } from "../pipeline/pipeline.js";
import type { QueueCounters, RunningState } from "./batching-queue.js";

/** A generation request as a service takes it: `generate()` options without the per-call hooks. */
export type ServiceRequest = Omit<GenerateOptions, "signal" | "onProgress">;

export interface ServiceCallOptions {
  /** Cancels the request (queued: removed; running: rejected at once). */
  signal?: AbortSignal;
  /** Progress of the batch the request runs in. */
  onProgress?: (event: ProgressEvent) => void;
}

/** What one device's pipeline has done (`PipelineService.devices()`). */
export interface DeviceCounters {
  /** The pipeline's device index (`Pipeline.device`). */
  device: number;
  /** Whether a batch runs on it now. */
  busy: boolean;
  batches: number;
  /** Requests it finished with a result. */
  done: number;
  failed: number;
  images: number;
}

export interface GenerationService {
  readonly backendName: BackendName;
  /** The model folder (as the machine that runs it names it). */
  readonly modelDir: string;
  /** A1111's `sd_model_name`. */
  readonly modelName: string;
  /** A1111's "Model hash". */
  readonly modelHash: string | undefined;
  /** What a request may ask for. */
  readonly limits: BackendLimits;
  /** Most requests waiting; more are refused with ERR_BUSY. */
  readonly maxQueue: number;
  /** Queues requests, all admitted or all refused with the same error; one promise per request. */
  generateAll(requests: ServiceRequest[], call?: ServiceCallOptions): Promise<GenerateResult>[];
  counters(): QueueCounters;
  /** What runs now (for A1111's progress), or null when nothing does. */
  running(): RunningState<ProgressEvent> | null;
  /** A1111's interrupt: cancels what runs now; returns how many requests it cancelled. */
  interrupt(): number;
  /** Stops taking requests; what is queued or running gets `drainMs` to finish. */
  close(drainMs?: number): Promise<void>;
  dispose(): Promise<void>;
  /** Extra state for `/health`: per-device counters, or the fleet's workers and queue. */
  status(): Record<string, unknown>;
  /** The textual-inversion embeddings prompts can use (absent: none, or not known here). */
  embeddings?(): readonly { name: string; count: number }[];
}
