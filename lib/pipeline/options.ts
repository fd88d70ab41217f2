/**
 * `generate()` options: their documentation, defaults, and validation in one place (design rule
 * 1). Everything is checked before any model runs, against the loaded backend's limits, and
 * every message names the option, the allowed values and what was received.
 */
import { InvalidOptionError } from "../errors.js";
import { integerInRange, invalidOption, numberInRange, oneOf } from "../validate.js";
import type { BackendLimits } from "../backends/backend.js";
import { validateSeed, RNG_SOURCES, type RngSource } from "../rng/index.js";
import type { ImageSource } from "../image/read.js";
import { isA1111Sampler, isKDiffusionSampler, kdiffusionTotalSteps, samplerNeedsUncond, type SchedulerName } from "../schedulers/index.js";
import { A1111_OPTION_NAMES, resolveA1111Options, type A1111GenerateOptions, type A1111Request } from "./a1111-options.js";
import type { ClipTokenizer } from "../tokenizer/clip-tokenizer.js";
import { takeLoraTags } from "../prompt/extra-networks.js";
import { checkLoraScale, type LoraSpec } from "../convert/lora/set.js";
import { buildPromptBatch, padPromptBatch, PROMPT_SYNTAXES, type BuiltPrompts, type PromptReading, type PromptSyntax } from "../prompt/conditioning.js";
import { CHUNK_LENGTH, DEFAULT_COMMA_PADDING_BACKTRACK, MAX_COMMA_PADDING_BACKTRACK } from "../prompt/chunks.js";
import { EMPHASIS_MODES, type Emphasis } from "../prompt/emphasis.js";
import { resolveSdxlOptions, SDXL_OPTION_NAMES, type SdxlGenerateOptions, type SdxlModelFacts, type SdxlRequest } from "./sdxl-options.js";
import type { EmbeddingVocabulary } from "../prompt/embeddings.js";

/** One `onProgress` event. */
export interface ProgressEvent {
  /** `"encode-text"`, `"encode-image"` (img2img), `"denoise"` (once per model evaluation), `"decode"`. */
  stage: "encode-text" | "encode-image" | "denoise" | "decode";
  /** Model evaluations done in this stage (1-based when stage is "denoise"; 0 or 1 otherwise). */
  step: number;
  /** Model evaluations in this stage (PNDM makes steps + 1, Heun about 2·steps). */
  total: number;
  /** The timestep of the evaluation just done (denoise only). */
  timestep?: number;
}

export interface GenerateOptions extends A1111GenerateOptions, SdxlGenerateOptions {
  /**
   * The prompt, or one prompt per image (an array whose length is the batch), read as
   * `promptSyntax` says: by default A1111's syntax — `(word)`, `[word]`, `(word:1.3)`, `BREAK`,
   * prompts of any length in chunks of 75 tokens.
   */
  prompt: string | string[];
  /** What to steer away from: a string for every image, or one per image. Defaults to `""` (diffusers' unconditional prompt). Ignored when guidance ≤ 1 (except with `a1111_ddim_cfgpp`, which always runs it, as A1111 does). */
  negativePrompt?: string | string[];
  /** Image width in pixels: a multiple of the model's `limits.sizeMultiple` (8 · 2 per UNet downsampling: 64 for SD 1.x) within its limits. Defaults to the model's native size (UNet `sample_size` × 8, 512 for SD 1.5) or, for img2img, the init image's width rounded down to that multiple. */
  width?: number;
  /** Image height in pixels; as `width`. */
  height?: number;
  /** Denoising steps (`num_inference_steps`), 1…1000. Defaults to 50 (diffusers). */
  steps?: number;
  /** Classifier-free guidance scale, 0…100. A scale ≤ 1 turns guidance off (one UNet row per image, no negative prompt), as in diffusers. Defaults to 7.5. */
  guidance?: number;
  /** Scheduler: diffusers' `lms`, `euler`, `euler_a`, `ddim`, `pndm`, `dpmpp_2m`, `dpmpp_2m_karras`, `heun`, `ddpm`, `unipc` (or a diffusers class name), or A1111's k-diffusion samplers `k_euler`, `k_euler_a`, `k_lms`, `k_heun`, `k_dpm_2`, `k_dpm_2_a`, `k_dpmpp_2s_a`, `k_dpmpp_2m`, `k_dpm_fast`, `k_restart`, `k_lcm` (with `sigmaSchedule`), and A1111's own DDIM, DDIM CFG++, PLMS and UniPC `a1111_ddim`, `a1111_ddim_cfgpp`, `a1111_plms`, `a1111_unipc` (with `uniPc`). Defaults to the model's `scheduler_config.json` (`_class_name`). */
  scheduler?: string;
  /**
   * One seed for the whole batch: a single generator draws every image's noise in turn
   * (diffusers with one `generator`). Image i is reported with seed + i, as A1111 writes it,
   * but only `seeds: [seed + i]` would redraw that image alone. 0 … 2⁶⁴ − 1.
   */
  seed?: number | bigint;
  /** One seed per image, each with its own generator (diffusers' list of generators; A1111's seed, seed + 1, …). Its length is the batch. Not with `seed`. */
  seeds?: (number | bigint)[];
  /** Images per call, 1 … the backend's `maxBatch`. Defaults to the length of `seeds` or of an array `prompt`, else 1. */
  batch?: number;
  /** Noise source: `"cpu"` = torch's CPU generator (diffusers on CPU, A1111 "CPU"), `"nv"` = torch's CUDA generator (A1111 "NV"). Defaults to `"cpu"`. */
  rng?: RngSource;
  /** img2img: the starting image (a file path, encoded image bytes, or raw pixels). It is resized to width × height when both are given and differ. */
  initImage?: ImageSource;
  /**
   * img2img: how much of the schedule to run, (0, 1]; `floor(steps · strength)` steps run and must be at least 1
   * (A1111's k-diffusion samplers: `int(min(strength, 0.999) · steps) + 1` steps, as A1111 runs them).
   * Defaults to 0.8 (diffusers). Only with `initImage`.
   */
  strength?: number;
  /** Cancels between model evaluations; `generate` then rejects with `signal.reason` (or an AbortError). */
  signal?: AbortSignal;
  /** Called after each stage and each model evaluation. */
  onProgress?: (event: ProgressEvent) => void;
  /**
   * How prompts are read. `"a1111"`: exactly as AUTOMATIC1111's webui reads them — attention
   * weights `(x)` ×1.1, `[x]` ÷1.1, `(x:w)`, escapes `\(`, `BREAK`, and long prompts as several
   * 77-token chunks (the text length is 77 · chunks, up to the backend's `limits.maxPromptChunks`).
   * `"plain"`: diffusers' reading — the text literal, truncated to CLIP's 77 tokens (reported in
   * `warnings`). Defaults to `"a1111"`.
   */
  promptSyntax?: PromptSyntax;
  /**
   * A1111's emphasis setting (promptSyntax "a1111"): `"original"` weights each token's encoder
   * output and restores the chunk's mean; `"no-norm"` weights without restoring; `"ignore"` parses
   * the syntax but ignores the weights; `"none"` does not parse the syntax at all (text is literal,
   * still in 75-token chunks). Defaults to `"original"`.
   */
  emphasis?: Emphasis;
  /** A1111's `comma_padding_backtrack` (promptSyntax "a1111"): a chunk boundary moves back to a comma at most this many tokens before it, 0 (off) … 74. Defaults to 20. */
  commaPaddingBacktrack?: number;
  /**
   * A1111's `pad_cond_uncond`: when prompt and negative prompt have different chunk counts, pad
   * the shorter with empty-prompt chunks so both run in one UNet call. Off (A1111's default), the
   * UNet evaluates the two separately, which gives A1111's default images.
   */
  padCondUncond?: boolean;
  /**
   * A1111's clip skip (`CLIP_stop_at_last_layers`): the conditioning is the text encoder's hidden
   * state `clipSkip` layers from the end, through its final layer norm, as A1111 takes it. 1 (the
   * default) is the last layer; at most the encoder's layer count (12 for SD 1.x,
   * `limits.maxClipSkip`).
   */
  clipSkip?: number;
  /** Return the final latents [batch, 4, height/8, width/8] (before the VAE) as `latents`. Defaults to false. */
  returnLatents?: boolean;
  /**
   * CPU backend only: called with the initial latents (`evaluations` 0) and after each model
   * evaluation j with the latents x_{j+1} (`evaluations` j + 1), [batch, 4, height/8, width/8].
   * The array is a view valid only during the call: copy it to keep it. For previews and tests;
   * the TensorRT backend keeps latents on the GPU.
   */
  onLatents?: (evaluations: number, latents: Float32Array) => void;
}

/** What the pipeline knows when it validates a request. */
export interface ValidationContext {
  limits: BackendLimits;
  /** Default image size (model native). */
  defaultWidth: number;
  defaultHeight: number;
  /** Scheduler used when none is given. */
  defaultScheduler: SchedulerName;
  /** Every accepted scheduler name, for messages. */
  schedulerNames: readonly string[];
  /** Resolves a scheduler name or class to its canonical name; undefined when unknown. */
  canonicalScheduler: (name: string) => SchedulerName | undefined;
  /** Whether `onLatents` can be honoured. */
  hostLatents: boolean;
  /** The model's tokenizer: prompts are read (and their length checked) during validation. */
  tokenizer: ClipTokenizer;
  /** SDXL models: the second tokenizer and the pipeline facts (sdxl-options.ts). */
  sdxl?: SdxlModelFacts;
  /** Textual-inversion embeddings prompt words can name. */
  embeddings?: EmbeddingVocabulary;
  /**
   * The LoRA file a `<lora:NAME:…>` prompt tag names (the pipeline's `loraDir`), or undefined;
   * absent when the pipeline has no LoRA folder. `loraFolder` names it in messages.
   */
  findLora?: (name: string) => string | undefined;
  loraFolder?: string;
}

/** Options after validation, with defaults applied. */
export interface ResolvedRequest {
  /** As given (with any `<lora:…>` tags: the infotext keeps them, as A1111's does). */
  prompts: string[];
  /** The LoRAs the first prompt's `<lora:NAME:SCALE>` tags name (A1111 applies them to the batch), in order. */
  loras: LoraSpec[];
  negativePrompts: string[];
  /** How the prompts were read. */
  promptReading: PromptReading;
  padCondUncond: boolean;
  /** A1111's clip skip, 1 … the text encoder's layers. */
  clipSkip: number;
  /** The prompts' text-encoder input. */
  cond: BuiltPrompts;
  /** The negative prompts' (null when guidance is off), padded to `cond`'s chunk count with `padCondUncond`. */
  uncond: BuiltPrompts | null;
  /** Milliseconds spent reading the prompts. */
  tokenizeMs: number;
  batch: number;
  /** Undefined for img2img without an explicit size (taken from the init image). */
  width: number | undefined;
  height: number | undefined;
  steps: number;
  guidance: number;
  scheduler: SchedulerName;
  rng: RngSource;
  /** The generator seeds: one (single generator) or one per image. */
  generatorSeeds: bigint[];
  /** Whether each image has its own generator. */
  perImageGenerators: boolean;
  /** True when no seed was given and one was drawn at random. */
  randomSeed: boolean;
  initImage?: ImageSource;
  strength?: number;
  signal?: AbortSignal;
  onProgress?: (event: ProgressEvent) => void;
  returnLatents: boolean;
  onLatents?: (evaluations: number, latents: Float32Array) => void;
  /** A1111's schedule type and noise options (a1111-options.ts). */
  a1111: A1111Request;
  /** SDXL models: the second prompts, the zero-uncond choice and the time ids (sdxl-options.ts). */
  sdxl?: SdxlRequest;
  /**
   * Hires fix's second pass (SD models): its prompts' and negative prompts' text-encoder input,
   * with A1111's second-pass schedules (calculate_hr_conds); SDXL's second pass reuses `cond`/`uncond`.
   */
  hiresPrompts?: { cond: BuiltPrompts; uncond: BuiltPrompts | null };
}

const DEFAULT_STEPS = 50;
const DEFAULT_GUIDANCE = 7.5;
const DEFAULT_STRENGTH = 0.8;
export const MAX_STEPS = 1000;
export const MAX_GUIDANCE = 100;

const KNOWN_OPTIONS = new Set([
  "prompt", "negativePrompt", "width", "height", "steps", "guidance", "scheduler", "seed", "seeds", "batch",
  "rng", "initImage", "strength", "signal", "onProgress", "returnLatents", "onLatents", ...A1111_OPTION_NAMES,
  "promptSyntax", "emphasis", "commaPaddingBacktrack", "padCondUncond", "clipSkip", ...SDXL_OPTION_NAMES,
]);

function promptList(name: string, value: unknown): string[] | string {
  if (typeof value === "string") return value;
  if (Array.isArray(value) && value.length > 0 && value.every((p) => typeof p === "string")) return value as string[];
  throw invalidOption(name, "a string or a non-empty array of strings", value);
}

/**
 * Checks an image width or height against the model's limits: "width must be a multiple of 16
 * from 64 to 2048 for this model, got 72 (number)".
 * @param name the option as the caller spells it (e.g. `width`, `sizes[0].height`).
 */
export function imageSize(name: string, axis: "width" | "height", value: unknown, limits: BackendLimits): number {
  const min = axis === "width" ? limits.minWidth : limits.minHeight;
  const max = axis === "width" ? limits.maxWidth : limits.maxHeight;
  const multiple = limits.sizeMultiple;
  if (typeof value !== "number" || !Number.isInteger(value) || value < min || value > max || value % multiple !== 0) {
    throw invalidOption(name, `a multiple of ${multiple} from ${min} to ${max} for this model`, value);
  }
  return value;
}

function lcm(a: number, b: number): number {
  const gcd = (x: number, y: number): number => (y === 0 ? x : gcd(y, x % y));
  return (a / gcd(a, b)) * b;
}

/**
 * A backend's limits for a model whose UNet needs sizes in multiples of `modelMultiple`
 * (`ModelFolder.sizeMultiple`): the size multiple becomes the least common multiple of both,
 * and the size ranges shrink to the multiples inside them.
 */
export function limitsForModel(backend: BackendLimits, modelMultiple: number): BackendLimits {
  const m = lcm(backend.sizeMultiple, modelMultiple);
  const up = (v: number) => Math.ceil(v / m) * m;
  const down = (v: number) => Math.floor(v / m) * m;
  return {
    ...backend,
    sizeMultiple: m,
    minWidth: up(backend.minWidth),
    maxWidth: down(backend.maxWidth),
    minHeight: up(backend.minHeight),
    maxHeight: down(backend.maxHeight),
  };
}

/** A random seed like A1111's (0 … 2³² − 2), for runs that give none. */
export function randomSeed(): bigint {
  return BigInt(Math.floor(Math.random() * 4294967295));
}

/** Validates `generate()` options and applies defaults. Throws InvalidOptionError naming the option. */
export function resolveGenerateOptions(options: GenerateOptions, ctx: ValidationContext): ResolvedRequest {
  if (typeof options !== "object" || options === null) throw invalidOption("options", "an object", options);
  for (const key of Object.keys(options)) {
    if (!KNOWN_OPTIONS.has(key)) throw new InvalidOptionError(key, `unknown option ${JSON.stringify(key)}; known options: ${[...KNOWN_OPTIONS].join(", ")}`);
  }
  const { limits } = ctx;
  const prompt = promptList("prompt", options.prompt);
  const negative = options.negativePrompt === undefined ? "" : promptList("negativePrompt", options.negativePrompt);

  if (options.seed !== undefined && options.seeds !== undefined) {
    throw new InvalidOptionError("seeds", "give either seed (one generator for the batch) or seeds (one per image), not both");
  }
  let seedsList: bigint[] | undefined;
  if (options.seeds !== undefined) {
    if (!Array.isArray(options.seeds) || options.seeds.length === 0) throw invalidOption("seeds", "a non-empty array of seeds", options.seeds);
    seedsList = options.seeds.map((s, i) => validateSeed(`seeds[${i}]`, s));
  }

  // The batch: explicit, or implied by seeds / a prompt list; all must agree.
  const implied = [
    seedsList ? { name: "seeds", n: seedsList.length } : null,
    Array.isArray(prompt) ? { name: "prompt", n: prompt.length } : null,
    Array.isArray(negative) ? { name: "negativePrompt", n: negative.length } : null,
  ].filter((x): x is { name: string; n: number } => x !== null);
  const batch = options.batch !== undefined ? integerInRange("batch", options.batch, 1, limits.maxBatch) : (implied[0]?.n ?? 1);
  if (options.batch === undefined && batch > limits.maxBatch) {
    throw new InvalidOptionError(implied[0]!.name, `${implied[0]!.name} asks for ${batch} images, but the backend takes at most ${limits.maxBatch} per call (batch)`);
  }
  for (const { name, n } of implied) {
    if (n !== batch) {
      throw new InvalidOptionError(name, `${name} must have one ${name === "seeds" ? "seed" : "entry"} per image (batch ${batch}), got an array of length ${n}`);
    }
  }

  const w = options.width;
  const h = options.height;
  const img2img = options.initImage !== undefined;
  if (img2img && !limits.canEncodeImages) {
    throw new InvalidOptionError("initImage", "initImage needs a model folder with a VAE encoder (vae_encoder/model.onnx); this model has none");
  }
  if ((w === undefined) !== (h === undefined) && img2img) {
    throw new InvalidOptionError(w === undefined ? "width" : "height", "for img2img give both width and height, or neither (the init image's size is used)");
  }
  const width = w === undefined ? (img2img ? undefined : ctx.defaultWidth) : imageSize("width", "width", w, limits);
  const height = h === undefined ? (img2img ? undefined : ctx.defaultHeight) : imageSize("height", "height", h, limits);

  const steps = options.steps === undefined ? DEFAULT_STEPS : integerInRange("steps", options.steps, 1, MAX_STEPS);
  const guidance = options.guidance === undefined ? DEFAULT_GUIDANCE : numberInRange("guidance", options.guidance, 0, MAX_GUIDANCE);

  let scheduler = ctx.defaultScheduler;
  if (options.scheduler !== undefined) {
    const canonical = typeof options.scheduler === "string" ? ctx.canonicalScheduler(options.scheduler) : undefined;
    if (!canonical) throw invalidOption("scheduler", `one of ${ctx.schedulerNames.join(", ")} (or a diffusers scheduler class name)`, options.scheduler);
    scheduler = canonical;
  }

  const rng = options.rng === undefined ? "cpu" : oneOf("rng", options.rng, RNG_SOURCES);

  let strength: number | undefined;
  if (options.strength !== undefined && !img2img) throw new InvalidOptionError("strength", "strength applies to img2img only: give initImage too");
  if (img2img) {
    strength = DEFAULT_STRENGTH;
    if (options.strength !== undefined) {
      const s = options.strength;
      if (typeof s !== "number" || !Number.isFinite(s) || s <= 0 || s > 1) throw invalidOption("strength", "a number greater than 0 and at most 1", s);
      strength = s;
    }
    // A1111's rule for its own samplers (a1111Img2imgStartIndex) has its own minimum (checked when compiled).
    if (!isA1111Sampler(scheduler) && Math.trunc(steps * strength) < 1) {
      throw new InvalidOptionError("strength", `strength ${strength} with ${steps} steps runs no step (floor(steps · strength) = 0); raise strength or steps`);
    }
  }

  if (options.signal !== undefined && !(options.signal instanceof AbortSignal)) throw invalidOption("signal", "an AbortSignal", options.signal);
  if (options.onProgress !== undefined && typeof options.onProgress !== "function") throw invalidOption("onProgress", "a function", options.onProgress);
  if (options.onLatents !== undefined) {
    if (typeof options.onLatents !== "function") throw invalidOption("onLatents", "a function", options.onLatents);
    if (!ctx.hostLatents) throw new InvalidOptionError("onLatents", "onLatents needs the CPU backend (the TensorRT backend keeps latents on the GPU)");
  }
  if (options.returnLatents !== undefined && typeof options.returnLatents !== "boolean") throw invalidOption("returnLatents", "true or false", options.returnLatents);

  const tokenizeStart = performance.now();
  const promptReading: PromptReading = {
    syntax: options.promptSyntax === undefined ? "a1111" : oneOf("promptSyntax", options.promptSyntax, PROMPT_SYNTAXES),
    emphasis: options.emphasis === undefined ? "original" : oneOf("emphasis", options.emphasis, EMPHASIS_MODES),
    commaPaddingBacktrack:
      options.commaPaddingBacktrack === undefined ? DEFAULT_COMMA_PADDING_BACKTRACK : integerInRange("commaPaddingBacktrack", options.commaPaddingBacktrack, 0, MAX_COMMA_PADDING_BACKTRACK),
  };
  if (options.padCondUncond !== undefined && typeof options.padCondUncond !== "boolean") throw invalidOption("padCondUncond", "true or false", options.padCondUncond);
  const padCondUncond = options.padCondUncond ?? false;
  const clipSkip = validateClipSkip(options.clipSkip, ctx.limits);
  const prompts = Array.isArray(prompt) ? prompt : new Array<string>(batch).fill(prompt);
  const negativePrompts = Array.isArray(negative) ? negative : new Array<string>(batch).fill(negative);
  // A1111 takes the <lora:…> tags out before reading the prompts, and applies the first prompt's.
  const tagged = promptReading.syntax === "a1111" ? takeLoraTags(prompts, "prompt") : { texts: prompts, loras: [] };
  const loras = tagged.loras.map(({ name, multiplier, tag }): LoraSpec => {
    const path = ctx.findLora?.(name);
    if (path === undefined) {
      throw new InvalidOptionError(
        "prompt",
        ctx.loraFolder === undefined
          ? `prompt has the tag ${tag}, but no LoRA folder was given (loraDir, --lora-dir)`
          : `prompt has the tag ${tag}, but the LoRA folder ${ctx.loraFolder} has no LoRA named ${JSON.stringify(name)}`,
      );
    }
    checkLoraScale(multiplier, "prompt", tag);
    return { path, scale: multiplier, name };
  });
  // Prompt editing counts A1111's CFG denoiser calls: its total_steps (2 × steps for second-order samplers).
  const promptSteps = isKDiffusionSampler(scheduler) ? kdiffusionTotalSteps(scheduler, steps) : steps;
  const cond = readPrompts(ctx, tagged.texts, promptReading, "prompt", promptSteps);
  // DDIM CFG++ steps with the uncond output itself, which A1111 computes at every scale.
  let uncond = guidance > 1 || samplerNeedsUncond(scheduler) ? readPrompts(ctx, negativePrompts, promptReading, "negativePrompt", promptSteps) : null;
  if (uncond && padCondUncond && uncond.batch.chunks !== cond.batch.chunks) {
    const chunks = Math.max(uncond.batch.chunks, cond.batch.chunks);
    uncond = { ...uncond, batch: padPromptBatch(ctx.tokenizer, uncond.batch, chunks) };
    cond.batch = padPromptBatch(ctx.tokenizer, cond.batch, chunks);
  }
  const sdxl = resolveSdxlOptions(
    options,
    ctx.sdxl,
    // prompt2 defaults to the prompt as the first encoder reads it: without its <lora:…> tags.
    {
      img2img,
      prompts: tagged.texts,
      negativePrompts,
      batch,
      guidance: uncond !== null,
      reading: promptReading,
      steps: promptSteps,
      maxPromptChunks: limits.maxPromptChunks,
      clipSkip,
      ...(limits.sdxlClipLSkipUnavailable ? { clipLSkipUnavailable: limits.sdxlClipLSkipUnavailable } : {}),
      ...(limits.sdxlPromptEditingUnavailable ? { promptEditingUnavailable: limits.sdxlPromptEditingUnavailable } : {}),
      ...(ctx.embeddings ? { embeddings: ctx.embeddings } : {}),
    },
    ctx.tokenizer,
    { cond, uncond },
  );
  // SDXL's zero uncond is zeros_like(cond): the uncond side takes the cond side's shape.
  if (sdxl?.zeroUncond) uncond = { ...cond, warnings: [] };
  const tokenizeMs = performance.now() - tokenizeStart;

  let generatorSeeds: bigint[];
  let perImageGenerators = false;
  let random = false;
  if (seedsList) {
    generatorSeeds = seedsList;
    perImageGenerators = true;
  } else if (options.seed !== undefined) {
    generatorSeeds = [validateSeed("seed", options.seed)];
  } else {
    generatorSeeds = [randomSeed()];
    random = true;
  }

  const request: ResolvedRequest = {
    prompts,
    loras,
    negativePrompts,
    promptReading,
    padCondUncond,
    clipSkip,
    cond,
    uncond,
    tokenizeMs,
    batch,
    width,
    height,
    steps,
    guidance,
    scheduler,
    rng,
    generatorSeeds,
    perImageGenerators,
    randomSeed: random,
    returnLatents: options.returnLatents ?? false,
    a1111: resolveA1111Options(options, scheduler, batch, perImageGenerators, img2img, limits.fractionalTimesteps !== false, { width, height, steps, limits }),
  };
  if (sdxl) request.sdxl = sdxl;
  if (request.a1111.hires && samplerNeedsUncond(request.a1111.hires.scheduler) && request.uncond === null) {
    // One guidance setting serves both passes: at guidance ≤ 1 the first pass skips the uncond, which DDIM CFG++ steps with.
    throw new InvalidOptionError(
      "hires.scheduler",
      `hires.scheduler ${request.a1111.hires.scheduler} steps with the unconditional prediction, which A1111 computes at every scale but this request skips at guidance ${guidance} (≤ 1): raise guidance above 1, or run ${request.a1111.hires.scheduler} in the first pass too`,
    );
  }
  if (request.a1111.hires) {
    const hiresPrompts = readHiresPrompts(ctx, request, tagged.texts);
    if (hiresPrompts) request.hiresPrompts = hiresPrompts;
  }
  if (img2img) {
    request.initImage = options.initImage!;
    request.strength = strength!;
  }
  if (options.signal) request.signal = options.signal;
  if (options.onProgress) request.onProgress = options.onProgress;
  if (options.onLatents) request.onLatents = options.onLatents;
  return request;
}

/**
 * Hires fix's second-pass prompts (A1111's calculate_hr_conds): `hires.prompt` / `hires.negativePrompt`
 * or the first pass's, their schedules made for the second pass's steps after the first pass's (both
 * as A1111's CFG denoiser counts them: total_steps, 2 × steps for second-order samplers).
 * Undefined for SDXL, whose second pass takes the first pass's conditioning.
 * @throws InvalidOptionError naming `hires.prompt` / `hires.negativePrompt` for SDXL.
 */
function readHiresPrompts(ctx: ValidationContext, r: ResolvedRequest, texts: string[]): ResolvedRequest["hiresPrompts"] {
  const hires = r.a1111.hires!;
  if (r.sdxl) {
    // (SDXL refuses prompt editing altogether, in sdxl-options.ts.)
    if (hires.prompt !== undefined || hires.negativePrompt !== undefined) {
      const option = hires.prompt === undefined ? "hires.negativePrompt" : "hires.prompt";
      throw new InvalidOptionError(option, `${option}: SDXL's hires fix runs its second pass with the first pass's prompts; second-pass prompts are supported for SD models only`);
    }
    return undefined;
  }
  const firstPassSteps = isKDiffusionSampler(r.scheduler) ? kdiffusionTotalSteps(r.scheduler, r.steps) : r.steps;
  const hiresSteps = isKDiffusionSampler(hires.scheduler) ? kdiffusionTotalSteps(hires.scheduler, hires.steps) : hires.steps;
  const read = (list: string[], option: string) => {
    const built = buildPromptBatch(ctx.tokenizer, list, r.promptReading, option, firstPassSteps, ctx.embeddings, hiresSteps);
    checkPromptChunks(ctx, built, option);
    return built;
  };
  const cond = read(hires.prompt === undefined ? texts : texts.map(() => hires.prompt!), hires.prompt === undefined ? "prompt" : "hires.prompt");
  let uncond = r.uncond ? read(hires.negativePrompt === undefined ? r.negativePrompts : r.negativePrompts.map(() => hires.negativePrompt!), hires.negativePrompt === undefined ? "negativePrompt" : "hires.negativePrompt") : null;
  if (uncond && r.padCondUncond && uncond.batch.chunks !== cond.batch.chunks) {
    const chunks = Math.max(uncond.batch.chunks, cond.batch.chunks);
    uncond = { ...uncond, batch: padPromptBatch(ctx.tokenizer, uncond.batch, chunks) };
    cond.batch = padPromptBatch(ctx.tokenizer, cond.batch, chunks);
  }
  return { cond, uncond };
}

/**
 * The text-encoder input of one prompt list, its length checked against the backend.
 * @throws InvalidOptionError naming `option` when a prompt has more chunks than the backend takes,
 *   or a weight that is not a number.
 */
function readPrompts(ctx: ValidationContext, texts: string[], reading: PromptReading, option: "prompt" | "negativePrompt", steps: number): BuiltPrompts {
  const built = buildPromptBatch(ctx.tokenizer, texts, reading, option, steps, ctx.embeddings);
  checkPromptChunks(ctx, built, option);
  return built;
}

function checkPromptChunks(ctx: ValidationContext, built: BuiltPrompts, option: string): void {
  const max = ctx.limits.maxPromptChunks;
  if (built.batch.chunks > max) {
    throw new InvalidOptionError(
      option,
      `${option} needs ${built.batch.chunks} chunks of ${CHUNK_LENGTH} tokens (${built.tokenCount} tokens), but the backend takes at most ${max} (${max * CHUNK_LENGTH} tokens)` +
        " (TensorRT engines: rebuild with a larger --max-prompt-chunks)",
    );
  }
}

/**
 * `clipSkip`: 1 … the text encoder's layer count (`limits.maxClipSkip`). Above 1 it needs the
 * text-encoder edit, which says why when it could not be made.
 * @throws InvalidOptionError naming clipSkip and the limit.
 */
export function validateClipSkip(value: unknown, limits: BackendLimits): number {
  if (value === undefined) return 1;
  const max = limits.maxClipSkip ?? 1;
  if (limits.clipSkipUnavailable && value !== 1) {
    throw new InvalidOptionError("clipSkip", `clipSkip must be 1 with this model: ${limits.clipSkipUnavailable}`);
  }
  if (max === 1 && value !== 1 && !limits.clipSkipUnavailable) {
    throw new InvalidOptionError("clipSkip", `clipSkip must be 1 on this backend (it cannot take an earlier layer of the text encoder yet), got ${JSON.stringify(value)}`);
  }
  return integerInRange("clipSkip", value, 1, max);
}
