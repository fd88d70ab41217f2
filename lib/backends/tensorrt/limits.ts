/**
 * What a set of engines accepts, read off their optimization profiles: the backend's
 * `BackendLimits`, against which the pipeline validates requests (design rule 1: "limits read from
 * the loaded engine's profiles").
 */
import { InternalError } from "../../errors.js";
import type { BackendLimits } from "../backend.js";
import type { ModelIo, ModelRole } from "../../model/graph-io.js";
import type { EngineTensor } from "./manifest.js";
import { TOKENS, VAE_FACTOR, type OptimizationProfile } from "./profiles.js";

export interface EngineShapeInfo {
  contract: ModelIo;
  profiles: OptimizationProfile[];
  io: EngineTensor[];
}

type Ranges = { min: number[]; max: number[] };

/** Per profile, the [min, max] dims of `input` (a fixed-shape input: its declared dims). */
function rangesOf(engine: EngineShapeInfo, input: string): Ranges[] {
  const declared = engine.io.find((t) => t.name === input && t.mode === "input")?.shape;
  return engine.profiles.map((p) => {
    const r = p[input];
    if (r) return { min: r.min, max: r.max };
    if (!declared || declared.some((d) => d < 0)) return { min: [], max: [] };
    return { min: declared, max: declared };
  });
}

function accepts(ranges: Ranges[], axis: number, value: number): boolean {
  return ranges.some((r) => r.min[axis] !== undefined && r.min[axis]! <= value && value <= r.max[axis]!);
}

/** The largest batch B accepted (through `scale`: 2 for the CFG batch). Profiles built by
 *  `sd-trt build` cover every batch of their range, so B_min…B are all accepted. */
function largestAccepted(ranges: Ranges[], axis: number, scale: number): number {
  let best = 0;
  for (const r of ranges) {
    const max = r.max[axis];
    if (max === undefined) continue;
    const b = Math.floor(max / scale);
    if (b > best && accepts(ranges, axis, b * scale)) best = b;
  }
  return best;
}

/** The smallest batch every engine accepts (1 unless the engines were built for `--batch N-M`, N > 1). */
export function smallestBatch(engines: Partial<Record<ModelRole, EngineShapeInfo>>): number {
  const decoder = engines.vae_decoder;
  if (decoder?.contract.role !== "vae_decoder") return 1;
  const latent = rangesOf(decoder, decoder.contract.latentName);
  for (let b = 1; b <= 4096; b++) if (accepts(latent, 0, b)) return b;
  return 1;
}

function span(ranges: Ranges[], axis: number): { min: number; max: number } {
  const mins = ranges.map((r) => r.min[axis]).filter((v): v is number => v !== undefined);
  const maxs = ranges.map((r) => r.max[axis]).filter((v): v is number => v !== undefined);
  return { min: Math.min(...mins), max: Math.max(...maxs) };
}

/**
 * Limits of a pipeline on these engines. `maxBatch` is the largest batch B that fits the UNet with
 * classifier-free guidance (2B), the VAE decoder (B) and the text encoder (2B rows); sizes are
 * where the UNet and the VAE decoder overlap. (Engines built for `--batch N-M` with N > 1 do not
 * take batches below N: see `smallestBatch`.)
 */
export function limitsFromEngines(engines: Partial<Record<ModelRole, EngineShapeInfo>>): BackendLimits {
  const unet = engines.unet;
  const decoder = engines.vae_decoder;
  const text = engines.text_encoder;
  if (unet?.contract.role !== "unet" || !decoder || decoder.contract.role !== "vae_decoder" || !text || text.contract.role !== "text_encoder") {
    throw new InternalError("limitsFromEngines needs the text encoder, UNet and VAE decoder engines");
  }
  const sample = rangesOf(unet, unet.contract.sampleName);
  const latent = rangesOf(decoder, decoder.contract.latentName);
  const ids = rangesOf(text, text.contract.idsName);
  const maxBatch = Math.min(largestAccepted(sample, 0, 2), largestAccepted(latent, 0, 1), largestAccepted(ids, 0, 2));
  // The text length: the UNet's encoder_hidden_states axis 1 (77 · chunks), and the text encoder
  // must take as many chunk rows as two prompts of that many chunks for every image.
  const hidden = span(rangesOf(unet, unet.contract.contextName), 1).max;
  const maxPromptChunks = Number.isFinite(hidden) ? Math.max(1, Math.floor(hidden / TOKENS)) : 1;
  const h = span(sample, 2);
  const w = span(sample, 3);
  const dh = span(latent, 2);
  const dw = span(latent, 3);
  return {
    maxBatch,
    minHeight: Math.max(h.min, dh.min) * VAE_FACTOR,
    maxHeight: Math.min(h.max, dh.max) * VAE_FACTOR,
    minWidth: Math.max(w.min, dw.min) * VAE_FACTOR,
    maxWidth: Math.min(w.max, dw.max) * VAE_FACTOR,
    sizeMultiple: VAE_FACTOR,
    canEncodeImages: engines.vae_encoder !== undefined,
    // The engines keep latents on the GPU between evaluations.
    canObserveLatents: false,
    fractionalTimesteps: unet.contract.timestepType === "float32" || unet.contract.timestepType === "float64",
    maxPromptChunks,
  };
}

/** Whether some profile of the UNet takes a batch of `unetBatch` at this latent size. */
export function unetAccepts(unet: EngineShapeInfo, unetBatch: number, latentHeight: number, latentWidth: number): boolean {
  if (unet.contract.role !== "unet") return false;
  return rangesOf(unet, unet.contract.sampleName).some(
    (r) =>
      r.min.length === 4 &&
      r.min[0]! <= unetBatch && unetBatch <= r.max[0]! &&
      r.min[2]! <= latentHeight && latentHeight <= r.max[2]! &&
      r.min[3]! <= latentWidth && latentWidth <= r.max[3]!,
  );
}

/** The smallest row count ≥ `rows` some text-encoder profile accepts, or undefined. */
export function textRowsFor(text: EngineShapeInfo, rows: number): number | undefined {
  if (text.contract.role !== "text_encoder") return undefined;
  const ranges = rangesOf(text, text.contract.idsName);
  let best: number | undefined;
  for (const r of ranges) {
    if (r.min[0] === undefined) continue;
    const candidate = Math.max(rows, r.min[0]);
    if (candidate <= r.max[0]! && (best === undefined || candidate < best)) best = candidate;
  }
  return best;
}

/** Whether one profile of the UNet takes `rows` rows of this latent size at a text length of `sequenceLength` tokens. */
function unetTakesText(unet: EngineShapeInfo, rows: number, latentHeight: number, latentWidth: number, sequenceLength: number): boolean {
  if (unet.contract.role !== "unet") return false;
  const sample = rangesOf(unet, unet.contract.sampleName);
  const text = rangesOf(unet, unet.contract.contextName);
  const within = (r: Ranges, axis: number, value: number) => r.min[axis] !== undefined && r.min[axis]! <= value && value <= r.max[axis]!;
  return sample.some((s, p) => within(s, 0, rows) && within(s, 2, latentHeight) && within(s, 3, latentWidth) && within(text[p]!, 0, rows) && within(text[p]!, 1, sequenceLength));
}

/**
 * The rows of each UNet call when a prompt and negative prompt of different lengths run as two calls
 * (A1111 without pad_cond_uncond): the batch when a profile takes it at both text lengths; else twice
 * the batch (engines built for the guidance batch only: each call computes its rows twice); else
 * undefined.
 */
export function splitCallRows(unet: EngineShapeInfo, batch: number, latentHeight: number, latentWidth: number, lengths: readonly number[]): number | undefined {
  return [batch, 2 * batch].find((rows) => lengths.every((length) => unetTakesText(unet, rows, latentHeight, latentWidth, length)));
}
