/**
 * `createWorker`: runs fleet jobs from a BullMQ queue on a PipelineService (the `sd-trt worker`
 * command is this plus model loading and signals).
 *
 * ```ts
 * const service = await PipelineService.create(await Pipeline.load(dir), { ownPipeline: true });
 * const worker = await createWorker({ redis: "redis://10.0.0.5:6379", service });
 * // … on SIGTERM:
 * await worker.close(30_000);
 * ```
 *
 * - One generation path: a job's request goes through `service.generate` exactly as an HTTP
 *   request on a local server does, so its images equal `sd-trt generate` for its parameters.
 * - A job for another model, or of another protocol version, fails at once with the reason
 *   (UnrecoverableError: retrying elsewhere would not help a fleet that runs one model a queue).
 * - Errors that depend only on the job (invalid options, an interrupt, a VAE overflow) fail it
 *   for good; others (the worker shutting down, a backend failure) leave BullMQ's bounded
 *   retries to another attempt.
 * - A worker that dies (SIGKILL, lost machine) stops renewing its job locks; after
 *   `stallTimeoutMs` another worker's stall check puts the jobs back in the queue.
 * - `close(drainMs)`: takes no new jobs; running ones get `drainMs` to finish, then are handed
 *   back (moved to the waiting list, not failed) so another worker runs them at once.
 * - Interrupts: front ends publish job ids on the queue's cancel channel; the worker aborts those
 *   it runs (BullMQ's `cancelJob` → the processor's AbortSignal → the service's signal).
 */
import { hostname } from "node:os";
import { randomUUID } from "node:crypto";
import { type Job, UnrecoverableError, WaitingError, Worker } from "bullmq";
import { AbortError, InvalidOptionError, ModelMismatchError } from "../errors.js";
import type { ProgressEvent } from "../pipeline/options.js";
import type { PipelineService } from "../service/pipeline-service.js";
import { integerInRange } from "../validate.js";
import {
  type CancelMessage,
  cancelChannel,
  DEFAULT_QUEUE,
  FLEET_PROTOCOL,
  type FleetJobData,
  type FleetJobReturn,
  fromWireRequest,
  RESULT_TTL_SECONDS,
  resultKey,
  toWireFailure,
  toWireResult,
  workerKey,
} from "./protocol.js";
import { checkQueueName, checkRedisUrl, connectRedis, HEARTBEAT_MS, WORKER_TTL_MS, type WorkerInfo } from "./redis.js";

export interface FleetWorkerOptions {
  /** Redis URL (`redis://host:port[/db]`). */
  redis: string;
  /** BullMQ queue name. Defaults to "sd-trt". */
  queue?: string;
  /** Runs the jobs; the worker disposes it on close unless `ownService` is false. */
  service: PipelineService;
  /** Jobs taken at once; the service batches and spreads them over its devices. Defaults to 2 per device. 1 … 1024. */
  concurrency?: number;
  /** How long a dead worker's job stays claimed before another worker retries it, ms (1000 … 600000). Defaults to 30000. */
  stallTimeoutMs?: number;
  /** Dispose the service on close. Defaults to true. */
  ownService?: boolean;
  /** Lifecycle and per-job lines. */
  log?: (line: string) => void;
}

export interface FleetWorker {
  readonly id: string;
  readonly queue: string;
  /** Jobs finished by this worker: completed, failed for good, handed back. */
  counters(): { completed: number; failed: number; handedBack: number };
  /** Stops taking jobs; running ones get `drainMs` to finish, then are handed back. Idempotent. */
  close(drainMs?: number): Promise<void>;
  /** Hands the running jobs back to the queue now (a second signal during `close`). */
  handBack(): void;
}

/** Errors that a retry cannot fix: the job itself is the cause. */
const FINAL_CODES = new Set(["ERR_INVALID_OPTION", "ERR_MODEL_MISMATCH", "ABORT_ERR", "ERR_VAE_NAN", "ERR_UNET_NAN", "ERR_INVALID_IMAGE"]);
/** The reason a worker's own shutdown gives the jobs it cancels. */
const HAND_BACK = "the worker is shutting down: job handed back";
/** Fewest milliseconds between two progress writes of one job (each is a Redis round trip and an event). */
const PROGRESS_INTERVAL_MS = 100;

export async function createWorker(options: FleetWorkerOptions): Promise<FleetWorker> {
  const url = checkRedisUrl(options.redis);
  const queue = checkQueueName(options.queue ?? DEFAULT_QUEUE);
  const service = options.service;
  const devices = service.pipelines.map((p) => p.device);
  const concurrency = integerInRange("concurrency", options.concurrency ?? 2 * devices.length, 1, 1024);
  const stallTimeoutMs = integerInRange("stallTimeoutMs", options.stallTimeoutMs ?? 30_000, 1000, 600_000);
  const log = options.log ?? (() => {});
  const id = `${hostname()}-${process.pid}-${randomUUID().slice(0, 8)}`;
  const modelHash = service.modelHash;
  if (modelHash === undefined) throw new InvalidOptionError("service", `the service's model hash could not be computed (${service.modelDir}); a fleet worker must name its model exactly`);
  const model = { name: service.modelName, hash: modelHash, dir: service.modelDir };

  const onRedisError = (() => {
    let last = "";
    return (error: Error) => {
      // While Redis is down every retry fails the same way: log each distinct message once.
      if (error.message !== last) log(`redis: ${error.message}`);
      last = error.message;
    };
  })();
  const redis = connectRedis(url, onRedisError);
  const subscriber = connectRedis(url, onRedisError);
  const counters = { completed: 0, failed: 0, handedBack: 0 };

  const info: WorkerInfo = {
    id,
    host: hostname(),
    pid: process.pid,
    protocol: FLEET_PROTOCOL,
    model,
    backend: service.backendName,
    limits: service.limits,
    devices,
    startedAt: new Date().toISOString(),
    // Published so that a front end's GET /sdapi/v1/embeddings lists what its workers' prompts can use.
    embeddings: (service.embeddings?.() ?? []).map(({ name, count }) => ({ name, count })),
  };
  const heartbeat = () => redis.set(workerKey(queue, id), JSON.stringify(info), "PX", WORKER_TTL_MS).catch(() => undefined);

  async function processJob(job: Job<FleetJobData, FleetJobReturn>, token: string | undefined, signal: AbortSignal | undefined): Promise<FleetJobReturn> {
    const data = job.data;
    try {
      if (data.protocol !== FLEET_PROTOCOL) {
        throw new InvalidOptionError("protocol", `job ${job.id} uses fleet protocol ${String(data.protocol)}; this worker speaks ${FLEET_PROTOCOL} (upgrade the front end and workers together)`);
      }
      if (data.model.hash !== model.hash) {
        throw new ModelMismatchError(`job ${job.id} asks for model ${data.model.name} (hash ${data.model.hash}); worker ${id} runs ${model.name} (hash ${model.hash}) — start a worker with that model on this queue, or use one queue per model`);
      }
      log(`job ${job.id} started (attempt ${job.attemptsStarted})`);
      let lastProgress = 0;
      const onProgress = (event: ProgressEvent) => {
        const now = performance.now();
        const last = event.stage === "denoise" && event.step === event.total;
        if (!last && now - lastProgress < PROGRESS_INTERVAL_MS) return;
        lastProgress = now;
        void job.updateProgress({ stage: event.stage, step: event.step, total: event.total }).catch(() => undefined);
      };
      const result = await service.generate({ ...fromWireRequest(data.request), ...(signal ? { signal } : {}), onProgress });
      const key = resultKey(queue, job.id!);
      await redis.set(key, JSON.stringify(toWireResult(result)), "EX", RESULT_TTL_SECONDS);
      counters.completed++;
      log(`job ${job.id} done (${result.images.length} image(s), ${result.timings.total.toFixed(0)} ms)`);
      return { resultKey: key, worker: id };
    } catch (error) {
      if (signal?.aborted && signal.reason === HAND_BACK && token !== undefined) {
        // Our own shutdown: put the job back for another worker; it has not failed.
        await job.moveToWait(token);
        counters.handedBack++;
        log(`job ${job.id} handed back`);
        throw new WaitingError();
      }
      const failure = toWireFailure(signal?.aborted && !(error instanceof AbortError) ? new AbortError(String(signal.reason ?? "interrupted")) : error);
      log(`job ${job.id} failed: ${failure.message}`);
      if (FINAL_CODES.has(failure.code)) {
        counters.failed++;
        throw new UnrecoverableError(JSON.stringify(failure));
      }
      throw new Error(JSON.stringify(failure));
    }
  }

  const worker = new Worker<FleetJobData, FleetJobReturn>(queue, processJob, {
    connection: redis,
    concurrency,
    lockDuration: stallTimeoutMs,
    stalledInterval: stallTimeoutMs,
    // A job whose worker died twice is more likely to kill workers than to be unlucky.
    maxStalledCount: 2,
    autorun: false,
  });
  worker.on("error", onRedisError);

  subscriber.on("message", (_channel: string, text: string) => {
    try {
      const message = JSON.parse(text) as CancelMessage;
      for (const jobId of message.jobIds) {
        if (worker.cancelJob(jobId, message.reason)) log(`job ${jobId} cancelled: ${message.reason}`);
      }
    } catch {
      // Not a message of ours.
    }
  });
  await subscriber.subscribe(cancelChannel(queue));
  await heartbeat();
  const timer = setInterval(heartbeat, HEARTBEAT_MS);
  timer.unref();
  void worker.run().catch((error: unknown) => log(`worker stopped: ${String(error)}`));
  await worker.waitUntilReady();
  log(`worker ${id} on queue ${queue}: model ${model.name} (hash ${model.hash}), devices ${devices.join(",")}, ${concurrency} job(s) at once`);

  let closed: Promise<void> | null = null;
  return {
    id,
    queue,
    counters: () => ({ ...counters }),
    handBack: () => worker.cancelAllJobs(HAND_BACK),
    close(drainMs = 30_000) {
      closed ??= (async () => {
        clearInterval(timer);
        const finished = worker.close();
        let timeout: NodeJS.Timeout | undefined;
        const gaveUp = new Promise<"timeout">((resolve) => (timeout = setTimeout(() => resolve("timeout"), drainMs)));
        if ((await Promise.race([finished.then(() => "done" as const), gaveUp])) === "timeout") {
          log(`drain timeout: handing back the running jobs`);
          worker.cancelAllJobs(HAND_BACK);
        }
        clearTimeout(timeout);
        await finished;
        await redis.del(workerKey(queue, id)).catch(() => undefined);
        subscriber.disconnect();
        await redis.quit().catch(() => undefined);
        if (options.ownService ?? true) await service.dispose();
        log(`worker ${id} stopped`);
      })();
      return closed;
    },
  };
}
