/**
 * A bounded FIFO queue that runs one batch at a time and merges compatible requests.
 *
 * What it guarantees (the PipelineService builds on it):
 * - **One batch at a time per slot.** A pipeline runs one batch at a time on its stream (design
 *   rule 8); this queue decides what runs next. An engine may have several slots (one pipeline
 *   per device): each idle slot takes the next batch from the one shared queue, so a request
 *   goes to whichever device frees up first, and batching happens per slot.
 * - **Bounded.** At most `maxQueue` requests wait; one more is refused at once with a
 *   `BusyError` (code `ERR_BUSY`) instead of growing the queue. Admission of a group of requests
 *   (an HTTP request with `n_iter` > 1) is all or nothing.
 * - **Dynamic batching.** Requests with the same compatibility key run together, up to `maxBatch`
 *   images. When the engine is idle, the oldest request waits at most `batchWindowMs` for
 *   company (a full batch starts at once); when the engine is busy, whatever compatible requests
 *   are waiting when it frees up are merged, so the window adds no latency under load. The oldest
 *   request always runs in the next batch: nothing is starved.
 * - **Cancellation.** A queued request whose signal aborts is removed and rejected with the
 *   signal's reason. A running request is rejected at once. If it ran alone, its run is aborted
 *   (the pipeline stops between steps). If it shares a merged batch, the others carry on and get
 *   their images; the batch itself is aborted only when every member has cancelled. Cancelling
 *   one member never fails the others.
 * - **Isolation of failures.** If a merged batch fails for a reason other than cancellation,
 *   each of its members is retried alone, so one bad request fails only itself.
 * - **Counters.** queued, running, done, failed, cancelled, rejected (busy), batches,
 *   batchedRequests (requests that ran in a batch of two or more), images.
 */
import { AbortError, BusyError, ServiceClosedError, throwIfAborted } from "../errors.js";

/** What the queue needs from whatever executes requests (the Pipeline, in the service). */
export interface BatchEngine<Req, Res, Progress> {
  /** Most images one run may hold (the backend's maximum batch). */
  readonly maxBatch: number;
  /** How many batches may run at once, one per slot (slots are numbered 0 … slots − 1). Defaults to 1. */
  readonly slots?: number;
  /** How many images a request makes (counts against maxBatch). */
  imagesOf(request: Req): number;
  /** Requests with equal keys can run merged; null means "always alone". */
  keyOf(request: Req): string | null;
  /** Throws (typed, naming the option) if the request is invalid; called before queueing. */
  validate?(request: Req): void;
  /** Runs one request alone on `slot`. */
  runOne(request: Req, signal: AbortSignal, onProgress: (event: Progress) => void, slot: number): Promise<Res>;
  /** Runs compatible requests as one batch on `slot`; results in the order of `requests`. */
  runMerged(requests: Req[], signal: AbortSignal, onProgress: (event: Progress) => void, slot: number): Promise<Res[]>;
}

export interface BatchingQueueOptions {
  /** Most requests waiting (not counting the batch that runs). Defaults to 64. */
  maxQueue?: number;
  /** How long an idle engine waits for compatible requests to merge, in ms. Defaults to 5. 0 disables waiting (requests already queued are still merged). */
  batchWindowMs?: number;
  /** Cap on images per merged batch; defaults to (and cannot exceed) the engine's maxBatch. */
  maxBatch?: number;
}

export interface SubmitOptions<Progress> {
  /** Cancels the request: removed if queued, rejected at once if running. */
  signal?: AbortSignal;
  /** Progress of the batch the request runs in. */
  onProgress?: (event: Progress) => void;
}

export interface QueueCounters {
  /** Requests waiting now. */
  queued: number;
  /** Requests in the running batch that have not been cancelled. */
  running: number;
  /** Requests that finished with a result. */
  done: number;
  /** Requests that finished with an error (other than cancellation). */
  failed: number;
  /** Requests cancelled (queued or running). */
  cancelled: number;
  /** Requests refused because the queue was full (BusyError). */
  rejected: number;
  /** Batches run (merged or not). */
  batches: number;
  /** Requests that ran in a batch together with at least one other request. */
  batchedRequests: number;
  /** Images made by successful requests. */
  images: number;
}

/** What one slot (one device's pipeline) has done. */
export interface SlotCounters {
  slot: number;
  /** Whether a batch runs on it now. */
  busy: boolean;
  /** Batches it ran. */
  batches: number;
  /** Requests it finished with a result. */
  done: number;
  /** Requests that failed on it (other than cancellation). */
  failed: number;
  /** Images made by its successful requests. */
  images: number;
}

export interface RunningState<Progress> {
  /** Requests of the running batch still waiting for their result. */
  requests: number;
  images: number;
  startedAt: number;
  /** The last progress event of the batch, if any. */
  progress: Progress | undefined;
}

interface Entry<Req, Res, Progress> {
  request: Req;
  images: number;
  key: string | null;
  enqueuedAt: number;
  signal?: AbortSignal;
  onProgress?: (event: Progress) => void;
  resolve: (value: Res) => void;
  reject: (error: unknown) => void;
  settled: boolean;
  detachAbort?: () => void;
}

interface Batch<Req, Res, Progress> {
  slot: number;
  entries: Entry<Req, Res, Progress>[];
  controller: AbortController;
  startedAt: number;
  progress: Progress | undefined;
}

function abortReason(signal: AbortSignal | undefined, fallback: string): unknown {
  const reason = signal?.reason;
  if (reason instanceof Error) return reason;
  return new AbortError(typeof reason === "string" ? reason : fallback);
}

export class BatchingQueue<Req, Res, Progress> {
  readonly #engine: BatchEngine<Req, Res, Progress>;
  readonly #maxQueue: number;
  readonly #windowMs: number;
  readonly #maxBatch: number;
  #queue: Entry<Req, Res, Progress>[] = [];
  /** The running batch of each slot (null: the slot is idle). */
  readonly #batches: Array<Batch<Req, Res, Progress> | null>;
  readonly #slotCounters: SlotCounters[];
  #timer: NodeJS.Timeout | null = null;
  #closed = false;
  #idleWaiters: Array<() => void> = [];
  #counters: Omit<QueueCounters, "queued" | "running"> = {
    done: 0,
    failed: 0,
    cancelled: 0,
    rejected: 0,
    batches: 0,
    batchedRequests: 0,
    images: 0,
  };

  constructor(engine: BatchEngine<Req, Res, Progress>, options: BatchingQueueOptions = {}) {
    this.#engine = engine;
    this.#maxQueue = options.maxQueue ?? 64;
    this.#windowMs = options.batchWindowMs ?? 5;
    this.#maxBatch = Math.min(options.maxBatch ?? engine.maxBatch, engine.maxBatch);
    const slots = engine.slots ?? 1;
    this.#batches = Array.from({ length: slots }, () => null);
    this.#slotCounters = Array.from({ length: slots }, (_, slot) => ({ slot, busy: false, batches: 0, done: 0, failed: 0, images: 0 }));
  }

  get slots(): number {
    return this.#batches.length;
  }

  /** Per-slot counters (one per device when the engine runs one pipeline per device). */
  slotCounters(): SlotCounters[] {
    return this.#slotCounters.map((c) => ({ ...c, busy: this.#batches[c.slot] !== null }));
  }

  #live(): Batch<Req, Res, Progress>[] {
    return this.#batches.filter((b): b is Batch<Req, Res, Progress> => b !== null);
  }

  get maxQueue(): number {
    return this.#maxQueue;
  }

  get maxBatch(): number {
    return this.#maxBatch;
  }

  get closed(): boolean {
    return this.#closed;
  }

  counters(): QueueCounters {
    const running = this.#live().reduce((n, b) => n + b.entries.filter((e) => !e.settled).length, 0);
    return { queued: this.#queue.length, running, ...this.#counters };
  }

  /**
   * What runs now, or null when every slot is idle: the requests and images of all running
   * batches, with the start time and last progress event of the one that started first.
   */
  running(): RunningState<Progress> | null {
    const batches = this.#live().sort((a, b) => a.startedAt - b.startedAt);
    const first = batches[0];
    if (!first) return null;
    const live = batches.flatMap((b) => b.entries.filter((e) => !e.settled));
    return {
      requests: live.length,
      images: live.reduce((n, e) => n + e.images, 0),
      startedAt: first.startedAt,
      progress: first.progress,
    };
  }

  /** Queues one request. */
  submit(request: Req, options: SubmitOptions<Progress> = {}): Promise<Res> {
    return this.submitAll([{ request, ...options }])[0]!;
  }

  /**
   * Queues several requests at once, all or none: if they do not all fit, every promise rejects
   * with the same BusyError (and an invalid one rejects them all with its error).
   */
  submitAll(items: Array<SubmitOptions<Progress> & { request: Req }>): Promise<Res>[] {
    const failAll = (error: unknown) => items.map(() => Promise.reject(error));
    if (this.#closed) return failAll(new ServiceClosedError());
    const prepared: Array<Omit<Entry<Req, Res, Progress>, "resolve" | "reject">> = [];
    try {
      for (const item of items) {
        throwIfAborted(item.signal);
        this.#engine.validate?.(item.request);
        const images = this.#engine.imagesOf(item.request);
        prepared.push({
          request: item.request,
          images,
          key: this.#engine.keyOf(item.request),
          enqueuedAt: performance.now(),
          signal: item.signal,
          onProgress: item.onProgress,
          settled: false,
        });
      }
    } catch (error) {
      return failAll(error);
    }
    if (this.#queue.length + items.length > this.#maxQueue) {
      this.#counters.rejected += items.length;
      return failAll(new BusyError(this.#queue.length, this.#maxQueue, items.length));
    }
    const promises = prepared.map(
      (base) =>
        new Promise<Res>((resolve, reject) => {
          const entry: Entry<Req, Res, Progress> = { ...base, resolve, reject };
          if (entry.signal) {
            const signal = entry.signal;
            const onAbort = () => this.#cancel(entry);
            signal.addEventListener("abort", onAbort, { once: true });
            entry.detachAbort = () => signal.removeEventListener("abort", onAbort);
          }
          this.#queue.push(entry);
        }),
    );
    this.#pump();
    return promises;
  }

  /**
   * Cancels the running batches, one per busy slot (A1111's `/sdapi/v1/interrupt`): their
   * requests are rejected with an AbortError; queued requests are untouched.
   */
  interrupt(reason = "interrupted"): number {
    let cancelled = 0;
    for (const batch of this.#live()) {
      const live = batch.entries.filter((e) => !e.settled);
      const error = new AbortError(reason);
      for (const entry of live) this.#settle(entry, "cancelled", error);
      batch.controller.abort(error);
      cancelled += live.length;
    }
    return cancelled;
  }

  /**
   * Stops taking requests. Waiting and running requests are given `drainMs` to finish; after
   * that, queued requests are rejected and the running batch is aborted. Resolves when idle.
   */
  async close(drainMs = 0): Promise<void> {
    this.#closed = true;
    if (!this.#isIdle() && drainMs > 0) {
      let timer: NodeJS.Timeout | undefined;
      await Promise.race([this.#whenIdle(), new Promise<void>((resolve) => (timer = setTimeout(resolve, drainMs)))]);
      clearTimeout(timer);
    }
    if (!this.#isIdle()) {
      const error = new AbortError("the service is shutting down");
      for (const entry of this.#queue.splice(0)) this.#settle(entry, "cancelled", error);
      this.interrupt("the service is shutting down");
      this.#clearTimer();
      await this.#whenIdle();
    }
  }

  #isIdle(): boolean {
    return this.#live().length === 0 && this.#queue.length === 0;
  }

  #whenIdle(): Promise<void> {
    if (this.#isIdle()) return Promise.resolve();
    return new Promise((resolve) => this.#idleWaiters.push(resolve));
  }

  #clearTimer(): void {
    if (this.#timer) clearTimeout(this.#timer);
    this.#timer = null;
  }

  #cancel(entry: Entry<Req, Res, Progress>): void {
    if (entry.settled) return;
    const reason = abortReason(entry.signal, "the request was cancelled");
    const queuedAt = this.#queue.indexOf(entry);
    if (queuedAt >= 0) {
      this.#queue.splice(queuedAt, 1);
      this.#settle(entry, "cancelled", reason);
      this.#pump(); // the window may now be satisfied by what is left
      return;
    }
    const batch = this.#live().find((b) => b.entries.includes(entry));
    if (batch) {
      this.#settle(entry, "cancelled", reason);
      // Stop the run only when no one is left to receive its images.
      if (batch.entries.every((e) => e.settled)) batch.controller.abort(reason);
    }
  }

  /** Settles a request once; `slot` is where it ran (for the per-slot counters), if it ran. */
  #settle(entry: Entry<Req, Res, Progress>, outcome: "done" | "failed" | "cancelled", value: unknown, slot?: number): void {
    if (entry.settled) return;
    entry.settled = true;
    entry.detachAbort?.();
    const perSlot = slot === undefined ? undefined : this.#slotCounters[slot];
    if (outcome === "done") {
      this.#counters.done++;
      this.#counters.images += entry.images;
      if (perSlot) {
        perSlot.done++;
        perSlot.images += entry.images;
      }
      entry.resolve(value as Res);
    } else {
      this.#counters[outcome]++;
      if (perSlot && outcome === "failed") perSlot.failed++;
      entry.reject(value);
    }
  }

  /** Picks the next batch: the oldest request plus compatible ones that fit, in FIFO order. */
  #pickBatch(): Entry<Req, Res, Progress>[] {
    const head = this.#queue[0]!;
    const picked = [head];
    if (head.key === null) return picked;
    let images = head.images;
    for (let i = 1; i < this.#queue.length && images < this.#maxBatch; i++) {
      const entry = this.#queue[i]!;
      if (entry.key === head.key && images + entry.images <= this.#maxBatch) {
        picked.push(entry);
        images += entry.images;
      }
    }
    return picked;
  }

  #pump(): void {
    if (this.#queue.length === 0) {
      this.#clearTimer();
      if (this.#live().length > 0) return;
      const waiters = this.#idleWaiters.splice(0);
      for (const resolve of waiters) resolve();
      return;
    }
    // Each idle slot takes the next batch; the oldest request always goes first.
    for (let slot = this.#batches.indexOf(null); slot >= 0 && this.#queue.length > 0; slot = this.#batches.indexOf(null)) {
      const picked = this.#pickBatch();
      const head = picked[0]!;
      const images = picked.reduce((n, e) => n + e.images, 0);
      const waitLeft = head.enqueuedAt + this.#windowMs - performance.now();
      if (head.key !== null && images < this.#maxBatch && waitLeft > 0 && !this.#closed) {
        if (!this.#timer) {
          this.#timer = setTimeout(() => {
            this.#timer = null;
            this.#pump();
          }, Math.ceil(waitLeft));
        }
        return;
      }
      this.#clearTimer();
      const taken = new Set(picked);
      this.#queue = this.#queue.filter((e) => !taken.has(e));
      void this.#run(picked, slot);
    }
  }

  async #run(entries: Entry<Req, Res, Progress>[], slot: number): Promise<void> {
    const batch: Batch<Req, Res, Progress> = { slot, entries, controller: new AbortController(), startedAt: performance.now(), progress: undefined };
    this.#batches[slot] = batch;
    this.#counters.batches++;
    this.#slotCounters[slot]!.batches++;
    if (entries.length > 1) this.#counters.batchedRequests += entries.length;
    const onProgress = (event: Progress) => {
      batch.progress = event;
      for (const entry of entries) {
        if (entry.settled || !entry.onProgress) continue;
        try {
          entry.onProgress(event);
        } catch {
          // A listener's failure must not break the batch of other callers.
        }
      }
    };
    try {
      if (entries.length === 1) {
        const result = await this.#engine.runOne(entries[0]!.request, batch.controller.signal, onProgress, slot);
        this.#settle(entries[0]!, "done", result, slot);
      } else {
        let results: Res[] | null = null;
        try {
          results = await this.#engine.runMerged(entries.map((e) => e.request), batch.controller.signal, onProgress, slot);
        } catch (error) {
          if (batch.controller.signal.aborted) throw error;
          // Isolate the failure: every live member runs again alone.
          for (const entry of entries) {
            if (entry.settled) continue;
            try {
              this.#settle(entry, "done", await this.#engine.runOne(entry.request, batch.controller.signal, onProgress, slot), slot);
            } catch (single) {
              this.#settle(entry, batch.controller.signal.aborted ? "cancelled" : "failed", single, slot);
            }
          }
        }
        if (results) {
          for (const [i, entry] of entries.entries()) this.#settle(entry, "done", results[i], slot);
        }
      }
    } catch (error) {
      const cancelled = batch.controller.signal.aborted;
      for (const entry of entries) this.#settle(entry, cancelled ? "cancelled" : "failed", error, slot);
    } finally {
      this.#batches[slot] = null;
      this.#pump();
    }
  }
}
