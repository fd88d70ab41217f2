/**
 * Model roles for engines: each graph's I/O contract (lib/model/graph-io.ts, the same rules as the
 * CPU backend) read from the ONNX file at build time — it is recorded in the manifest, so the
 * runtime binds the engine's tensors by the names the export used — and the precision of an
 * export. TensorRT takes fp16 exports as they are, so element types are shown to the contract
 * checks as float32 ("a float tensor"): which float type an engine uses is TensorRT's business.
 */
import { DATA_TYPE_NAMES, DataType, TensorField } from "../../onnx/schema.js";
import type { OnnxModel } from "../../onnx/model.js";
import { describeModel, describeSdxlTextEncoder, type GraphSignature, type ModelIo, type ModelRole, type SdxlTextEncoderIo } from "../../model/graph-io.js";

export { onnxSignature } from "../../model/graph-io.js";

function floatAgnostic(type: string): string {
  return type === "float16" || type === "bfloat16" ? "float32" : type;
}

function relaxed(signature: GraphSignature): GraphSignature {
  return {
    inputs: signature.inputs.map((s) => ({ ...s, type: floatAgnostic(s.type) })),
    outputs: signature.outputs.map((s) => ({ ...s, type: floatAgnostic(s.type) })),
  };
}

/** Describes a graph for `role`, accepting float16 where the contract says float32. */
export function describeForEngine(role: ModelRole, signature: GraphSignature, file: string): ModelIo {
  return describeModel(role, relaxed(signature), file);
}

/**
 * An SDXL text encoder graph for an engine (the CPU backend's rules, `describeSdxlTextEncoder`):
 * `hiddenName` is the penultimate hidden state, and with `pooled` (text_encoder_2) `pooledName` is
 * its `text_embeds`.
 */
export function describeSdxlEncoderForEngine(signature: GraphSignature, file: string, pooled: boolean): SdxlTextEncoderIo {
  return describeSdxlTextEncoder(relaxed(signature), file, pooled);
}

/** The declared dims of each graph input, for profile checks. */
export function declaredShapes(signature: GraphSignature): Record<string, (number | string)[]> {
  return Object.fromEntries(signature.inputs.map((s) => [s.name, s.shape]));
}

export type ExportPrecision = "fp32" | "fp16";

/**
 * Whether an export computes in fp16 or fp32: by where its weight bytes are (an fp16 export keeps
 * a few fp32 tensors, e.g. norms; an fp32 one has no fp16 weights). External tensors count by
 * their declared length.
 */
export function exportPrecision(model: OnnxModel): ExportPrecision {
  let fp16 = 0;
  let fp32 = 0;
  for (const t of model.initializers()) {
    const type = t.int(TensorField.dataType);
    const elements = t.ints(TensorField.dims).reduce((a, b) => a * b, 1);
    if (type === DataType.FLOAT16) fp16 += elements * 2;
    else if (type === DataType.FLOAT) fp32 += elements * 4;
  }
  if (fp16 === 0 && fp32 === 0) {
    // No weights: decide by the graph's float inputs.
    const io = model.io();
    return [...io.inputs, ...io.outputs].some((v) => v.dtype === DATA_TYPE_NAMES[DataType.FLOAT16]) ? "fp16" : "fp32";
  }
  return fp16 > fp32 ? "fp16" : "fp32";
}
