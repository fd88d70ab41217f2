/**
 * One generation implementation for one request or several merged ones, in two phases:
 *
 * 1. `prepareRequest` — everything that needs no model, per request: the init image read (and
 *    its size checked), the sampler program, and every random draw in diffusers' order from the
 *    request's own generators (txt2img: the initial latents × init_noise_sigma; img2img: the
 *    posterior eps, then the add_noise draw; then one draw per evaluation that consumes noise).
 *    The prompts were read during validation (options.ts), where their length decides the batch key.
 * 2. `executeBatch` — the model calls, once for all the requests given, as ONE `Backend.generate`
 *    job whatever the request kind: one text-encoder call per prompt list (the prompts of every
 *    image, then the negative prompts with guidance), each request's init image through the VAE
 *    encoder (img2img), one denoise of the merged batch (per-image guidance scales, per-row
 *    embeddings, each request's own noise rows), one decode; then each request's images,
 *    infotext and latents.
 *
 * `Pipeline.generate` is a batch of one; `PipelineService` merges requests whose `batchKey`
 * matches. A request's images never depend on the others in its batch: every random draw is its
 * own, and the models compute each batch row independently (the service tests check this pixel
 * for pixel).
 */
import { InternalError, InvalidOptionError, throwIfAborted } from "../errors.js";
import type { Backend, BackendLimits, BackendName, GenerationJob, InitImage } from "../backends/backend.js";
import { formatInfotext } from "../image/infotext.js";
import { rgbToPixels } from "../image/pixels.js";
import { readImage, type RgbImage } from "../image/read.js";
import { a1111SamplerName } from "../schedulers/index.js";
import type { SamplerProgram } from "../sampler/program.js";
import type { ClipTokenizer } from "../tokenizer/index.js";
import type { PromptBatch } from "../prompt/conditioning.js";
import { A1111_EMPHASIS_NAMES } from "../prompt/emphasis.js";
import { scaleFloat32 } from "../sampler/latents.js";
import { A1111NoiseSource, NoiseSource, type RequestNoise } from "./noise.js";
import { a1111InfotextFields, type HiresRequest } from "./a1111-options.js";
import { upscaleLatents } from "../sampler/latent-upscale.js";
import type { ProgressEvent, ResolvedRequest } from "./options.js";
import type { ProgramCache } from "./program-cache.js";

export interface GeneratedImage {
  /** 8-bit RGB, row-major, interleaved (HWC): width · height · 3 bytes. */
  rgb: Uint8Array;
  width: number;
  height: number;
  /** The image's seed as A1111 reports it: its own generator's seed, or seed + index with one generator for the batch. */
  seed: bigint;
  /** A1111's "parameters" text for this image (see `image/infotext.ts`). */
  infotext: string;
}

export interface GenerateTimings {
  /** Milliseconds per stage. */
  tokenize: number;
  textEncode: number;
  /** img2img: reading and VAE-encoding the init image (0 for txt2img). */
  imageEncode: number;
  denoise: number;
  decode: number;
  /** The whole call, including validation and queueing behind earlier calls. */
  total: number;
}

export interface GenerateResult {
  images: GeneratedImage[];
  /** The generator seeds: one (one generator for the batch) or one per image. */
  seeds: bigint[];
  /** True when no seed was given and `seeds` was drawn at random. */
  randomSeed: boolean;
  /** Final latents [batch, 4, height/8, width/8] when `returnLatents` was set. */
  latents?: Float32Array;
  width: number;
  height: number;
  steps: number;
  guidance: number;
  /** Canonical scheduler name. */
  scheduler: string;
  backend: BackendName;
  /** Model evaluations (UNet calls) made. */
  evaluations: number;
  timings: GenerateTimings;
  /** Non-fatal notes, e.g. a prompt longer than CLIP's 77 tokens was truncated. */
  warnings: string[];
}

/** What generation needs from the pipeline that owns it. */
export interface GenerationContext {
  backend: Backend;
  /** The limits requests are validated against (the backend's, with the model's size multiple). */
  limits: BackendLimits;
  tokenizer: ClipTokenizer;
  programs: ProgramCache;
  /** A1111's "Model" for the infotext, when the model came from a checkpoint file. */
  modelName?: string;
  /** A1111's "Model hash" for the infotext. */
  modelHash(): Promise<string>;
}

/** Per-batch hooks: the batch's cancellation and progress (a request's own, when it runs alone). */
export interface BatchHooks {
  /** Cancels between stages and between model evaluations. */
  signal?: AbortSignal;
  onProgress?: (event: ProgressEvent) => void;
}

/** Hires fix's second pass (A1111's sample_hr_pass), prepared with everything but the first pass's latents. */
export interface HiresPass {
  program: SamplerProgram;
  width: number;
  height: number;
  /** The upscale target in latent pixels, before A1111's truncation to width/8 × height/8. */
  upscaleHeight: number;
  upscaleWidth: number;
  truncateX: number;
  truncateY: number;
  upscaler: HiresRequest["upscaler"];
  /** The new ImageRNG's first draw [batch, 4, height/8, width/8]: x = upscaled + σ_start · noise. */
  noise: Float32Array;
  stepNoise: Float32Array[];
}

/** A request with everything computed that needs no model (see the module comment). */
export interface PreparedRequest {
  readonly request: ResolvedRequest;
  readonly width: number;
  readonly height: number;
  readonly program: SamplerProgram;
  /** `batchKey` of the request at its final size (null: it runs alone). */
  readonly batchKey: string | null;
  /** txt2img: x_0 = randn · init_noise_sigma. Null for img2img (made from `img2img` when the batch runs). */
  readonly initialLatents: Float32Array | null;
  readonly img2img: { image: RgbImage; eps: Float32Array[]; noise: Float32Array } | null;
  /** One [batch, 4, h, w] draw per evaluation that consumes noise, in order. */
  readonly stepNoise: Float32Array[];
  /** Hires fix's second pass: its program, size, first ImageRNG draw and step draws. */
  readonly hires: HiresPass | null;
  readonly warnings: string[];
  /** When the request's call began (`performance.now()`), for `timings.total`. */
  readonly started: number;
  readonly tokenizeMs: number;
  readonly readImageMs: number;
}

/**
 * The one batch key: requests with equal keys can share a batch (size, steps, scheduler,
 * guidance on/off, img2img strength); null when a request must run alone (it observes per-step
 * latents, or its size comes from an init image not read yet). The service groups validated
 * requests by it; `prepareRequest` computes it again once an init image has given the size.
 */
export function batchKey(request: ResolvedRequest, width = request.width, height = request.height): string | null {
  if (request.onLatents) return null;
  if (width === undefined || height === undefined) return null;
  const img2img = request.initImage !== undefined;
  // The text lengths and the emphasis shape the UNet and text-encoder calls as well.
  const text = [request.cond.batch.chunks, request.uncond?.batch.chunks ?? null, request.promptReading.emphasis];
  return JSON.stringify([width, height, request.steps, request.scheduler, request.a1111.sigmaSchedule ?? null, request.a1111.eta ?? null, request.guidance > 1, img2img ? request.strength : null, request.a1111.hires ?? null, ...text]);
}

function checkInitImageSize(limits: BackendLimits, width: number, height: number): void {
  const fits = (v: number, min: number, max: number) => v >= min && v <= max && v % limits.sizeMultiple === 0;
  if (!fits(width, limits.minWidth, limits.maxWidth) || !fits(height, limits.minHeight, limits.maxHeight)) {
    throw new InvalidOptionError(
      "initImage",
      `initImage is ${width}×${height} after rounding to a multiple of ${limits.sizeMultiple}; the model takes ${limits.minWidth}-${limits.maxWidth} × ${limits.minHeight}-${limits.maxHeight}: give width and height to resize it`,
    );
  }
}

/**
 * Phase 1: reads the init image, compiles (or reuses) the program and draws every
 * random number of the request in diffusers' order. Runs no model.
 * @param started when the request's call began, for `timings.total`.
 * @throws InvalidOptionError naming `initImage` when it cannot be read or does not fit.
 */
export async function prepareRequest(context: GenerationContext, request: ResolvedRequest, started = performance.now()): Promise<PreparedRequest> {
  const { limits, programs } = context;
  const r = request;

  // The init image first, so an unreadable file fails before any model runs.
  const t = performance.now();
  let width = r.width;
  let height = r.height;
  let image: RgbImage | null = null;
  if (r.initImage !== undefined) {
    image = await readImage(r.initImage, width === undefined ? { multiple: limits.sizeMultiple } : { width, height: height! });
    width = image.width;
    height = image.height;
    checkInitImageSize(limits, width, height);
  }
  const readImageMs = performance.now() - t;
  if (width === undefined || height === undefined) throw new InternalError("a txt2img request reached prepareRequest without a size");
  // Before any model runs: a size that cannot fit in memory is refused now, not after minutes.
  context.backend.checkMemory?.({ batch: r.batch, width, height, guidance: r.uncond !== null });

  // The prompts were read during validation (their length decides the batch key).
  const warnings = [...r.cond.warnings, ...(r.uncond?.warnings ?? [])];

  const { program } = programs.get(r.scheduler, r.steps, image ? r.strength! : undefined, r.a1111.sigmaSchedule, r.a1111.eta);
  const rest = [4, height / 8, width / 8] as const;
  const noise: RequestNoise = r.a1111.noise ? new A1111NoiseSource(r.rng, r.generatorSeeds, rest, r.a1111.noise) : new NoiseSource(r.rng, r.generatorSeeds, r.perImageGenerators);
  let initialLatents: Float32Array | null = null;
  let img2img: PreparedRequest["img2img"] = null;
  if (image) {
    const eps = noise.drawPosterior(r.batch, rest); // (1) latent_dist.sample(generator)
    img2img = { image, eps, noise: noise.draw(r.batch, rest) }; // (2) the add_noise noise
  } else {
    initialLatents = scaleFloat32(noise.draw(r.batch, rest), program.initNoiseSigma); // randn · init_noise_sigma
  }
  const stepNoise = program.evals.filter((e) => e.drawsNoise).map(() => noise.draw(r.batch, rest));
  const hires = r.a1111.hires ? prepareHires(context, r) : null;

  return {
    request: r,
    width,
    height,
    program,
    batchKey: batchKey(r, width, height),
    initialLatents,
    img2img,
    stepNoise,
    hires,
    warnings,
    started,
    tokenizeMs: r.tokenizeMs,
    readImageMs,
  };
}

/**
 * A1111's sample_hr_pass for a k-diffusion sampler: sample_img2img with steps given
 * (setup_img2img_steps: steps' = int(steps / min(strength, 0.999)), t_enc = steps − 1, the sampler
 * runs sigmas[steps' − t_enc − 1:]) and a new ImageRNG at the second pass's latent size.
 */
function prepareHires(context: GenerationContext, r: ResolvedRequest): HiresPass {
  const h = r.a1111.hires!;
  if (r.cond.batch.schedules || r.uncond?.batch.schedules) {
    // A1111 rebuilds the schedules for the second pass's steps; the job's schedules count the first pass's.
    throw new InvalidOptionError("hires", "prompt editing and alternation ([from:to:when], [a|b]) with hires fix are not supported yet; use one or the other");
  }
  const stretched = Math.trunc(h.steps / Math.min(h.strength, 0.999));
  const { program } = context.programs.getFrom(r.scheduler, stretched, stretched - h.steps, r.a1111.sigmaSchedule, r.a1111.eta);
  const rest = [4, h.height / 8, h.width / 8] as const;
  const noise: RequestNoise = r.a1111.noise ? new A1111NoiseSource(r.rng, r.generatorSeeds, rest, r.a1111.noise) : new NoiseSource(r.rng, r.generatorSeeds, true);
  const first = noise.draw(r.batch, rest);
  return {
    program,
    width: h.width,
    height: h.height,
    upscaleHeight: h.height / 8 + h.truncateY,
    upscaleWidth: h.width / 8 + h.truncateX,
    truncateX: h.truncateX,
    truncateY: h.truncateY,
    upscaler: h.upscaler,
    noise: first,
    stepNoise: program.evals.filter((e) => e.drawsNoise).map(() => noise.draw(r.batch, rest)),
  };
}

/**
 * The second pass's starting latents: the first pass's latents upscaled, cropped as A1111 crops
 * them (truncate_x/y), plus σ_start · the new ImageRNG's first draw, in float32.
 */
function hiresStart(pass: HiresPass, latents: Float32Array, batch: number, latentHeight: number, latentWidth: number): Float32Array {
  const up = upscaleLatents(latents, [batch, 4, latentHeight, latentWidth], pass.upscaleHeight, pass.upscaleWidth, pass.upscaler);
  const h = pass.height / 8;
  const w = pass.width / 8;
  const y0 = Math.floor(pass.truncateY / 2);
  const x0 = Math.floor(pass.truncateX / 2);
  const sigma = pass.program.addNoise!.noise;
  const out = new Float32Array(batch * 4 * h * w);
  for (let plane = 0; plane < batch * 4; plane++) {
    for (let y = 0; y < h; y++) {
      for (let x = 0; x < w; x++) {
        const k = (plane * h + y) * w + x;
        out[k] = up[(plane * pass.upscaleHeight + y0 + y) * pass.upscaleWidth + x0 + x]! + Math.fround(pass.noise[k]! * sigma);
      }
    }
  }
  return out;
}

/**
 * Phase 2: runs prepared, compatible requests (equal `batchKey`) as one batch. Results are in
 * request order and equal what each request gives alone; stage timings are the batch's.
 * @throws InvalidOptionError when the merged batch exceeds the backend's maximum batch;
 *   `hooks.signal`'s reason when cancelled.
 */
export async function executeBatch(context: GenerationContext, prepared: PreparedRequest[], hooks: BatchHooks = {}): Promise<GenerateResult[]> {
  if (prepared.length === 0) return [];
  const { backend } = context;
  const { signal } = hooks;
  const first = prepared[0]!;
  if (prepared.length > 1 && prepared.some((p) => p.request.onLatents)) {
    throw new InternalError("executeBatch: a request that observes its latents (onLatents) must run alone");
  }
  if (prepared.length > 1 && prepared.some((p) => p.batchKey === null || p.batchKey !== first.batchKey)) {
    throw new InternalError("executeBatch: the requests cannot share a batch (different sizes, guidance or programs)");
  }
  const onLatents = first.request.onLatents;
  const batch = prepared.reduce((n, p) => n + p.request.batch, 0);
  if (batch > backend.limits.maxBatch) {
    throw new InvalidOptionError("batch", `the merged batch of ${batch} images exceeds the backend's maximum batch ${backend.limits.maxBatch}`);
  }
  if (prepared.length > 1) backend.checkMemory?.({ batch, width: first.width, height: first.height, guidance: first.request.uncond !== null });
  throwIfAborted(signal);
  const { width, height, program } = first;
  const latentHeight = height / 8;
  const latentWidth = width / 8;
  const cfg = first.request.uncond !== null;

  const guidance = new Float64Array(batch);
  let row = 0;
  for (const p of prepared) {
    guidance.fill(p.request.guidance, row, row + p.request.batch);
    row += p.request.batch;
  }
  const evaluations = program.evals.length;
  const job: GenerationJob = {
    program,
    batch,
    latentHeight,
    latentWidth,
    cond: mergePrompts(prepared.map((p) => p.request.cond.batch)),
    uncond: cfg ? mergePrompts(prepared.map((p) => p.request.uncond!.batch)) : null,
    emphasis: first.request.promptReading.emphasis,
    guidance,
    start: first.img2img ? { images: prepared.map((p) => initImage(p)) } : { latents: concatenate(prepared.map((p) => p.initialLatents!)) },
    noise: first.stepNoise.map((_, k) => concatenate(prepared.map((p) => p.stepNoise[k]!))),
  };
  if (signal) job.signal = signal;
  // Progress only when someone listens: on the CPU each event is a message from the worker.
  const { onProgress } = hooks;
  if (onProgress) job.onStage = (stage) => stage !== "denoise" && onProgress({ stage, step: 1, total: 1 });
  if (onProgress) job.onStep = (evalIndex) => onProgress({ stage: "denoise", step: evalIndex + 1, total: evaluations, timestep: program.evals[evalIndex]!.t });
  if (onLatents) job.onLatents = onLatents;
  if (prepared.some((p) => p.request.returnLatents)) job.returnLatents = true;
  let output = await backend.generate(job.returnLatents || !first.hires ? job : { ...job, returnLatents: true });
  let outWidth = width;
  let outHeight = height;
  let timings = output.timings;
  if (first.hires) {
    // Hires fix: the second pass from the first pass's latents (the first decode goes unused).
    const pass = first.hires;
    let offset = 0;
    const starts = prepared.map((p) => {
      const rows = p.request.batch * 4 * latentHeight * latentWidth;
      const start = hiresStart(p.hires!, output.latents!.subarray(offset, offset + rows), p.request.batch, latentHeight, latentWidth);
      offset += rows;
      return start;
    });
    throwIfAborted(signal);
    const second: GenerationJob = {
      ...job,
      program: pass.program,
      latentHeight: pass.height / 8,
      latentWidth: pass.width / 8,
      start: { latents: concatenate(starts) },
      noise: pass.stepNoise.map((_, k) => concatenate(prepared.map((p) => p.hires!.stepNoise[k]!))),
    };
    if (onProgress) second.onStep = (evalIndex) => onProgress({ stage: "denoise", step: evalIndex + 1, total: pass.program.evals.length, timestep: pass.program.evals[evalIndex]!.t });
    const firstTimings = output.timings;
    output = await backend.generate(second);
    timings = {
      ...output.timings,
      textEncode: firstTimings.textEncode + output.timings.textEncode,
      denoise: firstTimings.denoise + output.timings.denoise,
      decode: firstTimings.decode + output.timings.decode,
    };
    outWidth = pass.width;
    outHeight = pass.height;
  }
  const final = output.latents;
  const pixels = output.images;
  const { textEncode: textEncodeMs, denoise: denoiseMs, decode: decodeMs } = timings;
  const imageEncodeMs = prepared.map((p, i) => p.readImageMs + (output.timings.imageEncode[i] ?? 0));

  const modelHash = await context.modelHash();
  const perImage = 4 * (outHeight / 8) * (outWidth / 8);
  row = 0;
  return prepared.map((p, index) => {
    const r = p.request;
    const sampler = a1111SamplerName(r.scheduler) ?? r.scheduler;
    const images: GeneratedImage[] = [];
    for (let i = 0; i < r.batch; i++) {
      const seed = r.perImageGenerators ? r.generatorSeeds[i]! : r.generatorSeeds[0]! + BigInt(i);
      const infotext = formatInfotext({
        prompt: r.prompts[i]!,
        negativePrompt: cfg ? r.negativePrompts[i]! : "",
        steps: r.steps,
        sampler,
        cfgScale: r.guidance,
        seed,
        width,
        height,
        modelHash,
        ...(context.modelName !== undefined ? { modelName: context.modelName } : {}),
        ...(r.strength !== undefined ? { denoisingStrength: r.strength } : {}),
        ...a1111InfotextFields(r.scheduler, r.a1111, i),
        rng: r.rng,
        ...infotextEmphasis(r),
      });
      images.push({ rgb: pixels[row + i]!, width: outWidth, height: outHeight, seed, infotext });
    }
    const result: GenerateResult = {
      images,
      seeds: [...r.generatorSeeds],
      randomSeed: r.randomSeed,
      width: outWidth,
      height: outHeight,
      steps: r.steps,
      guidance: r.guidance,
      scheduler: r.scheduler,
      backend: backend.name,
      evaluations: evaluations + (first.hires?.program.evals.length ?? 0),
      timings: {
        tokenize: p.tokenizeMs,
        textEncode: textEncodeMs,
        imageEncode: imageEncodeMs[index]!,
        denoise: denoiseMs,
        decode: decodeMs,
        total: performance.now() - p.started,
      },
      warnings: p.warnings,
    };
    if (r.returnLatents && final) result.latents = prepared.length === 1 ? final : final.slice(row * perImage, (row + r.batch) * perImage);
    row += r.batch;
    return result;
  });
}

/**
 * A1111 records the emphasis when it is not "Original" and some prompt of the generation (prompt
 * or negative prompt) has "(" or "[" (sd_hijack_clip.py `forward`).
 */
function infotextEmphasis(r: ResolvedRequest): { emphasis?: string } {
  const { syntax, emphasis } = r.promptReading;
  if (syntax !== "a1111" || emphasis === "original") return {};
  const texts = r.uncond ? [...r.prompts, ...r.negativePrompts] : r.prompts;
  return texts.some((t) => t.includes("(") || t.includes("[")) ? { emphasis: A1111_EMPHASIS_NAMES[emphasis] } : {};
}

/** The img2img part of a prepared request, as the backend takes it. */
function initImage(p: PreparedRequest): InitImage {
  const part = p.img2img;
  if (!part) throw new InternalError("executeBatch: a txt2img request was batched with img2img requests");
  const { image, eps, noise } = part;
  return { pixels: rgbToPixels(image.rgb, image.height, image.width), rows: p.request.batch, eps, noise };
}

/** The prompt lists of requests with the same chunk count (their batch key), as one list. */
function mergePrompts(parts: PromptBatch[]): PromptBatch {
  if (parts.length === 1) return parts[0]!;
  const rowOf: number[] = [];
  const groupOf: number[] = [];
  const schedules: Array<Array<[number, number]>> = [];
  let prompts = 0;
  let groups = 0;
  for (const part of parts) {
    const offset = prompts;
    part.rowOf.forEach((p, r) => {
      rowOf.push(offset + p);
      schedules.push((part.schedules?.[r] ?? [[Infinity, p]]).map(([end, text]) => [end, offset + text]));
    });
    for (const g of part.groupOf) groupOf.push(groups + g);
    groups += Math.max(-1, ...part.groupOf) + 1;
    prompts += part.prompts;
  }
  const merged: PromptBatch = {
    chunks: parts[0]!.chunks,
    prompts,
    ids: concatenate(parts.map((p) => p.ids)),
    multipliers: concatenate(parts.map((p) => p.multipliers)),
    rowOf: Int32Array.from(rowOf),
    groupOf: Int32Array.from(groupOf),
  };
  if (parts.some((p) => p.schedules)) merged.schedules = schedules;
  return merged;
}

/** The arrays end to end (the batch axis); a single array is returned as is. */
function concatenate(parts: Float32Array[]): Float32Array;
function concatenate(parts: Int32Array[]): Int32Array;
function concatenate(parts: (Float32Array | Int32Array)[]): Float32Array | Int32Array {
  if (parts.length === 1) return parts[0]!;
  const out = parts[0] instanceof Int32Array ? new Int32Array(parts.reduce((n, p) => n + p.length, 0)) : new Float32Array(parts.reduce((n, p) => n + p.length, 0));
  let offset = 0;
  for (const part of parts) {
    out.set(part, offset);
    offset += part.length;
  }
  return out;
}
