/**
 * The backend interface (design.md): what a pipeline needs from an inference engine. The CPU
 * backend (ONNX Runtime) and the TensorRT backend (native addon) both implement it; everything
 * else — tokenization, noise, scheduler compilation, validation, image output — is shared
 * TypeScript in `lib/pipeline.ts`.
 */
import type { SamplerProgram } from "../sampler/program.js";

export type BackendName = "cpu" | "tensorrt";

/** What the loaded models/engines accept. Pipelines validate requests against these. */
export interface BackendLimits {
  /** Largest number of images in one denoise call (the UNet batch is twice this with CFG). */
  maxBatch: number;
  /** Image size limits in pixels (inclusive); sizes must also be multiples of `sizeMultiple`. */
  minWidth: number;
  maxWidth: number;
  minHeight: number;
  maxHeight: number;
  sizeMultiple: number;
  /** Whether the model folder has a VAE encoder (img2img). */
  canEncodeImages: boolean;
}

/**
 * Text embeddings produced by `encodeText`, owned by the backend. On the CPU they are host
 * memory; on TensorRT they stay on the device. Rows are in the order of the ids given.
 */
export interface TextEmbeddings {
  readonly rows: number;
  /** Host copy [rows, 77, hidden] when the backend keeps one (CPU); undefined on device backends. */
  readonly host?: Float32Array;
  dispose(): void;
}

export interface DenoiseRequest {
  program: SamplerProgram;
  /** x_0 (already scaled by initNoiseSigma, or add_noise'd for img2img): [batch, 4, h, w]. */
  latents: Float32Array;
  batch: number;
  latentHeight: number;
  latentWidth: number;
  /** [batch] rows, the prompts of each image. */
  cond: TextEmbeddings;
  /** [batch] rows of negative/empty prompts; null when classifier-free guidance is off. */
  uncond: TextEmbeddings | null;
  /** Guidance scale per image (length batch). Unused when uncond is null. */
  guidance: Float64Array;
  /** Every noise draw the program consumes, in order (one [batch,4,h,w] array per eval with
   *  drawsNoise). Drawn by the pipeline up front so the generator stream order is diffusers'. */
  noise: Float32Array[];
  signal?: AbortSignal;
  /** Called after each model evaluation (evalIndex 0-based, total = program.evals.length). */
  onStep?: (evalIndex: number, total: number) => void;
}

export interface StageTimings {
  [stage: string]: number;
}

export interface Backend {
  readonly name: BackendName;
  readonly limits: BackendLimits;
  /** Hidden size of the text encoder output (768 for SD 1.x, 32 for the tiny fixture). */
  readonly hiddenSize: number;
  /** VAE scaling factor (config `scaling_factor`, default 0.18215). */
  readonly scalingFactor: number;
  /** Encodes token ids [rows, 77] in one text-encoder call. */
  encodeText(ids: Int32Array, rows: number): Promise<TextEmbeddings>;
  /** Runs the whole sampler program with classifier-free guidance; returns x_M [batch,4,h,w]. */
  denoise(request: DenoiseRequest): Promise<Float32Array>;
  /** Decodes latents (already divided by the scaling factor) to RGB uint8 HWC, one array per
   *  image. Throws if the decoder produced NaN (never a silent black image). */
  decode(latents: Float32Array, batch: number, latentHeight: number, latentWidth: number): Promise<Uint8Array[]>;
  /** VAE encoder: image [batch,3,H,W] in [-1,1] → posterior mean (and std when the graph
   *  returns latent parameters) [batch,4,H/8,W/8], before the scaling factor. */
  encodeImage(pixels: Float32Array, batch: number, height: number, width: number): Promise<{ mean: Float32Array; std?: Float32Array }>;
  /**
   * Refuses, before any work, a batch that would need more memory than this backend may use
   * (InvalidOptionError naming the size, the estimate and the limit). Backends whose limits
   * already bound memory (TensorRT: the engine profiles) leave it out.
   */
  checkMemory?(request: { batch: number; width: number; height: number; guidance: boolean }): void;
  dispose(): Promise<void>;
}
