/**
 * LoRAs merged into a checkpoint before conversion (`sd-trt convert --lora FILE[:SCALE]`): the
 * same checkpoint with the changed weights reading as base + Δ₁ + Δ₂ … (set.ts), so the graph
 * builder writes merged weights and knows nothing of LoRAs. Every LoRA is checked against the
 * checkpoint's own keys and shapes (torch layout) before any weight is read.
 */
import type { CheckpointSource, ComponentName, ComponentSource, SourceTensor, WeightSource } from "../types.js";
import { loraSetDeltas, mergedWeight, type KeyDeltas, type LoraSpec } from "./set.js";

/**
 * `source` with `set` merged into its weights (returned as is for an empty set).
 * @throws ModelFileError naming a LoRA file that does not fit the checkpoint.
 */
export async function checkpointWithLoras(source: CheckpointSource, set: readonly LoraSpec[]): Promise<CheckpointSource> {
  if (set.length === 0) return source;
  const weights: Partial<Record<ComponentName, ReadonlyMap<string, readonly number[]>>> = {};
  for (const [name, component] of Object.entries(source.components) as [ComponentName, ComponentSource][]) {
    weights[name] = new Map([...component.weights.keys()].map((key) => [key, component.weights.get(key)!.shape]));
  }
  const deltas = await loraSetDeltas(set, { family: source.family, weights });
  const components: Partial<Record<ComponentName, ComponentSource>> = {};
  for (const [name, component] of Object.entries(source.components) as [ComponentName, ComponentSource][]) {
    const changed = deltas.get(name);
    components[name] = changed ? { config: component.config, weights: mergedSource(component.weights, changed) } : component;
  }
  return { ...source, components };
}

function mergedSource(base: WeightSource, changed: ReadonlyMap<string, KeyDeltas>): WeightSource {
  return {
    keys: () => base.keys(),
    get(key: string): SourceTensor | undefined {
      const tensor = base.get(key);
      const entry = changed.get(key);
      if (!tensor || !entry) return tensor;
      // Merged in float32, so it reads as F32 whatever the checkpoint stored.
      return { key, dtype: "F32", shape: tensor.shape, read: async () => mergedWeight(await tensor.read(), entry.deltas) };
    },
  };
}
