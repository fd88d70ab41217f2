/**
 * `RedisQueueClient`: a GenerationService whose requests run on a fleet of `sd-trt worker`s
 * through a BullMQ queue — what `sd-trt serve --redis URL` serves, and what a service uses to
 * send work to the fleet without HTTP.
 *
 * ```ts
 * const client = await RedisQueueClient.connect({ redis: "redis://10.0.0.5:6379" });
 * const [result] = await Promise.all(client.generateAll([{ prompt: "a cabin", seeds: [1], width: 512, height: 512 }]));
 * ```
 *
 * - The model, its limits and the backend are what the registered workers publish (lib/fleet/redis.ts);
 *   with no live worker, requests get QueueUnavailableError (HTTP 503). `model` pins the model
 *   jobs ask for instead.
 * - Every job has explicit seeds (random ones are drawn here, before enqueueing), the model's
 *   name and hash, and the whole request, so a retry makes the same images.
 * - Busy: when the queue already holds `maxQueue` waiting jobs (from every front end), requests
 *   are refused with BusyError (HTTP 503), all of a group or none.
 * - Cancellation: a waiting job is removed; a running one is cancelled on its worker (pub/sub);
 *   either way the caller is answered at once. `interrupt()` cancels this client's running jobs.
 * - Progress comes from the workers' `job.updateProgress` through BullMQ's event stream.
 * - Retries: each job may run `attempts` times (failures a retry cannot fix fail at once); a job
 *   whose worker died is retried by another. Failed jobs stay listed (`failedJobs()`).
 */
import { randomUUID } from "node:crypto";
import { Job, Queue, QueueEvents } from "bullmq";
import type { Redis } from "ioredis";
import type { BackendLimits, BackendName } from "../backends/backend.js";
import { AbortError, BusyError, JobFailedError, QueueUnavailableError, ServiceClosedError, throwIfAborted } from "../errors.js";
import type { GenerateResult } from "../pipeline/generation.js";
import { type ProgressEvent, randomSeed } from "../pipeline/options.js";
import type { QueueCounters, RunningState } from "../service/batching-queue.js";
import type { GenerationService, ServiceCallOptions, ServiceRequest } from "../service/generation-service.js";
import { integerInRange } from "../validate.js";
import {
  type CancelMessage,
  cancelChannel,
  DEFAULT_QUEUE,
  FLEET_PROTOCOL,
  type FleetJobData,
  type FleetJobReturn,
  type FleetModel,
  fromFailedReason,
  fromWireResult,
  resultKey,
  toWireRequest,
  type WireResult,
} from "./protocol.js";
import { checkQueueName, checkRedisUrl, connectRedis, HEARTBEAT_MS, listWorkers, type WorkerInfo } from "./redis.js";

export interface RedisQueueClientOptions {
  /** Redis URL (`redis://host:port[/db]`). */
  redis: string;
  /** BullMQ queue name. Defaults to "sd-trt". */
  queue?: string;
  /** Most jobs waiting in the queue (all front ends together); more are refused with ERR_BUSY. 1 … 100000, defaults to 64. */
  maxQueue?: number;
  /** Runs a job may get (a worker crash or transient failure uses one). 1 … 20, defaults to 3. */
  attempts?: number;
  /** The model jobs ask for. Defaults to the model of the registered workers. */
  model?: FleetModel;
  /** Failed jobs kept for `failedJobs()`. Defaults to 1000. */
  keepFailed?: number;
  log?: (line: string) => void;
}

export interface FailedJob {
  id: string;
  /** The worker-side error's code (ERR_INVALID_OPTION, ERR_MODEL_MISMATCH, ABORT_ERR, …). */
  code: string;
  reason: string;
  attemptsMade: number;
  finishedOn: number | undefined;
  model: FleetModel;
}

interface Pending {
  id: string;
  state: "waiting" | "active";
  images: number;
  startedAt: number;
  progress: ProgressEvent | undefined;
  onProgress: ((event: ProgressEvent) => void) | undefined;
  resolve: (result: GenerateResult) => void;
  reject: (error: unknown) => void;
  detachAbort: (() => void) | undefined;
}

/** How often jobs still pending are checked against Redis, in case their end event was missed (a Redis restart). */
const RECONCILE_MS = 5000;

export class RedisQueueClient implements GenerationService {
  readonly queueName: string;
  readonly maxQueue: number;
  readonly #attempts: number;
  readonly #keepFailed: number;
  readonly #pinned: FleetModel | undefined;
  readonly #redis: Redis;
  readonly #queue: Queue<FleetJobData, FleetJobReturn>;
  readonly #events: QueueEvents;
  readonly #eventsRedis: Redis;
  readonly #log: (line: string) => void;
  readonly #pending = new Map<string, Pending>();
  readonly #timers: NodeJS.Timeout[] = [];
  #workers: WorkerInfo[] = [];
  #waitingInQueue = 0;
  #closed = false;
  #disposed: Promise<void> | null = null;
  #counters = { done: 0, failed: 0, cancelled: 0, rejected: 0, batches: 0, batchedRequests: 0, images: 0 };

  private constructor(options: RedisQueueClientOptions, redis: Redis, queue: Queue<FleetJobData, FleetJobReturn>, events: QueueEvents, eventsRedis: Redis, log: (line: string) => void) {
    this.#eventsRedis = eventsRedis;
    this.queueName = queue.name;
    this.maxQueue = integerInRange("maxQueue", options.maxQueue ?? 64, 1, 100_000);
    this.#attempts = integerInRange("attempts", options.attempts ?? 3, 1, 20);
    this.#keepFailed = integerInRange("keepFailed", options.keepFailed ?? 1000, 0, 1_000_000);
    this.#pinned = options.model;
    this.#redis = redis;
    this.#queue = queue;
    this.#events = events;
    this.#log = log;
  }

  /** Connects to Redis, reads the worker registry, and listens to the queue's events. */
  static async connect(options: RedisQueueClientOptions): Promise<RedisQueueClient> {
    const url = checkRedisUrl(options.redis);
    const name = checkQueueName(options.queue ?? DEFAULT_QUEUE);
    const log = options.log ?? (() => {});
    let last = "";
    const onError = (error: Error) => {
      if (error.message !== last) log(`redis: ${error.message}`);
      last = error.message;
    };
    const redis = connectRedis(url, onError);
    const queue = new Queue<FleetJobData, FleetJobReturn>(name, { connection: redis });
    queue.on("error", onError);
    // QueueEvents blocks on its connection (XREAD): it needs one of its own.
    const eventsRedis = connectRedis(url, onError);
    const events = new QueueEvents(name, { connection: eventsRedis });
    events.on("error", onError);
    const client = new RedisQueueClient(options, redis, queue, events, eventsRedis, log);
    client.#listen();
    await Promise.all([queue.waitUntilReady(), events.waitUntilReady()]);
    await client.#refresh();
    client.#timers.push(setInterval(() => void client.#refresh(), HEARTBEAT_MS), setInterval(() => void client.#reconcile(), RECONCILE_MS));
    for (const timer of client.#timers) timer.unref();
    return client;
  }

  /** The live workers, as last read from the registry. */
  get workers(): readonly WorkerInfo[] {
    return this.#workers;
  }

  /** The worker whose model the jobs ask for (the pinned model's, else the first registered). */
  #worker(): WorkerInfo {
    const worker = this.#pinned ? this.#workers.find((w) => w.model.hash === this.#pinned!.hash) : this.#workers[0];
    if (!worker) {
      const what = this.#pinned ? `for model ${this.#pinned.name} (hash ${this.#pinned.hash}) ` : "";
      throw new QueueUnavailableError(`no sd-trt worker ${what}is registered on queue ${this.queueName}; start one with: sd-trt worker --redis <url> --queue ${this.queueName}`);
    }
    return worker;
  }

  get model(): FleetModel {
    if (this.#pinned) return this.#pinned;
    const { name, hash } = this.#worker().model;
    return { name, hash };
  }

  get backendName(): BackendName {
    return this.#workers[0]?.backend ?? "cpu";
  }

  get modelDir(): string {
    return this.#workers[0]?.model.dir ?? "";
  }

  get modelName(): string {
    return this.#pinned?.name ?? this.#workers[0]?.model.name ?? "(no worker registered)";
  }

  get modelHash(): string | undefined {
    return this.#pinned?.hash ?? this.#workers[0]?.model.hash;
  }

  /** The embeddings of the worker jobs go to (the front end holds none of its own). */
  embeddings(): readonly { name: string; count: number }[] {
    return this.#worker().embeddings ?? [];
  }

  /** The workers' limits. @throws QueueUnavailableError when no worker is registered. */
  get limits(): BackendLimits {
    return { ...this.#worker().limits };
  }

  generateAll(requests: ServiceRequest[], call: ServiceCallOptions = {}): Promise<GenerateResult>[] {
    const entries = requests.map(() => {
      let resolve!: (result: GenerateResult) => void;
      let reject!: (error: unknown) => void;
      const promise = new Promise<GenerateResult>((res, rej) => {
        resolve = res;
        reject = rej;
      });
      return { promise, resolve, reject };
    });
    this.#admit(requests, call).then(
      (ids) => {
        for (const [i, entry] of entries.entries()) this.#track(ids[i]!, requests[i]!, call, entry.resolve, entry.reject);
      },
      (error: unknown) => {
        for (const entry of entries) entry.reject(error);
      },
    );
    return entries.map((e) => e.promise);
  }

  /** Validates and enqueues, all or none; resolves with the job ids. */
  async #admit(requests: ServiceRequest[], call: ServiceCallOptions): Promise<string[]> {
    if (this.#closed) throw new ServiceClosedError();
    throwIfAborted(call.signal);
    const model = this.model;
    const jobs = requests.map((request) => {
      // Explicit seeds make the job reproducible; a random draw is made once, here.
      const seeded = request.seed === undefined && request.seeds === undefined ? { ...request, seed: randomSeed() } : request;
      const data: FleetJobData = { protocol: FLEET_PROTOCOL, model, request: toWireRequest(seeded) };
      return { name: "generate", data, opts: { jobId: randomUUID(), attempts: this.#attempts, removeOnComplete: true, removeOnFail: { count: this.#keepFailed } } };
    });
    const waiting = await this.#queue.count();
    if (waiting + jobs.length > this.maxQueue) {
      this.#counters.rejected += jobs.length;
      throw new BusyError(waiting, this.maxQueue, jobs.length);
    }
    throwIfAborted(call.signal);
    await this.#queue.addBulk(jobs);
    return jobs.map((j) => j.opts.jobId);
  }

  #track(id: string, request: ServiceRequest, call: ServiceCallOptions, resolve: (r: GenerateResult) => void, reject: (e: unknown) => void): void {
    const images = request.batch ?? request.seeds?.length ?? (Array.isArray(request.prompt) ? request.prompt.length : 1);
    const pending: Pending = { id, state: "waiting", images, startedAt: performance.now(), progress: undefined, onProgress: call.onProgress, resolve, reject, detachAbort: undefined };
    this.#pending.set(id, pending);
    const signal = call.signal;
    if (signal) {
      const onAbort = () => this.#cancel([pending], signal.reason instanceof Error ? signal.reason : new AbortError("the request was cancelled"));
      signal.addEventListener("abort", onAbort, { once: true });
      pending.detachAbort = () => signal.removeEventListener("abort", onAbort);
      if (signal.aborted) onAbort();
    }
  }

  #listen(): void {
    this.#events.on("active", ({ jobId }) => {
      const pending = this.#pending.get(jobId);
      if (pending && pending.state === "waiting") {
        pending.state = "active";
        pending.startedAt = performance.now();
        this.#counters.batches++;
      }
    });
    this.#events.on("progress", ({ jobId, data }) => {
      const pending = this.#pending.get(jobId);
      if (!pending || typeof data !== "object" || data === null) return;
      const event = data as ProgressEvent;
      pending.progress = event;
      try {
        pending.onProgress?.(event);
      } catch {
        // A listener's failure must not break the client.
      }
    });
    this.#events.on("completed", ({ jobId, returnvalue }) => void this.#completed(jobId, returnvalue));
    this.#events.on("failed", ({ jobId, failedReason }) => void this.#failed(jobId, failedReason));
  }

  async #completed(jobId: string, returnvalue: unknown): Promise<void> {
    const pending = this.#pending.get(jobId);
    if (!pending) return;
    try {
      const value = (typeof returnvalue === "string" ? JSON.parse(returnvalue) : returnvalue) as FleetJobReturn;
      const text = await this.#redis.get(value.resultKey);
      if (text === null) throw new JobFailedError(jobId, "ERR_RESULT_LOST", `the result under ${value.resultKey} is gone (expired, or Redis restarted)`, 1);
      void this.#redis.del(value.resultKey).catch(() => undefined);
      const result = fromWireResult(JSON.parse(text) as WireResult);
      if (this.#settle(pending)) {
        this.#counters.done++;
        this.#counters.images += result.images.length;
        pending.resolve(result);
      }
    } catch (error) {
      if (this.#settle(pending)) {
        this.#counters.failed++;
        pending.reject(error);
      }
    }
  }

  async #failed(jobId: string, failedReason: string): Promise<void> {
    const pending = this.#pending.get(jobId);
    if (!pending) return;
    const job = await Job.fromId<FleetJobData, FleetJobReturn>(this.#queue, jobId).catch(() => undefined);
    const error = fromFailedReason(jobId, failedReason, job?.attemptsMade ?? 1);
    if (this.#settle(pending)) {
      if (error instanceof AbortError) this.#counters.cancelled++;
      else this.#counters.failed++;
      pending.reject(error);
    }
  }

  /** Removes a pending job from the books; false when it was already settled. */
  #settle(pending: Pending): boolean {
    if (this.#pending.get(pending.id) !== pending) return false;
    this.#pending.delete(pending.id);
    pending.detachAbort?.();
    return true;
  }

  /** Answers the callers at once, then removes waiting jobs and asks workers to stop running ones. */
  #cancel(entries: Pending[], error: unknown): number {
    const live = entries.filter((p) => this.#settle(p));
    for (const pending of live) {
      this.#counters.cancelled++;
      pending.reject(error);
    }
    if (live.length === 0) return 0;
    const reason = error instanceof Error ? error.message : String(error);
    void (async () => {
      const running: string[] = [];
      for (const pending of live) {
        // remove() refuses a job a worker holds the lock of: that one is running.
        const removed = await this.#queue.remove(pending.id).catch(() => 0);
        if (removed !== 1) running.push(pending.id);
      }
      if (running.length > 0) {
        const message: CancelMessage = { jobIds: running, reason };
        await this.#redis.publish(cancelChannel(this.queueName), JSON.stringify(message));
      }
    })().catch((e: unknown) => this.#log(`cancel failed: ${String(e)}`));
    return live.length;
  }

  /** Catches up on jobs whose end event was missed (events are not replayed across a Redis restart). */
  async #reconcile(): Promise<void> {
    const stale = [...this.#pending.values()].filter((p) => performance.now() - p.startedAt > RECONCILE_MS);
    for (const pending of stale) {
      const job = await Job.fromId<FleetJobData, FleetJobReturn>(this.#queue, pending.id).catch(() => null);
      if (job === null) continue; // Redis unreachable: try again later
      if (job === undefined) {
        // Removed on completion (its end event missed), or lost with a Redis that restarted
        // while it ran; the worker writes the result before completing, so the key tells which.
        const key = resultKey(this.queueName, pending.id);
        if ((await this.#redis.exists(key).catch(() => 0)) === 1) {
          await this.#completed(pending.id, { resultKey: key, worker: "" });
          continue;
        }
        if (this.#settle(pending)) {
          this.#counters.failed++;
          pending.reject(new JobFailedError(pending.id, "ERR_JOB_LOST", "the job is no longer in Redis (Redis restarted without persistence?)", 0));
        }
        continue;
      }
      if (job.finishedOn && job.failedReason) await this.#failed(pending.id, job.failedReason);
      else if (job.finishedOn && job.returnvalue) await this.#completed(pending.id, job.returnvalue);
    }
  }

  async #refresh(): Promise<void> {
    try {
      this.#workers = (await listWorkers(this.#redis, this.queueName)).sort((a, b) => a.startedAt.localeCompare(b.startedAt));
      this.#waitingInQueue = await this.#queue.count();
    } catch {
      // Redis is away: keep what we knew; ioredis reconnects.
    }
  }

  counters(): QueueCounters {
    let queued = 0;
    let running = 0;
    for (const p of this.#pending.values()) {
      if (p.state === "active") running++;
      else queued++;
    }
    return { queued, running, ...this.#counters };
  }

  running(): RunningState<ProgressEvent> | null {
    const active = [...this.#pending.values()].filter((p) => p.state === "active").sort((a, b) => a.startedAt - b.startedAt);
    const first = active[0];
    if (!first) return null;
    return { requests: active.length, images: active.reduce((n, p) => n + p.images, 0), startedAt: first.startedAt, progress: first.progress };
  }

  interrupt(): number {
    const active = [...this.#pending.values()].filter((p) => p.state === "active");
    return this.#cancel(active, new AbortError("interrupted"));
  }

  /** The most recent failed jobs with their reasons, newest first. */
  async failedJobs(limit = 50): Promise<FailedJob[]> {
    const jobs = await this.#queue.getFailed(0, Math.max(0, limit - 1));
    return jobs.map((job) => {
      let code = "ERR_QUEUE";
      let reason = job.failedReason;
      try {
        const parsed = JSON.parse(job.failedReason) as { code: string; message: string };
        code = parsed.code;
        reason = parsed.message;
      } catch {
        // BullMQ's own reasons are plain text.
      }
      return { id: job.id ?? "", code, reason, attemptsMade: job.attemptsMade, finishedOn: job.finishedOn, model: job.data.model };
    });
  }

  status(): Record<string, unknown> {
    return {
      fleet: {
        queue: this.queueName,
        waiting: this.#waitingInQueue,
        workers: this.#workers.map((w) => ({ id: w.id, host: w.host, model: w.model.name, hash: w.model.hash, backend: w.backend, devices: w.devices })),
      },
    };
  }

  /** Stops taking requests; pending ones get `drainMs` to finish, then are cancelled. */
  async close(drainMs = 0): Promise<void> {
    this.#closed = true;
    const deadline = Date.now() + drainMs;
    while (this.#pending.size > 0 && Date.now() < deadline) await new Promise((resolve) => setTimeout(resolve, 20));
    if (this.#pending.size > 0) this.#cancel([...this.#pending.values()], new AbortError("the service is shutting down"));
  }

  dispose(): Promise<void> {
    this.#disposed ??= (async () => {
      await this.close(0);
      for (const timer of this.#timers) clearInterval(timer);
      await this.#events.close().catch(() => undefined);
      await this.#queue.close().catch(() => undefined);
      await this.#redis.quit().catch(() => undefined);
      this.#eventsRedis.disconnect();
    })();
    return this.#disposed;
  }

  async [Symbol.asyncDispose](): Promise<void> {
    await this.dispose();
  }
}
