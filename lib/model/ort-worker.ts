/**
 * The ONNX Runtime worker thread behind `OrtHost` (ort-host.ts): it owns every session and runs
 * one request at a time, in arrival order. Protocol: ort-protocol.ts.
 *
 * Besides plain `run` calls it runs a whole denoise loop (`cpu-denoise.ts`) next to the UNet
 * session, so no model evaluation waits for the main thread: per-step progress (and, when asked,
 * each step's latents) is posted back without waiting, and a stop request arrives through a
 * SharedArrayBuffer flag polled between evaluations. `decode` converts the VAE output to 8-bit RGB
 * here as well, so that work stays off the main thread too.
 *
 * This file only runs compiled (dist/model/ort-worker.js), as a worker's entry module.
 */
import { parentPort } from "node:worker_threads";
import { createRequire } from "node:module";
import type * as Ort from "onnxruntime-node";
import { AbortError } from "../errors.js";
import { decodedToRgb } from "../image/pixels.js";
import { runCpuDenoise } from "./cpu-denoise.js";
import type { DecodeValue, DenoiseValue, FinalReply, HostTensor, LoadValue, RunValue, StepReply, WorkerRequest } from "./ort-protocol.js";
import type { TensorSpec } from "./graph-io.js";

const ort = createRequire(import.meta.url)("onnxruntime-node") as typeof Ort;
const port = parentPort!;
const sessions = new Map<number, Ort.InferenceSession>();
let nextHandle = 1;

type Metadata = Ort.InferenceSession["inputMetadata"];

function describe(meta: Metadata): TensorSpec[] {
  return meta.map((m) => ({ name: m.name, type: m.isTensor ? m.type : "non-tensor", shape: m.isTensor ? [...m.shape] : [] }));
}

function session(handle: number): Ort.InferenceSession {
  const s = sessions.get(handle);
  if (!s) throw new Error(`session ${handle} was released`);
  return s;
}

function toOrt(feeds: Record<string, HostTensor>): Record<string, Ort.Tensor> {
  const out: Record<string, Ort.Tensor> = {};
  for (const [name, t] of Object.entries(feeds)) out[name] = new ort.Tensor(t.type, t.data, t.dims);
  return out;
}

/** One `session.run`, timed: the only time the overhead ratio counts as ONNX Runtime's. */
async function timedRun(s: Ort.InferenceSession, feeds: Record<string, HostTensor>, outputs: string[]): Promise<{ results: Ort.InferenceSession.ReturnType; ms: number }> {
  const ortFeeds = toOrt(feeds);
  const start = performance.now();
  const results = await s.run(ortFeeds, outputs);
  return { results, ms: performance.now() - start };
}

interface Answer {
  value: unknown;
  transfer?: ArrayBuffer[];
}

async function handle(message: WorkerRequest): Promise<Answer> {
  switch (message.op) {
    case "load": {
      const options: Ort.InferenceSession.SessionOptions = { executionProviders: ["cpu"], graphOptimizationLevel: "all" };
      if (message.intraOpThreads) options.intraOpNumThreads = message.intraOpThreads;
      const s = await ort.InferenceSession.create(message.path, options);
      const handle = nextHandle++;
      sessions.set(handle, s);
      const value: LoadValue = { handle, inputs: describe(s.inputMetadata), outputs: describe(s.outputMetadata) };
      return { value };
    }
    case "run": {
      const { results, ms } = await timedRun(session(message.handle), message.feeds, message.outputs);
      const outputs: Record<string, HostTensor> = {};
      const transfer: ArrayBuffer[] = [];
      for (const name of message.outputs) {
        const t = results[name]!;
        const data = t.data as HostTensor["data"];
        outputs[name] = { type: t.type as HostTensor["type"], dims: [...t.dims], data };
        transfer.push(data.buffer as ArrayBuffer);
      }
      const value: RunValue = { outputs, ms };
      return { value, transfer };
    }
    case "denoise": {
      const unet = session(message.handle);
      const { job, stop, steps, id } = message;
      let calls = 0;
      let ms = 0;
      const onStep =
        steps === "none"
          ? undefined
          : (step: number, x: Float32Array) => {
              // Posted, never awaited: the next evaluation starts at once.
              if (steps === "latents") {
                const latents = x.slice();
                port.postMessage({ id, step, latents } satisfies StepReply, [latents.buffer]);
              } else {
                port.postMessage({ id, step } satisfies StepReply);
              }
            };
      try {
        const latents = await runCpuDenoise(
          job,
          async (feeds) => {
            const run = await timedRun(unet, feeds, [job.io.outputName]);
            calls++;
            ms += run.ms;
            return run.results[job.io.outputName]!.data as Float32Array;
          },
          { stopRequested: () => Atomics.load(stop, 0) !== 0, ...(onStep ? { onStep } : {}) },
        );
        const value: DenoiseValue = { latents, calls, ms };
        return { value, transfer: [latents.buffer as ArrayBuffer] };
      } catch (error) {
        if (error instanceof AbortError) return { value: { latents: null, calls, ms } satisfies DenoiseValue };
        throw error;
      }
    }
    case "decode": {
      const { results, ms } = await timedRun(session(message.handle), { [message.latentName]: message.latents }, [message.imageName]);
      const image = results[message.imageName]!;
      const dims = [...image.dims];
      const [batch, channels, height, width] = dims;
      const images = dims.length === 4 && channels === 3 ? decodedToRgb(image.data as Float32Array, batch!, height!, width!, message.source) : [];
      const value: DecodeValue = { dims, images, ms };
      return { value, transfer: images.map((i) => i.buffer as ArrayBuffer) };
    }
    case "release": {
      const s = sessions.get(message.handle);
      sessions.delete(message.handle);
      if (s) await s.release();
      return { value: null };
    }
  }
}

async function answer(message: WorkerRequest): Promise<void> {
  let reply: FinalReply;
  let transfer: ArrayBuffer[] = [];
  try {
    const answer = await handle(message);
    reply = { id: message.id, value: answer.value };
    transfer = answer.transfer ?? [];
  } catch (error) {
    const e = error as { message?: unknown; code?: unknown };
    reply = { id: message.id, error: String(e && e.message !== undefined ? e.message : error), ...(typeof e?.code === "string" ? { code: e.code } : {}) };
  }
  try {
    port.postMessage(reply, transfer);
  } catch {
    try {
      port.postMessage(reply); // a buffer that cannot be transferred is copied
    } catch (error) {
      // Never leave the caller waiting: say why the answer could not be sent.
      port.postMessage({ id: message.id, error: `the ONNX Runtime worker could not send its answer: ${String((error as Error)?.message ?? error)}` } satisfies FinalReply);
    }
  }
}

// One request at a time, in arrival order: a request waits for the one before it (its
// session.run calls and, for a denoise, every evaluation) before it starts.
let previous: Promise<void> = Promise.resolve();
port.on("message", (message: WorkerRequest) => {
  previous = previous.then(() => answer(message));
});
