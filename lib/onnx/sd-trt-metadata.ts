/**
 * Facts sd-trt's own graph builder (lib/convert/graphs) records in a graph's `metadata_props`, for
 * readers that cannot tell them from the graph's weights: the engine builder
 * (lib/backends/tensorrt/build.ts) reads them.
 */
import { ModelField, StringStringField } from "./schema.js";
import type { OnnxModel } from "./model.js";

/**
 * The element type the UNet's attention scores (Q·Kᵀ and the softmax) are computed in: "float32"
 * when they are kept in fp32 inside an fp16 graph (diffusers' `upcast_attention`), or in an fp32 graph.
 */
export const ATTENTION_SCORES_KEY = "sd-trt.attention_scores";

/** The model's `metadata_props` as a map (later entries win, as onnx's helper reads them). */
export function modelMetadata(model: OnnxModel): Map<string, string> {
  const out = new Map<string, string>();
  for (const entry of model.proto.messages(ModelField.metadataProps)) {
    const key = entry.string(StringStringField.key);
    if (key !== undefined) out.set(key, entry.string(StringStringField.value) ?? "");
  }
  return out;
}
