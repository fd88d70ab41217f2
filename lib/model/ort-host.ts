/**
 * ONNX Runtime sessions on a worker thread.
 *
 * onnxruntime-node's `session.run()` returns a Promise, but the inference itself runs
 * synchronously on the calling thread (`setImmediate(() => resolve(binding.run(...)))`), so on
 * the main thread a UNet call blocks the event loop for its whole duration — seconds for SD 1.5
 * on a CPU. Here every session lives on one worker thread owned by the backend; the main thread
 * only posts tensors (copied, or transferred when the caller gives them away) and awaits replies,
 * so timers, I/O and progress output keep running during each call.
 *
 * Calls are answered in order (the worker runs one at a time), and each reply carries the time
 * spent inside `session.run`, which the pipeline reports so its own overhead can be measured.
 */
import { Worker } from "node:worker_threads";
import { createRequire } from "node:module";
import { ModelFileError, SdTrtError, DisposedError } from "../errors.js";
import type { GraphSignature, TensorSpec } from "./graph-io.js";

export type OrtElementType = "float32" | "float64" | "int32" | "int64";

/** A host tensor crossing the thread boundary. */
export interface HostTensor {
  type: OrtElementType;
  dims: number[];
  data: Float32Array | Float64Array | Int32Array | BigInt64Array;
}

export interface SessionOptions {
  /** Threads ONNX Runtime may use inside one operator. Defaults to ONNX Runtime's choice (the physical cores). */
  intraOpThreads?: number;
}

/** The code the worker runs. Plain JavaScript so it runs the same from lib/ (ts-jest) and dist/. */
const WORKER_SOURCE = `
"use strict";
const { parentPort, workerData } = require("node:worker_threads");
const ort = require(workerData.ortPath);
const sessions = new Map();
let nextHandle = 1;

function describe(meta) {
  return meta.map((m) => ({ name: m.name, type: m.isTensor ? m.type : "non-tensor", shape: m.isTensor ? m.shape : [] }));
}

async function handle(message) {
  switch (message.op) {
    case "load": {
      const options = { executionProviders: ["cpu"], graphOptimizationLevel: "all" };
      if (message.intraOpThreads) options.intraOpNumThreads = message.intraOpThreads;
      const session = await ort.InferenceSession.create(message.path, options);
      const handle = nextHandle++;
      sessions.set(handle, session);
      return { value: { handle, inputs: describe(session.inputMetadata), outputs: describe(session.outputMetadata) } };
    }
    case "run": {
      const session = sessions.get(message.handle);
      if (!session) throw new Error("session " + message.handle + " was released");
      const feeds = {};
      for (const [name, t] of Object.entries(message.feeds)) feeds[name] = new ort.Tensor(t.type, t.data, t.dims);
      const start = performance.now();
      const results = await session.run(feeds, message.outputs);
      const ms = performance.now() - start;
      const outputs = {};
      const transfer = new Set();
      for (const name of message.outputs) {
        const t = results[name];
        outputs[name] = { type: t.type, dims: Array.from(t.dims), data: t.data };
        transfer.add(t.data.buffer);
      }
      // Feeds that were transferred here go back the same way, for the caller to reuse.
      let feedsBack;
      if (message.returnFeeds) {
        feedsBack = {};
        for (const [name, t] of Object.entries(message.feeds)) {
          feedsBack[name] = t.data;
          transfer.add(t.data.buffer);
        }
      }
      return { value: { outputs, ms, feeds: feedsBack }, transfer: [...transfer] };
    }
    case "release": {
      const session = sessions.get(message.handle);
      sessions.delete(message.handle);
      if (session) await session.release();
      return { value: null };
    }
    default:
      throw new Error("unknown op " + message.op);
  }
}

parentPort.on("message", async (message) => {
  try {
    const { value, transfer } = await handle(message);
    try {
      parentPort.postMessage({ id: message.id, value }, transfer || []);
    } catch {
      parentPort.postMessage({ id: message.id, value }); // a buffer that cannot be transferred is copied
    }
  } catch (error) {
    parentPort.postMessage({ id: message.id, error: String(error && error.message ? error.message : error) });
  }
});
`;

interface Pending {
  resolve: (value: unknown) => void;
  reject: (error: Error) => void;
  /** Turns the worker's error text into a typed error with the caller's stack. */
  fail: (message: string) => Error;
}

export interface LoadedSession {
  handle: number;
  signature: GraphSignature;
}

export interface RunResult {
  outputs: Record<string, HostTensor>;
  /** Milliseconds spent inside ONNX Runtime's `run` on the worker. */
  ms: number;
  /** With `transfer`: the feed arrays, moved back here unchanged for reuse. */
  feeds?: Record<string, HostTensor["data"]>;
}

let ortPath: string | undefined;
function resolveOrt(): string {
  ortPath ??= createRequire(import.meta.url).resolve("onnxruntime-node");
  return ortPath;
}

/** One worker thread holding ONNX Runtime sessions. */
export class OrtHost {
  #worker: Worker | null;
  #pending = new Map<number, Pending>();
  #nextId = 1;
  #failure: Error | null = null;

  constructor() {
    const worker = new Worker(WORKER_SOURCE, { eval: true, workerData: { ortPath: resolveOrt() } });
    worker.unref(); // only in-flight calls keep the process alive
    worker.on("message", (message: { id: number; value?: unknown; error?: string }) => {
      const pending = this.#pending.get(message.id);
      if (!pending) return;
      this.#pending.delete(message.id);
      if (this.#pending.size === 0) worker.unref();
      if (message.error !== undefined) pending.reject(pending.fail(message.error));
      else pending.resolve(message.value);
    });
    const failAll = (error: Error) => {
      this.#failure = error;
      for (const pending of this.#pending.values()) pending.reject(error);
      this.#pending.clear();
    };
    worker.on("error", (error) => failAll(new SdTrtError("ERR_ONNX_RUNTIME", `ONNX Runtime worker failed: ${error.message}`, { cause: error })));
    worker.on("exit", (code) => {
      if (this.#worker) failAll(new SdTrtError("ERR_ONNX_RUNTIME", `ONNX Runtime worker exited unexpectedly (code ${code})`));
    });
    this.#worker = worker;
  }

  get disposed(): boolean {
    return this.#worker === null;
  }

  #call<T>(message: Record<string, unknown>, fail: (text: string) => Error, transfer: ArrayBuffer[] = []): Promise<T> {
    const worker = this.#worker;
    if (!worker) return Promise.reject(new DisposedError("ONNX Runtime session host"));
    if (this.#failure) return Promise.reject(this.#failure);
    const id = this.#nextId++;
    return new Promise<T>((resolve, reject) => {
      this.#pending.set(id, { resolve: resolve as (v: unknown) => void, reject, fail });
      if (this.#pending.size === 1) worker.ref();
      worker.postMessage({ ...message, id }, transfer);
    });
  }

  /**
   * Creates a session for an ONNX file (ONNX Runtime follows external-data files beside it).
   * @throws ModelFileError naming the file when ONNX Runtime cannot load it.
   */
  load(path: string, options: SessionOptions = {}): Promise<LoadedSession> {
    const stack = new Error();
    return this.#call<{ handle: number; inputs: TensorSpec[]; outputs: TensorSpec[] }>(
      { op: "load", path, intraOpThreads: options.intraOpThreads },
      (text) => withStack(new ModelFileError(path, `ONNX Runtime cannot load ${path}: ${text}`), stack),
    ).then(({ handle, inputs, outputs }) => ({ handle, signature: { inputs, outputs } }));
  }

  /**
   * Runs a session. Feed arrays are copied to the worker, unless `transfer` is set: then their
   * buffers move there without a copy (detached here until the call returns) and come back in
   * `RunResult.feeds`, so a loop can reuse the same buffers for every call. Each transferred feed
   * must own its whole ArrayBuffer.
   * @param what names the model in error messages ("unet/model.onnx").
   */
  run(handle: number, what: string, feeds: Record<string, HostTensor>, outputs: string[], transfer = false): Promise<RunResult> {
    const stack = new Error();
    const buffers = transfer ? [...new Set(Object.values(feeds).map((t) => t.data.buffer as ArrayBuffer))] : [];
    const shapes = Object.entries(feeds)
      .map(([name, t]) => `${name} ${t.type} [${t.dims.join(", ")}]`)
      .join(", ");
    return this.#call<RunResult>(
      { op: "run", handle, feeds, outputs, returnFeeds: transfer },
      (text) => withStack(new SdTrtError("ERR_ONNX_RUNTIME", `${what} failed in ONNX Runtime with inputs ${shapes}: ${text}`), stack),
      buffers,
    );
  }

  release(handle: number): Promise<void> {
    if (!this.#worker) return Promise.resolve();
    return this.#call<void>({ op: "release", handle }, (text) => new SdTrtError("ERR_ONNX_RUNTIME", text));
  }

  /** Stops the worker; sessions go with it. Idempotent. */
  async dispose(): Promise<void> {
    const worker = this.#worker;
    if (!worker) return;
    this.#worker = null;
    for (const pending of this.#pending.values()) pending.reject(new DisposedError("ONNX Runtime session host"));
    this.#pending.clear();
    await worker.terminate();
  }
}

/** Gives an error created from a worker reply the stack of the call that caused it. */
function withStack<E extends Error>(error: E, stack: Error): E {
  if (stack.stack) error.stack = `${error.name}: ${error.message}\n${stack.stack.split("\n").slice(1).join("\n")}`;
  return error;
}
