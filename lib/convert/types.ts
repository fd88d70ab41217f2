/**
 * The contract between the parts of checkpoint conversion (issue 12), so that each can be written
 * and tested on its own:
 *
 *   checkpoint/  reads what people download (a single-file `.safetensors`, a diffusers folder) and
 *                yields, per component, its diffusers config and its weights under diffusers'
 *                state-dict keys (`down_blocks.0.attentions.0.proj_in.weight`, …);
 *   lora/        turns LoRA files into per-key weight deltas on those same keys;
 *   graphs/      writes each component as an ONNX graph from (config, weights) into the optimum
 *                layout the pipeline already reads.
 *
 * Naming rule every part relies on (LoRA merging on the CPU and TensorRT refitting find weights by
 * it): **every weight initializer of a converted graph is named by its diffusers state-dict key**,
 * without a component prefix. Linear (`nn.Linear`) weights are stored transposed, `[in, out]`, the
 * layout `MatMul(x, W)` wants (torch's ONNX export stores them so too); everything else keeps the
 * torch layout (conv `[out, in, kh, kw]`, norms, biases, embeddings). A weight that is used in more
 * than one place is still one initializer.
 */
import type { SafetensorsDtype } from "../model/safetensors.js";

/** One tensor of a checkpoint, read on demand (multi-GB files are never held whole). */
export interface SourceTensor {
  /** Its key in the component's diffusers state dict. */
  readonly key: string;
  readonly dtype: SafetensorsDtype;
  readonly shape: readonly number[];
  /** The values as float32, row-major, torch layout (a new array each call). */
  read(): Promise<Float32Array>;
}

/** A component's weights under diffusers' state-dict keys. */
export interface WeightSource {
  keys(): Iterable<string>;
  get(key: string): SourceTensor | undefined;
}

export type ComponentName = "text_encoder" | "text_encoder_2" | "unet" | "vae";

/** The model families detection knows; SDXL slots in as another member. */
export type ModelFamily = "sd1" | "sd2" | "sdxl";

/** A component: the diffusers `config.json` it would have, and its weights. */
export interface ComponentSource {
  readonly config: Record<string, unknown>;
  readonly weights: WeightSource;
}

/** A whole checkpoint read into diffusers terms (what `checkpoint/` yields and `graphs/` consumes). */
export interface CheckpointSource {
  readonly family: ModelFamily;
  /**
   * SDXL's refiner: text_encoder_2 alone (no text_encoder) and a UNet taking the aesthetic-score time
   * ids; it converts to a refiner folder (model_index.json's requires_aesthetics_score).
   */
  readonly refiner?: boolean;
  /** Where it came from, for messages and infotext. */
  readonly path: string;
  readonly components: Readonly<Partial<Record<ComponentName, ComponentSource>>>;
  /** `scheduler/scheduler_config.json` (prediction_type decided by detection or the override). */
  readonly schedulerConfig: Record<string, unknown>;
}

/** A weight delta for one diffusers key of one component, in torch layout (what `lora/` yields). */
export interface WeightDelta {
  readonly component: ComponentName;
  readonly key: string;
  readonly shape: readonly number[];
  /** Added to the base weight (already multiplied by alpha/rank and the user's scale). */
  readonly values: Float32Array;
}
