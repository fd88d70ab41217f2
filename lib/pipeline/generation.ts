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
import type { Backend, BackendLimits, BackendName, GenerationJob, InitImage, SdxlConditioning } from "../backends/backend.js";
import { sdxlRefinerTimeIds, sdxlRequestTimeIds } from "./sdxl-options.js";
import { splitForRefiner } from "./sdxl-refiner.js";
import { formatInfotext } from "../image/infotext.js";
import type { LoraSpec } from "../convert/lora/set.js";
import { rgbToPixels } from "../image/pixels.js";
import { readImage, type RgbImage } from "../image/read.js";
import { a1111SamplerName, isA1111Sampler, isA1111UniPc, type SchedulerName } from "../schedulers/index.js";
import type { SamplerProgram } from "../sampler/program.js";
import type { ClipTokenizer } from "../tokenizer/index.js";
import type { PromptBatch } from "../prompt/conditioning.js";
import { A1111_EMPHASIS_NAMES } from "../prompt/emphasis.js";
import { scaleFloat32 } from "../sampler/latents.js";
import { brownianStepNoise, joinStepNoise, lazyStepNoise, noiseDrawCount, stepNoiseOf, type StepNoise } from "../sampler/step-noise.js";
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
  /**
   * Drawing the step noise (Euler a's and other ancestral samplers' per-step draws). The CPU
   * backend draws while its worker runs the models and TensorRT while the GPU encodes the
   * prompts: this time overlaps `textEncode`/`denoise` and is not part of the wall time.
   */
  stepNoise: number;
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
  /** SDXL: the refiner loaded with the pipeline (its backend and its scheduler's programs). */
  refiner?: { backend: Backend; programs: ProgramCache; numTrainTimesteps: number };
  /** Textual inversion: the vectors every text-encoder call takes ([rows, hidden]), and each embedding's short hash for `TI hashes`. */
  embeddings?: { vectors: Float32Array; vectorsClipG?: Float32Array; shorthash: ReadonlyMap<string, string> };
  /** A1111's "Lora hashes" for the infotext: the pipeline's LoRAs and a request's tagged ones, or undefined. */
  loraHashes(tagged: readonly LoraSpec[]): Promise<string | undefined>;
  /** Puts a batch's prompt-tag LoRAs (with the pipeline's own) into the backend's weights. */
  useLoras(tagged: readonly LoraSpec[]): Promise<void>;
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
  /**
   * The upscale target in latent pixels, before A1111's truncation to width/8 × height/8; × 8 it is
   * A1111's hr_upscale_to_x/y (resolveHires takes only multiples of 8).
   */
  upscaleHeight: number;
  upscaleWidth: number;
  truncateX: number;
  truncateY: number;
  upscaler: HiresRequest["upscaler"];
  /** The new ImageRNG's first draw [batch, 4, height/8, width/8]: x = upscaled + σ_start · noise. */
  noise: Float32Array;
  stepNoise: StepNoise;
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
  /** One [batch, 4, h, w] draw per evaluation that consumes noise, in order, drawn when the backend asks (after every draw above). */
  readonly stepNoise: StepNoise;
  /** Hires fix's second pass: its program, size, first ImageRNG draw and step draws. */
  readonly hires: HiresPass | null;
  /** SDXL base + refiner: the refiner's program (the base's is `program`) and its step draws. */
  readonly refiner: { program: SamplerProgram; stepNoise: StepNoise } | null;
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
  // SDXL: zero uncond embeddings are one choice for the whole batch.
  const text: unknown[] = [request.cond.batch.chunks, request.uncond?.batch.chunks ?? null, request.promptReading.emphasis, request.clipSkip, request.sdxl?.zeroUncond ?? null, request.sdxl?.clipLSkip ?? null];
  const refiner = request.sdxl?.refiner;
  if (refiner) text.push(refiner.switchAt, refiner.zeroUncond, refiner.cond.batch.chunks, refiner.uncond?.batch.chunks ?? null);
  const hiresPrompts = request.hiresPrompts;
  if (hiresPrompts) text.push(hiresPrompts.cond.batch.chunks, hiresPrompts.uncond?.batch.chunks ?? null);
  // Requests with different LoRA sets (prompt tags) need different weights: never one batch.
  const loras = request.loras.map((l) => [l.path, l.scale]);
  return JSON.stringify([loras, width, height, request.steps, request.scheduler, request.a1111.sigmaSchedule ?? null, request.a1111.eta ?? null, request.a1111.uniPc ?? null, request.uncond !== null, img2img ? request.strength : null, request.a1111.hires ?? null, ...text]);
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

  let { program } = programs.get(r.scheduler, r.steps, image ? r.strength! : undefined, r.a1111.sigmaSchedule, r.a1111.eta, uniPcSettingsFor(r.scheduler, r));
  let refinerProgram: SamplerProgram | null = null;
  const refinerRequest = r.sdxl?.refiner;
  if (refinerRequest) {
    const refiner = context.refiner;
    if (!refiner) throw new InternalError("a refiner request reached a pipeline without a refiner");
    if (image) throw new InvalidOptionError("refiner", "the refiner runs after a txt2img base pass; img2img with the refiner is not supported yet");
    const split = splitForRefiner(program, refinerRequest.switchAt, refiner.numTrainTimesteps, (start) => refiner.programs.getFrom(r.scheduler, r.steps, start, undefined).program);
    program = split.base;
    refinerProgram = split.refiner;
  }
  const rest = [4, height / 8, width / 8] as const;
  const noise: RequestNoise = r.a1111.noise ? new A1111NoiseSource(r.rng, r.generatorSeeds, rest, r.a1111.noise) : new NoiseSource(r.rng, r.generatorSeeds, r.perImageGenerators);
  const drawCount = noiseDrawCount(program);
  // The step noise is drawn when the backend asks for it, after every draw made here; A1111's
  // SDE samplers take theirs from Brownian trees, leaving the generators alone.
  const brownian = program.brownian;
  const lazySteps = () => (brownian ? brownianStepNoise(brownian, r.rng, a1111ImageSeeds(r), rest) : lazyStepNoise(drawCount, () => noise.draw(r.batch, rest)));
  let initialLatents: Float32Array | null = null;
  let img2img: PreparedRequest["img2img"] = null;
  let stepNoise: StepNoise;
  if (image && isA1111Sampler(r.scheduler) && !brownian) {
    // Here the posterior eps comes after A1111's step draws, so those are drawn now.
    let steps: Float32Array[];
    ({ img2img, stepNoise: steps } = drawA1111Img2img(noise, r.batch, rest, image, () => Array.from({ length: drawCount }, () => noise.draw(r.batch, rest))));
    stepNoise = stepNoiseOf(steps);
  } else if (image && isA1111Sampler(r.scheduler)) {
    ({ img2img } = drawA1111Img2img(noise, r.batch, rest, image, () => []));
    stepNoise = lazySteps();
  } else if (image) {
    const eps = noise.drawPosterior(r.batch, rest); // (1) latent_dist.sample(generator)
    img2img = { image, eps, noise: noise.draw(r.batch, rest) }; // (2) the add_noise noise
    stepNoise = lazySteps();
  } else {
    initialLatents = scaleFloat32(noise.draw(r.batch, rest), program.initNoiseSigma); // randn · init_noise_sigma
    stepNoise = lazySteps();
  }
  // The refiner's draws continue the same generators after the base's (diffusers: one generator
  // object for both calls); the refiner job runs after the base job has taken all of its draws.
  const refiner = refinerProgram ? { program: refinerProgram, stepNoise: lazyStepNoise(noiseDrawCount(refinerProgram), () => noise.draw(r.batch, rest)) } : null;
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
    refiner,
    warnings,
    started,
    tokenizeMs: r.tokenizeMs,
    readImageMs,
  };
}

/**
 * img2img's draws for A1111's own samplers (k-diffusion's, Restart, LCM, DDIM, PLMS). A1111
 * (StableDiffusionProcessingImg2Img) encodes the init image before any seed is used, sampling the
 * VAE posterior from torch's global generator, which it never seeds per request: that draw cannot
 * be reproduced. Every other draw is its ImageRNG's, in its order: the first is the noise (with
 * variation seeds and seed resize applied; x = init latent + σ_start · noise, or
 * √ᾱ · init latent + √(1 − ᾱ) · noise for DDIM / PLMS), then one per evaluation that draws. The
 * posterior eps — the one deliberate difference from A1111 — is drawn from the same generators
 * after all of those, so A1111's stream stays untouched and a request stays deterministic. With an
 * encoder that returns the posterior mean (the eps unused) the result is A1111's exactly.
 */
function drawA1111Img2img(
  noise: RequestNoise,
  batch: number,
  rest: readonly [number, number, number],
  image: RgbImage,
  drawSteps: () => Float32Array[],
): { img2img: NonNullable<PreparedRequest["img2img"]>; stepNoise: Float32Array[] } {
  const first = noise.draw(batch, rest);
  const stepNoise = drawSteps();
  return { img2img: { image, eps: noise.drawPosterior(batch, rest), noise: first }, stepNoise };
}

/**
 * A1111's sample_hr_pass with the second pass's own sampler (hr_sampler_name): sample_img2img with
 * steps given (setup_img2img_steps: steps' = int(steps / min(strength, 0.999)), t_enc = steps − 1;
 * a k-diffusion sampler runs sigmas[steps' − t_enc − 1:], DDIM / PLMS / UniPC timesteps[:t_enc] of
 * get_timesteps(steps')) and a new ImageRNG at the second pass's latent size.
 */
function prepareHires(context: GenerationContext, r: ResolvedRequest): HiresPass {
  const h = r.a1111.hires!;
  const stretched = Math.trunc(h.steps / Math.min(h.strength, 0.999));
  // create_sampler(hr_sampler_name or sampler_name); get_sigmas with hr_scheduler.
  let program: SamplerProgram;
  try {
    ({ program } = context.programs.getFrom(h.scheduler, stretched, stretched - h.steps, h.sigmaSchedule, h.eta, uniPcSettingsFor(h.scheduler, r)));
  } catch (error) {
    // The second pass runs t_enc = hires steps − 1 steps: too few for DDIM / PLMS (≥ 2) or UniPC (≥ its order).
    if (error instanceof InvalidOptionError) throw new InvalidOptionError("hires.steps", `hires fix's second pass (t_enc = hires steps − 1 = ${h.steps - 1}): ${error.message}`);
    throw error;
  }
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
    stepNoise: program.brownian
      ? brownianStepNoise(program.brownian, r.rng, a1111ImageSeeds(r), rest)
      : lazyStepNoise(noiseDrawCount(program), () => noise.draw(r.batch, rest)),
  };
}

/** A1111's uni_pc_* settings for a pass that runs its UniPC (the request holds them when either pass does). */
function uniPcSettingsFor(scheduler: SchedulerName, r: ResolvedRequest): ResolvedRequest["a1111"]["uniPc"] {
  return isA1111UniPc(scheduler) ? r.a1111.uniPc : undefined;
}

/**
 * A1111's seeds of the batch's images (p.all_seeds of the iteration), which seed its SDE samplers'
 * Brownian trees: the request's `seeds`, or seed, seed + 1, … from one `seed`.
 */
function a1111ImageSeeds(r: ResolvedRequest): bigint[] {
  return Array.from({ length: r.batch }, (_, i) => (r.perImageGenerators ? r.generatorSeeds[i]! : r.generatorSeeds[0]! + BigInt(i)));
}

/**
 * The second pass's starting latents: the first pass's latents upscaled, cropped as A1111 crops
 * them (truncate_x/y), noised with the new ImageRNG's first draw as the sampler's
 * sample_img2img does (the program's addNoise), in float32.
 */
function hiresStart(pass: HiresPass, latents: Float32Array, batch: number, latentHeight: number, latentWidth: number): Float32Array {
  const up = upscaleLatents(latents, [batch, 4, latentHeight, latentWidth], pass.upscaleHeight, pass.upscaleWidth, pass.upscaler);
  const h = pass.height / 8;
  const w = pass.width / 8;
  const y0 = Math.floor(pass.truncateY / 2);
  const x0 = Math.floor(pass.truncateX / 2);
  // k-diffusion: samples + noise · σ_start (signal 1); DDIM / PLMS / UniPC: samples · √ᾱ + noise · √(1 − ᾱ).
  const { signal, noise: sigma } = pass.program.addNoise!;
  const out = new Float32Array(batch * 4 * h * w);
  for (let plane = 0; plane < batch * 4; plane++) {
    for (let y = 0; y < h; y++) {
      for (let x = 0; x < w; x++) {
        const k = (plane * h + y) * w + x;
        out[k] = Math.fround(up[(plane * pass.upscaleHeight + y0 + y) * pass.upscaleWidth + x0 + x]! * signal) + Math.fround(pass.noise[k]! * sigma);
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
    clipSkip: first.request.clipSkip,
    ...(context.embeddings ? { tokenVectors: context.embeddings.vectors } : {}),
    guidance,
    start: first.img2img ? { images: prepared.map((p) => initImage(p)) } : { latents: concatenate(prepared.map((p) => p.initialLatents!)) },
    noise: joinStepNoise(prepared.map((p) => p.stepNoise)),
  };
  if (first.request.sdxl) {
    job.sdxl = sdxlConditioning(prepared, (p) => p);
    if (context.embeddings?.vectorsClipG) job.sdxl.tokenVectors2 = context.embeddings.vectorsClipG;
  }
  if (signal) job.signal = signal;
  // Progress only when someone listens: on the CPU each event is a message from the worker.
  const { onProgress } = hooks;
  if (onProgress) job.onStage = (stage) => stage !== "denoise" && onProgress({ stage, step: 1, total: 1 });
  if (onProgress) job.onStep = (evalIndex) => onProgress({ stage: "denoise", step: evalIndex + 1, total: evaluations, timestep: program.evals[evalIndex]!.t });
  if (onLatents) job.onLatents = onLatents;
  if (prepared.some((p) => p.request.returnLatents)) job.returnLatents = true;
  // Every request of the batch names the same LoRAs (they are part of the batch key).
  await context.useLoras(first.request.loras);
  const twoPasses = first.hires !== null || first.refiner !== null;
  let output = await backend.generate(job.returnLatents || !twoPasses ? job : { ...job, returnLatents: true });
  if (first.refiner) {
    // The refiner from the base's latents (the base's decode goes unused).
    const refinerBackend = context.refiner!.backend;
    throwIfAborted(signal);
    const refined = await refinerBackend.generate(refinerJob(prepared, job, output.latents!));
    output = {
      ...refined,
      timings: {
        ...refined.timings,
        textEncode: output.timings.textEncode + refined.timings.textEncode,
        denoise: output.timings.denoise + refined.timings.denoise,
        decode: output.timings.decode + refined.timings.decode,
        stepNoise: output.timings.stepNoise + refined.timings.stepNoise,
      },
    };
  }
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
      // calculate_hr_conds: the second pass's prompts and schedules (a new CFG denoiser counts its steps from 0).
      ...(first.request.hiresPrompts ? hiresConditioning(prepared) : {}),
      program: pass.program,
      latentHeight: pass.height / 8,
      latentWidth: pass.width / 8,
      start: { latents: concatenate(starts) },
      noise: joinStepNoise(prepared.map((p) => p.hires!.stepNoise)),
    };
    // SDXL: A1111's calculate_hr_conds conditions the second pass anew at its upscale size
    // (hr_upscale_to_x/y, before the resize crop): the same texts, the time ids of that size.
    if (job.sdxl) {
      second.sdxl = sdxlConditioning(prepared, (p) => ({ width: p.hires!.upscaleWidth * 8, height: p.hires!.upscaleHeight * 8 }));
      if (job.sdxl.tokenVectors2) second.sdxl.tokenVectors2 = job.sdxl.tokenVectors2;
    }
    if (onProgress) second.onStep = (evalIndex) => onProgress({ stage: "denoise", step: evalIndex + 1, total: pass.program.evals.length, timestep: pass.program.evals[evalIndex]!.t });
    const firstTimings = output.timings;
    output = await backend.generate(second);
    timings = {
      ...output.timings,
      textEncode: firstTimings.textEncode + output.timings.textEncode,
      denoise: firstTimings.denoise + output.timings.denoise,
      decode: firstTimings.decode + output.timings.decode,
      stepNoise: firstTimings.stepNoise + output.timings.stepNoise,
    };
    outWidth = pass.width;
    outHeight = pass.height;
  }
  const final = output.latents;
  const pixels = output.images;
  const { textEncode: textEncodeMs, denoise: denoiseMs, decode: decodeMs } = timings;
  const imageEncodeMs = prepared.map((p, i) => p.readImageMs + (output.timings.imageEncode[i] ?? 0));

  const modelHash = await context.modelHash();
  const loraHashes = await context.loraHashes(first.request.loras);
  const perImage = 4 * (outHeight / 8) * (outWidth / 8);
  row = 0;
  return prepared.map((p, index) => {
    const r = p.request;
    const sampler = a1111SamplerName(r.scheduler) ?? r.scheduler;
    const images: GeneratedImage[] = [];
    const seeds = a1111ImageSeeds(r);
    for (let i = 0; i < r.batch; i++) {
      const seed = seeds[i]!;
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
        ...a1111InfotextFields(r.scheduler, r.a1111, i, { prompt: r.prompts[i]!, negativePrompt: r.negativePrompts[i]! }),
        rng: r.rng,
        clipSkip: r.clipSkip,
        ...(loraHashes !== undefined ? { loraHashes } : {}),
        conditioningParams: conditioningParams(r, context.embeddings?.shorthash),
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
      evaluations: evaluations + (first.hires?.program.evals.length ?? 0) + (first.refiner?.program.evals.length ?? 0),
      timings: {
        tokenize: p.tokenizeMs,
        textEncode: textEncodeMs,
        imageEncode: imageEncodeMs[index]!,
        denoise: denoiseMs,
        decode: decodeMs,
        stepNoise: timings.stepNoise,
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
 * What A1111's `FrozenCLIPEmbedderWithCustomWords.forward` adds to the infotext, in its order. It
 * runs once per distinct prompt, negative prompts first (processing.py `setup_conds`), and each
 * call, when its texts use embeddings, sets `TI hashes` to its own "name: shorthash" list followed
 * by the value already there; when its texts have "(" or "[" and the emphasis is not "Original",
 * it sets `Emphasis`. A key keeps the place where it was first set. On SDXL both embedders run
 * that `forward` per call (CLIP-L's, then OpenCLIP's), so each call's hashes go in twice.
 */
function conditioningParams(r: ResolvedRequest, shorthash: ReadonlyMap<string, string> | undefined): [string, string][] {
  if (r.promptReading.syntax !== "a1111") return [];
  // One call per distinct prompt, in the order buildPromptBatch read them (embeddingsUsed's order).
  const callsOf = (texts: string[], used: string[][]) => [...new Set(texts)].map((text, i) => ({ used: used[i] ?? [], text }));
  // SDXL's zero uncond (no negative prompt) is a copy of the cond side: the negative "" uses no embeddings.
  const negativeUsed = r.sdxl?.zeroUncond ? [] : (r.uncond?.embeddingsUsed ?? []);
  const calls = [...(r.uncond ? callsOf(r.negativePrompts, negativeUsed) : []), ...callsOf(r.prompts, r.cond.embeddingsUsed)];
  const embedders = r.sdxl ? 2 : 1;
  const params = new Map<string, string>();
  const emphasis = r.promptReading.emphasis;
  for (const call of calls) {
    const hashes = call.used.flatMap((name) => {
      const hash = shorthash?.get(name);
      return hash ? [`${name.replace(/[:,]/g, "")}: ${hash}`] : [];
    });
    for (let e = 0; e < embedders && hashes.length > 0; e++) {
      const before = params.get("TI hashes");
      params.set("TI hashes", [...hashes, ...(before ? [before] : [])].join(", "));
    }
    if (emphasis !== "original" && (call.text.includes("(") || call.text.includes("["))) params.set("Emphasis", A1111_EMPHASIS_NAMES[emphasis]);
  }
  return [...params];
}

/**
 * The refiner's job: its program from the base's latents, the prompts through its tokenizer (it
 * has only text_encoder_2, so `cond2` is `cond`), its aesthetic-score time ids, its step draws.
 */
function refinerJob(prepared: PreparedRequest[], base: GenerationJob, latents: Float32Array): GenerationJob {
  const first = prepared[0]!;
  const parts = prepared.map((p) => p.request.sdxl!.refiner!);
  const cond = mergePrompts(parts.map((r) => r.cond.batch));
  const uncond = base.uncond ? mergePrompts(parts.map((r) => r.uncond!.batch)) : null;
  const zeroUncond = parts[0]!.zeroUncond;
  const ids = prepared.map((p) => sdxlRefinerTimeIds(p.request.sdxl!, p.width, p.height));
  const perRow = (which: "timeIds" | "negativeTimeIds") => concatenate(prepared.map((p, i) => repeatRows(ids[i]![which], p.request.batch)));
  const { onStage: _stage, onStep: _step, onLatents: _latents, ...rest } = base;
  const job: GenerationJob = {
    ...rest,
    program: first.refiner!.program,
    cond,
    uncond,
    start: { latents },
    noise: joinStepNoise(prepared.map((p) => p.refiner!.stepNoise)),
    sdxl: { cond2: cond, uncond2: zeroUncond ? null : uncond, zeroUncond, timeIds: perRow("timeIds"), negativeTimeIds: perRow("negativeTimeIds") },
  };
  return job;
}

/** The second pass's prompt lists of a hires batch (every request has `hiresPrompts`: they are in the batch key). */
function hiresConditioning(prepared: PreparedRequest[]): Pick<GenerationJob, "cond" | "uncond"> {
  const parts = prepared.map((p) => {
    if (!p.request.hiresPrompts) throw new InternalError("executeBatch: hires requests with and without second-pass prompts were batched");
    return p.request.hiresPrompts;
  });
  return { cond: mergePrompts(parts.map((h) => h.cond.batch)), uncond: parts[0]!.uncond ? mergePrompts(parts.map((h) => h.uncond!.batch)) : null };
}

/**
 * The SDXL conditioning of a batch: each request's second prompts and time ids, row by row.
 * `size`: the image size a request's time ids default to in this pass.
 */
function sdxlConditioning(prepared: PreparedRequest[], size: (p: PreparedRequest) => { width: number; height: number }): SdxlConditioning {
  const parts = prepared.map((p) => {
    if (!p.request.sdxl) throw new InternalError("executeBatch: an SD request was batched with SDXL requests");
    return p.request.sdxl;
  });
  // Sizes left out are the image's (for img2img known only now, from the init image).
  const ids = prepared.map((p, i) => {
    const { width, height } = size(p);
    return sdxlRequestTimeIds(parts[i]!, width, height);
  });
  const perRow = (which: "timeIds" | "negativeTimeIds") => concatenate(prepared.map((p, i) => repeatRows(ids[i]![which], p.request.batch)));
  const zeroUncond = parts[0]!.zeroUncond;
  const conditioning: SdxlConditioning = {
    cond2: mergePrompts(parts.map((s) => s.cond2.batch)),
    uncond2: parts[0]!.uncond2 ? mergePrompts(parts.map((s) => s.uncond2!.batch)) : null,
    zeroUncond,
    timeIds: perRow("timeIds"),
    negativeTimeIds: perRow("negativeTimeIds"),
  };
  const { clipLSkip } = parts[0]!;
  if (clipLSkip !== undefined) conditioning.clipLSkip = clipLSkip;
  // A1111's empty negative prompts, row by row (requests without any have none).
  if (parts.some((s) => s.zeroUncondRows)) {
    conditioning.zeroUncondRows = Uint8Array.from(prepared.flatMap((p, i) => Array.from(parts[i]!.zeroUncondRows ?? new Uint8Array(p.request.batch))));
  }
  return conditioning;
}

/** `row` repeated `times` times: [times, row.length]. */
function repeatRows(row: Float32Array, times: number): Float32Array {
  const out = new Float32Array(row.length * times);
  for (let i = 0; i < times; i++) out.set(row, i * row.length);
  return out;
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
