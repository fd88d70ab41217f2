/**
 * The messages between `OrtHost` (the main thread) and its ONNX Runtime worker (`ort-worker.ts`).
 * Types only: both sides import them, so the protocol is checked on both ends.
 *
 * Every request carries an `id`; the worker answers each with exactly one `FinalReply`, in the
 * order the requests arrived (it runs one at a time). A `denoise` or `generate` request may also
 * get `ProgressReply` messages before its final reply, posted without waiting for the main thread.
 * A `generate` request's step noise follows it as `NoiseMessage`s (drawn on the main thread while
 * the worker runs the models); they are not requests and get no reply.
 */
import type { TensorSpec, UnetIo } from "../../model/graph-io.js";
import type { Emphasis } from "../../prompt/emphasis.js";
import type { SamplerProgram } from "../../sampler/program.js";

export type OrtElementType = "float32" | "float64" | "int32" | "int64";

/** A host tensor crossing the thread boundary. */
export interface HostTensor {
  type: OrtElementType;
  dims: number[];
  data: Float32Array | Float64Array | Int32Array | BigInt64Array;
}

/** What a denoise sends back per evaluation: nothing, the step index, or the step and x_{j+1}. */
export type StepReport = "none" | "progress" | "latents";

export type WorkerRequest =
  | { op: "load"; id: number; path: string; intraOpThreads?: number; /** The graph edited in memory (lib/onnx); `path` still names it. */ bytes?: Uint8Array }
  | { op: "run"; id: number; handle: number; feeds: Record<string, HostTensor>; outputs: string[] }
  | {
      op: "denoise";
      id: number;
      handle: number;
      job: CpuDenoiseJob;
      /** Int32Array over a SharedArrayBuffer: the main thread stores 1 to stop between evaluations. */
      stop: Int32Array;
      steps: StepReport;
    }
  | {
      op: "decode";
      id: number;
      handle: number;
      latentName: string;
      imageName: string;
      latents: HostTensor;
      /** Names the model in the NaN error. */
      source: string;
    }
  | {
      op: "generate";
      id: number;
      job: GenerateJob;
      /** Int32Array over a SharedArrayBuffer: the main thread stores 1 to stop between evaluations. */
      stop: Int32Array;
      steps: StepReport;
    }
  | { op: "encode"; id: number; job: EncodeJob }
  | { op: "release"; id: number; handle: number };

/**
 * Step noise for the `generate` request `id`: draw `index` (in the order the loop consumes them),
 * or `noise-cancel` when no more will come (the request was stopped, or drawing failed: the main
 * thread then reports that error itself).
 */
export type NoiseMessage = { op: "noise"; id: number; index: number; data: Float32Array } | { op: "noise-cancel"; id: number };

/** The text encoder alone on one prompt list (`encode`): the embeddings come back to the caller. */
export interface EncodeJob {
  textEncoder: GenerateJob["textEncoder"];
  prompts: PromptRows;
  emphasis: Emphasis;
  hiddenSize: number;
  /**
   * SDXL: the second encoder on `prompts2` (text t of both lists is the same text); the answer then
   * holds every TEXT's joined states [texts, 77 · chunks, h1 + h2] and `pooled` [texts, P], with
   * the texts flagged in `zeroTexts` zeros (A1111's empty negative prompt).
   */
  sdxl?: Pick<SdxlGenerateJob, "textEncoder2" | "hiddenSizes" | "pooledSize"> & { prompts2: PromptRows; zeroTexts?: Uint8Array };
}

/** One prompt list: each distinct prompt's chunks once, and which prompt each batch row takes. */
export interface PromptRows {
  /** input_ids [prompts · chunks, 77] in the text encoder's integer type: prompt p's chunk c is row p · chunks + c. */
  ids: HostTensor;
  /** Chunks per prompt: a row's embeddings are [77 · chunks, hidden]. */
  chunks: number;
  /** A1111's per-token weights [prompts · chunks · 77] (float32). */
  multipliers: Float32Array;
  /** For each batch row, its prompt at evaluation 0. */
  rowOf: Int32Array;
  /** For each prompt, its emphasis group (PromptBatch.groupOf). */
  groupOf: Int32Array;
  /** Prompt editing: for each batch row, [endAtStep, prompt] pairs (PromptBatch.schedules). */
  schedules?: Array<Array<[number, number]>>;
}

/**
 * A whole txt2img generation in one request: text encoder, denoise loop and VAE decoder run back
 * to back on the worker, and the embeddings never cross the thread boundary.
 */
export interface GenerateJob {
  textEncoder: TextEncoderCall;
  cond: PromptRows;
  /** The negative prompts; null when classifier-free guidance is off. */
  uncond: PromptRows | null;
  /** What the weights do to each chunk's encoder output (A1111's emphasis). */
  emphasis: Emphasis;
  unet: number;
  /**
   * The denoise, without its `context` and sequence lengths (the worker builds them from the
   * embeddings) and with `noise` empty: the draws follow as `NoiseMessage`s.
   */
  denoise: Omit<CpuDenoiseJob, "context" | "condTokens" | "uncondTokens">;
  decoder: { handle: number; latentName: string; imageName: string; scalingFactor: number; source: string };
  /** SDXL: `textEncoder` gives the penultimate hidden states, this the second encoder and the UNet's added inputs. */
  sdxl?: SdxlGenerateJob;
}

/** The SDXL part of a `generate` (see `SdxlConditioning` in backends/backend.ts and `sdxl-conditioning.ts`). */
export interface SdxlGenerateJob {
  textEncoder2: { handle: number; idsName: string; hiddenName: string; pooledName: string; extraFeeds?: Record<string, HostTensor> };
  cond2: PromptRows;
  /** Null with `zeroUncond` or without guidance. */
  uncond2: PromptRows | null;
  zeroUncond: boolean;
  /** A1111's empty negative prompts: the uncond rows to zero (`SdxlConditioning.zeroUncondRows`). */
  zeroUncondRows?: Uint8Array;
  /** Hidden sizes of text_encoder and text_encoder_2; their sum is the UNet's context size. */
  hiddenSizes: [number, number];
  /** Size of text_encoder_2's pooled `text_embeds`. */
  pooledSize: number;
  /** [batch, timeIdsSize] each. */
  timeIds: Float32Array;
  negativeTimeIds: Float32Array;
  timeIdsSize: number;
  textEmbedsName: string;
  timeIdsName: string;
}

/** How to call the text encoder: its session and I/O names, and the edited graph's extra feeds (`clip_skip`, `extra_token_vectors`). */
export interface TextEncoderCall {
  handle: number;
  idsName: string;
  hiddenName: string;
  extraFeeds?: Record<string, HostTensor>;
}

/** Which model a `generate` error came from. */
export type GenerateStage = "textEncoder" | "unet" | "vaeDecoder";

export interface ModelCalls {
  calls: number;
  ms: number;
}

export interface GenerateValue {
  /** x_M, or null when the loop was stopped (then `images` is empty). */
  latents: Float32Array | null;
  /** One uint8 RGB HWC image per batch row. */
  images: Uint8Array[];
  /** The decoder output's shape [B, 3, H, W] (empty when it was not reached). */
  imageDims: number[];
  /** `session.run` calls and the milliseconds inside them, per model. */
  calls: Record<GenerateStage, ModelCalls>;
  /** Wall time of each stage on the worker, ms. */
  stageMs: { textEncode: number; denoise: number; decode: number };
}

export interface LoadValue {
  handle: number;
  inputs: TensorSpec[];
  outputs: TensorSpec[];
}

export interface RunValue {
  outputs: Record<string, HostTensor>;
  /** Milliseconds inside `session.run`. */
  ms: number;
}

export interface DenoiseValue {
  /** x_M, or null when the loop was stopped. */
  latents: Float32Array | null;
  /** UNet `session.run` calls made and the milliseconds spent inside them. */
  calls: number;
  ms: number;
}

export interface DecodeValue {
  /** The decoder output's shape [B, 3, H, W]. */
  dims: number[];
  /** One uint8 RGB HWC image per batch row (empty when the output is not [B, 3, H, W]). */
  images: Uint8Array[];
  ms: number;
}

export interface EncodeValue {
  /** [rows, 77 · chunks, hidden] (SDXL: [texts, 77 · chunks, h1 + h2]). */
  embeddings: Float32Array;
  /** SDXL: each text's pooled text_embeds [texts, P]. */
  pooled?: Float32Array;
  ms: number;
}

export interface StepReply {
  id: number;
  step: number;
  latents?: Float32Array;
}

/** `generate`: the prompts are encoded and the denoise begins. */
export interface StageReply {
  id: number;
  stage: "text-encoded";
}

export type ProgressReply = StepReply | StageReply;

export type FinalReply = { id: number; value: unknown } | { id: number; error: string; code?: string; model?: GenerateStage };

export type WorkerReply = ProgressReply | FinalReply;

/** The UNet contract fields the loop needs to build its feeds. */
export type UnetFeedIo = Pick<UnetIo, "sampleName" | "timestepName" | "timestepType" | "timestepLayout" | "contextName" | "outputName">;

/** Everything one denoise needs besides the UNet itself; plain data, so it can cross to the worker. */
export interface CpuDenoiseJob {
  program: SamplerProgram;
  /** x_0 [batch, 4, latentHeight, latentWidth]. */
  latents: Float32Array;
  /** One [batch, 4, h, w] draw per evaluation with `drawsNoise`, in order. */
  noise: Float32Array[];
  batch: number;
  latentHeight: number;
  latentWidth: number;
  /**
   * encoder_hidden_states: with guidance the uncond rows [batch, uncondTokens, hidden] then the
   * cond rows [batch, condTokens, hidden]; without, the cond rows only.
   */
  context: Float32Array;
  /** Sequence length of the cond rows (77 · chunks). */
  condTokens: number;
  /** Sequence length of the uncond rows; when it differs from `condTokens` the UNet runs the two halves separately (A1111). */
  uncondTokens: number;
  hiddenSize: number;
  /** Guidance scale per image, or null when classifier-free guidance is off (UNet batch = batch). */
  guidance: Float64Array | null;
  io: UnetFeedIo;
  /** SDXL UNets: `text_embeds` and `time_ids`, laid out like `context`. */
  added?: AddedFeeds;
}

/** SDXL's extra UNet inputs, with guidance the uncond rows then the cond rows (as `context`), fixed for the whole loop. */
export interface AddedFeeds {
  textEmbedsName: string;
  timeIdsName: string;
  /** [rows, textEmbedsSize]. */
  textEmbeds: Float32Array;
  /** [rows, timeIdsSize]. */
  timeIds: Float32Array;
  textEmbedsSize: number;
  timeIdsSize: number;
}
