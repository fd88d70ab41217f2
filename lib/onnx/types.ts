/**
 * Element-type inference over an ONNX graph: the data type of every value, from the graph
 * inputs, initializers and Constant nodes through each operator's typing rule. The fp16
 * converter needs it to know which values are float32 (torch exports carry `value_info` for
 * only some values).
 */
import { ModelFileError } from "../errors.js";
import type { PbMessage } from "./protobuf.js";
import { AttributeField, DataType, GraphField, NodeField, TensorField } from "./schema.js";
import { tensorHeader, valueInfoOf } from "./model.js";

/** Standard operators whose every output has the element type of their first input. */
const SAME_AS_FIRST_INPUT = new Set([
  "Abs", "Acos", "Acosh", "Add", "Asin", "Asinh", "Atan", "Atanh", "AveragePool", "BatchNormalization",
  "Ceil", "Celu", "Clip", "Col2Im", "Compress", "Concat", "Conv", "ConvTranspose", "Cos", "Cosh", "CumSum",
  "DepthToSpace", "Det", "Div", "Einsum", "Elu", "Erf", "Exp", "Expand", "Flatten", "Floor", "Gather",
  "GatherElements", "GatherND", "Gelu", "Gemm", "GlobalAveragePool", "GlobalLpPool", "GlobalMaxPool",
  "GridSample", "GroupNormalization", "HardSigmoid", "HardSwish", "Hardmax", "Identity",
  "InstanceNormalization", "LRN", "LeakyRelu", "Log", "LogSoftmax", "LpNormalization", "LpPool", "MatMul",
  "Max", "MaxRoiPool", "Mean", "MeanVarianceNormalization", "Min", "Mish", "Mod", "Mul", "Neg", "PRelu", "Pad",
  "Pow", "Range", "Reciprocal", "ReduceL1", "ReduceL2", "ReduceLogSum", "ReduceLogSumExp", "ReduceMax",
  "ReduceMean", "ReduceMin", "ReduceProd", "ReduceSum", "ReduceSumSquare", "Relu", "Reshape", "Resize",
  "ReverseSequence", "RoiAlign", "Round", "Scatter", "ScatterElements", "ScatterND", "Selu", "Shrink",
  "Sigmoid", "Sign", "Sin", "Sinh", "Slice", "Softmax", "Softplus", "Softsign", "SpaceToDepth", "Split",
  "Sqrt", "Squeeze", "Sub", "Sum", "Tan", "Tanh", "ThresholdedRelu", "Tile", "Transpose", "Trilu",
  "Unsqueeze", "Upsample",
]);

const ALWAYS_INT64 = new Set(["Shape", "Size", "NonZero", "ArgMax", "ArgMin"]);
const ALWAYS_BOOL = new Set(["Equal", "Less", "LessOrEqual", "Greater", "GreaterOrEqual", "Not", "And", "Or", "Xor", "IsNaN", "IsInf"]);

export function attribute(node: PbMessage, name: string): PbMessage | undefined {
  return node.messages(NodeField.attribute).find((a) => a.string(AttributeField.name) === name);
}

export function nodeLabel(node: PbMessage): string {
  const name = node.string(NodeField.name);
  const op = node.string(NodeField.opType) ?? "?";
  return name ? `${op} node "${name}"` : `${op} node producing "${node.strings(NodeField.output)[0] ?? "?"}"`;
}

/** The element type a Constant node produces. */
function constantType(node: PbMessage): number | undefined {
  for (const a of node.messages(NodeField.attribute)) {
    switch (a.string(AttributeField.name)) {
      case "value": {
        const t = a.message(AttributeField.t);
        return t ? tensorHeader(t).dataType : undefined;
      }
      case "value_float":
      case "value_floats":
        return DataType.FLOAT;
      case "value_int":
      case "value_ints":
        return DataType.INT64;
      case "value_string":
      case "value_strings":
        return DataType.STRING;
    }
  }
  return undefined;
}

function dtypeAttr(node: PbMessage, fallback: number | undefined): number | undefined {
  return attribute(node, "dtype")?.int(AttributeField.i) ?? fallback;
}

/** Output element types of one node, or undefined where the rule does not know. */
function outputTypesOf(node: PbMessage, inputTypes: (number | undefined)[]): (number | undefined)[] {
  const op = node.string(NodeField.opType) ?? "";
  const n = node.strings(NodeField.output).length;
  const fill = (t: number | undefined) => new Array<number | undefined>(n).fill(t);
  const first = inputTypes.find((t) => t !== undefined);
  const domain = node.string(NodeField.domain) ?? "";
  if (domain !== "" && domain !== "ai.onnx") return fill(undefined);
  if (ALWAYS_INT64.has(op)) return fill(DataType.INT64);
  if (ALWAYS_BOOL.has(op)) return fill(DataType.BOOL);
  switch (op) {
    case "Cast":
      return fill(attribute(node, "to")?.int(AttributeField.i));
    case "CastLike":
      return fill(inputTypes[1]);
    case "Constant":
      return fill(constantType(node));
    case "ConstantOfShape": {
      const t = attribute(node, "value")?.message(AttributeField.t);
      return fill(t ? tensorHeader(t).dataType : DataType.FLOAT);
    }
    case "TopK":
      return [inputTypes[0], DataType.INT64];
    case "MaxPool":
      return [inputTypes[0], DataType.INT64];
    case "Unique":
      return [inputTypes[0], DataType.INT64, DataType.INT64, DataType.INT64];
    case "Dropout":
      return [inputTypes[0], DataType.BOOL];
    case "LayerNormalization": {
      const stash = attribute(node, "stash_type")?.int(AttributeField.i) ?? DataType.FLOAT;
      return [inputTypes[0], stash, stash].slice(0, n);
    }
    case "Where":
      return fill(inputTypes[1]);
    case "OneHot":
      return fill(inputTypes[2]);
    case "RandomNormal":
    case "RandomUniform":
      return fill(dtypeAttr(node, DataType.FLOAT));
    case "RandomNormalLike":
    case "RandomUniformLike":
    case "EyeLike":
    case "Bernoulli":
      return fill(dtypeAttr(node, inputTypes[0]));
    case "Multinomial":
      return fill(dtypeAttr(node, DataType.INT32));
  }
  if (SAME_AS_FIRST_INPUT.has(op)) return fill(first);
  return fill(undefined);
}

/**
 * Infers the element type of every value in `graph`. Uses `value_info` where the operator's
 * rule does not apply; a float value whose type cannot be determined is an error (the
 * converter must not guess).
 */
export function inferValueTypes(graph: PbMessage, modelPath: string): Map<string, number> {
  const types = new Map<string, number>();
  const declared = new Map<string, number>();
  for (const vi of [...graph.messages(GraphField.valueInfo), ...graph.messages(GraphField.output)]) {
    const info = valueInfoOf(vi);
    if (info.dataType !== DataType.UNDEFINED) declared.set(info.name, info.dataType);
  }
  for (const vi of graph.messages(GraphField.input)) {
    const info = valueInfoOf(vi);
    types.set(info.name, info.dataType);
  }
  for (const t of graph.messages(GraphField.initializer)) {
    types.set(t.string(TensorField.name) ?? "", tensorHeader(t).dataType);
  }
  for (const node of graph.messages(GraphField.node)) {
    const inputs = node.strings(NodeField.input);
    const outputs = node.strings(NodeField.output);
    const inferred = outputTypesOf(
      node,
      inputs.map((name) => (name === "" ? undefined : types.get(name))),
    );
    outputs.forEach((name, i) => {
      if (name === "") return;
      const t = inferred[i] ?? declared.get(name);
      if (t === undefined) {
        throw new ModelFileError(
          modelPath,
          `${modelPath}: cannot tell the element type of "${name}" produced by ${nodeLabel(node)} ` +
            `(operator not known to the fp16 converter and no value_info); export the model in fp16 instead`,
        );
      }
      types.set(name, t);
    });
  }
  return types;
}
