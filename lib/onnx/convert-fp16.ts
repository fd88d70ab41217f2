/**
 * fp32 → fp16 conversion of an ONNX graph for TensorRT's strongly typed networks.
 *
 * TensorRT 11 has no fp16 builder flag: every tensor's type comes from the network, so an fp32
 * ONNX must be rewritten to compute in fp16. The approach is that of onnxconverter-common's
 * `convert_float_to_float16(keep_io_types=True, op_block_list=…)` and of onnxruntime's
 * transformers `float16.py`, with a dataflow rule for the normalisation arithmetic:
 *
 * 1. **I/O stays float32** (`keep_io_types`): float graph inputs feed a Cast to fp16 where an
 *    fp16 node reads them; fp16 results reaching a graph output go through a Cast to fp32.
 *    The backends therefore see the same I/O types as the fp32 export, and the timestep — whose
 *    fractional values fp16 cannot hold — enters in fp32.
 * 2. **Numerically sensitive operators stay fp32** (`KEEP_FP32_OPS`): normalisations
 *    (Layer/Group/Instance/Batch), reductions (ReduceMean, ReduceSum, …), Pow, Sqrt,
 *    Reciprocal, Softmax/LogSoftmax, Exp/Log, Sin/Cos (timestep embeddings), Range, CumSum and
 *    the random generators. A Div whose divisor comes from a Sqrt (x / sqrt(var + eps), the
 *    decomposed LayerNorm of opset < 17) stays fp32 too ("Div for norm").
 * 3. **fp32 spreads through cheap arithmetic, not through the heavy layers**: an elementwise or
 *    data-movement node (Add, Sub, Mul, Div, Concat, Reshape, …; `FOLLOWS_INPUTS_OPS`) whose
 *    every non-constant float input is fp32 stays fp32. That keeps `var + eps`, the timestep ×
 *    frequency product and the InstanceNorm affine tail in fp32, while MatMul/Conv/Gemm and
 *    everything fed by them run in fp16.
 * 4. Everything else that touches float32 runs in fp16. Cast nodes with `to = FLOAT` inside
 *    fp16 regions are retargeted to FLOAT16; a Cast from an integer/bool/fp16 value to FLOAT
 *    is an fp32 source (an int64 timestep becomes an exact float32).
 * 5. **Constants follow their readers**: an initializer or Constant read only by fp16 nodes is
 *    converted in place; read only by fp32 nodes it is kept; read by both, an fp16 copy named
 *    `<name>__fp16` is added (no Cast node at run time). Inputs whose type is not tied to the
 *    data type (Resize `roi`/`scales`, Upsample `scales`, Pow's exponent, Dropout's ratio,
 *    GridSample's grid) keep float32.
 * 2a. **Attention scores in fp32 on request** (`fp32Attention`, diffusers' `upcast_attention`):
 *    the Q·Kᵀ MatMul feeding a Softmax, and the scale/mask ops between them, stay fp32.
 * 6. Weight values are rounded to nearest-even; finite values beyond ±65504 are clamped to
 *    ±65504 (a torch `finfo(float32).min` attention mask must stay finite, not become −Inf);
 *    ±Inf and NaN are kept. The number clamped is reported.
 *
 * Where precision changes on an edge, one Cast node per (value, target type) is inserted right
 * before its first reader. `value_info` entries are retyped to match. Graphs with control flow
 * (If/Loop/Scan sub-graphs) or operators from other domains are refused with a clear error.
 */
import { ModelFileError } from "../errors.js";
import { float32ArrayToFloat16 } from "./float16.js";
import { type ExternalDataReader, isExternal, type OnnxModel, readFloat32Tensor, tensorBytes, tensorHeader } from "./model.js";
import { intField, PbMessage, stringField, WireType } from "./protobuf.js";
import {
  AttributeField,
  AttributeSchema,
  AttributeType,
  DataType,
  GraphField,
  ModelField,
  NodeField,
  NodeSchema,
  TensorField,
  TensorSchema,
  TensorTypeField,
  TypeField,
  ValueInfoField,
} from "./schema.js";
import { attribute, inferValueTypes, nodeLabel } from "./types.js";

/** Operators computed in float32 even in an fp16 model (see the file comment). */
export const KEEP_FP32_OPS: readonly string[] = [
  "LayerNormalization", "GroupNormalization", "InstanceNormalization", "BatchNormalization",
  "LpNormalization", "MeanVarianceNormalization",
  "ReduceMean", "ReduceSum", "ReduceSumSquare", "ReduceL1", "ReduceL2", "ReduceLogSum", "ReduceLogSumExp", "ReduceProd",
  "Pow", "Sqrt", "Reciprocal", "Softmax", "LogSoftmax", "Exp", "Log", "Sin", "Cos", "Range", "CumSum",
  "RandomNormal", "RandomNormalLike", "RandomUniform", "RandomUniformLike",
];

/** Elementwise and data-movement operators that stay fp32 when all their float inputs are. */
export const FOLLOWS_INPUTS_OPS: readonly string[] = [
  "Add", "Sub", "Mul", "Div", "Neg", "Abs", "Max", "Min", "Sum", "Mean", "Where", "Clip",
  "Floor", "Ceil", "Round", "Sign", "Identity", "Cast",
  "Concat", "Split", "Slice", "Gather", "GatherElements", "GatherND", "Reshape", "Flatten", "Squeeze",
  "Unsqueeze", "Transpose", "Expand", "Tile", "Pad", "ConstantOfShape", "ScatterND", "ScatterElements",
];

/** Inputs whose type constraint is independent of the data type: they keep float32. */
const FIXED_TYPE_INPUTS: Readonly<Record<string, readonly number[]>> = {
  Resize: [1, 2],
  Upsample: [1],
  Pow: [1],
  Dropout: [1],
  GridSample: [1],
};

/** Operators that read their input's shape or convert it away, so accept either precision. */
const ANY_PRECISION_OPS = new Set(["Shape", "Size"]);

type Precision = "fp16" | "fp32";

export interface Fp16ConversionOptions {
  /** Operators kept in fp32. Defaults to `KEEP_FP32_OPS`. */
  keepFp32Ops?: readonly string[];
  /**
   * Compute attention scores in fp32: the MatMul whose result reaches a Softmax (through the
   * scale Mul/Div, a mask Add and reshapes, as torch exports `(q @ kᵀ) * scale`) and that path
   * stay fp32, its q and k cast up. diffusers' `upcast_attention` (SD 2.x 768-v): without it the
   * fp16 Q·Kᵀ overflows before the fp32 Softmax can help. Defaults to false.
   */
  fp32Attention?: boolean;
}

export interface Fp16ConversionReport {
  /** Nodes that compute on float data, by the precision they were given. */
  fp16Nodes: number;
  fp32Nodes: number;
  /** fp32 nodes by operator type (what stayed fp32 and why). */
  fp32ByOp: Record<string, number>;
  castsInserted: number;
  initializersConverted: number;
  initializersKeptFp32: number;
  /** Initializers/Constants read in both precisions (an fp16 copy was added). */
  constantsDuplicated: number;
  /** Weight values clamped to ±65504. */
  valuesClamped: number;
  /** Attention-score MatMuls kept fp32 (`fp32Attention`). */
  attentionScoresFp32: number;
}

/** Operators between an attention-score MatMul and its Softmax (scale, mask, layout changes). */
const SCORE_PATH_OPS = new Set(["Mul", "Div", "Add", "Sub", "Where", "Cast", "Reshape", "Transpose", "Identity", "Squeeze", "Unsqueeze", "Clip"]);
const SCORE_OPS = new Set(["MatMul", "Gemm", "Einsum"]);

/**
 * Indices of the nodes that compute attention scores: for each Softmax, walk back from its input
 * through SCORE_PATH_OPS (following the input that is computed, not a constant) to a MatMul;
 * that MatMul and the nodes on the way. Softmaxes not fed by a MatMul (within 8 steps) add nothing.
 */
function attentionScoreNodes(graph: PbMessage): { nodes: Set<number>; matmuls: number } {
  const nodes = graph.messages(GraphField.node);
  const producer = new Map<string, number>();
  nodes.forEach((node, index) => {
    for (const out of node.strings(NodeField.output)) if (out) producer.set(out, index);
  });
  const found = new Set<number>();
  let matmuls = 0;
  nodes.forEach((node) => {
    if (node.string(NodeField.opType) !== "Softmax") return;
    const path: number[] = [];
    let value = node.strings(NodeField.input)[0] ?? "";
    for (let step = 0; step < 8; step++) {
      const index = producer.get(value);
      if (index === undefined) return;
      const source = nodes[index]!;
      const op = source.string(NodeField.opType) ?? "";
      if (SCORE_OPS.has(op)) {
        if (!found.has(index)) matmuls++;
        found.add(index);
        for (const p of path) found.add(p);
        return;
      }
      if (!SCORE_PATH_OPS.has(op)) return;
      path.push(index);
      // The computed input (a constant scale or mask has no producer node, or is a Constant).
      const computed = source.strings(NodeField.input).filter((name) => {
        const from = producer.get(name);
        return from !== undefined && nodes[from]!.string(NodeField.opType) !== "Constant";
      });
      if (computed.length === 0) return;
      value = computed[0]!;
    }
  });
  return { nodes: found, matmuls };
}

/** What a graph rewrite needs to know about each value. */
interface Plan {
  nodePrecision: (Precision | "any" | undefined)[];
  /** Per node, per input index: the precision that input must have (undefined: leave as is). */
  inputNeeds: (Precision | undefined)[][];
  /** Precision of each float value produced by a node or graph input ("neutral" for constants). */
  valuePrecision: Map<string, Precision | "neutral">;
}

function isFloatType(t: number | undefined): boolean {
  return t === DataType.FLOAT;
}

function graphHasSubgraphs(graph: PbMessage): PbMessage | undefined {
  return graph.messages(GraphField.node).find((n) =>
    n.messages(NodeField.attribute).some((a) => a.has(AttributeField.g) || a.has(AttributeField.graphs)),
  );
}

function planPrecision(graph: PbMessage, types: Map<string, number>, keep: Set<string>, modelPath: string, forcedFp32: Set<number> = new Set()): Plan {
  const nodes = graph.messages(GraphField.node);
  const follows = new Set(FOLLOWS_INPUTS_OPS);
  const valuePrecision = new Map<string, Precision | "neutral">();
  const producerOp = new Map<string, string>();
  for (const t of graph.messages(GraphField.initializer)) valuePrecision.set(t.string(TensorField.name) ?? "", "neutral");
  for (const vi of graph.messages(GraphField.input)) {
    const name = vi.string(ValueInfoField.name) ?? "";
    if (!valuePrecision.has(name) && isFloatType(types.get(name))) valuePrecision.set(name, "fp32");
  }
  const nodePrecision: Plan["nodePrecision"] = [];
  const inputNeeds: Plan["inputNeeds"] = [];

  nodes.forEach((node, nodeIndex) => {
    const op = node.string(NodeField.opType) ?? "";
    const domain = node.string(NodeField.domain) ?? "";
    const inputs = node.strings(NodeField.input);
    const outputs = node.strings(NodeField.output);
    const fixed = new Set(FIXED_TYPE_INPUTS[op] ?? []);
    const floatIn = inputs.map((name, i) => name !== "" && !fixed.has(i) && isFloatType(types.get(name)));
    const floatOut = outputs.map((name) => name !== "" && isFloatType(types.get(name)));
    const touchesFloat = floatIn.some(Boolean) || floatOut.some(Boolean) || inputs.some((n, i) => fixed.has(i) && isFloatType(types.get(n)));
    let precision: Precision | "any" | undefined;
    if (!touchesFloat) precision = undefined;
    else if (domain !== "" && domain !== "ai.onnx") {
      throw new ModelFileError(
        modelPath,
        `${modelPath}: ${nodeLabel(node)} is from operator domain "${domain}", which the fp16 converter does not know; export the model in fp16 instead`,
      );
    } else if (op === "Constant") precision = undefined; // a constant source, resolved by its readers
    else if (ANY_PRECISION_OPS.has(op)) precision = "any";
    else if (op === "Cast" && !floatIn[0]) precision = floatOut[0] ? "fp32" : undefined; // int/bool/fp16 → float: exact in fp32
    else if (op === "Cast" && !floatOut[0]) precision = "any"; // float → int/bool/…: reads either precision
    else if (keep.has(op) || forcedFp32.has(nodeIndex)) precision = "fp32";
    else if (op === "Div" && producerOp.get(inputs[1] ?? "") === "Sqrt") precision = "fp32";
    else if (follows.has(op)) {
      const sources = inputs.filter((name, i) => floatIn[i] && valuePrecision.get(name) !== "neutral");
      precision = sources.length > 0 && sources.every((name) => valuePrecision.get(name) === "fp32") ? "fp32" : "fp16";
    } else precision = "fp16";

    nodePrecision.push(precision);
    inputNeeds.push(
      inputs.map((name, i): Precision | undefined => {
        if (name === "" || !isFloatType(types.get(name))) return undefined;
        if (fixed.has(i)) return "fp32";
        if (precision === "fp16" || precision === "fp32") return precision;
        return undefined;
      }),
    );
    outputs.forEach((name) => {
      if (name === "") return;
      producerOp.set(name, op);
      if (!isFloatType(types.get(name))) return;
      if (op === "Constant") valuePrecision.set(name, "neutral");
      else valuePrecision.set(name, precision === "fp32" ? "fp32" : "fp16");
    });
  });
  return { nodePrecision, inputNeeds, valuePrecision };
}

/** Unique value names for the values the rewrite adds. */
class NameAllocator {
  private readonly used = new Set<string>();
  constructor(graph: PbMessage) {
    for (const n of graph.messages(GraphField.node)) {
      for (const v of [...n.strings(NodeField.input), ...n.strings(NodeField.output)]) this.used.add(v);
      const name = n.string(NodeField.name);
      if (name) this.used.add(name);
    }
    for (const f of [GraphField.input, GraphField.output, GraphField.valueInfo]) {
      for (const vi of graph.messages(f)) this.used.add(vi.string(ValueInfoField.name) ?? "");
    }
    for (const t of graph.messages(GraphField.initializer)) this.used.add(t.string(TensorField.name) ?? "");
  }
  take(base: string): string {
    let name = base;
    for (let i = 1; this.used.has(name); i++) name = `${base}_${i}`;
    this.used.add(name);
    return name;
  }
}

function castNode(name: string, input: string, output: string, to: number): PbMessage {
  return new PbMessage(
    [
      stringField(NodeField.input, input),
      stringField(NodeField.output, output),
      stringField(NodeField.name, name),
      stringField(NodeField.opType, "Cast"),
      {
        no: NodeField.attribute,
        wt: WireType.LengthDelimited,
        value: new PbMessage([stringField(AttributeField.name, "to"), intField(AttributeField.i, to), intField(AttributeField.type, AttributeType.INT)], AttributeSchema),
      },
    ],
    NodeSchema,
  );
}

function cloneMessage(msg: PbMessage): PbMessage {
  return new PbMessage(
    msg.fields.map((f) => (f.wt === WireType.LengthDelimited && f.value instanceof PbMessage ? { ...f, value: cloneMessage(f.value) } : { ...f })),
    msg.schema,
  );
}

/** Rewrites a FLOAT tensor message in place to FLOAT16 with inline raw data. */
async function convertTensorToFp16(t: PbMessage, model: OnnxModel, reader: ExternalDataReader): Promise<number> {
  const values = await readFloat32Tensor(t, model, reader);
  const { bits, clamped } = float32ArrayToFloat16(values);
  for (const f of [TensorField.floatData, TensorField.rawData, TensorField.externalData, TensorField.dataLocation]) t.remove(f);
  t.setInt(TensorField.dataType, DataType.FLOAT16);
  t.setBytes(TensorField.rawData, new Uint8Array(bits.buffer, bits.byteOffset, bits.byteLength));
  return clamped;
}

/** Makes an external tensor self-contained (its data inline) so the model can move folders. */
export async function inlineExternal(t: PbMessage, model: OnnxModel, reader: ExternalDataReader): Promise<void> {
  if (!isExternal(t)) return;
  const bytes = await tensorBytes(t, model, reader);
  t.remove(TensorField.externalData);
  t.remove(TensorField.dataLocation);
  t.setBytes(TensorField.rawData, bytes);
}

/**
 * Converts `model` (fp32) to an fp16 model, returned as a new in-memory model whose tensors
 * are all inline (write it with `writeOnnxModel`, which moves large tensors to an external data
 * file). External data of the source is read through `reader`.
 */
export async function convertToFp16(
  model: OnnxModel,
  reader: ExternalDataReader,
  options: Fp16ConversionOptions = {},
): Promise<{ model: PbMessage; report: Fp16ConversionReport }> {
  const proto = cloneMessage(model.proto);
  const graph = proto.message(ModelField.graph) as PbMessage;
  const withSubgraph = graphHasSubgraphs(graph);
  if (withSubgraph) {
    throw new ModelFileError(
      model.path,
      `${model.path}: ${nodeLabel(withSubgraph)} has a sub-graph (control flow), which the fp16 converter does not handle; export the model in fp16 instead`,
    );
  }
  const types = inferValueTypes(graph, model.path);
  const keep = new Set(options.keepFp32Ops ?? KEEP_FP32_OPS);
  const scores = options.fp32Attention ? attentionScoreNodes(graph) : { nodes: new Set<number>(), matmuls: 0 };
  const plan = planPrecision(graph, types, keep, model.path, scores.nodes);
  const names = new NameAllocator(graph);
  const nodes = graph.messages(GraphField.node);
  const report: Fp16ConversionReport = {
    fp16Nodes: 0,
    fp32Nodes: 0,
    fp32ByOp: {},
    castsInserted: 0,
    initializersConverted: 0,
    initializersKeptFp32: 0,
    constantsDuplicated: 0,
    valuesClamped: 0,
    attentionScoresFp32: scores.matmuls,
  };

  // Graph outputs read the fp32 value: an fp16 producer gets its output renamed and a Cast
  // back to float32 writes the output name.
  const graphOutputs = new Set(graph.messages(GraphField.output).map((o) => o.string(ValueInfoField.name) ?? ""));
  const renamed = new Map<string, string>();
  const tailCasts: PbMessage[] = [];
  for (const name of graphOutputs) {
    if (plan.valuePrecision.get(name) !== "fp16") continue;
    const inner = names.take(`${name}__fp16`);
    renamed.set(name, inner);
    tailCasts.push(castNode(names.take(`${name}__cast_fp32`), inner, name, DataType.FLOAT));
  }

  // Who needs each constant (initializer or Constant output) in which precision.
  const constantNeeds = new Map<string, Set<Precision>>();
  nodes.forEach((node, ni) => {
    const needs = plan.inputNeeds[ni]!;
    node.strings(NodeField.input).forEach((input, i) => {
      const need = needs[i];
      if (need === undefined || plan.valuePrecision.get(input) !== "neutral") return;
      const set = constantNeeds.get(input) ?? new Set<Precision>();
      set.add(need);
      constantNeeds.set(input, set);
    });
  });
  for (const name of graphOutputs) {
    if (plan.valuePrecision.get(name) === "neutral") (constantNeeds.get(name) ?? constantNeeds.set(name, new Set()).get(name))!.add("fp32");
  }
  const listedAsInput = new Set(graph.messages(GraphField.input).map((i) => i.string(ValueInfoField.name) ?? ""));
  /** Constants whose fp16 form lives under another name. */
  const fp16Alias = new Map<string, string>();
  /** Constants converted to fp16 under their own name. */
  const convertedInPlace = new Set<string>();

  // Initializers.
  const newInitializers: PbMessage[] = [];
  for (const t of graph.messages(GraphField.initializer)) {
    const { name, dataType } = tensorHeader(t);
    newInitializers.push(t);
    if (dataType !== DataType.FLOAT) {
      await inlineExternal(t, model, reader);
      continue;
    }
    const needs = constantNeeds.get(name) ?? new Set<Precision>();
    if (needs.has("fp16") && !needs.has("fp32") && !listedAsInput.has(name)) {
      report.valuesClamped += await convertTensorToFp16(t, model, reader);
      report.initializersConverted++;
      convertedInPlace.add(name);
    } else {
      await inlineExternal(t, model, reader);
      report.initializersKeptFp32++;
      if (needs.has("fp16")) {
        const copy = cloneMessage(t);
        const alias = names.take(`${name}__fp16`);
        copy.setString(TensorField.name, alias);
        report.valuesClamped += await convertTensorToFp16(copy, model, reader);
        newInitializers.push(copy);
        fp16Alias.set(name, alias);
        report.constantsDuplicated++;
      }
    }
  }
  graph.setMessages(GraphField.initializer, newInitializers);

  // Nodes, with casts inserted before their first reader.
  const castFor = new Map<string, string>(); // `${value}|${precision}` → cast output
  const newNodes: PbMessage[] = [];
  for (const [ni, node] of nodes.entries()) {
    const op = node.string(NodeField.opType) ?? "";
    const precision = plan.nodePrecision[ni];
    const needs = plan.inputNeeds[ni]!;
    const inputs = node.strings(NodeField.input);

    if (op === "Constant") {
      const outName = node.strings(NodeField.output)[0] ?? "";
      const needs = constantNeeds.get(outName);
      if (needs && isFloatType(types.get(outName))) {
        if (needs.has("fp16") && !needs.has("fp32")) {
          report.valuesClamped += await constantToFp16(node, model, reader);
          convertedInPlace.add(outName);
        } else if (needs.has("fp16")) {
          const copy = cloneMessage(node);
          const alias = names.take(`${outName}__fp16`);
          copy.setStrings(NodeField.output, [alias]);
          const nodeName = copy.string(NodeField.name);
          if (nodeName) copy.setString(NodeField.name, names.take(`${nodeName}__fp16`));
          report.valuesClamped += await constantToFp16(copy, model, reader);
          newNodes.push(node, copy);
          fp16Alias.set(outName, alias);
          report.constantsDuplicated++;
          continue;
        }
      }
      newNodes.push(node);
      continue;
    }

    const newInputs = inputs.map((name, i) => {
      const need = needs[i];
      const source = renamed.get(name) ?? name;
      if (need === undefined) return source;
      const have = plan.valuePrecision.get(name);
      if (have === "neutral") return need === "fp16" && fp16Alias.has(name) ? fp16Alias.get(name)! : source;
      if (have === need || have === undefined) return source;
      const key = `${name}|${need}`;
      let cast = castFor.get(key);
      if (cast === undefined) {
        cast = names.take(`${name}__${need}`);
        castFor.set(key, cast);
        newNodes.push(castNode(names.take(`${name}__cast_${need}`), source, cast, need === "fp16" ? DataType.FLOAT16 : DataType.FLOAT));
        report.castsInserted++;
      }
      return cast;
    });
    node.setStrings(NodeField.input, newInputs);
    node.setStrings(
      NodeField.output,
      node.strings(NodeField.output).map((o) => renamed.get(o) ?? o),
    );

    if (precision === "fp16" || precision === "fp32") {
      if (precision === "fp16") report.fp16Nodes++;
      else {
        report.fp32Nodes++;
        report.fp32ByOp[op] = (report.fp32ByOp[op] ?? 0) + 1;
      }
      if (precision === "fp16") await retypeFloatAttributes(node, op, model, reader, report);
    }
    newNodes.push(node);
  }
  newNodes.push(...tailCasts);
  report.castsInserted += tailCasts.length;
  graph.setMessages(GraphField.node, newNodes);

  // value_info: float values computed in fp16 are now FLOAT16.
  for (const vi of graph.messages(GraphField.valueInfo)) {
    const name = vi.string(ValueInfoField.name) ?? "";
    // A renamed graph output keeps its float32 value_info: the tail Cast writes that name.
    const nowFp16 = (plan.valuePrecision.get(name) === "fp16" && !renamed.has(name)) || convertedInPlace.has(name);
    const tensorType = vi.message(ValueInfoField.type)?.message(TypeField.tensorType);
    if (nowFp16 && tensorType?.int(TensorTypeField.elemType) === DataType.FLOAT) {
      tensorType.setInt(TensorTypeField.elemType, DataType.FLOAT16);
    }
  }
  return { model: proto, report };
}

/** Converts a Constant node's float value to fp16 (value tensor or value_float(s)). */
async function constantToFp16(node: PbMessage, model: OnnxModel, reader: ExternalDataReader): Promise<number> {
  const value = attribute(node, "value");
  const t = value?.message(AttributeField.t);
  if (t) return convertTensorToFp16(t, model, reader);
  const scalar = attribute(node, "value_float");
  const list = attribute(node, "value_floats");
  const source = scalar ?? list;
  if (!source) return 0;
  const values = scalar ? Float32Array.of(scalar.float(AttributeField.f) ?? 0) : (list as PbMessage).floats(AttributeField.floats);
  const { bits, clamped } = float32ArrayToFloat16(values);
  const tensor = new PbMessage([], TensorSchema);
  if (!scalar) tensor.fields.push({ no: TensorField.dims, wt: WireType.Varint, value: BigInt(values.length) });
  tensor.setInt(TensorField.dataType, DataType.FLOAT16);
  tensor.setBytes(TensorField.rawData, new Uint8Array(bits.buffer));
  const attr = new PbMessage(
    [stringField(AttributeField.name, "value"), { no: AttributeField.t, wt: WireType.LengthDelimited, value: tensor }, intField(AttributeField.type, AttributeType.TENSOR)],
    AttributeSchema,
  );
  node.setMessages(
    NodeField.attribute,
    node.messages(NodeField.attribute).map((a) => (a === source ? attr : a)),
  );
  return clamped;
}

/** Attributes that name or hold a float type, retargeted for a node now computing in fp16. */
async function retypeFloatAttributes(
  node: PbMessage,
  op: string,
  model: OnnxModel,
  reader: ExternalDataReader,
  report: Fp16ConversionReport,
): Promise<void> {
  if (op === "Cast" || op === "EyeLike") {
    const a = attribute(node, op === "Cast" ? "to" : "dtype");
    if (a?.int(AttributeField.i) === DataType.FLOAT) a.setInt(AttributeField.i, DataType.FLOAT16);
  }
  if (op === "ConstantOfShape") {
    const t = attribute(node, "value")?.message(AttributeField.t);
    if (t && tensorHeader(t).dataType === DataType.FLOAT) report.valuesClamped += await convertTensorToFp16(t, model, reader);
    else if (!t) {
      // The default value is float32 0: make it an explicit fp16 zero.
      const tensor = new PbMessage([{ no: TensorField.dims, wt: WireType.Varint, value: 1n }], TensorSchema);
      tensor.setInt(TensorField.dataType, DataType.FLOAT16);
      tensor.setBytes(TensorField.rawData, new Uint8Array(2));
      node.fields.push({
        no: NodeField.attribute,
        wt: WireType.LengthDelimited,
        value: new PbMessage([stringField(AttributeField.name, "value"), { no: AttributeField.t, wt: WireType.LengthDelimited, value: tensor }, intField(AttributeField.type, AttributeType.TENSOR)], AttributeSchema),
      });
    }
  }
}
