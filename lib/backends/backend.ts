/**
 * The backend seam: what the pipeline needs from an inference engine. The CPU backend (ONNX
 * Runtime on a worker thread, `backends/cpu/`) and the TensorRT backend (the native addon,
 * `backends/tensorrt/`) each implement it; everything that is logic rather than arithmetic on big
 * tensors (tokenization, noise, scheduler compilation, validation, image output) is shared
 * TypeScript in `pipeline/`.
 *
 * A backend runs a whole batch in ONE call, the same way for every request kind: `generate(job)`
 * takes the prompts (77-token chunks with per-token weights), the starting point (txt2img latents, or img2img init images and their draws),
 * the compiled sampler program and every noise draw, and returns the images. So the pipeline has
 * one generation path, and each backend keeps its intermediates where they are cheapest: the CPU
 * backend's embeddings never leave its worker thread, the TensorRT backend's embeddings and
 * latents never leave the GPU between its stages.
 */
import type { LoraSpec } from "../convert/lora/set.js";
import type { SamplerProgram } from "../sampler/program.js";
import type { StepNoise } from "../sampler/step-noise.js";
import type { PromptBatch } from "../prompt/conditioning.js";
import type { Emphasis } from "../prompt/emphasis.js";

export type { PromptBatch } from "../prompt/conditioning.js";

export type BackendName = "cpu" | "tensorrt";

/** What the loaded models/engines accept. Pipelines validate requests against these. */
export interface BackendLimits {
  /** Largest number of images in one generation (the UNet batch is twice this with CFG). */
  maxBatch: number;
  /** Image size limits in pixels (inclusive); sizes must also be multiples of `sizeMultiple`. */
  minWidth: number;
  maxWidth: number;
  minHeight: number;
  maxHeight: number;
  sizeMultiple: number;
  /** Whether the models include a VAE encoder (img2img). */
  canEncodeImages: boolean;
  /** Whether `GenerationJob.onLatents` is honoured (host backends: the latents are on the host anyway). */
  canObserveLatents: boolean;
  /**
   * Whether the UNet takes a float timestep. A1111's k-diffusion samplers feed fractional
   * timesteps, which an integer-timestep export would truncate. Absent means true.
   */
  fractionalTimesteps?: boolean;
  /** Most 77-token chunks a prompt may have (75 prompt tokens each): the UNet's text length is 77 · chunks. */
  maxPromptChunks: number;
  /** Largest clip skip (A1111's `CLIP_stop_at_last_layers`): the text encoder's layer count. Absent means 1. */
  maxClipSkip?: number;
  /** Why clip skip is unavailable (the text encoder's layers could not be found), when it is. */
  clipSkipUnavailable?: string;
  /** SDXL: why A1111's clip skip on CLIP-L (`sdxlClipLSkip`) is unavailable, when it is. */
  sdxlClipLSkipUnavailable?: string;
  /** SDXL: why prompt editing and alternation are unavailable (the pooled text_embeds cannot switch per step), when they are. */
  sdxlPromptEditingUnavailable?: string;
  /**
   * The width of the textual-inversion vectors the text encoder takes (`GenerationJob.tokenVectors`;
   * its hidden size), when it was loaded to take them. Absent: prompts cannot use embeddings.
   * SDXL: text_encoder's (clip_l), with `tokenVectorWidth2` text_encoder_2's (clip_g).
   */
  tokenVectorWidth?: number;
  /** SDXL: the width of text_encoder_2's textual-inversion vectors (`SdxlConditioning.tokenVectors2`). */
  tokenVectorWidth2?: number;
}

/** The stages of a generation, in the order they run. */
export type GenerationStage = "encode-text" | "encode-image" | "denoise" | "decode";

/** One img2img init image of a batch and the random draws that go with it (diffusers' order). */
export interface InitImage {
  /** The image as the VAE encoder takes it: [1, 3, H, W] in [-1, 1], at the output size. */
  pixels: Float32Array;
  /** The batch rows this image starts. */
  rows: number;
  /** The posterior draws, one [1, 4, h, w] array per row (`NoiseSource.drawPosterior`). */
  eps: Float32Array[];
  /** The add_noise draw [rows, 4, h, w]. */
  noise: Float32Array;
}

/**
 * SDXL's extra conditioning of a batch, as diffusers' `StableDiffusionXLPipeline` builds it: the
 * second text encoder's prompts (`prompt_2`, tokenized with `tokenizer_2`), whether the uncond
 * side is zeros (`force_zeros_for_empty_prompt` with no negative prompt), and the time ids per row.
 * A row's encoder_hidden_states are [penultimate of text_encoder; penultimate of text_encoder_2]
 * per token, its `text_embeds` text_encoder_2's pooled output of its first chunk.
 */
export interface SdxlConditioning {
  /** `prompt_2` per image, for text_encoder_2 (same chunk count as `GenerationJob.cond`). */
  cond2: PromptBatch;
  /** `negative_prompt_2` per image; null with `zeroUncond` or without guidance. */
  uncond2: PromptBatch | null;
  /** The uncond embeddings and pooled embedding are zeros (then `GenerationJob.uncond` only gives the shape). */
  zeroUncond: boolean;
  /**
   * A1111's empty negative prompt (prompt syntax "a1111"): per image, 1 where its negative prompt
   * is empty in every text of its schedule; those uncond rows' embeddings and pooled embedding are
   * zeros (of the negative side's own length), their time ids stay (sdxl-conditioning.ts `zeroRows`).
   */
  zeroUncondRows?: Uint8Array;
  /**
   * A1111's clip skip on CLIP-L (`sdxl_clip_l_skip`): text_encoder's conditioning is
   * `hidden_states[-clipLSkip]` (no final layer norm). Absent: the penultimate (`hidden_states[-2]`).
   */
  clipLSkip?: number;
  /** Textual inversion: text_encoder_2's vectors (the files' clip_g), rows as `GenerationJob.tokenVectors` (clip_l). */
  tokenVectors2?: Float32Array;
  /** `add_time_ids` [batch, n] (original size, crop top-left, target size: n = 6). */
  timeIds: Float32Array;
  /** The uncond rows' time ids [batch, n] (`negative_add_time_ids`). */
  negativeTimeIds: Float32Array;
}

/** A whole batch for `Backend.generate`. */
export interface GenerationJob {
  program: SamplerProgram;
  batch: number;
  latentHeight: number;
  latentWidth: number;
  /**
   * The prompts as the text encoder takes them (lib/prompt): each distinct prompt's 77-token
   * chunks and per-token weights, and each image's prompt. A row's embeddings are the chunks'
   * encoder outputs, each weighted by `emphasis`, joined along the sequence: [77 · chunks, hidden].
   */
  cond: PromptBatch;
  /**
   * The negative prompts; null when classifier-free guidance is off. When its chunk count differs
   * from `cond`'s, the UNet evaluates the uncond and cond halves separately (A1111's default).
   */
  uncond: PromptBatch | null;
  /** What the weights do to each chunk's encoder output (A1111's emphasis setting). */
  emphasis: Emphasis;
  /** A1111's clip skip: the text encoder output is hidden_states[-clipSkip] through the final layer norm. Absent means 1. */
  clipSkip?: number;
  /**
   * Textual-inversion vectors [rows, tokenVectorWidth]: a prompt token id `vocabSize + r` is row r
   * (lib/prompt/embeddings.ts). Only where `limits.tokenVectorWidth` is set.
   */
  tokenVectors?: Float32Array;
  /** Guidance scale per image (length batch). Unused when `uncond` is null. */
  guidance: Float64Array;
  /**
   * Where the loop starts: txt2img's x_0 (randn · init_noise_sigma) [batch, 4, h, w], or the
   * img2img init images in row order (the program must carry `addNoise`).
   */
  start: { latents: Float32Array } | { images: InitImage[] };
  /**
   * Every noise draw the program consumes, in order (one [batch, 4, h, w] array per eval with
   * drawsNoise): arrays already drawn, or — the pipeline's way — a StepNoise the backend draws
   * from while the models run (taken once).
   */
  noise: readonly Float32Array[] | StepNoise;
  /** SDXL models only: the second encoder's prompts and the UNet's added conditioning. */
  sdxl?: SdxlConditioning;
  /** Cancels between stages and between model evaluations. */
  signal?: AbortSignal;
  /** Called when a stage has finished. */
  onStage?: (stage: GenerationStage) => void;
  /** Called after each model evaluation (evalIndex 0-based, of program.evals.length). */
  onStep?: (evalIndex: number) => void;
  /**
   * Called with x_0 (index 0) and after each evaluation j with x_{j+1} (index j + 1). Only where
   * `limits.canObserveLatents`; it makes the backend copy every step's latents.
   */
  onLatents?: (index: number, latents: Float32Array) => void;
  /** Return x_M on the host (`GenerationOutput.latents`). */
  returnLatents?: boolean;
}

export interface GenerationOutput {
  /** One uint8 RGB HWC image per batch row. */
  images: Uint8Array[];
  /** x_M [batch, 4, h, w] before the scaling factor, when `returnLatents` was asked. */
  latents?: Float32Array;
  /**
   * Milliseconds per stage; `imageEncode` per init image (0 for txt2img). `stepNoise`: drawing the
   * step noise on the calling thread (the CPU backend does it while its worker runs the models, so
   * it is not on the critical path; TensorRT draws before its upload).
   */
  timings: { textEncode: number; imageEncode: number[]; denoise: number; decode: number; stepNoise: number };
}

export interface Backend {
  readonly name: BackendName;
  readonly limits: BackendLimits;
  /** VAE scaling factor (config `scaling_factor`, default 0.18215). */
  readonly scalingFactor: number;
  /**
   * Runs a whole batch: text encoder (each chunk of each distinct prompt once), the VAE encoder for
   * img2img, the denoise loop with classifier-free guidance, and the VAE decoder.
   * @throws the signal's reason when cancelled; VaeOverflowError when the decoder produced NaN
   *   (never a silent black image); DisposedError after `dispose()`.
   */
  generate(job: GenerationJob): Promise<GenerationOutput>;
  /**
   * Puts a LoRA set's weights in place of the current ones (empty: the base model), between
   * generations: the CPU backend switches to merged graphs, TensorRT refits its engines.
   */
  setLoras?(set: readonly LoraSpec[]): Promise<void>;
  /**
   * Refuses, before any work, a batch that would need more memory than this backend may use
   * (InvalidOptionError naming the size, the estimate and the limit). Backends whose limits
   * already bound memory (TensorRT: the engine profiles) leave it out.
   */
  checkMemory?(request: { batch: number; width: number; height: number; guidance: boolean }): void;
  /**
   * The text conditioning of one prompt list as `generate` builds it — each chunk encoded, weighted
   * by `emphasis`, the chunks joined: [rows, 77 · chunks, hidden] on the host. For inspection
   * (`sd-trt tokenize --model`); absent where the backend keeps embeddings on the device only.
   */
  encodePrompts?(prompts: PromptBatch, emphasis: Emphasis, clipSkip?: number, tokenVectors?: Float32Array): Promise<{ shape: [number, number, number]; values: Float32Array }>;
  /**
   * SDXL: every text of `first` and `second` (text t is the same text in both) through both
   * encoders as the denoise loop gets it: [texts, 77 · chunks, h1 + h2], and each text's pooled
   * text_embeds [texts, P]; texts flagged in `zeroTexts` are zeros (A1111's empty negative prompt).
   * Backends that keep embeddings on the device do not have it.
   */
  encodeSdxlTexts?(
    first: PromptBatch,
    second: PromptBatch,
    emphasis: Emphasis,
    options?: { clipLSkip?: number; zeroTexts?: Uint8Array; tokenVectors?: Float32Array; tokenVectors2?: Float32Array },
  ): Promise<{ shape: [number, number, number]; values: Float32Array; pooled: Float32Array }>;
  /** Waits for a running generation, then releases everything. Idempotent. */
  dispose(): Promise<void>;
}
