/**
 * A small, strict reader of `.safetensors` files (huggingface/safetensors' format): an 8-byte
 * little-endian header length N, N bytes of JSON header, then the tensor data. Unlike a pickle
 * (`.pt`, `.bin`, `.ckpt`), reading one executes nothing. Used for A1111's textual-inversion
 * embeddings and meant for checkpoints too.
 *
 * Checked before any value is read, each with a ModelFileError naming the file:
 * - the header length fits the file and stays under `MAX_HEADER_BYTES` (the reference library's
 *   limit), and the header is a JSON object (optionally padded with spaces, as the format allows);
 * - `__metadata__`, when present, maps strings to strings;
 * - every tensor has a dtype sd-trt reads (F32, F16, BF16: the others are named in the message),
 *   a shape of non-negative integers and `data_offsets` [begin, end] inside the data, whose length
 *   is the shape's element count times the dtype's size;
 * - the tensors neither overlap nor leave gaps: sorted by offset they cover the data from its first
 *   byte to the file's last (the reference library refuses anything else too).
 */
import { readFile } from "node:fs/promises";
import { ModelFileError } from "../errors.js";
import { float16ArrayToFloat32 } from "../onnx/float16.js";

/** Largest header accepted (huggingface/safetensors' own limit). */
export const MAX_HEADER_BYTES = 100_000_000;

export type SafetensorsDtype = "F32" | "F16" | "BF16";

const DTYPE_BYTES: Record<SafetensorsDtype, number> = { F32: 4, F16: 2, BF16: 2 };

export interface SafetensorsTensor {
  readonly name: string;
  readonly dtype: SafetensorsDtype;
  readonly shape: readonly number[];
  /** The values as float32 (F16 and BF16 widened exactly), row-major; a new array each call. */
  toFloat32(): Float32Array;
}

export interface SafetensorsFile {
  /** The file's `__metadata__` (empty when absent). */
  readonly metadata: Readonly<Record<string, string>>;
  /** Tensors by name, in the header's order. */
  readonly tensors: ReadonlyMap<string, SafetensorsTensor>;
}

/** Reads and checks a `.safetensors` file. @throws ModelFileError naming the file and what is wrong. */
export async function readSafetensors(path: string): Promise<SafetensorsFile> {
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
  const fail = (what: string): never => {
    throw new ModelFileError(source, `${source} is not a valid .safetensors file: ${what}`);
  };
  if (bytes.length < 8) fail(`it has ${bytes.length} bytes, fewer than the 8-byte header length`);
  const view = new DataView(bytes.buffer, bytes.byteOffset, bytes.byteLength);
  const headerLength = view.getBigUint64(0, true);
  if (headerLength > BigInt(MAX_HEADER_BYTES)) fail(`its header length ${headerLength} exceeds the limit of ${MAX_HEADER_BYTES} bytes`);
  const dataStart = 8 + Number(headerLength);
  if (dataStart > bytes.length) fail(`its header length ${headerLength} runs past the end of the file (${bytes.length} bytes)`);

  let header: unknown;
  try {
    header = JSON.parse(new TextDecoder("utf-8", { fatal: true }).decode(bytes.subarray(8, dataStart)));
  } catch (error) {
    fail(`its header is not UTF-8 JSON (${(error as Error).message})`);
  }
  if (header === null || typeof header !== "object" || Array.isArray(header)) fail("its header is not a JSON object");
  const entries = Object.entries(header as Record<string, unknown>);

  const metadata: Record<string, string> = {};
  const dataLength = bytes.length - dataStart;
  const spans: { name: string; begin: number; end: number }[] = [];
  const tensors = new Map<string, SafetensorsTensor>();
  for (const [name, value] of entries) {
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
    if (typeof dtype !== "string" || !(dtype in DTYPE_BYTES)) {
      fail(`tensor ${JSON.stringify(name)} has dtype ${JSON.stringify(dtype)}; sd-trt reads F32, F16 and BF16`);
    }
    const isCount = (v: unknown): v is number => typeof v === "number" && Number.isSafeInteger(v) && v >= 0;
    if (!Array.isArray(shape) || !shape.every(isCount)) fail(`tensor ${JSON.stringify(name)} has shape ${JSON.stringify(shape)}, not a list of non-negative integers`);
    if (!Array.isArray(offsets) || offsets.length !== 2 || !offsets.every(isCount)) {
      fail(`tensor ${JSON.stringify(name)} has data_offsets ${JSON.stringify(offsets)}, not [begin, end]`);
    }
    const [begin, end] = offsets as [number, number];
    if (begin > end || end > dataLength) fail(`tensor ${JSON.stringify(name)} has data_offsets [${begin}, ${end}] outside the ${dataLength} bytes of data`);
    const elements = (shape as number[]).reduce((n, d) => n * d, 1);
    const size = DTYPE_BYTES[dtype as SafetensorsDtype];
    if (end - begin !== elements * size) {
      fail(`tensor ${JSON.stringify(name)} of ${dtype} [${(shape as number[]).join(", ")}] needs ${elements * size} bytes, its data_offsets give ${end - begin}`);
    }
    spans.push({ name, begin, end });
    const at = dataStart + begin;
    tensors.set(name, {
      name,
      dtype: dtype as SafetensorsDtype,
      shape: [...(shape as number[])],
      toFloat32: () => decode(bytes.subarray(at, dataStart + end), dtype as SafetensorsDtype, elements),
    });
  }
  // Sorted by offset the tensors must tile the data exactly: no overlap, no gap, nothing after.
  spans.sort((a, b) => a.begin - b.begin || a.end - b.end);
  let expected = 0;
  for (const span of spans) {
    if (span.begin < expected) fail(`tensor ${JSON.stringify(span.name)} overlaps the tensor before it (bytes ${span.begin}-${span.end})`);
    if (span.begin > expected) fail(`the data has ${span.begin - expected} bytes no tensor covers before ${JSON.stringify(span.name)}`);
    expected = span.end;
  }
  if (expected !== dataLength) fail(`the data has ${dataLength - expected} bytes after the last tensor`);
  return { metadata, tensors };
}

/** Little-endian values → float32 (copied: the data need not be 4-byte aligned). */
function decode(raw: Uint8Array, dtype: SafetensorsDtype, elements: number): Float32Array {
  const view = new DataView(raw.buffer, raw.byteOffset, raw.byteLength);
  if (dtype === "F32") return Float32Array.from({ length: elements }, (_, i) => view.getFloat32(4 * i, true));
  const halves = Uint16Array.from({ length: elements }, (_, i) => view.getUint16(2 * i, true));
  if (dtype === "F16") return float16ArrayToFloat32(halves);
  // bfloat16 is the top half of a float32.
  return new Float32Array(Uint32Array.from(halves, (h) => h << 16).buffer);
}
