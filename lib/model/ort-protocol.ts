/**
 * The messages between `OrtHost` (the main thread) and its ONNX Runtime worker (`ort-worker.ts`).
 * Types only: both sides import them, so the protocol is checked on both ends.
 *
 * Every request carries an `id`; the worker answers each with exactly one `FinalReply`, in the
 * order the requests arrived (it runs one at a time). A `denoise` request may also get `StepReply`
 * messages before its final reply, posted without waiting for the main thread.
 */
import type { CpuDenoiseJob } from "./cpu-denoise.js";
import type { TensorSpec } from "./graph-io.js";

export type OrtElementType = "float32" | "float64" | "int32" | "int64";

/** A host tensor crossing the thread boundary. */
export interface HostTensor {
  type: OrtElementType;
  dims: number[];
  data: Float32Array | Float64Array | Int32Array | BigInt64Array;
}

/** What a denoise sends back per evaluation: nothing, the step index, or the step and x_{j+1}. */
export type StepReport = "none" | "progress" | "latents";

export type WorkerRequest =
  | { op: "load"; id: number; path: string; intraOpThreads?: number }
  | { op: "run"; id: number; handle: number; feeds: Record<string, HostTensor>; outputs: string[] }
  | {
      op: "denoise";
      id: number;
      handle: number;
      job: CpuDenoiseJob;
      /** Int32Array over a SharedArrayBuffer: the main thread stores 1 to stop between evaluations. */
      stop: Int32Array;
      steps: StepReport;
    }
  | {
      op: "decode";
      id: number;
      handle: number;
      latentName: string;
      imageName: string;
      latents: HostTensor;
      /** Names the model in the NaN error. */
      source: string;
    }
  | { op: "release"; id: number; handle: number };

export interface LoadValue {
  handle: number;
  inputs: TensorSpec[];
  outputs: TensorSpec[];
}

export interface RunValue {
  outputs: Record<string, HostTensor>;
  /** Milliseconds inside `session.run`. */
  ms: number;
}

export interface DenoiseValue {
  /** x_M, or null when the loop was stopped. */
  latents: Float32Array | null;
  /** UNet `session.run` calls made and the milliseconds spent inside them. */
  calls: number;
  ms: number;
}

export interface DecodeValue {
  /** The decoder output's shape [B, 3, H, W]. */
  dims: number[];
  /** One uint8 RGB HWC image per batch row (empty when the output is not [B, 3, H, W]). */
  images: Uint8Array[];
  ms: number;
}

export interface StepReply {
  id: number;
  step: number;
  latents?: Float32Array;
}

export type FinalReply = { id: number; value: unknown } | { id: number; error: string; code?: string };

export type WorkerReply = StepReply | FinalReply;
