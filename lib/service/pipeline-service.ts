/**
 * `PipelineService`: a Pipeline made safe and efficient for a server.
 *
 * ```ts
 * const service = await PipelineService.create(await Pipeline.load(), { maxQueue: 64, batchWindowMs: 5 });
 * const result = await service.generate({ prompt: "a cabin", seeds: [1], width: 512, height: 512, signal });
 * ```
 *
 * - Concurrent `generate()` calls queue safely (one batch runs at a time on the pipeline).
 * - Compatible requests — same size, steps, scheduler, guidance on/off, txt2img or img2img with
 *   the same strength — are merged into one backend batch (up to the backend's maximum batch)
 *   when they wait together; an idle service waits up to `batchWindowMs` for company. Each
 *   caller gets exactly the images its own options give alone: noise, prompts and guidance stay
 *   per request (`Pipeline.generateBatch`, pipeline/generation.ts). The `rng` source need not
 *   match: noise is per request.
 * - `signal` cancels: a queued request is removed; a running request is rejected at once. A
 *   request running alone stops its generation between steps; a request sharing a merged batch
 *   leaves the batch running for the others (it is aborted when all of its members cancelled).
 * - `onProgress` gets the progress events of the batch the request runs in.
 * - The queue is bounded: a request that finds `maxQueue` requests waiting is refused with a
 *   `BusyError` (code `ERR_BUSY`).
 * - `counters()`: queued, running, done, failed, cancelled, rejected, batches, batchedRequests, images.
 * - **Several devices.** Given one pipeline per device (`Pipeline.load(dir, { device })`), the
 *   service keeps one queue and runs one batch per device at a time: a request goes to whichever
 *   device is idle first, and batching happens per device. The pipelines must serve the same
 *   model on the same backend, so a request's images do not depend on the device that ran it.
 *   `devices()` has the per-device counters.
 *
 * Invalid options are rejected before queueing (InvalidOptionError naming the option), so a bad
 * request never reaches a merged batch.
 */
import { InvalidOptionError } from "../errors.js";
import { integerInRange, numberInRange } from "../validate.js";
import { basename } from "node:path";
import type { BackendLimits, BackendName } from "../backends/backend.js";
import type { GenerateOptions, GenerateResult, Pipeline, ProgressEvent } from "../pipeline/pipeline.js";
import type { ResolvedRequest } from "../pipeline/options.js";
import { batchKey } from "../pipeline/generation.js";
import { BatchingQueue, type BatchEngine, type QueueCounters, type RunningState } from "./batching-queue.js";
import type { DeviceCounters, GenerationService, ServiceCallOptions, ServiceRequest } from "./generation-service.js";

export type { DeviceCounters, ServiceCallOptions, ServiceRequest } from "./generation-service.js";
export type ServiceResult = GenerateResult;
export type ServiceCounters = QueueCounters;

export interface PipelineServiceOptions {
  /** Most requests waiting (the running batch not counted); more are refused with ERR_BUSY. 1 … 100000, defaults to 64. */
  maxQueue?: number;
  /** How long an idle service waits for compatible requests to merge, in ms (0 … 60000). Defaults to 5. */
  batchWindowMs?: number;
  /** Most images per merged batch, 1 … the backend's maximum batch (the default). */
  maxBatch?: number;
  /** Dispose the pipeline when the service is disposed. Defaults to false. */
  ownPipeline?: boolean;
}

interface Job {
  options: ServiceRequest;
  resolved?: ResolvedRequest;
}

export class PipelineService implements GenerationService {
  readonly #pipelines: readonly Pipeline[];
  readonly #queue: BatchingQueue<Job, GenerateResult, ProgressEvent>;
  readonly #ownPipeline: boolean;
  readonly #modelHash: string | undefined;
  #disposed: Promise<void> | null = null;

  private constructor(pipelines: readonly Pipeline[], queue: BatchingQueue<Job, GenerateResult, ProgressEvent>, ownPipeline: boolean, modelHash: string | undefined) {
    this.#pipelines = pipelines;
    this.#queue = queue;
    this.#ownPipeline = ownPipeline;
    this.#modelHash = modelHash;
  }

  /**
   * Wraps a loaded pipeline, or one pipeline per device (same model, same backend, distinct devices).
   * @throws InvalidOptionError (`pipelines`) when the pipelines differ in model, backend or limits, or share a device.
   */
  static async create(pipelines: Pipeline | readonly Pipeline[], options: PipelineServiceOptions = {}): Promise<PipelineService> {
    const all = Array.isArray(pipelines) ? (pipelines as readonly Pipeline[]) : [pipelines as Pipeline];
    const pipeline = all[0];
    if (!pipeline) throw new InvalidOptionError("pipelines", "pipelines must hold at least one pipeline, got an empty array");
    checkSameModel(all);
    const maxQueue = integerInRange("maxQueue", options.maxQueue ?? 64, 1, 100_000);
    const windowMs = numberInRange("batchWindowMs", options.batchWindowMs ?? 5, 0, 60_000);
    const maxBatch = integerInRange("maxBatch", options.maxBatch ?? pipeline.limits.maxBatch, 1, pipeline.limits.maxBatch);

    // Alone or merged, a batch runs through the pipelines' one generation implementation, on the
    // pipeline of the slot (device) the queue gave it. Requests are validated once, by the first
    // pipeline: the pipelines are checked to accept exactly the same requests.
    const run = (jobs: Job[], signal: AbortSignal, onProgress: (event: ProgressEvent) => void, slot: number) =>
      all[slot]!.generateBatch(
        jobs.map((j) => j.resolved!),
        { signal, onProgress },
      );
    const engine: BatchEngine<Job, GenerateResult, ProgressEvent> = {
      maxBatch,
      slots: all.length,
      validate(job) {
        job.resolved = pipeline.resolveOptions(job.options);
      },
      imagesOf: (job) => job.resolved!.batch,
      keyOf: (job) => batchKey(job.resolved!),
      runOne: async (job, signal, onProgress, slot) => (await run([job], signal, onProgress, slot))[0]!,
      runMerged: run,
    };
    const queue = new BatchingQueue(engine, { maxQueue, batchWindowMs: windowMs, maxBatch });
    const modelHash = await pipeline.modelHash().catch(() => undefined);
    return new PipelineService(all, queue, options.ownPipeline ?? false, modelHash);
  }

  /** The first pipeline (the only one unless the service runs several devices). */
  get pipeline(): Pipeline {
    return this.#pipelines[0]!;
  }

  /** Every pipeline, one per device, in slot order. */
  get pipelines(): readonly Pipeline[] {
    return this.#pipelines;
  }

  get limits(): BackendLimits {
    return { ...this.pipeline.limits, maxBatch: this.#queue.maxBatch };
  }

  get backendName(): BackendName {
    return this.pipeline.backendName;
  }

  get modelDir(): string {
    return this.pipeline.modelDir;
  }

  /** A1111's `sd_model_name`: the checkpoint's name for a converted model, else the model folder's name. */
  get modelName(): string {
    return this.pipeline.sourceCheckpoint?.name ?? basename(this.pipeline.modelDir);
  }

  /** A1111's "Model hash" of the loaded model. */
  get modelHash(): string | undefined {
    return this.#modelHash;
  }

  get maxQueue(): number {
    return this.#queue.maxQueue;
  }

  /** Generates, through the queue. See the class comment for batching and cancellation. */
  generate(options: GenerateOptions): Promise<GenerateResult> {
    const { signal, onProgress, ...request } = options;
    return this.generateAll([request], { signal, onProgress })[0]!;
  }

  /**
   * Queues several requests at once (an A1111 request with n_iter > 1): all are admitted or all
   * rejected with the same error. They may be merged with each other and with other requests.
   */
  generateAll(requests: ServiceRequest[], call: ServiceCallOptions = {}): Promise<GenerateResult>[] {
    return this.#queue.submitAll(requests.map((options) => ({ request: { options }, signal: call.signal, onProgress: call.onProgress })));
  }

  counters(): ServiceCounters {
    return this.#queue.counters();
  }

  /** Per-device counters: what each pipeline ran, and whether it is busy now. */
  devices(): DeviceCounters[] {
    return this.#queue.slotCounters().map(({ slot, ...counters }) => ({ device: this.#pipelines[slot]!.device, ...counters }));
  }

  /** For `/health`: the per-device counters. */
  status(): Record<string, unknown> {
    return { devices: this.devices() };
  }

  /** The running batch (requests, images, start time, last progress event), or null when idle. */
  running(): RunningState<ProgressEvent> | null {
    return this.#queue.running();
  }

  /** Cancels the running batch (A1111's interrupt); queued requests stay. Returns how many requests were cancelled. */
  interrupt(): number {
    return this.#queue.interrupt();
  }

  /**
   * Stops accepting requests; what is queued or running gets `drainMs` to finish, then is
   * cancelled. Resolves when nothing runs. Does not dispose the pipeline (see `dispose`).
   */
  close(drainMs = 0): Promise<void> {
    return this.#queue.close(drainMs);
  }

  /** Closes (cancelling at once what is left) and disposes the pipeline if the service owns it. Idempotent. */
  dispose(): Promise<void> {
    this.#disposed ??= (async () => {
      await this.#queue.close(0);
      if (this.#ownPipeline) await Promise.all(this.#pipelines.map((p) => p.dispose()));
    })();
    return this.#disposed;
  }

  async [Symbol.asyncDispose](): Promise<void> {
    await this.dispose();
  }
}

/** The pipelines of one service must accept the same requests and make the same images. */
function checkSameModel(pipelines: readonly Pipeline[]): void {
  const first = pipelines[0]!;
  const limits = JSON.stringify(first.limits);
  const devices = new Set<number>();
  for (const p of pipelines) {
    const describe = (q: Pipeline) => `${q.modelDir} on ${q.backendName} (limits ${JSON.stringify(q.limits)})`;
    if (p.modelDir !== first.modelDir || p.backendName !== first.backendName || JSON.stringify(p.limits) !== limits || p.defaultScheduler !== first.defaultScheduler) {
      throw new InvalidOptionError(
        "pipelines",
        `pipelines of one service must load the same model on the same backend with the same limits (build the same engine profiles on every device); device ${first.device} has ${describe(first)}, device ${p.device} has ${describe(p)}`,
      );
    }
    if (devices.has(p.device)) throw new InvalidOptionError("pipelines", `pipelines of one service must run on distinct devices; device ${p.device} appears twice`);
    devices.add(p.device);
  }
}
