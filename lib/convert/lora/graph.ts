/**
 * LoRA deltas applied to a converted ONNX graph's weights (the CPU backend's merged weights).
 *
 * A converted graph names every weight initializer by its diffusers key (../types.ts), so the
 * graph itself is the LoRA target: its initializers' names and shapes, Linear weights (the second
 * input of a MatMul) stored transposed [in, out] and turned back to torch's [out, in] for
 * matching. `writeMergedGraph` writes a copy of the graph whose changed weights are
 * base + Δ₁ + Δ₂ … (set.ts), transposed back into the stored layout; fp16 weights are merged in
 * float32 and rounded once. The other weights are copied unchanged, so the copy stands on its own
 * in another folder; the source graph is never modified, which is what makes returning to the
 * base weights exact.
 */
import { InternalError, ModelFileError } from "../../errors.js";
import { float16ArrayToFloat32, float32ArrayToFloat16 } from "../../onnx/float16.js";
import { ExternalDataReader, isExternal, OnnxModel, readFloat32Tensor, tensorBytes, tensorHeader } from "../../onnx/model.js";
import type { PbMessage } from "../../onnx/protobuf.js";
import { DataType, GraphField, NodeField, TensorField } from "../../onnx/schema.js";
import { writeOnnxModel } from "../../onnx/write.js";
import { mergedWeight, type KeyDeltas } from "./set.js";

/** The names of initializers a MatMul reads as its weight (input 1): Linear weights, stored [in, out]. */
export function matmulWeights(model: OnnxModel): Set<string> {
  const names = new Set<string>();
  for (const node of model.graph.messages(GraphField.node)) {
    if (node.string(NodeField.opType) === "MatMul") {
      const input = node.strings(NodeField.input)[1];
      if (input !== undefined) names.add(input);
    }
  }
  return names;
}

const FLOAT_TYPES: readonly number[] = [DataType.FLOAT, DataType.FLOAT16];

/**
 * Each float weight of the graph by name, with its torch-layout shape (Linear weights turned back
 * to [out, in]): what `loraDeltas` matches a LoRA against.
 */
export function graphWeightShapes(model: OnnxModel): Map<string, readonly number[]> {
  const linear = matmulWeights(model);
  const shapes = new Map<string, readonly number[]>();
  for (const t of model.initializers()) {
    const { name, dataType, dims } = tensorHeader(t);
    if (!FLOAT_TYPES.includes(dataType)) continue;
    shapes.set(name, linear.has(name) && dims.length === 2 ? [dims[1]!, dims[0]!] : dims);
  }
  return shapes;
}

/** [out, in] row-major → [in, out] row-major. */
function transpose2d(values: Float32Array, rows: number, cols: number): Float32Array {
  const out = new Float32Array(values.length);
  for (let r = 0; r < rows; r++) for (let c = 0; c < cols; c++) out[c * rows + r] = values[r * cols + c]!;
  return out;
}

/**
 * Writes `src` with `deltas` merged into its weights to `out` (+ `out`_data), atomically; returns
 * the files written. Every key of `deltas` must be a float initializer of the graph.
 * @throws ModelFileError naming the graph when a key is not one of its weights.
 */
export async function writeMergedGraph(src: string, out: string, deltas: ReadonlyMap<string, KeyDeltas>): Promise<string[]> {
  const model = await OnnxModel.read(src);
  const linear = matmulWeights(model);
  const reader = new ExternalDataReader();
  const merged = new Set<string>();
  try {
    for (const t of model.initializers()) {
      const { name, dataType } = tensorHeader(t);
      const entry = deltas.get(name);
      if (entry && FLOAT_TYPES.includes(dataType)) {
        const values = await storedWeight(t, model, reader, linear, entry);
        setInline(t, dataType === DataType.FLOAT ? new Uint8Array(values.buffer) : new Uint8Array(float32ArrayToFloat16(values).bits.buffer));
        merged.add(name);
      } else if (isExternal(t)) {
        setInline(t, await tensorBytes(t, model, reader));
      }
    }
  } finally {
    await reader.close();
  }
  const missing = [...deltas.keys()].filter((k) => !merged.has(k));
  if (missing.length > 0) throw new ModelFileError(src, `${src} has no float weight named ${missing.slice(0, 3).join(", ")}: the LoRA deltas were computed for another graph`);
  return writeOnnxModel(model.proto, out);
}

/**
 * A float initializer's values as float32 in its stored layout, with `entry`'s deltas merged in
 * (transposed for a Linear weight) when given: what `writeMergedGraph` writes and what a TensorRT
 * refit hands the engine.
 */
export async function storedWeight(t: PbMessage, model: OnnxModel, reader: ExternalDataReader, linear: ReadonlySet<string>, entry?: KeyDeltas): Promise<Float32Array> {
  const { name, dataType, dims } = tensorHeader(t);
  if (!FLOAT_TYPES.includes(dataType)) throw new ModelFileError(model.path, `${model.path}: weight ${name} is not float32 or float16`);
  const stored = dataType === DataType.FLOAT ? await readFloat32Tensor(t, model, reader) : float16ArrayToFloat32(toUint16(await tensorBytes(t, model, reader)));
  if (!entry) return stored;
  const transposed = linear.has(name) && dims.length === 2;
  return mergedWeight(stored, transposed ? entry.deltas.map((d) => transpose2d(d, dims[1]!, dims[0]!)) : entry.deltas);
}

function setInline(t: PbMessage, bytes: Uint8Array): void {
  for (const f of [TensorField.floatData, TensorField.int32Data, TensorField.rawData, TensorField.externalData, TensorField.dataLocation]) t.remove(f);
  t.setBytes(TensorField.rawData, bytes);
}

function toUint16(bytes: Uint8Array): Uint16Array {
  if (bytes.length % 2 !== 0) throw new InternalError(`a float16 tensor has ${bytes.length} bytes`);
  const out = new Uint16Array(bytes.length / 2);
  new Uint8Array(out.buffer).set(bytes);
  return out;
}
