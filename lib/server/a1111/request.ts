/**
 * Turns an A1111 `/sdapi/v1/txt2img` or `/sdapi/v1/img2img` body into the generations this
 * server runs. Validation happens here, before anything is queued, so a bad request is answered
 * at once with a 422 naming its field and never reaches a merged batch.
 *
 * Seeds follow A1111: `seed` −1 (or absent) picks a random seed in [0, 4294967294); image i of
 * the request gets seed + i (`all_seeds`), and each image has its own generator, so an image
 * depends only on its own seed, whatever the batch size. `n_iter` batches of `batch_size` images
 * become `n_iter` separate generations (A1111 runs them one after another; here the service may
 * merge them with each other and with other requests).
 */
import { randomInt } from "node:crypto";
import type { BackendLimits } from "../../backends/backend.js";
import { invalidField } from "../http/errors.js";
import { type Body, booleanField, integerField, isAbsent, numberField, optionalArray, optionalObject, stringField } from "./fields.js";
import { a1111NameOf, describeValue, resolveA1111Sampler } from "./samplers.js";
import { checkUnsupportedFields } from "./unsupported.js";
import { parseA1111Noise, type A1111NoiseFields } from "./a1111-noise.js";
import { parseA1111Hires } from "./a1111-hires.js";
import { a1111SamplerUsesEta, type HiresOptions } from "../../pipeline/a1111-options.js";
import { applyA1111Settings, type A1111Settings } from "./settings.js";

export type A1111Mode = "txt2img" | "img2img";

/** Largest seed A1111 draws for seed −1 (`random.randrange(4294967294)`), exclusive. */
const A1111_RANDOM_SEED_LIMIT = 4294967294;

/** A1111's defaults for the fields we implement (its StableDiffusionProcessing dataclasses). */
export const A1111_DEFAULTS = {
  prompt: "",
  negative_prompt: "",
  seed: -1,
  batch_size: 1,
  n_iter: 1,
  steps: 50,
  cfg_scale: 7.0,
  width: 512,
  height: 512,
  denoising_strength: 0.75,
  resize_mode: 0,
  send_images: true,
} as const;

export interface A1111RequestLimits {
  backend: BackendLimits;
  /** Most batches (`n_iter`) one request may ask for. */
  maxIterations: number;
  /** Most steps a request may ask for. */
  maxSteps: number;
  /** The served model's name (an `override_settings.sd_model_checkpoint` naming it is accepted). */
  modelName: string;
  /** The server's settings (`/sdapi/v1/options`); a request's `override_settings` apply on top. */
  settings: A1111Settings;
}

export interface A1111Generation {
  mode: A1111Mode;
  prompt: string;
  negativePrompt: string;
  width: number;
  height: number;
  steps: number;
  cfgScale: number;
  /** Our scheduler name. */
  scheduler: string;
  /** The schedule type of an A1111 k-diffusion sampler. */
  sigmaSchedule?: string;
  /** eta of an A1111 ancestral sampler (absent: its default 1) or of its DDIM (absent: 0). */
  eta?: number;
  /** A1111's name for it (info `sampler_name`). */
  samplerName: string;
  /** The first image's seed (after −1 was resolved); image i has seed + i. */
  seed: number;
  batchSize: number;
  nIter: number;
  rng: "cpu" | "nv";
  /** The settings this request runs with: the server's, with its `override_settings`. */
  settings: A1111Settings;
  sendImages: boolean;
  /** img2img: the init image's encoded bytes (PNG, JPEG, …) and how to fit it to width×height. */
  initImage?: Buffer;
  resizeMode?: 0 | 1;
  /** img2img: diffusers' strength (A1111's denoising_strength). */
  strength?: number;
  /** Hires fix (a1111-hires.ts); absent when enable_hr is off. */
  hires?: HiresOptions;
  /** A1111's noise options (a1111-noise.ts); absent when none is in use. */
  noise?: A1111NoiseFields;
  /** Fields accepted with a value we did not honour (see unsupported.ts). */
  ignored: string[];
  /** The request as A1111 echoes it back in `parameters`. */
  parameters: Record<string, unknown>;
}

/** Decodes one base64 image, with or without a `data:image/...;base64,` prefix. */
function decodeInitImage(value: unknown, field: string): Buffer {
  if (typeof value !== "string" || value.length === 0) {
    throw invalidField(field, `${field} must be a base64-encoded image (optionally a data: URL), got ${describeValue(value)}`);
  }
  const comma = value.startsWith("data:") ? value.indexOf(",") : -1;
  const payload = comma >= 0 ? value.slice(comma + 1) : value;
  const compact = payload.replace(/\s+/g, "");
  if (!/^[A-Za-z0-9+/_-]*={0,2}$/.test(compact) || compact.length < 8) {
    throw invalidField(field, `${field} must be a base64-encoded image (optionally a data: URL); it is not valid base64`);
  }
  return Buffer.from(compact, "base64");
}

/** Validates an A1111 body and resolves it into one generation description. */
export function parseA1111Request(mode: A1111Mode, body: Body, limits: A1111RequestLimits): A1111Generation {
  const { backend } = limits;
  const prompt = stringField(body, "prompt", A1111_DEFAULTS.prompt);
  const negativePrompt = stringField(body, "negative_prompt", A1111_DEFAULTS.negative_prompt);
  const steps = integerField(body, "steps", A1111_DEFAULTS.steps, 1, limits.maxSteps);
  const cfgScale = numberField(body, "cfg_scale", A1111_DEFAULTS.cfg_scale, 0, 100);
  const sizeHint = ` and a multiple of ${backend.sizeMultiple}`;
  const width = integerField(body, "width", A1111_DEFAULTS.width, backend.minWidth, backend.maxWidth, sizeHint);
  const height = integerField(body, "height", A1111_DEFAULTS.height, backend.minHeight, backend.maxHeight, sizeHint);
  for (const [field, value] of [["width", width], ["height", height]] as const) {
    if (value % backend.sizeMultiple !== 0) {
      throw invalidField(field, `${field} must be a multiple of ${backend.sizeMultiple} from ${field === "width" ? backend.minWidth : backend.minHeight} to ${field === "width" ? backend.maxWidth : backend.maxHeight}, got ${value} (number)`);
    }
  }
  const batchSize = integerField(body, "batch_size", A1111_DEFAULTS.batch_size, 1, backend.maxBatch, " (the model's largest batch)");
  const nIter = integerField(body, "n_iter", A1111_DEFAULTS.n_iter, 1, limits.maxIterations, " (the server's --max-queue)");

  const rawSeed = body.seed;
  let seed: number;
  if (isAbsent(rawSeed) || rawSeed === -1) {
    seed = randomInt(A1111_RANDOM_SEED_LIMIT);
  } else {
    // Seeds travel as JSON numbers, exact up to 2^53; image i uses seed + i.
    seed = integerField(body, "seed", -1, 0, Number.MAX_SAFE_INTEGER - batchSize * nIter, " (or -1 for a random seed)");
  }

  const sampler = resolveA1111Sampler(body.sampler_name, body.sampler_index, body.scheduler);
  const settings = applyA1111Settings(limits.settings, optionalObject(body, "override_settings") ?? {}, "override_settings.");
  // A1111's "GPU" is torch.randn on CUDA, which the "NV" source reproduces on any device.
  const rng = settings.randn_source === "CPU" ? "cpu" : "nv";
  const ensd = settings.eta_noise_seed_delta;
  const sendImages = booleanField(body, "send_images", A1111_DEFAULTS.send_images);
  const ignored = checkUnsupportedFields(body, { mode, scheduler: sampler.scheduler });

  const generation: A1111Generation = {
    mode,
    prompt,
    negativePrompt,
    width,
    height,
    steps,
    cfgScale,
    scheduler: sampler.scheduler,
    ...(sampler.sigmaSchedule !== undefined ? { sigmaSchedule: sampler.sigmaSchedule } : {}),
    samplerName: a1111NameOf(sampler.scheduler),
    seed,
    batchSize,
    nIter,
    rng,
    settings,
    sendImages,
    ignored,
    parameters: {},
  };
  const noise = parseA1111Noise(body, ensd);
  if (noise) generation.noise = noise;
  if (mode === "txt2img") {
    const hires = parseA1111Hires(body);
    if (hires) generation.hires = hires;
  } else if (body.enable_hr === true) {
    throw invalidField("enable_hr", "enable_hr applies to txt2img only");
  }
  // p.eta reaches whichever pass's sampler takes it (Sampler.initialize); the others ignore it.
  const eta = typeof body.eta === "number" ? body.eta : null;
  const hiresScheduler = generation.hires?.scheduler;
  if (eta !== null && (a1111SamplerUsesEta(sampler.scheduler) || (hiresScheduler !== undefined && a1111SamplerUsesEta(hiresScheduler)))) generation.eta = eta;

  if (mode === "img2img") {
    const images = optionalArray(body, "init_images");
    if (!images || images.length === 0) throw invalidField("init_images", "init_images must be an array with one base64-encoded image, got none");
    if (images.length > 1) throw invalidField("init_images", `init_images must hold one image (several init images are not supported), got ${images.length}`);
    generation.initImage = decodeInitImage(images[0], "init_images[0]");
    generation.strength = numberField(body, "denoising_strength", A1111_DEFAULTS.denoising_strength, 0, 1);
    const resizeMode = integerField(body, "resize_mode", A1111_DEFAULTS.resize_mode, 0, 3);
    if (resizeMode > 1) {
      throw invalidField("resize_mode", `resize_mode must be 0 (just resize) or 1 (crop and resize); ${resizeMode === 2 ? "2 (resize and fill)" : "3 (latent upscale)"} is not supported`);
    }
    generation.resizeMode = resizeMode as 0 | 1;
  }

  // A1111 echoes its whole request model back; unknown fields are dropped as pydantic does.
  const parameters: Record<string, unknown> = { ...A1111_DEFAULTS };
  if (mode === "txt2img") delete parameters.resize_mode;
  for (const [key, value] of Object.entries(body)) parameters[key] = value;
  // A1111 does not send the init images back (include_init_images is false by default).
  if (mode === "img2img") parameters.init_images = null;
  generation.parameters = parameters;
  return generation;
}

/** Maps a Pipeline option name (from an InvalidOptionError) to the A1111 field it came from. */
export function a1111FieldFor(option: string): string {
  const base = option.replace(/\[\d+\]$/, "").split(".")[0]!;
  const map: Record<string, string> = {
    prompt: "prompt",
    negativePrompt: "negative_prompt",
    width: "width",
    height: "height",
    steps: "steps",
    guidance: "cfg_scale",
    scheduler: "sampler_name",
    seed: "seed",
    seeds: "seed",
    batch: "batch_size",
    strength: "denoising_strength",
    initImage: "init_images",
    rng: "override_settings.randn_source",
    sigmaSchedule: "scheduler",
    eta: "eta",
    subseeds: "subseed",
    subseedStrength: "subseed_strength",
    seedResizeFrom: "seed_resize_from_w",
    ensd: "override_settings.eta_noise_seed_delta",
    hires: "enable_hr",
    "hires.scale": "hr_scale",
    "hires.resizeWidth": "hr_resize_x",
    "hires.resizeHeight": "hr_resize_y",
    "hires.steps": "hr_second_pass_steps",
    "hires.upscaler": "hr_upscaler",
    "hires.strength": "denoising_strength",
    "hires.scheduler": "hr_sampler_name",
    "hires.sigmaSchedule": "hr_scheduler",
    "hires.prompt": "hr_prompt",
    "hires.negativePrompt": "hr_negative_prompt",
    emphasis: "override_settings.emphasis",
    commaPaddingBacktrack: "override_settings.comma_padding_backtrack",
    padCondUncond: "override_settings.pad_cond_uncond",
    clipSkip: "override_settings.CLIP_stop_at_last_layers",
    "uniPc.variant": "override_settings.uni_pc_variant",
    "uniPc.skipType": "override_settings.uni_pc_skip_type",
    "uniPc.order": "override_settings.uni_pc_order",
    "uniPc.lowerOrderFinal": "override_settings.uni_pc_lower_order_final",
    sdxlClipLSkip: "override_settings.sdxl_clip_l_skip",
  };
  return map[option.replace(/\[\d+\]$/, "")] ?? map[base] ?? option;
}
