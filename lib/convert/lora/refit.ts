/**
 * A LoRA set applied to a refittable TensorRT engine by refitting its weights, never by a rebuild
 * (native/trt/refitter.h). The values come from the ONNX graph the engine was built from (its
 * initializers are the engine's weights, named alike): the weights the new set changes get
 * base + Δ₁ + Δ₂ … (set.ts, transposed into the stored layout as `writeMergedGraph` does); the
 * weights the previous set changed and this one does not get the graph's own values back, so an
 * empty set restores the base engine exactly (the same float32 → engine-type conversion as the
 * build). When TensorRT fused a weight with others it asks for them too: they are added with their
 * (merged or base) values and the refit repeats.
 */
import { EngineBuildError } from "../../errors.js";
import type { TrtEngine } from "../../native/tensorrt-types.js";
import { ExternalDataReader, OnnxModel, tensorHeader } from "../../onnx/model.js";
import type { PbMessage } from "../../onnx/protobuf.js";
import { matmulWeights, storedWeight } from "./graph.js";
import type { KeyDeltas } from "./set.js";

/**
 * Refits `engine` (built from `onnxPath`) to the set whose deltas on this graph are `deltas`.
 * @param previous the weights the engine's current set changed (empty for a base engine).
 * @returns the weights now changed: pass it as `previous` on the next call.
 * @throws EngineBuildError when TensorRT still misses weights after they were added; a
 *   NativeError from the engine (not refittable, unknown weight, wrong count).
 */
export async function refitEngineWeights(
  engine: Pick<TrtEngine, "name" | "refit">,
  onnxPath: string,
  deltas: ReadonlyMap<string, KeyDeltas>,
  previous: ReadonlySet<string>,
): Promise<Set<string>> {
  const model = await OnnxModel.read(onnxPath);
  const linear = matmulWeights(model);
  const initializers = new Map<string, PbMessage>(model.initializers().map((t) => [tensorHeader(t).name, t]));
  const reader = new ExternalDataReader();
  try {
    const weights: Record<string, Float32Array> = {};
    const add = async (name: string) => {
      const t = initializers.get(name);
      if (!t) throw new EngineBuildError(engine.name, `engine ${engine.name} asks for weights ${name}, which ${onnxPath} does not have: rebuild the engines from this model`);
      weights[name] = await storedWeight(t, model, reader, linear, deltas.get(name));
    };
    for (const name of new Set([...deltas.keys(), ...previous])) await add(name);
    for (let round = 0; round < 2; round++) {
      const result = await engine.refit(weights);
      if (result.refitted) return new Set(deltas.keys());
      for (const name of result.missing) if (!(name in weights)) await add(name);
    }
    throw new EngineBuildError(engine.name, `TensorRT would not refit engine ${engine.name}: it still misses weights after they were added`);
  } finally {
    await reader.close();
  }
}
