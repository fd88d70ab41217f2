/**
 * Just enough of the ONNX protobuf format to list a model's external-data files without loading
 * the model: `ModelProto.graph (7) → GraphProto.initializer (5) → TensorProto.external_data (13)`,
 * whose `location` entries name files relative to the model's folder.
 *
 * ONNX Runtime follows these entries by itself when the files sit beside the model; reading them
 * here lets a missing weights file fail with its own name instead of ORT's generic load error,
 * and lets callers (engine manifests, model hashes) know every file a model depends on.
 *
 * The scanner reads the file with positional reads and skips every payload it does not need
 * (raw tensor data can be gigabytes), so it costs a few small reads even for a 3 GB UNet.
 */
import { open, type FileHandle } from "node:fs/promises";
import { ModelFileError } from "../errors.js";

/** Protobuf wire types (https://protobuf.dev/programming-guides/encoding/). */
const WIRE_VARINT = 0;
const WIRE_FIXED64 = 1;
const WIRE_LENGTH = 2;
const WIRE_FIXED32 = 5;

const MODEL_GRAPH = 7;
const GRAPH_INITIALIZER = 5;
const TENSOR_NAME = 8;
const TENSOR_EXTERNAL_DATA = 13;
const TENSOR_DATA_LOCATION = 14;
const ENTRY_KEY = 1;
const ENTRY_VALUE = 2;
/** TensorProto.DataLocation.EXTERNAL */
const LOCATION_EXTERNAL = 1;

/** One initializer stored outside the model file. */
export interface ExternalTensorRef {
  /** The initializer's name. */
  tensor: string;
  /** File name relative to the model's folder, as written in the model. */
  location: string;
  /** Byte offset and length inside that file, when the model gives them. */
  offset?: number;
  length?: number;
}

class ProtoFormatError extends Error {}

/** Positional reader with a small window, so skipping a field costs nothing. */
class WindowedReader {
  #buffer = Buffer.alloc(0);
  #bufferStart = 0;
  constructor(
    private readonly handle: FileHandle,
    readonly size: number,
  ) {}

  async bytes(position: number, length: number): Promise<Buffer> {
    if (position < 0 || position + length > this.size) throw new ProtoFormatError("field runs past the end of the file");
    const offset = position - this.#bufferStart;
    if (offset >= 0 && offset + length <= this.#buffer.length) return this.#buffer.subarray(offset, offset + length);
    const windowLength = Math.min(Math.max(length, 64 * 1024), this.size - position);
    const buffer = Buffer.alloc(windowLength);
    const { bytesRead } = await this.handle.read(buffer, 0, windowLength, position);
    if (bytesRead < length) throw new ProtoFormatError("short read");
    this.#buffer = buffer.subarray(0, bytesRead);
    this.#bufferStart = position;
    return this.#buffer.subarray(0, length);
  }

  /** Reads a varint at `position`; returns its value (exact below 2⁵³) and the next position. */
  async varint(position: number): Promise<[number, number]> {
    const available = Math.min(10, this.size - position);
    if (available <= 0) throw new ProtoFormatError("varint runs past the end of the file");
    const bytes = await this.bytes(position, available);
    let value = 0;
    let scale = 1;
    for (let i = 0; i < bytes.length; i++) {
      const byte = bytes[i]!;
      value += (byte & 0x7f) * scale;
      if ((byte & 0x80) === 0) return [value, position + i + 1];
      scale *= 128;
    }
    throw new ProtoFormatError("malformed varint");
  }
}

interface Field {
  field: number;
  wireType: number;
  /** Varint value, or the payload start for length-delimited fields. */
  value: number;
  /** Payload length for length-delimited fields. */
  length: number;
}

/** Iterates the fields of the message occupying [start, end). */
async function* fields(reader: WindowedReader, start: number, end: number): AsyncGenerator<Field> {
  let position = start;
  while (position < end) {
    const [tag, afterTag] = await reader.varint(position);
    const field = Math.floor(tag / 8);
    const wireType = tag % 8;
    if (field === 0) throw new ProtoFormatError("field number 0");
    switch (wireType) {
      case WIRE_VARINT: {
        const [value, next] = await reader.varint(afterTag);
        yield { field, wireType, value, length: 0 };
        position = next;
        break;
      }
      case WIRE_FIXED64:
        position = afterTag + 8;
        break;
      case WIRE_FIXED32:
        position = afterTag + 4;
        break;
      case WIRE_LENGTH: {
        const [length, payload] = await reader.varint(afterTag);
        if (payload + length > end) throw new ProtoFormatError("length-delimited field runs past its message");
        yield { field, wireType, value: payload, length };
        position = payload + length;
        break;
      }
      default:
        throw new ProtoFormatError(`unsupported wire type ${wireType}`);
    }
  }
  if (position !== end) throw new ProtoFormatError("message ends inside a field");
}

async function readString(reader: WindowedReader, f: Field): Promise<string> {
  return (await reader.bytes(f.value, f.length)).toString("utf8");
}

async function readTensorRef(reader: WindowedReader, start: number, end: number): Promise<ExternalTensorRef | null> {
  let name = "";
  let external = false;
  const entries = new Map<string, string>();
  for await (const f of fields(reader, start, end)) {
    if (f.field === TENSOR_NAME && f.wireType === WIRE_LENGTH) name = await readString(reader, f);
    else if (f.field === TENSOR_DATA_LOCATION && f.wireType === WIRE_VARINT) external = f.value === LOCATION_EXTERNAL;
    else if (f.field === TENSOR_EXTERNAL_DATA && f.wireType === WIRE_LENGTH) {
      let key = "";
      let value = "";
      for await (const e of fields(reader, f.value, f.value + f.length)) {
        if (e.wireType !== WIRE_LENGTH) continue;
        if (e.field === ENTRY_KEY) key = await readString(reader, e);
        else if (e.field === ENTRY_VALUE) value = await readString(reader, e);
      }
      entries.set(key, value);
    }
  }
  if (!external) return null;
  const location = entries.get("location");
  if (!location) throw new ProtoFormatError(`initializer ${JSON.stringify(name)} is external but names no location`);
  const ref: ExternalTensorRef = { tensor: name, location };
  if (entries.has("offset")) ref.offset = Number(entries.get("offset"));
  if (entries.has("length")) ref.length = Number(entries.get("length"));
  return ref;
}

/**
 * Lists the initializers of an ONNX model that live in external files.
 * @throws ModelFileError naming the file when it cannot be read or is not an ONNX model.
 */
export async function readExternalTensorRefs(onnxPath: string): Promise<ExternalTensorRef[]> {
  let handle: FileHandle;
  try {
    handle = await open(onnxPath, "r");
  } catch (error) {
    throw new ModelFileError(onnxPath, `cannot read ${onnxPath}: ${(error as Error).message}`, { cause: error });
  }
  try {
    const { size } = await handle.stat();
    const reader = new WindowedReader(handle, size);
    const refs: ExternalTensorRef[] = [];
    let sawGraph = false;
    for await (const top of fields(reader, 0, size)) {
      if (top.field !== MODEL_GRAPH || top.wireType !== WIRE_LENGTH) continue;
      sawGraph = true;
      for await (const g of fields(reader, top.value, top.value + top.length)) {
        if (g.field !== GRAPH_INITIALIZER || g.wireType !== WIRE_LENGTH) continue;
        const ref = await readTensorRef(reader, g.value, g.value + g.length);
        if (ref) refs.push(ref);
      }
    }
    if (!sawGraph) throw new ProtoFormatError("no graph");
    return refs;
  } catch (error) {
    if (error instanceof ProtoFormatError) {
      throw new ModelFileError(onnxPath, `${onnxPath} is not a valid ONNX model (${error.message})`, { cause: error });
    }
    throw error;
  } finally {
    await handle.close();
  }
}
