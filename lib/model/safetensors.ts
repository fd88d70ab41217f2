/**
 * A small, strict reader of `.safetensors` files (huggingface/safetensors' format): an 8-byte
 * little-endian header length N, N bytes of JSON header, then the tensor data. Unlike a pickle
 * (`.pt`, `.bin`, `.ckpt`), reading one executes nothing. Two ways in, one set of checks:
 * `readSafetensors`/`parseSafetensors` hold a small file (an embedding, a LoRA) in memory;
 * `openSafetensors` reads only the header and then each tensor's bytes from the file when asked,
 * for multi-GB checkpoints.
 *
 * Checked before any value is read, each with a ModelFileError naming the file:
 * - the header length fits the file and stays under `MAX_HEADER_BYTES` (the reference library's
 *   limit), and the header is a JSON object (optionally padded with spaces, as the format allows);
 * - `__metadata__`, when present, maps strings to strings;
 * - every tensor has a dtype sd-trt reads (F32, F16, BF16: the others are named in the message),
 *   a shape of non-negative integers and `data_offsets` [begin, end] inside the data (past the end
 *   of the file: truncated), whose length is the shape's element count times the dtype's size;
 * - the tensors neither overlap nor leave gaps: sorted by offset they cover the data from its first
 *   byte to the file's last (the reference library refuses anything else too).
 */
import { open, readFile } from "node:fs/promises";
import { ModelFileError } from "../errors.js";
import { float16ArrayToFloat32 } from "../onnx/float16.js";
import { refusePickle } from "./pickle.js";

/** Largest header accepted (huggingface/safetensors' own limit). */
export const MAX_HEADER_BYTES = 100_000_000;

/** The dtypes sd-trt reads values of (as float32). */
export type SafetensorsDtype = "F32" | "F16" | "BF16";

/**
 * Every dtype the format defines, with its size. Other dtypes are laid out and checked like the
 * float ones (real checkpoints carry int64 `position_ids` and step counters next to the weights)
 * and listed apart, in `otherTensors`: sd-trt reads no values of theirs.
 */
const DTYPE_BYTES = {
  F32: 4, F16: 2, BF16: 2, F64: 8, I64: 8, U64: 8, I32: 4, U32: 4, I16: 2, U16: 2, I8: 1, U8: 1, BOOL: 1, F8_E4M3: 1, F8_E5M2: 1,
} as const;
export type SafetensorsStoredDtype = keyof typeof DTYPE_BYTES;

const isReadable = (dtype: SafetensorsStoredDtype): dtype is SafetensorsDtype => dtype === "F32" || dtype === "F16" || dtype === "BF16";

export interface SafetensorsTensor {
  readonly name: string;
  readonly dtype: SafetensorsDtype;
  readonly shape: readonly number[];
  /** The values as float32 (F16 and BF16 widened exactly), row-major; a new array each call. */
  toFloat32(): Float32Array;
}

/** A tensor of another dtype (integers, fp64, fp8): its place is checked, its values are not read. */
export interface OtherSafetensorsTensor {
  readonly dtype: SafetensorsStoredDtype;
  readonly shape: readonly number[];
}

export interface SafetensorsFile {
  /** The file's `__metadata__` (empty when absent). */
  readonly metadata: Readonly<Record<string, string>>;
  /** The F32, F16 and BF16 tensors by name, in the header's order. */
  readonly tensors: ReadonlyMap<string, SafetensorsTensor>;
  /** The tensors of other dtypes. */
  readonly otherTensors: ReadonlyMap<string, OtherSafetensorsTensor>;
}

/** A tensor of a file opened with `openSafetensors`: its values are read from the file on demand. */
export interface StreamedSafetensorsTensor {
  readonly name: string;
  readonly dtype: SafetensorsDtype;
  readonly shape: readonly number[];
  /** Its size in the file. */
  readonly byteLength: number;
  /**
   * Reads its bytes from the file: float32 values (F16 and BF16 widened exactly), a new array each call.
   * @throws ModelFileError when the file changed since it was opened.
   */
  read(): Promise<Float32Array>;
}

export interface StreamedSafetensorsFile {
  readonly path: string;
  /** The file's size when it was opened (a later read refuses a file that has changed size). */
  readonly byteLength: number;
  readonly metadata: Readonly<Record<string, string>>;
  /** The F32, F16 and BF16 tensors by name, in the header's order. */
  readonly tensors: ReadonlyMap<string, StreamedSafetensorsTensor>;
  /** The tensors of other dtypes. */
  readonly otherTensors: ReadonlyMap<string, OtherSafetensorsTensor>;
}

/** Where one tensor lies: byte offsets from the start of the file. */
interface TensorSpan {
  readonly name: string;
  readonly dtype: SafetensorsStoredDtype;
  readonly shape: readonly number[];
  readonly start: number;
  readonly end: number;
}

/** Reads and checks a `.safetensors` file, holding it in memory; refuses a pickle (lib/model/pickle.ts). @throws ModelFileError naming the file and what is wrong. */
export async function readSafetensors(path: string): Promise<SafetensorsFile> {
  await refusePickle(path);
  let bytes: Buffer;
  try {
    bytes = await readFile(path);
  } catch (error) {
    throw new ModelFileError(path, `${path} cannot be read (${(error as Error).message})`, { cause: error });
  }
  return parseSafetensors(bytes, path);
}

/**
 * Checks and indexes the bytes of a `.safetensors` file (the values are read on demand).
 * @param source the file name, for messages.
 * @throws ModelFileError naming `source` and what is wrong.
 */
export function parseSafetensors(bytes: Uint8Array, source: string): SafetensorsFile {
  const dataStart = 8 + checkHeaderLength(bytes.subarray(0, 8), bytes.length, source);
  const { metadata, spans } = checkHeader(bytes.subarray(8, dataStart), bytes.length, source);
  const tensors = new Map<string, SafetensorsTensor>();
  const otherTensors = new Map<string, OtherSafetensorsTensor>();
  for (const { name, dtype, shape, start, end } of spans) {
    if (isReadable(dtype)) tensors.set(name, { name, dtype, shape, toFloat32: () => decode(bytes.subarray(start, end), dtype) });
    else otherTensors.set(name, { dtype, shape });
  }
  return { metadata, tensors, otherTensors };
}

/**
 * Opens a `.safetensors` file of any size: refuses a pickle (lib/model/pickle.ts), reads and checks its header only; each tensor's bytes
 * are read from the file when its `read()` is called (the file is opened for that read alone, so
 * nothing stays open between reads).
 * @throws ModelFileError naming the file and what is wrong.
 */
export async function openSafetensors(path: string): Promise<StreamedSafetensorsFile> {
  await refusePickle(path);
  let fileSize: number;
  let head: Uint8Array;
  let headerBytes: Uint8Array;
  try {
    const fh = await open(path, "r");
    try {
      fileSize = (await fh.stat()).size;
      head = await readExactly(fh, 0, Math.min(8, fileSize));
      const headerLength = checkHeaderLength(head, fileSize, path);
      headerBytes = await readExactly(fh, 8, headerLength);
    } finally {
      await fh.close();
    }
  } catch (error) {
    if (error instanceof ModelFileError) throw error;
    throw new ModelFileError(path, `${path} cannot be read (${(error as Error).message})`, { cause: error });
  }
  const { metadata, spans } = checkHeader(headerBytes, fileSize, path);
  const tensors = new Map<string, StreamedSafetensorsTensor>();
  const otherTensors = new Map<string, OtherSafetensorsTensor>();
  for (const span of spans) {
    const { name, dtype, shape, start, end } = span;
    if (isReadable(dtype)) tensors.set(name, { name, dtype, shape, byteLength: end - start, read: () => readSpan(path, fileSize, { ...span, dtype }) });
    else otherTensors.set(name, { dtype, shape });
  }
  return { path, byteLength: fileSize, metadata, tensors, otherTensors };
}

function failWith(source: string): (what: string) => never {
  return (what) => {
    throw new ModelFileError(source, `${source} is not a valid .safetensors file: ${what}`);
  };
}

/** The header length from the first 8 bytes, checked against the limit and the file size. */
function checkHeaderLength(head: Uint8Array, fileSize: number, source: string): number {
  const fail = failWith(source);
  if (fileSize < 8) fail(`it has ${fileSize} bytes, fewer than the 8-byte header length`);
  const headerLength = new DataView(head.buffer, head.byteOffset, 8).getBigUint64(0, true);
  if (headerLength > BigInt(MAX_HEADER_BYTES)) fail(`its header length ${headerLength} exceeds the limit of ${MAX_HEADER_BYTES} bytes`);
  if (8 + Number(headerLength) > fileSize) fail(`its header length ${headerLength} runs past the end of the file (${fileSize} bytes)`);
  return Number(headerLength);
}

/** Parses the JSON header and checks every tensor's dtype, shape and place in a file of `fileSize` bytes. */
function checkHeader(headerBytes: Uint8Array, fileSize: number, source: string): { metadata: Record<string, string>; spans: TensorSpan[] } {
  const fail = failWith(source);
  let header: unknown;
  try {
    header = JSON.parse(new TextDecoder("utf-8", { fatal: true }).decode(headerBytes));
  } catch (error) {
    fail(`its header is not UTF-8 JSON (${(error as Error).message})`);
  }
  if (header === null || typeof header !== "object" || Array.isArray(header)) fail("its header is not a JSON object");

  const dataStart = 8 + headerBytes.length;
  const dataLength = fileSize - dataStart;
  const metadata: Record<string, string> = {};
  const spans: TensorSpan[] = [];
  for (const [name, value] of Object.entries(header as Record<string, unknown>)) {
    if (name === "__metadata__") {
      if (value === null || typeof value !== "object" || Array.isArray(value)) fail("__metadata__ is not an object");
      for (const [key, text] of Object.entries(value as Record<string, unknown>)) {
        if (typeof text !== "string") fail(`__metadata__.${key} is not a string`);
        metadata[key] = text as string;
      }
      continue;
    }
    const info = value as { dtype?: unknown; shape?: unknown; data_offsets?: unknown } | null;
    if (info === null || typeof info !== "object" || Array.isArray(info)) fail(`tensor ${JSON.stringify(name)} is not an object`);
    const { dtype, shape, data_offsets: offsets } = info!;
    if (typeof dtype !== "string" || !Object.hasOwn(DTYPE_BYTES, dtype)) {
      fail(`tensor ${JSON.stringify(name)} has dtype ${JSON.stringify(dtype)}, which the format does not define`);
    }
    const isCount = (v: unknown): v is number => typeof v === "number" && Number.isSafeInteger(v) && v >= 0;
    if (!Array.isArray(shape) || !shape.every(isCount)) fail(`tensor ${JSON.stringify(name)} has shape ${JSON.stringify(shape)}, not a list of non-negative integers`);
    if (!Array.isArray(offsets) || offsets.length !== 2 || !offsets.every(isCount)) {
      fail(`tensor ${JSON.stringify(name)} has data_offsets ${JSON.stringify(offsets)}, not [begin, end]`);
    }
    const [begin, end] = offsets as [number, number];
    if (begin > end || end > dataLength) {
      const truncated = begin <= end ? " (the file ends before it: truncated?)" : "";
      fail(`tensor ${JSON.stringify(name)} has data_offsets [${begin}, ${end}] outside the ${dataLength} bytes of data${truncated}`);
    }
    const elements = (shape as number[]).reduce((n, d) => n * d, 1);
    const size = DTYPE_BYTES[dtype as SafetensorsStoredDtype];
    if (end - begin !== elements * size) {
      fail(`tensor ${JSON.stringify(name)} of ${dtype} [${(shape as number[]).join(", ")}] needs ${elements * size} bytes, its data_offsets give ${end - begin}`);
    }
    spans.push({ name, dtype: dtype as SafetensorsStoredDtype, shape: [...(shape as number[])], start: dataStart + begin, end: dataStart + end });
  }
  // Sorted by offset the tensors must tile the data exactly: no overlap, no gap, nothing after.
  const sorted = [...spans].sort((a, b) => a.start - b.start || a.end - b.end);
  let expected = dataStart;
  for (const span of sorted) {
    const [begin, end] = [span.start - dataStart, span.end - dataStart];
    if (span.start < expected) fail(`tensor ${JSON.stringify(span.name)} overlaps the tensor before it (bytes ${begin}-${end})`);
    if (span.start > expected) fail(`the data has ${span.start - expected} bytes no tensor covers before ${JSON.stringify(span.name)}`);
    expected = span.end;
  }
  if (expected !== fileSize) fail(`the data has ${fileSize - expected} bytes after the last tensor`);
  return { metadata, spans };
}

async function readExactly(fh: import("node:fs/promises").FileHandle, position: number, length: number): Promise<Uint8Array> {
  const out = new Uint8Array(length);
  let done = 0;
  while (done < length) {
    const { bytesRead } = await fh.read(out, done, length - done, position + done);
    if (bytesRead === 0) break;
    done += bytesRead;
  }
  return out.subarray(0, done);
}

/** One tensor's bytes from the file, refusing a file that changed since it was opened. */
async function readSpan(path: string, openedSize: number, span: TensorSpan & { dtype: SafetensorsDtype }): Promise<Float32Array> {
  let raw: Uint8Array;
  try {
    const fh = await open(path, "r");
    try {
      const size = (await fh.stat()).size;
      if (size !== openedSize) {
        throw new ModelFileError(path, `${path} changed while it was being read: it had ${openedSize} bytes, now ${size}`);
      }
      raw = await readExactly(fh, span.start, span.end - span.start);
    } finally {
      await fh.close();
    }
  } catch (error) {
    if (error instanceof ModelFileError) throw error;
    throw new ModelFileError(path, `${path} cannot be read (tensor ${JSON.stringify(span.name)}: ${(error as Error).message})`, { cause: error });
  }
  if (raw.length !== span.end - span.start) {
    throw new ModelFileError(path, `${path} ended early while reading tensor ${JSON.stringify(span.name)} (truncated while in use?)`);
  }
  return decode(raw, span.dtype);
}

const LITTLE_ENDIAN = new Uint8Array(new Uint16Array([1]).buffer)[0] === 1;

/** Little-endian values → float32 (copied into a fresh, aligned array first: the data need not be aligned). */
function decode(raw: Uint8Array, dtype: SafetensorsDtype): Float32Array {
  const elements = raw.length / DTYPE_BYTES[dtype];
  if (!LITTLE_ENDIAN) return decodeByteByByte(raw, dtype, elements);
  if (dtype === "F32") {
    const out = new Float32Array(elements);
    new Uint8Array(out.buffer).set(raw);
    return out;
  }
  const halves = new Uint16Array(elements);
  new Uint8Array(halves.buffer).set(raw);
  if (dtype === "F16") return float16ArrayToFloat32(halves);
  return bfloat16ToFloat32(halves);
}

/** bfloat16 is the top half of a float32. */
function bfloat16ToFloat32(halves: Uint16Array): Float32Array {
  const words = new Uint32Array(halves.length);
  for (let i = 0; i < halves.length; i++) words[i] = halves[i]! << 16;
  return new Float32Array(words.buffer);
}

/** The same on a big-endian host, where typed arrays would read the bytes the wrong way round. */
function decodeByteByByte(raw: Uint8Array, dtype: SafetensorsDtype, elements: number): Float32Array {
  const view = new DataView(raw.buffer, raw.byteOffset, raw.byteLength);
  if (dtype === "F32") return Float32Array.from({ length: elements }, (_, i) => view.getFloat32(4 * i, true));
  const halves = Uint16Array.from({ length: elements }, (_, i) => view.getUint16(2 * i, true));
  return dtype === "F16" ? float16ArrayToFloat32(halves) : bfloat16ToFloat32(halves);
}
