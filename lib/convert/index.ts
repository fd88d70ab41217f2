/**
 * Checkpoint conversion, the entry point of `sd-trt convert` and of the model cache: read what
 * people download (lib/convert/checkpoint), write the ONNX model folder the pipeline reads
 * (lib/convert/graphs `writeConvertedModel`), and record which checkpoint it came from
 * (`source_checkpoint.json`: A1111's `Model hash` and `Model` for the infotext).
 *
 * All or nothing: the folder is assembled inside a temporary sibling of `outDir` and renamed into
 * place when complete; an error or an abort removes the temporary folder. A LoRA set slots in as
 * `CheckpointSource` → merged `CheckpointSource`, between reading and writing (see `convertCheckpoint`).
 */
import { createHash } from "node:crypto";
import { createReadStream } from "node:fs";
import { access, mkdir, rename, rm, stat } from "node:fs/promises";
import { basename, extname, join, resolve } from "node:path";
import { AbortError, OutputFileError } from "../errors.js";
import { temporaryPathFor, writeFileAtomic } from "../fs/atomic.js";
import { SOURCE_CHECKPOINT_FILE, type SourceCheckpoint } from "../model/folder.js";
import { readCheckpoint, type ReadCheckpointOptions } from "./checkpoint/index.js";
import { type ConvertedGraph, type ConvertedModelReport, writeConvertedModel } from "./graphs/folder.js";
import type { GraphDtype } from "./graphs/layers.js";
import type { CheckpointSource } from "./types.js";

export type { GraphDtype } from "./graphs/layers.js";
export { readCheckpoint, type ReadCheckpointOptions } from "./checkpoint/index.js";

/** What a conversion reports as it goes. */
export type ConvertEvent =
  /** Hashing the checkpoint file (A1111's model hash, the cache key). */
  | { readonly stage: "hash"; readonly bytes: number; readonly total: number }
  /** Reading the checkpoint's header and configs. */
  | { readonly stage: "read" }
  /** Writing one graph. */
  | { readonly stage: "graph"; readonly graph: ConvertedGraph; readonly index: number; readonly count: number };

export interface ConvertOptions extends ReadCheckpointOptions {
  readonly dtype: GraphDtype;
  /** Stops between graphs (and during hashing); the partial folder is removed, an AbortError thrown. */
  readonly signal?: AbortSignal;
  readonly onProgress?: (event: ConvertEvent) => void;
  /**
   * Told the temporary folder before anything is written in it, so that a process exiting at once
   * (a second Ctrl-C) can remove it synchronously.
   */
  readonly onTemporaryPath?: (path: string) => void;
  /** The file's SHA-256 when the caller already knows it (the model cache does). */
  readonly sha256?: string;
  /**
   * Changes the checkpoint before its graphs are written (the seam for LoRA merging, issue 12):
   * receives the checkpoint as read and returns what to convert.
   */
  readonly transform?: (source: CheckpointSource) => Promise<CheckpointSource>;
}

export interface ConversionResult extends ConvertedModelReport {
  readonly source: SourceCheckpoint;
}

function throwIfAborted(signal: AbortSignal | undefined): void {
  if (signal?.aborted) throw signal.reason instanceof AbortError ? signal.reason : new AbortError("the conversion was interrupted");
}

/** Hex SHA-256 of a file, streamed, with progress. */
export async function sha256OfFile(path: string, options: { signal?: AbortSignal; onBytes?: (bytes: number, total: number) => void } = {}): Promise<string> {
  const total = (await stat(path)).size;
  const hash = createHash("sha256");
  let bytes = 0;
  for await (const chunk of createReadStream(path, { highWaterMark: 4 << 20 })) {
    throwIfAborted(options.signal);
    hash.update(chunk as Buffer);
    bytes += (chunk as Buffer).length;
    options.onBytes?.(bytes, total);
  }
  return hash.digest("hex");
}

/** A1111's name of a checkpoint: the file's name without its extension (a folder's name). */
export function checkpointName(path: string): string {
  const name = basename(resolve(path));
  return extname(name) === ".safetensors" ? name.slice(0, -".safetensors".length) : name;
}

/**
 * Converts a checkpoint (a single `.safetensors` file or a diffusers folder) into an ONNX model
 * folder at `outDir`, which must not exist.
 * @throws ModelFileError naming the checkpoint and what is wrong; OutputFileError when `outDir`
 *   exists or cannot be written; AbortError when `signal` fired. Nothing is left at `outDir` or
 *   beside it on any of these.
 */
export async function convertCheckpoint(input: string, outDir: string, options: ConvertOptions): Promise<ConversionResult> {
  const target = resolve(outDir);
  if (await access(target).then(() => true, () => false)) throw new OutputFileError(target, `${target} already exists; choose a new folder for the converted model or remove it first`);
  options.onProgress?.({ stage: "read" });
  let checkpoint = await readCheckpoint(input, options);
  const isFile = (await stat(input)).isFile();
  let sha256 = options.sha256;
  if (isFile && sha256 === undefined) {
    sha256 = await sha256OfFile(input, { ...(options.signal ? { signal: options.signal } : {}), onBytes: (bytes, total) => options.onProgress?.({ stage: "hash", bytes, total }) });
  }
  const source: SourceCheckpoint = sha256 === undefined ? { name: checkpointName(input) } : { name: checkpointName(input), sha256 };
  if (options.transform) checkpoint = await options.transform(checkpoint);
  throwIfAborted(options.signal);

  const staging = temporaryPathFor(target);
  options.onTemporaryPath?.(staging);
  try {
    await mkdir(staging, { recursive: true });
    const staged = join(staging, "model");
    const report = await writeConvertedModel(checkpoint, staged, {
      dtype: options.dtype,
      onProgress: (progress) => {
        // Thrown here, the abort unwinds writeConvertedModel, which removes its own partial files.
        throwIfAborted(options.signal);
        options.onProgress?.({ stage: "graph", ...progress });
      },
    });
    throwIfAborted(options.signal);
    await writeFileAtomic(join(staged, SOURCE_CHECKPOINT_FILE), `${JSON.stringify(source, null, 2)}\n`);
    try {
      await rename(staged, target);
    } catch (error) {
      throw new OutputFileError(target, `cannot move the converted model into ${target}: ${(error as Error).message}`, { cause: error });
    }
    return { ...report, dir: target, source };
  } finally {
    await rm(staging, { recursive: true, force: true });
  }
}
