/**
 * The fleet's wire format: what a job carries, what a worker returns, how a failure travels, and
 * the Redis keys beside BullMQ's own. Front ends (`RedisQueueClient`) and workers (`createWorker`)
 * of the same version agree on it; `FLEET_PROTOCOL` changes whenever it does.
 *
 * A job carries everything that decides its images: the model (name and A1111 hash) and the
 * resolved request with explicit seeds. The images are a pure function of the job, so a job that
 * is retried after its worker died gives the same bytes on whichever worker runs it.
 *
 * The result is not the job's BullMQ return value: BullMQ copies return values into its event
 * stream, and images there would multiply Redis's memory by the stream length. The worker writes
 * the result under its own key (with a TTL, in case no front end ever reads it) and returns the
 * key; the front end that waits for the job reads and deletes it.
 */
import { AbortError, InvalidOptionError, JobFailedError, ModelMismatchError, SdTrtError } from "../errors.js";
import type { RawImage } from "../image/read.js";
import type { GenerateResult, GeneratedImage } from "../pipeline/generation.js";
import type { ServiceRequest } from "../service/generation-service.js";

/** Bumped when the job or result format changes; a worker refuses jobs of another version. */
export const FLEET_PROTOCOL = 1;

/** The default BullMQ queue name (`--queue`). */
export const DEFAULT_QUEUE = "sd-trt";

/** How long a result waits in Redis for its front end (seconds). */
export const RESULT_TTL_SECONDS = 3600;

/** The model a job asks for: A1111's `sd_model_name` and "Model hash". */
export interface FleetModel {
  name: string;
  hash: string;
}

/** An init image as it travels: raw pixels (as the A1111 handler fits them) or encoded bytes. */
export type WireImage = { kind: "raw"; width: number; height: number; channels: number; base64: string } | { kind: "encoded"; base64: string };

/** A ServiceRequest with seeds as decimal strings (they may exceed 2⁵³) and the init image inline. */
export type WireRequest = Omit<ServiceRequest, "seed" | "seeds" | "initImage"> & { seed?: string; seeds?: string[]; initImage?: WireImage };

export interface FleetJobData {
  protocol: number;
  model: FleetModel;
  request: WireRequest;
}

/** What a worker returns as the job's BullMQ return value: where the result is, and who made it. */
export interface FleetJobReturn {
  resultKey: string;
  worker: string;
}

/** The stored result: a GenerateResult with pixels in base64 and seeds as strings. */
export interface WireResult extends Omit<GenerateResult, "images" | "seeds" | "latents"> {
  seeds: string[];
  images: Array<Omit<GeneratedImage, "rgb" | "seed"> & { seed: string; rgb: string }>;
}

/** A failure as it travels: BullMQ keeps only a message string (`failedReason`), so it is JSON. */
export interface WireFailure {
  code: string;
  message: string;
  /** InvalidOptionError's option. */
  option?: string;
}

export function keyPrefix(queue: string): string {
  return `sd-trt:fleet:${queue}`;
}
export const resultKey = (queue: string, jobId: string) => `${keyPrefix(queue)}:result:${jobId}`;
export const workerKey = (queue: string, workerId: string) => `${keyPrefix(queue)}:worker:${workerId}`;
/** Pub/sub channel on which front ends ask workers to cancel running jobs. */
export const cancelChannel = (queue: string) => `${keyPrefix(queue)}:cancel`;

/** A cancel message: the jobs to stop, and whether the caller interrupted them or gave up waiting. */
export interface CancelMessage {
  jobIds: string[];
  reason: string;
}

function isRawImage(value: unknown): value is RawImage {
  return typeof value === "object" && value !== null && "data" in value && "width" in value && !(value instanceof Uint8Array);
}

/**
 * A request as a job carries it. Seeds must be explicit (the caller resolves random ones first),
 * so every run of the job draws the same noise.
 * @throws InvalidOptionError for what cannot travel: a file path as init image, latents hooks.
 */
export function toWireRequest(request: ServiceRequest): WireRequest {
  const { seed, seeds, initImage, ...rest } = request;
  if (rest.returnLatents) throw new InvalidOptionError("returnLatents", "returnLatents is not available through a fleet queue: results carry images only");
  if (rest.onLatents) throw new InvalidOptionError("onLatents", "onLatents is not available through a fleet queue: the latents stay on the worker");
  if (seed === undefined && seeds === undefined) throw new InvalidOptionError("seed", "a fleet job needs explicit seeds (seed or seeds), so that a retried job makes the same images");
  const wire: WireRequest = { ...rest };
  if (seed !== undefined) wire.seed = String(seed);
  if (seeds !== undefined) wire.seeds = seeds.map(String);
  if (initImage !== undefined) {
    if (typeof initImage === "string") throw new InvalidOptionError("initImage", "initImage as a file path cannot travel to another machine; pass the image's bytes or raw pixels");
    wire.initImage = isRawImage(initImage)
      ? { kind: "raw", width: initImage.width, height: initImage.height, channels: initImage.channels, base64: Buffer.from(initImage.data.buffer, initImage.data.byteOffset, initImage.data.byteLength).toString("base64") }
      : { kind: "encoded", base64: Buffer.from(initImage.buffer, initImage.byteOffset, initImage.byteLength).toString("base64") };
  }
  return wire;
}

export function fromWireRequest(wire: WireRequest): ServiceRequest {
  const { seed, seeds, initImage, ...rest } = wire;
  const request: ServiceRequest = { ...rest };
  if (seed !== undefined) request.seed = BigInt(seed);
  if (seeds !== undefined) request.seeds = seeds.map((s) => BigInt(s));
  if (initImage !== undefined) {
    const bytes = new Uint8Array(Buffer.from(initImage.base64, "base64"));
    request.initImage = initImage.kind === "raw" ? ({ data: bytes, width: initImage.width, height: initImage.height, channels: initImage.channels } as RawImage) : bytes;
  }
  return request;
}

export function toWireResult(result: GenerateResult): WireResult {
  const { images, seeds, latents: _latents, ...rest } = result;
  return {
    ...rest,
    seeds: seeds.map(String),
    images: images.map((image) => ({ ...image, seed: String(image.seed), rgb: Buffer.from(image.rgb.buffer, image.rgb.byteOffset, image.rgb.byteLength).toString("base64") })),
  };
}

export function fromWireResult(wire: WireResult): GenerateResult {
  return {
    ...wire,
    seeds: wire.seeds.map((s) => BigInt(s)),
    images: wire.images.map((image) => ({ ...image, seed: BigInt(image.seed), rgb: new Uint8Array(Buffer.from(image.rgb, "base64")) })),
  };
}

export function toWireFailure(error: unknown): WireFailure {
  if (error instanceof InvalidOptionError) return { code: error.code, message: error.message, option: error.option };
  if (error instanceof SdTrtError) return { code: error.code, message: error.message };
  if (error instanceof Error && error.name === "AbortError") return { code: "ABORT_ERR", message: error.message };
  return { code: "ERR_WORKER", message: error instanceof Error ? error.message : String(error) };
}

/**
 * The typed error a front end rethrows for a failed job: the same class the worker hit when it
 * has one here (an invalid option still answers 422 naming its field), else JobFailedError.
 */
export function fromFailedReason(jobId: string, failedReason: string, attempts: number): Error {
  let failure: WireFailure;
  try {
    failure = JSON.parse(failedReason) as WireFailure;
    if (typeof failure.code !== "string" || typeof failure.message !== "string") throw new TypeError("not a failure");
  } catch {
    // Failures BullMQ writes itself (a job that stalled too often) are plain text.
    failure = { code: "ERR_QUEUE", message: failedReason };
  }
  switch (failure.code) {
    case "ERR_INVALID_OPTION":
      return new InvalidOptionError(failure.option ?? "request", failure.message);
    case "ERR_MODEL_MISMATCH":
      return new ModelMismatchError(failure.message);
    case "ABORT_ERR":
      return new AbortError(failure.message);
    default:
      return new JobFailedError(jobId, failure.code, failure.message, attempts);
  }
}
