/**
 * The parts of onnx.proto (https://github.com/onnx/onnx/blob/main/onnx/onnx.proto) that the
 * engine builder reads and edits: field numbers and which fields are sub-messages. Fields not
 * listed here are carried through untouched as raw bytes.
 */
import type { MessageSchema } from "./protobuf.js";

export const ModelField = {
  irVersion: 1,
  producerName: 2,
  producerVersion: 3,
  domain: 4,
  modelVersion: 5,
  docString: 6,
  graph: 7,
  opsetImport: 8,
  metadataProps: 14,
  trainingInfo: 20,
  functions: 25,
} as const;

export const OpsetField = { domain: 1, version: 2 } as const;

export const GraphField = {
  node: 1,
  name: 2,
  initializer: 5,
  docString: 10,
  input: 11,
  output: 12,
  valueInfo: 13,
  quantizationAnnotation: 14,
  sparseInitializer: 15,
  metadataProps: 16,
} as const;

export const NodeField = {
  input: 1,
  output: 2,
  name: 3,
  opType: 4,
  attribute: 5,
  docString: 6,
  domain: 7,
  overload: 8,
  metadataProps: 9,
} as const;

export const AttributeField = {
  name: 1,
  f: 2,
  i: 3,
  s: 4,
  t: 5,
  g: 6,
  floats: 7,
  ints: 8,
  strings: 9,
  tensors: 10,
  graphs: 11,
  docString: 13,
  tp: 14,
  typeProtos: 15,
  type: 20,
  refAttrName: 21,
  sparseTensor: 22,
  sparseTensors: 23,
} as const;

/** AttributeProto.AttributeType */
export const AttributeType = {
  UNDEFINED: 0,
  FLOAT: 1,
  INT: 2,
  STRING: 3,
  TENSOR: 4,
  GRAPH: 5,
  FLOATS: 6,
  INTS: 7,
  STRINGS: 8,
  TENSORS: 9,
  GRAPHS: 10,
  SPARSE_TENSOR: 11,
  SPARSE_TENSORS: 12,
  TYPE_PROTO: 13,
  TYPE_PROTOS: 14,
} as const;

export const ValueInfoField = { name: 1, type: 2, docString: 3, metadataProps: 4 } as const;
export const TypeField = { tensorType: 1, sequenceType: 4, mapType: 5, denotation: 6, sparseTensorType: 8, optionalType: 9 } as const;
export const TensorTypeField = { elemType: 1, shape: 2 } as const;
export const ShapeField = { dim: 1 } as const;
export const DimField = { dimValue: 1, dimParam: 2, denotation: 3 } as const;

export const TensorField = {
  dims: 1,
  dataType: 2,
  segment: 3,
  floatData: 4,
  int32Data: 5,
  stringData: 6,
  int64Data: 7,
  name: 8,
  rawData: 9,
  doubleData: 10,
  uint64Data: 11,
  docString: 12,
  externalData: 13,
  dataLocation: 14,
  metadataProps: 16,
} as const;

export const StringStringField = { key: 1, value: 2 } as const;

/** TensorProto.DataLocation */
export const DataLocation = { DEFAULT: 0, EXTERNAL: 1 } as const;

/** TensorProto.DataType */
export const DataType = {
  UNDEFINED: 0,
  FLOAT: 1,
  UINT8: 2,
  INT8: 3,
  UINT16: 4,
  INT16: 5,
  INT32: 6,
  INT64: 7,
  STRING: 8,
  BOOL: 9,
  FLOAT16: 10,
  DOUBLE: 11,
  UINT32: 12,
  UINT64: 13,
  COMPLEX64: 14,
  COMPLEX128: 15,
  BFLOAT16: 16,
} as const;

export const DATA_TYPE_NAMES: Readonly<Record<number, string>> = Object.fromEntries(
  Object.entries(DataType).map(([k, v]) => [v, k.toLowerCase()]),
);

/** Bytes per element of fixed-size data types (undefined for strings and sub-byte types). */
export function dataTypeSize(dataType: number): number | undefined {
  switch (dataType) {
    case DataType.FLOAT:
    case DataType.INT32:
    case DataType.UINT32:
      return 4;
    case DataType.UINT8:
    case DataType.INT8:
    case DataType.BOOL:
      return 1;
    case DataType.UINT16:
    case DataType.INT16:
    case DataType.FLOAT16:
    case DataType.BFLOAT16:
      return 2;
    case DataType.INT64:
    case DataType.UINT64:
    case DataType.DOUBLE:
    case DataType.COMPLEX64:
      return 8;
    case DataType.COMPLEX128:
      return 16;
    default:
      return undefined;
  }
}

// Schemas are functions so that mutually recursive messages (graph ↔ attribute) can refer to
// each other before both are defined.
export const StringStringSchema: MessageSchema = { name: "StringStringEntryProto", messages: {} };
export const OpsetSchema: MessageSchema = { name: "OperatorSetIdProto", messages: {} };
export const DimSchema: MessageSchema = { name: "TensorShapeProto.Dimension", messages: {} };
export const ShapeSchema: MessageSchema = { name: "TensorShapeProto", messages: { [ShapeField.dim]: () => DimSchema } };
export const TensorTypeSchema: MessageSchema = {
  name: "TypeProto.Tensor",
  messages: { [TensorTypeField.shape]: () => ShapeSchema },
};
export const TypeSchema: MessageSchema = {
  name: "TypeProto",
  messages: { [TypeField.tensorType]: () => TensorTypeSchema },
};
export const ValueInfoSchema: MessageSchema = {
  name: "ValueInfoProto",
  messages: { [ValueInfoField.type]: () => TypeSchema, [ValueInfoField.metadataProps]: () => StringStringSchema },
};
export const TensorSchema: MessageSchema = {
  name: "TensorProto",
  messages: { [TensorField.externalData]: () => StringStringSchema, [TensorField.metadataProps]: () => StringStringSchema },
};
export const AttributeSchema: MessageSchema = {
  name: "AttributeProto",
  messages: {
    [AttributeField.t]: () => TensorSchema,
    [AttributeField.g]: () => GraphSchema,
    [AttributeField.tensors]: () => TensorSchema,
    [AttributeField.graphs]: () => GraphSchema,
  },
};
export const NodeSchema: MessageSchema = {
  name: "NodeProto",
  messages: { [NodeField.attribute]: () => AttributeSchema, [NodeField.metadataProps]: () => StringStringSchema },
};
export const GraphSchema: MessageSchema = {
  name: "GraphProto",
  messages: {
    [GraphField.node]: () => NodeSchema,
    [GraphField.initializer]: () => TensorSchema,
    [GraphField.input]: () => ValueInfoSchema,
    [GraphField.output]: () => ValueInfoSchema,
    [GraphField.valueInfo]: () => ValueInfoSchema,
    [GraphField.metadataProps]: () => StringStringSchema,
  },
};
export const ModelSchema: MessageSchema = {
  name: "ModelProto",
  messages: {
    [ModelField.graph]: () => GraphSchema,
    [ModelField.opsetImport]: () => OpsetSchema,
    [ModelField.metadataProps]: () => StringStringSchema,
  },
};
