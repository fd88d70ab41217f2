/**
 * ONNX model files: read, inspect (graph inputs/outputs, initializers) and follow external
 * data (`model.onnx_data`, `weights.pb`, …) through the tensors' `external_data` entries
 * (`location` relative to the model's folder, `offset`, `length`).
 */
import { open, readFile, type FileHandle } from "node:fs/promises";
import { dirname, isAbsolute, relative, resolve, sep } from "node:path";
import { ModelFileError } from "../errors.js";
import { decodeMessage, encodeMessage, type PbMessage, ProtobufDecodeError } from "./protobuf.js";
import {
  AttributeField,
  DATA_TYPE_NAMES,
  DataLocation,
  DataType,
  dataTypeSize,
  DimField,
  GraphField,
  ModelField,
  ModelSchema,
  NodeField,
  OpsetField,
  ShapeField,
  StringStringField,
  TensorField,
  TensorTypeField,
  TypeField,
  ValueInfoField,
} from "./schema.js";

/** A graph input or output: dims are numbers when fixed, names ("batch_size") or -1 when not. */
export interface OnnxValueInfo {
  name: string;
  /** TensorProto.DataType code (1 = float, 10 = float16, 6 = int32, 7 = int64, …). */
  dataType: number;
  /** Lower-case type name ("float", "float16", "int64", …). */
  dtype: string;
  /** One entry per dimension: a number when fixed, the symbolic name or -1 when dynamic. */
  shape: (number | string)[];
}

export interface OnnxGraphIo {
  inputs: OnnxValueInfo[];
  outputs: OnnxValueInfo[];
}

export interface ExternalDataRef {
  /** As written in the model (relative to the model's folder). */
  location: string;
  /** Absolute, checked to be inside the model's folder. */
  path: string;
  offset: number;
  /** Byte length (from the entry, or computed from dims × element size). */
  length: number;
}

export function valueInfoOf(vi: PbMessage): OnnxValueInfo {
  const name = vi.string(ValueInfoField.name) ?? "";
  const tensorType = vi.message(ValueInfoField.type)?.message(TypeField.tensorType);
  const dataType = tensorType?.int(TensorTypeField.elemType) ?? DataType.UNDEFINED;
  const shapeMsg = tensorType?.message(TensorTypeField.shape);
  const shape = (shapeMsg?.messages(ShapeField.dim) ?? []).map((d): number | string => {
    const v = d.int(DimField.dimValue);
    if (v !== undefined) return v;
    return d.string(DimField.dimParam) ?? -1;
  });
  return { name, dataType, dtype: DATA_TYPE_NAMES[dataType] ?? `type${dataType}`, shape };
}

/** Name, element type and dims of a TensorProto (initializer or attribute tensor). */
export function tensorHeader(t: PbMessage): { name: string; dataType: number; dims: number[]; elements: number } {
  const dims = t.ints(TensorField.dims);
  return {
    name: t.string(TensorField.name) ?? "",
    dataType: t.int(TensorField.dataType) ?? DataType.UNDEFINED,
    dims,
    elements: dims.reduce((a, b) => a * b, 1),
  };
}

export function isExternal(t: PbMessage): boolean {
  return t.int(TensorField.dataLocation) === DataLocation.EXTERNAL;
}

/** Resolves a tensor's external-data entry, refusing locations outside the model's folder. */
export function externalDataOf(t: PbMessage, modelDir: string, modelPath: string): ExternalDataRef {
  const entries = new Map<string, string>();
  for (const e of t.messages(TensorField.externalData)) {
    entries.set(e.string(StringStringField.key) ?? "", e.string(StringStringField.value) ?? "");
  }
  const { name, dataType, elements } = tensorHeader(t);
  const location = entries.get("location");
  if (!location) throw new ModelFileError(modelPath, `${modelPath}: tensor ${name} is external but has no "location" entry`);
  const path = resolve(modelDir, location);
  const rel = relative(modelDir, path);
  if (isAbsolute(location) || rel === "" || rel.startsWith(`..${sep}`) || rel === ".." || isAbsolute(rel)) {
    throw new ModelFileError(
      modelPath,
      `${modelPath}: tensor ${name} points at external data "${location}" outside the model's folder; ` +
        `external data must be a file next to the model`,
    );
  }
  const offset = Number(entries.get("offset") ?? "0");
  const size = dataTypeSize(dataType);
  const length = entries.has("length") ? Number(entries.get("length")) : size === undefined ? NaN : elements * size;
  if (!Number.isSafeInteger(offset) || offset < 0 || !Number.isSafeInteger(length) || length < 0) {
    throw new ModelFileError(modelPath, `${modelPath}: tensor ${name} has an invalid external-data offset/length`);
  }
  return { location, path, offset, length };
}

/** Reads external tensor data, keeping each file open until `close()`. */
export class ExternalDataReader {
  private readonly handles = new Map<string, Promise<FileHandle>>();

  async read(ref: ExternalDataRef, modelPath: string): Promise<Uint8Array> {
    let handle = this.handles.get(ref.path);
    if (!handle) {
      handle = open(ref.path, "r");
      this.handles.set(ref.path, handle);
    }
    let fh: FileHandle;
    try {
      fh = await handle;
    } catch (cause) {
      throw new ModelFileError(ref.path, `${modelPath}: cannot open external data file ${ref.location}: ${(cause as Error).message}`, { cause });
    }
    const out = new Uint8Array(ref.length);
    let done = 0;
    while (done < ref.length) {
      const { bytesRead } = await fh.read(out, done, ref.length - done, ref.offset + done);
      if (bytesRead === 0) {
        throw new ModelFileError(
          ref.path,
          `${modelPath}: external data file ${ref.location} ends before offset ${ref.offset} + length ${ref.length}`,
        );
      }
      done += bytesRead;
    }
    return out;
  }

  async close(): Promise<void> {
    const all = [...this.handles.values()];
    this.handles.clear();
    await Promise.all(all.map(async (h) => (await h.catch(() => undefined))?.close()));
  }
}

export class OnnxModel {
  private constructor(
    /** The file the model was read from. */
    readonly path: string,
    readonly proto: PbMessage,
    /** The encoded bytes the model was decoded from (raw data fields are views into them). */
    readonly bytes: Uint8Array,
  ) {}

  /** Decodes an ONNX file already in memory. `path` names it in errors and anchors external data. */
  static decode(bytes: Uint8Array, path: string): OnnxModel {
    let proto: PbMessage;
    try {
      proto = decodeMessage(bytes, ModelSchema);
    } catch (cause) {
      if (cause instanceof ProtobufDecodeError) {
        throw new ModelFileError(path, `${path} is not a valid ONNX model: ${cause.message}`, { cause });
      }
      throw cause;
    }
    if (!proto.message(ModelField.graph)) throw new ModelFileError(path, `${path} is not a valid ONNX model: it has no graph`);
    return new OnnxModel(path, proto, bytes);
  }

  static async read(path: string): Promise<OnnxModel> {
    let bytes: Uint8Array;
    try {
      bytes = await readFile(path);
    } catch (cause) {
      throw new ModelFileError(path, `cannot read ONNX model ${path}: ${(cause as Error).message}`, { cause });
    }
    return OnnxModel.decode(bytes, path);
  }

  get dir(): string {
    return dirname(resolve(this.path));
  }

  get graph(): PbMessage {
    return this.proto.message(ModelField.graph) as PbMessage;
  }

  /** The default-domain opset version the model imports. */
  opsetVersion(domain = ""): number | undefined {
    for (const o of this.proto.messages(ModelField.opsetImport)) {
      if ((o.string(OpsetField.domain) ?? "") === domain || (domain === "" && o.string(OpsetField.domain) === "ai.onnx")) {
        return o.int(OpsetField.version);
      }
    }
    return undefined;
  }

  initializers(): PbMessage[] {
    return this.graph.messages(GraphField.initializer);
  }

  /** Graph inputs that are real inputs (not initializers listed as inputs, as IR < 4 did). */
  io(): OnnxGraphIo {
    const init = new Set(this.initializers().map((t) => t.string(TensorField.name)));
    return {
      inputs: this.graph
        .messages(GraphField.input)
        .map(valueInfoOf)
        .filter((v) => !init.has(v.name)),
      outputs: this.graph.messages(GraphField.output).map(valueInfoOf),
    };
  }

  /** Every tensor stored in the model: initializers and Constant / attribute tensors. */
  tensors(): PbMessage[] {
    const out = [...this.initializers()];
    for (const node of this.graph.messages(GraphField.node)) {
      for (const a of node.messages(NodeField.attribute)) {
        const t = a.message(AttributeField.t);
        if (t) out.push(t);
        out.push(...a.messages(AttributeField.tensors));
      }
    }
    return out;
  }

  /** The external data files this model refers to, as absolute paths (sorted, unique). */
  externalDataFiles(): string[] {
    const files = new Set<string>();
    for (const t of this.tensors()) if (isExternal(t)) files.add(externalDataOf(t, this.dir, this.path).path);
    return [...files].sort();
  }

  encode(): Uint8Array {
    return encodeMessage(this.proto);
  }
}

/**
 * The bytes of a fixed-size tensor in little-endian element order, wherever they are stored
 * (raw_data, the typed repeated fields, or external data).
 */
export async function tensorBytes(t: PbMessage, model: OnnxModel, reader: ExternalDataReader): Promise<Uint8Array> {
  const { name, dataType, elements } = tensorHeader(t);
  const size = dataTypeSize(dataType);
  if (size === undefined) throw new ModelFileError(model.path, `${model.path}: tensor ${name} has unsupported type ${dataType}`);
  if (isExternal(t)) {
    const ref = externalDataOf(t, model.dir, model.path);
    const bytes = await reader.read(ref, model.path);
    return checkLength(bytes, elements * size, name, model.path);
  }
  const raw = t.bytes(TensorField.rawData);
  if (raw !== undefined) return checkLength(raw, elements * size, name, model.path);
  const out = new Uint8Array(elements * size);
  const dv = new DataView(out.buffer);
  switch (dataType) {
    case DataType.FLOAT: {
      const v = t.floats(TensorField.floatData);
      checkCount(v.length, elements, name, model.path);
      v.forEach((x, i) => {
        dv.setFloat32(i * 4, x, true);
      });
      break;
    }
    case DataType.INT64: {
      const v = t.ints(TensorField.int64Data);
      checkCount(v.length, elements, name, model.path);
      v.forEach((x, i) => {
        dv.setBigInt64(i * 8, BigInt(x), true);
      });
      break;
    }
    case DataType.INT32:
    case DataType.INT16:
    case DataType.INT8:
    case DataType.UINT16:
    case DataType.UINT8:
    case DataType.BOOL:
    case DataType.FLOAT16:
    case DataType.BFLOAT16: {
      // onnx.proto: these types are stored in int32_data (fp16/bf16 as their bit patterns).
      const v = t.ints(TensorField.int32Data);
      checkCount(v.length, elements, name, model.path);
      v.forEach((x, i) => {
        if (size === 4) dv.setInt32(i * 4, x, true);
        else if (size === 2) dv.setUint16(i * 2, x & 0xffff, true);
        else dv.setUint8(i, x & 0xff);
      });
      break;
    }
    default:
      throw new ModelFileError(model.path, `${model.path}: tensor ${name} stores type ${dataType} in a field sd-trt does not read`);
  }
  return out;
}

function checkLength(bytes: Uint8Array, expected: number, name: string, path: string): Uint8Array {
  if (bytes.length !== expected) {
    throw new ModelFileError(path, `${path}: tensor ${name} has ${bytes.length} bytes of data, its dims need ${expected}`);
  }
  return bytes;
}

function checkCount(n: number, expected: number, name: string, path: string): void {
  if (n !== expected) throw new ModelFileError(path, `${path}: tensor ${name} has ${n} values, its dims need ${expected}`);
}

/** Reads a FLOAT tensor as a Float32Array (a copy, aligned). */
export async function readFloat32Tensor(t: PbMessage, model: OnnxModel, reader: ExternalDataReader): Promise<Float32Array> {
  const bytes = await tensorBytes(t, model, reader);
  const out = new Float32Array(bytes.length / 4);
  // ONNX data is little-endian, as is every platform the addon supports (x86-64, aarch64).
  new Uint8Array(out.buffer).set(bytes);
  return out;
}
