/**
 * The ValueInfoProto of a tensor graph input or output (name, element type, shape), shared by the
 * graph builder (lib/onnx/builder.ts) and the text-encoder edit (lib/onnx/text-encoder-edit.ts),
 * the two places that add inputs or outputs to a graph.
 */
import { intField, PbMessage, stringField, WireType } from "./protobuf.js";
import {
  DimField,
  DimSchema,
  ShapeField,
  ShapeSchema,
  TensorTypeField,
  TensorTypeSchema,
  TypeField,
  TypeSchema,
  ValueInfoField,
  ValueInfoSchema,
} from "./schema.js";

/**
 * `dataType` is an onnx.proto `DataType` value; each dimension is a size or, when dynamic, a
 * symbolic name (written as `dim_param`).
 */
export function tensorValueInfo(name: string, dataType: number, dims: readonly (number | string)[]): PbMessage {
  const shape = new PbMessage(
    dims.map((d) => ({
      no: ShapeField.dim,
      wt: WireType.LengthDelimited as const,
      value: new PbMessage([typeof d === "number" ? intField(DimField.dimValue, d) : stringField(DimField.dimParam, d)], DimSchema),
    })),
    ShapeSchema,
  );
  const tensorType = new PbMessage(
    [intField(TensorTypeField.elemType, dataType), { no: TensorTypeField.shape, wt: WireType.LengthDelimited, value: shape }],
    TensorTypeSchema,
  );
  const type = new PbMessage([{ no: TypeField.tensorType, wt: WireType.LengthDelimited, value: tensorType }], TypeSchema);
  return new PbMessage(
    [stringField(ValueInfoField.name, name), { no: ValueInfoField.type, wt: WireType.LengthDelimited, value: type }],
    ValueInfoSchema,
  );
}
