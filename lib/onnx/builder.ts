/**
 * Builds ONNX graphs in code (the checkpoint converter's graphs, lib/convert/graphs) on top of our
 * protobuf codec, and writes them in the layout optimum uses: `model.onnx` with every large
 * initializer in one `model.onnx_data` next to it (aligned offsets, `external_data` entries
 * `location`/`offset`/`length`, exactly what `writeOnnxModel` writes and `lib/onnx/model.ts` reads).
 *
 * Weights are streamed: `weight()` appends the tensor's bytes to the data file as soon as it is
 * given, so a multi-GB model is never held in memory and the protobuf stays far under its 2 GiB
 * limit. Both files are written under temporary names and renamed into place by `finish()`;
 * `abort()` removes them.
 *
 * Values are typed (`Value.type`): an operator's output takes the element type of its first float
 * input unless told otherwise, which is all the graphs here need to insert the right Casts for a
 * float16 graph. The opset is 17 (LayerNormalization is native there); the IR version is 8.
 */
import { type FileHandle, open, rename, rm } from "node:fs/promises";
import { basename } from "node:path";
import { temporaryPathFor, writeFileAtomic } from "../fs/atomic.js";
import { float32ArrayToFloat16 } from "./float16.js";
import { encodeMessage, floatField, intField, packedIntsField, PbMessage, stringField, WireType } from "./protobuf.js";
import {
  AttributeField,
  AttributeSchema,
  AttributeType,
  DataLocation,
  DataType,
  GraphField,
  GraphSchema,
  ModelField,
  ModelSchema,
  NodeField,
  NodeSchema,
  OpsetField,
  OpsetSchema,
  StringStringField,
  StringStringSchema,
  TensorField,
  TensorSchema,
} from "./schema.js";
import { tensorValueInfo } from "./value-info.js";

export const BUILDER_OPSET = 17;
const IR_VERSION = 8;
/** Initializers of at least this many bytes go to the external data file (as `writeOnnxModel`). */
const EXTERNAL_THRESHOLD = 1024;
/** Offsets in the data file are aligned so that it can be memory-mapped tensor by tensor. */
const ALIGNMENT = 64;

export type ElementType = "float32" | "float16" | "int32" | "int64" | "bool";
/** A dimension of a graph input or output: a size, or a symbolic name (dim_param) when dynamic. */
export type Dim = number | string;

const DATA_TYPES: Record<ElementType, number> = {
  float32: DataType.FLOAT,
  float16: DataType.FLOAT16,
  int32: DataType.INT32,
  int64: DataType.INT64,
  bool: DataType.BOOL,
};

export function isFloatType(type: ElementType): boolean {
  return type === "float32" || type === "float16";
}

/** A value of the graph: a graph input, an initializer or a node output. */
export class Value {
  constructor(
    readonly name: string,
    readonly type: ElementType,
  ) {}
}

/**
 * Node attributes. Numbers are written as INT attributes, except those named in `FLOAT_ATTRIBUTES`
 * (the float-valued attributes of the operators used here); arrays of numbers as INTS.
 */
export type AttributeValue = number | string | readonly number[];
const FLOAT_ATTRIBUTES = new Set(["epsilon", "alpha", "beta", "gamma", "bias", "lambd", "scale"]);

function attributeProto(name: string, value: AttributeValue): PbMessage {
  const fields = [stringField(AttributeField.name, name)];
  if (typeof value === "string") {
    fields.push(stringField(AttributeField.s, value), intField(AttributeField.type, AttributeType.STRING));
  } else if (typeof value === "number") {
    if (FLOAT_ATTRIBUTES.has(name)) fields.push(floatField(AttributeField.f, value), intField(AttributeField.type, AttributeType.FLOAT));
    else fields.push(intField(AttributeField.i, value), intField(AttributeField.type, AttributeType.INT));
  } else {
    fields.push(packedIntsField(AttributeField.ints, value), intField(AttributeField.type, AttributeType.INTS));
  }
  return new PbMessage(fields, AttributeSchema);
}

function entry(key: string, value: string): PbMessage {
  return new PbMessage([stringField(StringStringField.key, key), stringField(StringStringField.value, value)], StringStringSchema);
}

/** The little-endian bytes of `data` as `type` (float data rounded to fp16 when asked). */
function tensorBytes(data: Float32Array | Int32Array | BigInt64Array, type: ElementType): Uint8Array {
  if (type === "float16") {
    if (!(data instanceof Float32Array)) throw new TypeError("float16 tensors are made from Float32Array data");
    const { bits } = float32ArrayToFloat16(data);
    return new Uint8Array(bits.buffer, bits.byteOffset, bits.byteLength);
  }
  // Typed arrays are little-endian on every platform Node.js runs on.
  return new Uint8Array(data.buffer, data.byteOffset, data.byteLength);
}

export interface GraphBuilderOptions {
  /** The graph's name (shown by Netron and in TensorRT logs). */
  name: string;
  /** Where `finish()` writes the model; the weights go to `<path>_data`. */
  path: string;
}

/**
 * One graph under construction. Create with `GraphBuilder.create`, add inputs, weights and nodes,
 * then `finish()` (or `abort()` on failure).
 */
export class GraphBuilder {
  private readonly nodes: PbMessage[] = [];
  private readonly initializers: PbMessage[] = [];
  private readonly inputs: PbMessage[] = [];
  private readonly outputs: PbMessage[] = [];
  private readonly usedNames = new Set<string>();
  private readonly constants = new Map<string, Value>();
  private readonly scopes: string[] = [];
  private readonly metadataProps = new Map<string, string>();
  /** The next suffix to try per base name (a UNet has thousands of `/…/Add` nodes). */
  private readonly nextSuffix = new Map<string, number>();
  private dataOffset = 0;

  private constructor(
    private readonly options: GraphBuilderOptions,
    private readonly dataTmp: string,
    private data: FileHandle | undefined,
  ) {}

  static async create(options: GraphBuilderOptions): Promise<GraphBuilder> {
    const dataTmp = temporaryPathFor(`${options.path}_data`);
    return new GraphBuilder(options, dataTmp, await open(dataTmp, "wx", 0o644));
  }

  /** Runs `build` with `name` appended to the prefix of node and value names (torch export's `/a/b/Op`). */
  async scope<T>(name: string, build: () => Promise<T> | T): Promise<T> {
    // Nodes are added by one sequence of awaits, never concurrently, so a stack is enough.
    this.scopes.push(name);
    try {
      return await build();
    } finally {
      this.scopes.pop();
    }
  }

  /** A name not used yet, `base` itself when free. */
  private unique(base: string): string {
    let name = base;
    let i = this.nextSuffix.get(base) ?? 1;
    while (this.usedNames.has(name)) name = `${base}_${i++}`;
    this.nextSuffix.set(base, i);
    this.usedNames.add(name);
    return name;
  }

  private claim(name: string): string {
    if (this.usedNames.has(name)) throw new Error(`graph ${this.options.name}: the name "${name}" is used twice`);
    this.usedNames.add(name);
    return name;
  }

  input(name: string, type: ElementType, shape: readonly Dim[]): Value {
    this.inputs.push(tensorValueInfo(this.claim(name), DATA_TYPES[type], shape));
    return new Value(name, type);
  }

  /** Declares `value` a graph output called `name` (an Identity node renames it when needed). */
  output(value: Value, name: string, shape: readonly Dim[]): void {
    if (value.name !== name) this.op("Identity", [value], {}, { output: name });
    this.outputs.push(tensorValueInfo(name, DATA_TYPES[value.type], shape));
  }

  /**
   * Adds a node and returns its output. The output is named `options.output` when given (a name
   * other code refers to), else `<scope>/<op>_output_0`; its type is `options.type`, else that of
   * the first float input, else that of the first input. An `undefined` input is an omitted
   * optional input.
   */
  op(opType: string, inputs: readonly (Value | undefined)[], attributes: Record<string, AttributeValue> = {}, options: { output?: string; type?: ElementType } = {}): Value {
    const [out] = this.opMulti(opType, inputs, 1, attributes, options);
    return out!;
  }

  /** As `op`, for operators with several outputs (Split). */
  opMulti(opType: string, inputs: readonly (Value | undefined)[], outputCount: number, attributes: Record<string, AttributeValue> = {}, options: { output?: string; type?: ElementType } = {}): Value[] {
    const prefix = this.scopes.length > 0 ? `/${this.scopes.join("/")}/` : "/";
    const nodeName = this.unique(`${prefix}${opType}`);
    const type = options.type ?? inputs.find((v) => v !== undefined && isFloatType(v.type))?.type ?? inputs.find((v) => v !== undefined)?.type;
    if (type === undefined) throw new Error(`graph ${this.options.name}: ${nodeName} needs an output type`);
    const outputs: Value[] = [];
    for (let i = 0; i < outputCount; i++) {
      const name = options.output !== undefined && outputCount === 1 ? this.claim(options.output) : this.unique(`${nodeName}_output_${i}`);
      outputs.push(new Value(name, type));
    }
    const fields = [
      ...inputs.map((v) => stringField(NodeField.input, v?.name ?? "")),
      ...outputs.map((v) => stringField(NodeField.output, v.name)),
      stringField(NodeField.name, nodeName),
      stringField(NodeField.opType, opType),
      ...Object.entries(attributes).map(([k, v]) => ({ no: NodeField.attribute, wt: WireType.LengthDelimited as const, value: attributeProto(k, v) })),
    ];
    this.nodes.push(new PbMessage(fields, NodeSchema));
    return outputs;
  }

  /** `value` as `type`: a Cast node, or `value` itself when it has that type (an Identity when `output` names the result). */
  cast(value: Value, type: ElementType, output?: string): Value {
    if (value.type === type) return output === undefined ? value : this.op("Identity", [value], {}, { output });
    return this.op("Cast", [value], { to: DATA_TYPES[type] }, output === undefined ? { type } : { type, output });
  }

  /**
   * An initializer named `name` (a diffusers state-dict key for weights). Data of at least 1 KiB is
   * appended to the external data file at once; float data is stored as `type`.
   */
  async initializer(name: string, data: Float32Array | Int32Array | BigInt64Array, shape: readonly number[], type: ElementType): Promise<Value> {
    const elements = shape.reduce((a, b) => a * b, 1);
    if (elements !== data.length) throw new Error(`graph ${this.options.name}: initializer ${name} has ${data.length} values for shape [${shape.join(", ")}]`);
    const bytes = tensorBytes(data, type);
    const fields = [
      packedIntsField(TensorField.dims, shape),
      intField(TensorField.dataType, DATA_TYPES[type]),
      stringField(TensorField.name, this.claim(name)),
    ];
    if (bytes.length >= EXTERNAL_THRESHOLD && this.data) {
      const pad = (ALIGNMENT - (this.dataOffset % ALIGNMENT)) % ALIGNMENT;
      if (pad > 0) await this.data.write(new Uint8Array(pad));
      const offset = this.dataOffset + pad;
      await this.data.write(bytes);
      this.dataOffset = offset + bytes.length;
      fields.push(intField(TensorField.dataLocation, DataLocation.EXTERNAL));
      for (const [k, v] of [["location", basename(`${this.options.path}_data`)], ["offset", String(offset)], ["length", String(bytes.length)]] as const) {
        fields.push({ no: TensorField.externalData, wt: WireType.LengthDelimited, value: entry(k, v) });
      }
    } else {
      fields.push({ no: TensorField.rawData, wt: WireType.LengthDelimited, value: bytes.slice() });
    }
    this.initializers.push(new PbMessage(fields, TensorSchema));
    return new Value(name, type);
  }

  /** A small constant (shapes, axes, scalars), shared by every node that asks for the same one. */
  constant(values: readonly number[], type: ElementType, shape: readonly number[] = [values.length]): Value {
    const key = `${type}[${shape.join(",")}]:${values.join(",")}`;
    const known = this.constants.get(key);
    if (known) return known;
    const data = type === "int64" ? BigInt64Array.from(values, (v) => BigInt(v)) : type === "int32" ? Int32Array.from(values) : Float32Array.from(values);
    const name = this.unique(`/constants/${type}_${shape.length === 0 ? "scalar" : shape.join("x")}`);
    const bytes = tensorBytes(data, type);
    this.initializers.push(
      new PbMessage(
        [
          packedIntsField(TensorField.dims, shape),
          intField(TensorField.dataType, DATA_TYPES[type]),
          stringField(TensorField.name, name),
          { no: TensorField.rawData, wt: WireType.LengthDelimited, value: bytes.slice() },
        ],
        TensorSchema,
      ),
    );
    const value = new Value(name, type);
    this.constants.set(key, value);
    return value;
  }

  /** A float scalar constant of `type` (broadcasts against any tensor). */
  scalar(value: number, type: ElementType): Value {
    return this.constant([value], type, []);
  }

  /** A model-level `metadata_props` entry (facts about the graph its readers need, lib/onnx/sd-trt-metadata.ts). */
  metadata(key: string, value: string): void {
    this.metadataProps.set(key, value);
  }

  /** Writes `model.onnx` (atomically) and renames the data file into place. Returns the byte sizes. */
  async finish(): Promise<{ modelBytes: number; dataBytes: number }> {
    const graph = new PbMessage(
      [
        ...this.nodes.map((value) => ({ no: GraphField.node, wt: WireType.LengthDelimited as const, value })),
        stringField(GraphField.name, this.options.name),
        ...this.initializers.map((value) => ({ no: GraphField.initializer, wt: WireType.LengthDelimited as const, value })),
        ...this.inputs.map((value) => ({ no: GraphField.input, wt: WireType.LengthDelimited as const, value })),
        ...this.outputs.map((value) => ({ no: GraphField.output, wt: WireType.LengthDelimited as const, value })),
      ],
      GraphSchema,
    );
    const opset = new PbMessage([stringField(OpsetField.domain, ""), intField(OpsetField.version, BUILDER_OPSET)], OpsetSchema);
    const model = new PbMessage(
      [
        intField(ModelField.irVersion, IR_VERSION),
        stringField(ModelField.producerName, "sd-trt"),
        { no: ModelField.graph, wt: WireType.LengthDelimited, value: graph },
        { no: ModelField.opsetImport, wt: WireType.LengthDelimited, value: opset },
        ...[...this.metadataProps].map(([key, value]) => ({
          no: ModelField.metadataProps,
          wt: WireType.LengthDelimited as const,
          value: new PbMessage([stringField(StringStringField.key, key), stringField(StringStringField.value, value)], StringStringSchema),
        })),
      ],
      ModelSchema,
    );
    const bytes = encodeMessage(model);
    const data = this.data;
    this.data = undefined;
    if (data) {
      await data.sync();
      await data.close();
    }
    const dataPath = `${this.options.path}_data`;
    if (this.dataOffset > 0) await rename(this.dataTmp, dataPath);
    else await rm(this.dataTmp, { force: true });
    await writeFileAtomic(this.options.path, bytes);
    return { modelBytes: bytes.length, dataBytes: this.dataOffset };
  }

  /** Closes and removes the partial data file (after a failure). */
  async abort(): Promise<void> {
    const data = this.data;
    this.data = undefined;
    await data?.close().catch(() => undefined);
    await rm(this.dataTmp, { force: true });
  }
}

