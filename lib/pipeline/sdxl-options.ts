/**
 * SDXL's `generate()` options and what they resolve to, as diffusers' `StableDiffusionXLPipeline`
 * reads them:
 *
 * - `prompt2` / `negativePrompt2`: the texts for the second text encoder (`prompt_2`,
 *   `negative_prompt_2`), defaulting to `prompt` / `negativePrompt`; read with `tokenizer_2`
 *   (which pads with "!" in SDXL's files) the same way `prompt` is read;
 * - no `negativePrompt` at all with the model's `force_zeros_for_empty_prompt` (SDXL base: true):
 *   the uncond embeddings are zeros (`zeroUncond`), exactly as diffusers does for
 *   `negative_prompt=None`. An explicit `""` is encoded like any negative prompt with prompt syntax
 *   "plain" (diffusers); with "a1111" it gives zeros as A1111 does (`a1111ZeroUncondRows`);
 * - prompt editing and alternation apply to both encoders' texts (tokenizer_2 reads the same
 *   schedules), and the backend switches the embeddings and the pooled `text_embeds` per step;
 * - `add_time_ids` = original size (h, w) + crop top-left (top, left) + target size (h, w), each
 *   size defaulting to the image size and the crop to (0, 0); the negative ones
 *   (`negative_original_size` …) only when both negative sizes are given, else the positive ones.
 *
 * A1111 builds the time ids the same way from width and height (`sd_models_xl.py`), so the server
 * needs nothing beyond the defaults. Hires fix's second pass takes its sizes left out from A1111's
 * upscale size (hr_upscale_to_x/y, before the resize crop), as its calculate_hr_conds does.
 */
import { InvalidOptionError } from "../errors.js";
import { integerInRange, invalidOption, numberInRange } from "../validate.js";
import type { ClipTokenizer } from "../tokenizer/clip-tokenizer.js";
import { buildPromptBatch, padPromptBatch, type BuiltPrompts, type PromptReading } from "../prompt/conditioning.js";
import { promptSchedule } from "../prompt/schedule.js";
import type { EmbeddingVocabulary } from "../prompt/embeddings.js";

/** A size in pixels, as the time ids take it. */
export interface SdxlSize {
  width: number;
  height: number;
}

/** Where the training crop began (`crops_coords_top_left`). */
export interface SdxlCrop {
  top: number;
  left: number;
}

export interface SdxlGenerateOptions {
  /** SDXL: the prompt(s) for the second text encoder (`prompt_2`). Defaults to `prompt`. */
  prompt2?: string | string[];
  /** SDXL: the negative prompt(s) for the second text encoder (`negative_prompt_2`). Defaults to `negativePrompt`. */
  negativePrompt2?: string | string[];
  /** SDXL micro-conditioning (`original_size`): the size the picture should look like it was taken at. Defaults to the image size. */
  originalSize?: SdxlSize;
  /** SDXL micro-conditioning (`crops_coords_top_left`). Defaults to { top: 0, left: 0 }. */
  cropsCoordsTopLeft?: SdxlCrop;
  /** SDXL micro-conditioning (`target_size`). Defaults to the image size. */
  targetSize?: SdxlSize;
  /** SDXL: the uncond rows' `original_size`; used only with `negativeTargetSize` (diffusers' rule). */
  negativeOriginalSize?: SdxlSize;
  /** SDXL: the uncond rows' crop. Defaults to { top: 0, left: 0 } when the negative sizes are given. */
  negativeCropsCoordsTopLeft?: SdxlCrop;
  /** SDXL: the uncond rows' `target_size`; used only with `negativeOriginalSize`. */
  negativeTargetSize?: SdxlSize;
  /** SDXL base + refiner in one generation (txt2img; the pipeline must be loaded with a refiner). */
  refiner?: SdxlRefinerOptions;
  /**
   * SDXL: A1111's "Clip skip SDXL" setting (`sdxl_clip_l_skip`). With it, `clipSkip` applies to
   * text_encoder (CLIP-L) as A1111's `FrozenCLIPEmbedderForSDXLWithCustomWords` takes it:
   * `hidden_states[-clipSkip]`, no final layer norm (so clipSkip 1 is the last layer, 2 the
   * default penultimate); text_encoder_2 is never skipped. `false` is A1111's default: clip skip
   * then has no effect on SDXL (the infotext still records it, as A1111's does). Left out, a
   * clipSkip other than 1 on SDXL is refused rather than ignored. Like A1111's setting it has no
   * effect on SD 1.x/2.x models (accepted there).
   */
  sdxlClipLSkip?: boolean;
}

export interface SdxlRefinerOptions {
  /** Where the refiner takes over, (0, 1): the base's `denoising_end` and the refiner's `denoising_start` (A1111's "switch at"). */
  switchAt: number;
  /** The refiner's `aesthetic_score` time id. Defaults to 6 (diffusers). */
  aestheticScore?: number;
  /** The refiner's `negative_aesthetic_score` time id. Defaults to 2.5 (diffusers). */
  negativeAestheticScore?: number;
}

export const SDXL_OPTION_NAMES: readonly (keyof SdxlGenerateOptions)[] = [
  "prompt2",
  "negativePrompt2",
  "originalSize",
  "cropsCoordsTopLeft",
  "targetSize",
  "negativeOriginalSize",
  "negativeCropsCoordsTopLeft",
  "negativeTargetSize",
  "refiner",
  "sdxlClipLSkip",
];

/** What validation needs to know of an SDXL model. */
export interface SdxlModelFacts {
  tokenizer2: ClipTokenizer;
  /** `model_index.json`'s `force_zeros_for_empty_prompt`. */
  forceZerosForEmptyPrompt: boolean;
  /** The refiner loaded with the pipeline: its tokenizer (tokenizer_2) and its own zero-uncond flag. */
  refiner?: { tokenizer: ClipTokenizer; forceZerosForEmptyPrompt: boolean };
}

/** The refiner part of a request. */
export interface SdxlRefinerRequest {
  switchAt: number;
  aestheticScore: number;
  negativeAestheticScore: number;
  /**
   * `prompt` through the refiner's tokenizer: diffusers' refiner zips [prompt, prompt_2] with its
   * one tokenizer (tokenizer_2), so text_encoder_2 encodes `prompt` there.
   */
  cond: BuiltPrompts;
  /** `negativePrompt` (or "") likewise; with `zeroUncond`, the cond side (only its shape is used). */
  uncond: BuiltPrompts | null;
  zeroUncond: boolean;
}

/** The SDXL part of a resolved request. */
export interface SdxlRequest {
  /** `sdxlClipLSkip`: text_encoder's conditioning is `hidden_states[-clipLSkip]` (A1111's clip skip on CLIP-L). */
  clipLSkip?: number;
  prompts2: string[];
  negativePrompts2: string[];
  /** `prompt2` through tokenizer_2, with `cond`'s chunk count. */
  cond2: BuiltPrompts;
  /** `negativePrompt2` through tokenizer_2; null without guidance or with `zeroUncond`. */
  uncond2: BuiltPrompts | null;
  zeroUncond: boolean;
  /** Prompt syntax "a1111": the images whose negative prompt is empty get zero uncond embeddings (`a1111ZeroUncondRows`). */
  zeroUncondRows?: Uint8Array;
  /** The micro-conditioning of the cond rows; a null size is the image's (known once an init image is read). */
  conditioning: SdxlMicroConditioning;
  /** The uncond rows'; null: the same as the cond rows' (diffusers without both negative sizes). */
  negativeConditioning: SdxlMicroConditioning | null;
  refiner?: SdxlRefinerRequest;
}

export interface SdxlMicroConditioning {
  original: SdxlSize | null;
  crop: SdxlCrop;
  target: SdxlSize | null;
}

/**
 * The refiner's time ids (`requires_aesthetics_score`): original size + crop + aesthetic score, and
 * for the uncond rows the negative original size (else the original), the negative crop (else
 * (0, 0), the img2img pipeline's default) and the negative aesthetic score.
 */
export function sdxlRefinerTimeIds(request: SdxlRequest, width: number, height: number): { timeIds: Float32Array; negativeTimeIds: Float32Array } {
  const r = request.refiner!;
  const original = request.conditioning.original ?? { width, height };
  const crop = request.conditioning.crop;
  const negative = request.negativeConditioning;
  const negOriginal = negative?.original ?? original;
  const negCrop = negative?.crop ?? { top: 0, left: 0 };
  return {
    timeIds: Float32Array.of(original.height, original.width, crop.top, crop.left, r.aestheticScore),
    negativeTimeIds: Float32Array.of(negOriginal.height, negOriginal.width, negCrop.top, negCrop.left, r.negativeAestheticScore),
  };
}

/** The time ids of a request's cond and uncond rows at its image size. */
export function sdxlRequestTimeIds(request: SdxlRequest, width: number, height: number): { timeIds: Float32Array; negativeTimeIds: Float32Array } {
  const image = { width, height };
  const ids = (m: SdxlMicroConditioning) => sdxlTimeIds(m.original ?? image, m.crop, m.target ?? image);
  const timeIds = ids(request.conditioning);
  return { timeIds, negativeTimeIds: request.negativeConditioning ? ids(request.negativeConditioning) : timeIds };
}

/** Largest size or crop offset a time id may hold (the values are embedded as float32). */
const MAX_TIME_ID = 1 << 16;

function sizeOption(name: string, value: unknown): SdxlSize {
  if (typeof value !== "object" || value === null || Array.isArray(value)) throw invalidOption(name, "an object { width, height }", value);
  const v = value as Record<string, unknown>;
  for (const key of Object.keys(v)) if (key !== "width" && key !== "height") throw new InvalidOptionError(name, `${name} takes width and height, got the key ${JSON.stringify(key)}`);
  return { width: integerInRange(`${name}.width`, v["width"], 1, MAX_TIME_ID), height: integerInRange(`${name}.height`, v["height"], 1, MAX_TIME_ID) };
}

function cropOption(name: string, value: unknown): SdxlCrop {
  if (typeof value !== "object" || value === null || Array.isArray(value)) throw invalidOption(name, "an object { top, left }", value);
  const v = value as Record<string, unknown>;
  for (const key of Object.keys(v)) if (key !== "top" && key !== "left") throw new InvalidOptionError(name, `${name} takes top and left, got the key ${JSON.stringify(key)}`);
  return { top: integerInRange(`${name}.top`, v["top"], 0, MAX_TIME_ID), left: integerInRange(`${name}.left`, v["left"], 0, MAX_TIME_ID) };
}

/** diffusers' `_get_add_time_ids`: list(original_size + crops_coords_top_left + target_size), sizes as (height, width). */
export function sdxlTimeIds(original: SdxlSize, crop: SdxlCrop, target: SdxlSize): Float32Array {
  return Float32Array.of(original.height, original.width, crop.top, crop.left, target.height, target.width);
}

function texts(name: string, value: unknown, fallback: string[], batch: number): string[] {
  if (value === undefined) return fallback;
  if (typeof value === "string") return new Array<string>(batch).fill(value);
  if (!Array.isArray(value) || !value.every((p) => typeof p === "string")) throw invalidOption(name, "a string or an array of strings", value);
  if (value.length !== batch) throw new InvalidOptionError(name, `${name} must have one entry per image (batch ${batch}), got an array of length ${value.length}`);
  return value as string[];
}

/** The request facts SDXL's options are resolved against. */
export interface SdxlRequestContext {
  /** img2img (an init image): diffusers' img2img pipeline builds the negative time ids its own way. */
  img2img: boolean;
  prompts: string[];
  negativePrompts: string[];
  batch: number;
  guidance: boolean;
  reading: PromptReading;
  /** The steps prompt editing's schedules span (A1111's total_steps). */
  steps: number;
  maxPromptChunks: number;
  /** The request's clip skip (checked against the backend's limits). */
  clipSkip: number;
  /** Why the backend cannot take another text_encoder layer (`limits.sdxlClipLSkipUnavailable`). */
  clipLSkipUnavailable?: string;
  /** Why the backend cannot switch SDXL's conditioning per step (`limits.sdxlPromptEditingUnavailable`). */
  promptEditingUnavailable?: string;
  /** Textual-inversion embeddings: tokenizer_2 puts their vectors where tokenizer does (the same ids). */
  embeddings?: EmbeddingVocabulary;
}

/**
 * Resolves the SDXL options of a request. `cond` and `uncond` are the first encoder's prompts; the
 * second encoder's are padded to the same chunk counts (and `cond`/`uncond` to theirs) with
 * A1111's empty chunk, since the rows are joined token by token.
 * @returns undefined for a model that is not SDXL (and then refuses every SDXL option).
 * @throws InvalidOptionError naming the option.
 */
export function resolveSdxlOptions(
  options: SdxlGenerateOptions & { negativePrompt?: unknown; hires?: unknown },
  model: SdxlModelFacts | undefined,
  ctx: SdxlRequestContext,
  tokenizer: ClipTokenizer,
  sides: { cond: BuiltPrompts; uncond: BuiltPrompts | null },
): SdxlRequest | undefined {
  if (!model) {
    // A1111's sdxl_clip_l_skip is a setting with no effect on SD 1.x/2.x, not a per-image input.
    if (options.sdxlClipLSkip !== undefined && typeof options.sdxlClipLSkip !== "boolean") throw invalidOption("sdxlClipLSkip", "true or false", options.sdxlClipLSkip);
    const given = SDXL_OPTION_NAMES.find((name) => name !== "sdxlClipLSkip" && options[name] !== undefined);
    if (given) throw new InvalidOptionError(given, `${given} is an SDXL option, and this model is not SDXL (it has no text_encoder_2)`);
    return undefined;
  }
  const { cond, uncond } = sides;
  if (options.hires !== undefined && options.refiner !== undefined) {
    // A1111 switches to the refiner in either pass or both (opts.hires_fix_refiner_pass); not reproduced.
    throw new InvalidOptionError("hires", "hires fix with the refiner is not supported yet; use one or the other");
  }
  if (options.hires !== undefined && (cond.batch.schedules || uncond?.batch.schedules)) {
    // The second pass would need text_encoder_2's schedules rebuilt for its steps as well (calculate_hr_conds); not done.
    throw new InvalidOptionError("hires", "prompt editing and alternation ([from:to:when], [a|b]) with hires fix are not supported with SDXL models yet; use one or the other");
  }
  const conditioning: SdxlMicroConditioning = {
    original: options.originalSize === undefined ? null : sizeOption("originalSize", options.originalSize),
    crop: options.cropsCoordsTopLeft === undefined ? { top: 0, left: 0 } : cropOption("cropsCoordsTopLeft", options.cropsCoordsTopLeft),
    target: options.targetSize === undefined ? null : sizeOption("targetSize", options.targetSize),
  };
  let negativeConditioning: SdxlMicroConditioning | null = null;
  const negOriginal = options.negativeOriginalSize;
  const negTarget = options.negativeTargetSize;
  if ((negOriginal === undefined) !== (negTarget === undefined)) {
    // diffusers ignores one without the other; a silently ignored option is refused instead.
    const missing = negOriginal === undefined ? "negativeOriginalSize" : "negativeTargetSize";
    throw new InvalidOptionError(missing, `give negativeOriginalSize and negativeTargetSize together (diffusers uses the negative time ids only when both are set); ${missing} is missing`);
  }
  if (ctx.img2img) {
    // StableDiffusionXLImg2ImgPipeline defaults each negative size on its own and pairs them with
    // the positive crop; that rule is not reproduced, so the negatives are refused there.
    const given = (["negativeOriginalSize", "negativeCropsCoordsTopLeft", "negativeTargetSize"] as const).find((name) => options[name] !== undefined);
    if (given) throw new InvalidOptionError(given, `${given} is not supported with initImage yet (diffusers' img2img pipeline builds the negative time ids differently from txt2img)`);
  }
  if (negOriginal !== undefined) {
    negativeConditioning = {
      original: sizeOption("negativeOriginalSize", negOriginal),
      crop: options.negativeCropsCoordsTopLeft === undefined ? { top: 0, left: 0 } : cropOption("negativeCropsCoordsTopLeft", options.negativeCropsCoordsTopLeft),
      target: sizeOption("negativeTargetSize", negTarget),
    };
  } else if (options.negativeCropsCoordsTopLeft !== undefined) {
    throw new InvalidOptionError("negativeCropsCoordsTopLeft", "negativeCropsCoordsTopLeft needs negativeOriginalSize and negativeTargetSize (diffusers ignores it otherwise)");
  }

  const prompts2 = texts("prompt2", options.prompt2, ctx.prompts, ctx.batch);
  const negativePrompts2 = texts("negativePrompt2", options.negativePrompt2, ctx.negativePrompts, ctx.batch);
  const zeroUncond = ctx.guidance && options.negativePrompt === undefined && model.forceZerosForEmptyPrompt;
  // Prompt editing and alternation: text_encoder_2 reads the same schedules (A1111 switches both
  // the crossattn and the pooled vector per step; the backends pick each step's texts).
  const read = (list: string[], option: string) => buildPromptBatch(model.tokenizer2, list, ctx.reading, option, ctx.steps, ctx.embeddings);
  const cond2 = read(prompts2, "prompt2");
  alignChunks(tokenizer, cond, model.tokenizer2, cond2, ctx.maxPromptChunks, "prompt2");
  let uncond2: BuiltPrompts | null = null;
  if (uncond && !zeroUncond) {
    uncond2 = read(negativePrompts2, "negativePrompt2");
    alignChunks(tokenizer, uncond, model.tokenizer2, uncond2, ctx.maxPromptChunks, "negativePrompt2");
  }
  if (ctx.promptEditingUnavailable) {
    const edited = (
      [
        ["prompt", cond],
        ["negativePrompt", uncond],
        ["prompt2", cond2],
        ["negativePrompt2", uncond2],
      ] as const
    ).find(([, side]) => side?.batch.schedules !== undefined);
    if (edited) throw new InvalidOptionError(edited[0], `prompt editing and alternation ([from:to:when], [a|b]) on SDXL: ${ctx.promptEditingUnavailable}`);
  }
  const request: SdxlRequest = { prompts2, negativePrompts2, cond2, uncond2, zeroUncond, conditioning, negativeConditioning };
  const clipLSkip = sdxlClipLSkip(options.sdxlClipLSkip, ctx.clipSkip, ctx.clipLSkipUnavailable);
  if (clipLSkip !== undefined) request.clipLSkip = clipLSkip;
  if (uncond && !zeroUncond && ctx.reading.syntax === "a1111") {
    const rows = a1111ZeroUncondRows(ctx.negativePrompts, negativePrompts2, ctx.steps);
    if (rows.some((r) => r === 1)) request.zeroUncondRows = rows;
  }
  if (options.refiner !== undefined) {
    if (!model.refiner) throw new InvalidOptionError("refiner", "refiner needs a pipeline loaded with a refiner model (Pipeline.load(model, { refiner: folder }), --refiner)");
    // The refiner's program counts its evaluations from 0, while A1111's schedules count the whole run's steps.
    if (sides.cond.batch.schedules || sides.uncond?.batch.schedules || cond2.batch.schedules || uncond2?.batch.schedules) {
      throw new InvalidOptionError("refiner", "prompt editing and alternation ([from:to:when], [a|b]) are not supported with a refiner yet");
    }
    const r = options.refiner as unknown;
    if (typeof r !== "object" || r === null || Array.isArray(r)) throw invalidOption("refiner", "an object { switchAt, aestheticScore?, negativeAestheticScore? }", r);
    const o = r as Record<string, unknown>;
    for (const key of Object.keys(o)) {
      if (!["switchAt", "aestheticScore", "negativeAestheticScore"].includes(key)) throw new InvalidOptionError("refiner", `refiner takes switchAt, aestheticScore and negativeAestheticScore, got the key ${JSON.stringify(key)}`);
    }
    const switchAt = o["switchAt"];
    if (typeof switchAt !== "number" || !Number.isFinite(switchAt) || switchAt <= 0 || switchAt >= 1) throw invalidOption("refiner.switchAt", "a number between 0 and 1 (exclusive)", switchAt);
    const score = (name: string, fallback: number) => (o[name] === undefined ? fallback : numberInRange(`refiner.${name}`, o[name], -1000, 1000));
    const refinerZero = ctx.guidance && options.negativePrompt === undefined && model.refiner.forceZerosForEmptyPrompt;
    const readRefiner = (list: string[], option: string) => buildPromptBatch(model.refiner!.tokenizer, list, ctx.reading, option, ctx.steps);
    const cond = readRefiner(ctx.prompts, "prompt");
    let refinerUncond: BuiltPrompts | null = null;
    if (ctx.guidance) refinerUncond = refinerZero ? { ...cond, warnings: [] } : readRefiner(ctx.negativePrompts, "negativePrompt");
    request.refiner = {
      switchAt,
      aestheticScore: score("aestheticScore", 6),
      negativeAestheticScore: score("negativeAestheticScore", 2.5),
      cond,
      uncond: refinerUncond,
      zeroUncond: refinerZero,
    };
  }
  return request;
}

/**
 * `sdxlClipLSkip` with the request's (range-checked) clip skip: the CLIP-L layer from the end, or
 * undefined for SDXL's own penultimate layer.
 * @throws InvalidOptionError for clip skip without `sdxlClipLSkip` (A1111 would ignore it), or where the backend cannot take it.
 */
function sdxlClipLSkip(value: unknown, clipSkip: number, unavailable: string | undefined): number | undefined {
  if (value !== undefined && typeof value !== "boolean") throw invalidOption("sdxlClipLSkip", "true or false", value);
  if (value !== true) {
    if (clipSkip !== 1 && value === undefined) {
      throw new InvalidOptionError(
        "clipSkip",
        `clipSkip ${clipSkip} has no effect on SDXL unless sdxlClipLSkip is true (A1111's "Clip skip SDXL" setting, sdxl_clip_l_skip); set it true to apply clip skip to text_encoder (CLIP-L), false to have it ignored as A1111 does, or leave clipSkip at 1`,
      );
    }
    return undefined;
  }
  if (unavailable) throw new InvalidOptionError("sdxlClipLSkip", `sdxlClipLSkip is not supported here: ${unavailable}`);
  return clipSkip;
}

/**
 * A1111's empty negative prompt on SDXL: `sd_models_xl.get_learned_conditioning` zeros the text
 * embeddings (crossattn and the pooled part of `vector`) of a negative prompt whose schedule texts
 * are all empty (`force_zero_embeddings=['txt']`), keeping the size embeddings. Per image: 1 when
 * its negative prompt (and its `negativePrompt2`, which A1111 does not have) reads as "" at every step.
 */
export function a1111ZeroUncondRows(negativePrompts: readonly string[], negativePrompts2: readonly string[], steps: number): Uint8Array {
  const empty = (text: string) => promptSchedule(text, steps).every(([, t]) => t === "");
  return Uint8Array.from(negativePrompts, (text, row) => (empty(text) && empty(negativePrompts2[row]!) ? 1 : 0));
}

/** Pads the side with fewer chunks to the other's count (A1111's empty chunk, each with its own tokenizer). */
function alignChunks(tokenizer1: ClipTokenizer, first: BuiltPrompts, tokenizer2: ClipTokenizer, second: BuiltPrompts, max: number, option: string): void {
  const chunks = Math.max(first.batch.chunks, second.batch.chunks);
  if (chunks > max) throw new InvalidOptionError(option, `${option} needs ${chunks} chunks of 75 tokens, but the backend takes at most ${max}`);
  first.batch = padPromptBatch(tokenizer1, first.batch, chunks);
  second.batch = padPromptBatch(tokenizer2, second.batch, chunks);
}
