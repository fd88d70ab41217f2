/**
 * One generation implementation for one request or several merged ones, in two phases:
 *
 * 1. `prepareRequest` — everything that needs no model, per request: the init image read (and
 *    its size checked), prompt and negative-prompt ids, the sampler program, and every random
 *    draw in diffusers' order from the request's own generators (txt2img: the initial latents ×
 *    init_noise_sigma; img2img: the posterior eps, then the add_noise draw; then one draw per
 *    evaluation that consumes noise).
 * 2. `executeBatch` — the model calls, once for all the requests given: ONE text-encoder call
 *    per prompt list (the prompts of every image, then the negative prompts with guidance), each
 *    request's init image through the VAE encoder (img2img), ONE denoise of the merged batch
 *    (per-image guidance scales, per-row embeddings, each request's own noise rows), ONE decode;
 *    then each request's images, infotext and latents.
 *
 * `Pipeline.generate` is a batch of one; `PipelineService` merges requests whose `batchKey`
 * matches. A request's images never depend on the others in its batch: every random draw is its
 * own, and the models compute each batch row independently (the service tests check this pixel
 * for pixel).
 */
import { InvalidOptionError, SdTrtError, throwIfAborted } from "../errors.js";
import type { Backend, BackendLimits, BackendName, TextEmbeddings } from "../backends/backend.js";
import type { CpuDenoiseRequest, CpuGenerateRequest, CpuGenerateResult } from "../backends/cpu.js";
import { formatInfotext } from "../image/infotext.js";
import { readImage, type RgbImage } from "../image/read.js";
import { a1111SamplerName } from "../schedulers/index.js";
import type { SamplerProgram } from "../sampler/program.js";
import type { ClipTokenizer } from "../tokenizer/index.js";
import { img2imgLatents } from "./img2img.js";
import { NoiseSource, divideFloat32, scaleFloat32 } from "./noise.js";
import type { ProgressEvent, ResolvedRequest } from "./options.js";
import type { ProgramCache } from "./program-cache.js";

/** CLIP's token count. */
const TOKENS = 77;

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
  /** A1111's "Model hash" for the infotext. */
  modelHash(): Promise<string>;
}

/** Per-batch hooks: the batch's cancellation and progress (a request's own, when it runs alone). */
export interface BatchHooks {
  /** Cancels between stages and between model evaluations. */
  signal?: AbortSignal;
  onProgress?: (event: ProgressEvent) => void;
}

/** A request with everything computed that needs no model (see the module comment). */
export interface PreparedRequest {
  readonly request: ResolvedRequest;
  readonly width: number;
  readonly height: number;
  readonly program: SamplerProgram;
  /** Requests with equal keys can share a batch (size, guidance on/off, program). */
  readonly batchKey: string;
  /** Token ids [batch, 77] of the prompts, and of the negative prompts when guidance is on. */
  readonly condIds: Int32Array;
  readonly uncondIds: Int32Array | null;
  /** txt2img: x_0 = randn · init_noise_sigma. Null for img2img (made from `img2img` when the batch runs). */
  readonly initialLatents: Float32Array | null;
  readonly img2img: { image: RgbImage; eps: Float32Array[]; noise: Float32Array } | null;
  /** One [batch, 4, h, w] draw per evaluation that consumes noise, in order. */
  readonly stepNoise: Float32Array[];
  readonly warnings: string[];
  /** When the request's call began (`performance.now()`), for `timings.total`. */
  readonly started: number;
  readonly tokenizeMs: number;
  readonly readImageMs: number;
}

/**
 * Whether validated requests can share a batch, before their init images are read: requests
 * with equal keys can. Null when a request must run alone (it observes per-step latents, or its
 * size comes from its init image).
 */
export function batchKey(request: ResolvedRequest): string | null {
  if (request.onLatents) return null;
  if (request.width === undefined || request.height === undefined) return null;
  const img2img = request.initImage !== undefined;
  return JSON.stringify([request.width, request.height, request.steps, request.scheduler, request.guidance > 1, img2img, img2img ? request.strength : null]);
}

/** Token ids [rows, 77] for a list of texts, noting truncated ones. Each distinct text is tokenized once. */
function tokenize(tokenizer: ClipTokenizer, texts: string[], option: string, warnings: string[]): Int32Array {
  const ids = new Int32Array(texts.length * TOKENS);
  const seen = new Map<string, number[]>();
  texts.forEach((text, row) => {
    let rowIds = seen.get(text);
    if (!rowIds) {
      const tokens = tokenizer.tokenize(text);
      rowIds = tokens.inputIds77;
      seen.set(text, rowIds);
      if (tokens.truncated) {
        warnings.push(`${option}${texts.length > 1 ? `[${row}]` : ""} is longer than CLIP's ${TOKENS} tokens; the last ${tokens.droppedTokens} tokens are ignored`);
      }
    }
    ids.set(rowIds, row * TOKENS);
  });
  return ids;
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
 * Phase 1: reads the init image, tokenizes, compiles (or reuses) the program and draws every
 * random number of the request in diffusers' order. Runs no model.
 * @param started when the request's call began, for `timings.total`.
 * @throws InvalidOptionError naming `initImage` when it cannot be read or does not fit.
 */
export async function prepareRequest(context: GenerationContext, request: ResolvedRequest, started = performance.now()): Promise<PreparedRequest> {
  const { limits, tokenizer, programs } = context;
  const r = request;
  const cfg = r.guidance > 1;

  // The init image first, so an unreadable file fails before any model runs.
  let t = performance.now();
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
  if (width === undefined || height === undefined) throw new SdTrtError("ERR_INTERNAL", "a txt2img request reached prepareRequest without a size");
  // Before any model runs: a size that cannot fit in memory is refused now, not after minutes.
  context.backend.checkMemory?.({ batch: r.batch, width, height, guidance: cfg });

  t = performance.now();
  const warnings: string[] = [];
  const condIds = tokenize(tokenizer, r.prompts, "prompt", warnings);
  const uncondIds = cfg ? tokenize(tokenizer, r.negativePrompts, "negativePrompt", warnings) : null;
  const tokenizeMs = performance.now() - t;

  const { program, key } = programs.get(r.scheduler, r.steps, image ? r.strength! : undefined);
  const noise = new NoiseSource(r.rng, r.generatorSeeds, r.perImageGenerators);
  const rest = [4, height / 8, width / 8];
  let initialLatents: Float32Array | null = null;
  let img2img: PreparedRequest["img2img"] = null;
  if (image) {
    const eps = noise.drawPosterior(r.batch, rest); // (1) latent_dist.sample(generator)
    img2img = { image, eps, noise: noise.draw(r.batch, rest) }; // (2) the add_noise noise
  } else {
    initialLatents = scaleFloat32(noise.draw(r.batch, rest), program.initNoiseSigma); // randn · init_noise_sigma
  }
  const stepNoise = program.evals.filter((e) => e.drawsNoise).map(() => noise.draw(r.batch, rest));

  return {
    request: r,
    width,
    height,
    program,
    batchKey: JSON.stringify([width, height, cfg, key]),
    condIds,
    uncondIds,
    initialLatents,
    img2img,
    stepNoise,
    warnings,
    started,
    tokenizeMs,
    readImageMs,
  };
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

/** Encodes both prompt lists (one text-encoder call each, prompts first as diffusers does); disposes what was made if either fails. */
async function encodePrompts(backend: Backend, cond: Int32Array, uncond: Int32Array | null, rows: number): Promise<{ cond: TextEmbeddings; uncond: TextEmbeddings | null }> {
  // Both are posted at once: the backend runs them in order, and the second waits for no round trip.
  const [c, u] = await Promise.allSettled([backend.encodeText(cond, rows), uncond ? backend.encodeText(uncond, rows) : Promise.resolve(null)]);
  if (c.status === "rejected" || u.status === "rejected") {
    if (c.status === "fulfilled") c.value.dispose();
    if (u.status === "fulfilled") u.value?.dispose();
    throw c.status === "rejected" ? c.reason : (u as PromiseRejectedResult).reason;
  }
  return { cond: c.value, uncond: u.value };
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
  const progress = (event: ProgressEvent) => hooks.onProgress?.(event);
  const first = prepared[0]!;
  if (prepared.some((p) => p.batchKey !== first.batchKey)) {
    throw new SdTrtError("ERR_INTERNAL", "executeBatch: the requests cannot share a batch (different sizes, guidance or programs)");
  }
  const onLatents = prepared.length === 1 ? first.request.onLatents : undefined;
  if (prepared.length > 1 && prepared.some((p) => p.request.onLatents)) {
    throw new SdTrtError("ERR_INTERNAL", "executeBatch: a request that observes its latents (onLatents) must run alone");
  }
  const batch = prepared.reduce((n, p) => n + p.request.batch, 0);
  if (batch > backend.limits.maxBatch) {
    throw new InvalidOptionError("batch", `the merged batch of ${batch} images exceeds the backend's maximum batch ${backend.limits.maxBatch}`);
  }
  if (prepared.length > 1) backend.checkMemory?.({ batch, width: first.width, height: first.height, guidance: first.uncondIds !== null });
  throwIfAborted(signal);
  const { width, height, program } = first;
  const latentHeight = height / 8;
  const latentWidth = width / 8;
  const cfg = first.uncondIds !== null;

  const guidance = new Float64Array(batch);
  let row = 0;
  for (const p of prepared) {
    guidance.fill(p.request.guidance, row, row + p.request.batch);
    row += p.request.batch;
  }
  const evaluations = program.evals.length;
  const stages: BatchStages = {
    program,
    batch,
    latentHeight,
    latentWidth,
    guidance,
    condIds: concatenate(prepared.map((p) => p.condIds)),
    uncondIds: cfg ? concatenate(prepared.map((p) => p.uncondIds!)) : null,
    noise: first.stepNoise.map((_, k) => concatenate(prepared.map((p) => p.stepNoise[k]!))),
  };
  if (signal) stages.signal = signal;
  // Per-step progress only when someone listens: on the CPU each event is a message from the worker.
  const { onProgress } = hooks;
  if (onProgress) stages.onStep = (evalIndex) => onProgress({ stage: "denoise", step: evalIndex + 1, total: evaluations, timestep: program.evals[evalIndex]!.t });
  const txt2img = prepared.every((p) => !p.img2img);
  const { final, pixels, textEncodeMs, imageEncodeMs, denoiseMs, decodeMs } =
    txt2img && hasWholeGeneration(backend)
      ? await runWhole(backend, stages, prepared, progress, onLatents)
      : await runStaged(backend, stages, prepared, progress, onLatents);
  progress({ stage: "decode", step: 1, total: 1 });

  const modelHash = await context.modelHash();
  const perImage = 4 * latentHeight * latentWidth;
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
        ...(r.strength !== undefined ? { denoisingStrength: r.strength } : {}),
        rng: r.rng,
      });
      images.push({ rgb: pixels[row + i]!, width, height, seed, infotext });
    }
    const result: GenerateResult = {
      images,
      seeds: [...r.generatorSeeds],
      randomSeed: r.randomSeed,
      width,
      height,
      steps: r.steps,
      guidance: r.guidance,
      scheduler: r.scheduler,
      backend: backend.name,
      evaluations,
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
    if (r.returnLatents) result.latents = prepared.length === 1 ? final : final.slice(row * perImage, (row + r.batch) * perImage);
    row += r.batch;
    return result;
  });
}

/** What both ways of running a batch's models need. */
interface BatchStages {
  program: SamplerProgram;
  batch: number;
  latentHeight: number;
  latentWidth: number;
  guidance: Float64Array;
  condIds: Int32Array;
  uncondIds: Int32Array | null;
  noise: Float32Array[];
  signal?: AbortSignal;
  onStep?: (evalIndex: number) => void;
}

interface BatchOutputs {
  /** x_M [batch, 4, h, w]. */
  final: Float32Array;
  pixels: Uint8Array[];
  textEncodeMs: number;
  /** Per request. */
  imageEncodeMs: number[];
  denoiseMs: number;
  decodeMs: number;
}

/** A backend that runs a whole txt2img generation in one call (the CPU backend: one message to its worker). */
interface WholeGenerationBackend extends Backend {
  generateImages(request: CpuGenerateRequest): Promise<CpuGenerateResult>;
}

function hasWholeGeneration(backend: Backend): backend is WholeGenerationBackend {
  return typeof (backend as Partial<WholeGenerationBackend>).generateImages === "function";
}

/** txt2img in one backend call; the stage times are the backend's. */
async function runWhole(
  backend: WholeGenerationBackend,
  stages: BatchStages,
  prepared: PreparedRequest[],
  progress: (event: ProgressEvent) => void,
  onLatents: ResolvedRequest["onLatents"],
): Promise<BatchOutputs> {
  const latents = concatenate(prepared.map((p) => p.initialLatents!));
  const { onStep, ...rest } = stages;
  const request: CpuGenerateRequest = { ...rest, latents };
  if (onStep) {
    // Progress is listened to (each event is a message from the worker, so only then).
    request.onStep = onStep;
    request.onTextEncoded = () => progress({ stage: "encode-text", step: 1, total: 1 });
  }
  if (onLatents) {
    onLatents(0, latents);
    request.onLatents = (evalIndex, x) => onLatents(evalIndex + 1, x);
  }
  const result = await backend.generateImages(request);
  const { textEncode, denoise, decode } = result.timings;
  return { final: result.latents, pixels: result.images, textEncodeMs: textEncode, imageEncodeMs: prepared.map(() => 0), denoiseMs: denoise, decodeMs: decode };
}

/** Stage by stage: text encoder, init images (img2img), denoise, decoder. */
async function runStaged(
  backend: Backend,
  stages: BatchStages,
  prepared: PreparedRequest[],
  progress: (event: ProgressEvent) => void,
  onLatents: ResolvedRequest["onLatents"],
): Promise<BatchOutputs> {
  const { program, batch, latentHeight, latentWidth, signal } = stages;
  let t = performance.now();
  const { cond, uncond } = await encodePrompts(backend, stages.condIds, stages.uncondIds, batch);
  try {
    const textEncodeMs = performance.now() - t;
    progress({ stage: "encode-text", step: 1, total: 1 });
    throwIfAborted(signal);

    // x_0 of every request, in request order; img2img through the VAE encoder.
    const imageEncodeMs = prepared.map((p) => p.readImageMs);
    const initial: Float32Array[] = [];
    for (const [i, p] of prepared.entries()) {
      if (p.img2img) {
        t = performance.now();
        initial.push(await img2imgLatents({ backend, ...p.img2img, program }));
        imageEncodeMs[i]! += performance.now() - t;
        throwIfAborted(signal);
      } else {
        initial.push(p.initialLatents!);
      }
    }
    if (prepared.some((p) => p.img2img)) progress({ stage: "encode-image", step: 1, total: 1 });
    const latents = concatenate(initial);

    t = performance.now();
    const denoise: CpuDenoiseRequest = { program, latents, batch, latentHeight, latentWidth, cond, uncond, guidance: stages.guidance, noise: stages.noise };
    if (signal) denoise.signal = signal;
    if (stages.onStep) denoise.onStep = stages.onStep;
    if (onLatents) {
      onLatents(0, latents);
      denoise.onLatents = (evalIndex, x) => onLatents(evalIndex + 1, x);
    }
    const final = await backend.denoise(denoise);
    const denoiseMs = performance.now() - t;
    throwIfAborted(signal);

    t = performance.now();
    const pixels = await backend.decode(divideFloat32(final, backend.scalingFactor), batch, latentHeight, latentWidth);
    return { final, pixels, textEncodeMs, imageEncodeMs, denoiseMs, decodeMs: performance.now() - t };
  } finally {
    cond.dispose();
    uncond?.dispose();
  }
}
