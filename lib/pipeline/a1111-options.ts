/**
 * The generate() options that exist to reproduce A1111: the schedule type of its k-diffusion
 * samplers, and its noise (variation seeds, "resize seed from", ENSD). Validated here, kept apart
 * from options.ts; the resolved values travel on the request as `a1111`.
 */
import { InvalidOptionError } from "../errors.js";
import { booleanValue, integerInRange, invalidOption, numberInRange, oneOf } from "../validate.js";
import { validateSeed } from "../rng/index.js";
import type { BackendLimits } from "../backends/backend.js";
import { LATENT_UPSCALERS, type LatentUpscaler } from "../sampler/latent-upscale.js";
import {
  A1111_DDIM_CFGPP,
  A1111_TIMESTEP_SAMPLER_NAMES,
  A1111_UNI_PC_DEFAULTS,
  UNI_PC_SKIP_TYPES,
  UNI_PC_VARIANTS,
  isA1111Sampler,
  isA1111UniPc,
  isKDiffusionSampler,
  KDIFFUSION_SAMPLER_NAMES,
  kdiffusionFractionalTimesteps,
  kdiffusionUsesEnsd,
  kdiffusionUsesEta,
  a1111SamplerName,
  resolveSigmaSchedule,
  SIGMA_SCHEDULE_LABELS,
  sigmaScheduleLabel,
  type A1111UniPcSettings,
  type SchedulerName,
  type SigmaSchedule,
} from "../schedulers/index.js";

/** A1111's timestep samplers that take eta (CompVisSampler's eta_ddim, infotext `Eta DDIM`). */
const DDIM_ETA_SAMPLERS: readonly string[] = ["a1111_ddim", "a1111_ddim_cfgpp"];

/** Whether A1111 hands this sampler p.eta (its function has an `eta` parameter: Sampler.initialize). */
export function a1111SamplerUsesEta(scheduler: string): boolean {
  return isKDiffusionSampler(scheduler) ? kdiffusionUsesEta(scheduler) : DDIM_ETA_SAMPLERS.includes(scheduler);
}

export interface A1111GenerateOptions {
  /**
   * A1111's schedule type for its k-diffusion samplers (`k_*` schedulers): `automatic` (the
   * sampler's own default, as A1111's "Automatic"), `uniform`, `karras`, `exponential`,
   * `polyexponential`, `sgm_uniform`, `kl_optimal`, `align_your_steps`, `simple`, `normal`,
   * `ddim`, or their A1111 labels ("Karras", "SGM Uniform", …). Defaults to `automatic`.
   */
  sigmaSchedule?: string;
  /**
   * eta of A1111's ancestral and SDE samplers and DPM fast (k_euler_a, k_dpm_2_a, k_dpmpp_2s_a, k_dpmpp_sde, k_dpmpp_2m_sde, k_dpmpp_2m_sde_heun, k_dpmpp_3m_sde, k_dpm_fast), 0 … 100; defaults to 1
   * (A1111's eta_ancestral). For A1111's DDIM (a1111_ddim) its eta, defaulting to 0 (eta_ddim).
   * As A1111's p.eta it applies to both passes of the hires fix: accepted when either pass's sampler takes it.
   */
  eta?: number;
  /** A1111's variation seeds, one per image (its all_subseeds: subseed, subseed + 1, …). Needs `seeds`. */
  subseeds?: (number | bigint)[];
  /** How much of the variation seed's noise to blend in (A1111's slerp), 0 … 1. Defaults to 0. */
  subseedStrength?: number;
  /** A1111's "Resize seed from": the size (pixels) the seeds' noise is made at, centred into this image's. Needs `seeds`. */
  seedResizeFrom?: { width: number; height: number };
  /** A1111's eta_noise_seed_delta (ENSD): after the initial noise each image's generator is re-seeded with seed + ENSD. Needs `seeds`. */
  ensd?: number;
  /**
   * A1111's hires fix (txt2img with one of A1111's own samplers and `seeds`): the first pass at
   * width × height, its latents upscaled with a latent upscaler, then an img2img pass at the
   * larger size from them (A1111's sample_hr_pass). SDXL: the second pass's time ids are those of
   * the upscale size (A1111's calculate_hr_conds), except sizes given as originalSize / targetSize.
   */
  hires?: HiresOptions;
  /**
   * A1111's UniPC settings (its options uni_pc_variant, uni_pc_skip_type, uni_pc_order,
   * uni_pc_lower_order_final), for `a1111_unipc` (either pass of the hires fix) only; each defaults to A1111's.
   */
  uniPc?: UniPcOptions;
}

export interface UniPcOptions {
  /** "bh1" (default), "bh2" or "vary_coeff". */
  variant?: string;
  /** "time_uniform" (default), "time_quadratic" or "logSNR". */
  skipType?: string;
  /** 1 … 15, default 3; the run needs at least this many steps (A1111 asserts it). */
  order?: number;
  /** Lower the order over the last steps (default true). */
  lowerOrderFinal?: boolean;
}

export interface HiresOptions {
  /** Upscale factor (A1111's hr_scale, > 1), unless `resizeWidth` / `resizeHeight` are given. Defaults to 2. */
  scale?: number;
  /** A1111's hr_resize_x / hr_resize_y (pixels; one of them 0 keeps the aspect ratio). */
  resizeWidth?: number;
  resizeHeight?: number;
  /** Second-pass steps (A1111's hr_second_pass_steps; 0 or absent = steps). */
  steps?: number;
  /** A1111's latent upscaler name ("Latent", "Latent (bicubic antialiased)", …). Defaults to "Latent". */
  upscaler?: string;
  /** The second pass's denoising strength, (0, 1]. Defaults to 0.75 (A1111's API default). */
  strength?: number;
  /** The second pass's prompt for every image (A1111's hr_prompt); absent or "" = the first pass's prompts. */
  prompt?: string;
  /** The second pass's negative prompt for every image (A1111's hr_negative_prompt); absent or "" = the first pass's. */
  negativePrompt?: string;
  /** The second pass's sampler, any of A1111's own (k_euler, k_dpmpp_2m, …, a1111_ddim, a1111_ddim_cfgpp, a1111_plms, a1111_unipc; A1111's hr_sampler_name). Defaults to the first pass's. */
  scheduler?: string;
  /** The second pass's schedule type (A1111's hr_scheduler, as `sigmaSchedule`). Defaults to the first pass's `sigmaSchedule` ("automatic": the second pass's sampler's own default). */
  sigmaSchedule?: string;
}

/** Resolved hires fix. */
export interface HiresRequest {
  /** The second pass's image size. */
  width: number;
  height: number;
  /** A1111's crop of the upscaled latents when both resize sizes are given (latent pixels). */
  truncateX: number;
  truncateY: number;
  /** Requested second-pass steps (A1111 stretches the schedule to steps / strength). */
  steps: number;
  strength: number;
  upscaler: LatentUpscaler;
  /** The second pass's sampler and schedule (the first pass's unless given; a schedule for k-diffusion samplers only), and its eta when the sampler takes one. */
  scheduler: SchedulerName;
  sigmaSchedule?: SigmaSchedule;
  eta?: number;
  /** The second pass's prompt / negative prompt for every image, when given (not empty). */
  prompt?: string;
  negativePrompt?: string;
  /** For the infotext: "Hires upscale" or "Hires resize", "Hires steps" when given. */
  scale?: number;
  resize?: string;
  stepsGiven: boolean;
}

export const A1111_OPTION_NAMES = ["sigmaSchedule", "eta", "subseeds", "subseedStrength", "seedResizeFrom", "ensd", "hires", "uniPc"] as const;

/** Resolved A1111 options of a request. */
export interface A1111Request {
  /** Set for k-diffusion samplers only. */
  sigmaSchedule?: SigmaSchedule;
  /** Set when the request gives eta (ancestral and SDE k-diffusion samplers, DPM fast and A1111's DDIM only). */
  eta?: number;
  /** A1111's ImageRNG settings; absent when none of its options is used. */
  noise?: {
    subseeds?: bigint[];
    subseedStrength: number;
    seedResizeFromWidth: number;
    seedResizeFromHeight: number;
    ensd: number;
  };
  hires?: HiresRequest;
  /** Set when either pass runs a1111_unipc: every setting, defaults filled in. */
  uniPc?: A1111UniPcSettings;
}

export function resolveA1111Options(
  options: A1111GenerateOptions,
  scheduler: SchedulerName,
  batch: number,
  perImageGenerators: boolean,
  img2img: boolean,
  fractionalTimesteps: boolean,
  image?: { width: number | undefined; height: number | undefined; steps: number; limits: BackendLimits },
): A1111Request {
  const out: A1111Request = {};
  if (isKDiffusionSampler(scheduler) && kdiffusionFractionalTimesteps(scheduler) && !fractionalTimesteps) {
    throw new InvalidOptionError(
      "scheduler",
      `${scheduler} feeds the UNet fractional timesteps (A1111's sigma_to_t), but this model's UNet takes an integer timestep, which would truncate them: re-export the UNet with a float timestep, or use a diffusers scheduler`,
    );
  }
  if (isA1111UniPc(scheduler) && !fractionalTimesteps) {
    throw new InvalidOptionError(
      "scheduler",
      `${scheduler} feeds the UNet fractional timesteps (A1111's UniPC time (t − 1/1000) · 1000), but this model's UNet takes an integer timestep, which would truncate them: re-export the UNet with a float timestep, or use a diffusers scheduler`,
    );
  }
  // The hires fix's second-pass sampler as given (checked in resolveHires): A1111 reads its UniPC
  // settings and p.eta for whichever pass's sampler uses them.
  const hiresScheduler = typeof options.hires === "object" && options.hires !== null && typeof options.hires.scheduler === "string" ? options.hires.scheduler : undefined;
  const uniPcRuns = isA1111UniPc(scheduler) || (hiresScheduler !== undefined && isA1111UniPc(hiresScheduler));
  if (options.uniPc !== undefined && !uniPcRuns) {
    throw new InvalidOptionError("uniPc", `uniPc applies to A1111's own UniPC (a1111_unipc, first pass or hires.scheduler), not ${scheduler}`);
  }
  if (uniPcRuns) out.uniPc = resolveUniPc(options.uniPc);
  if (options.sigmaSchedule !== undefined) {
    if (!isKDiffusionSampler(scheduler)) {
      throw new InvalidOptionError("sigmaSchedule", `sigmaSchedule applies to A1111's k-diffusion samplers (k_euler, k_euler_a, k_dpmpp_2m, …); ${scheduler} has its own schedule`);
    }
    out.sigmaSchedule = resolveSigmaSchedule(options.sigmaSchedule);
  } else if (isKDiffusionSampler(scheduler)) {
    out.sigmaSchedule = "automatic";
  }

  let eta: number | undefined;
  if (options.eta !== undefined) {
    if (!a1111SamplerUsesEta(scheduler) && !(options.hires !== undefined && hiresScheduler !== undefined && a1111SamplerUsesEta(hiresScheduler))) {
      throw new InvalidOptionError("eta", `eta applies to A1111's ancestral and SDE samplers, DPM fast, DDIM and DDIM CFG++ (k_euler_a, k_dpm_2_a, k_dpmpp_2s_a, k_dpmpp_sde, k_dpmpp_2m_sde, k_dpmpp_2m_sde_heun, k_dpmpp_3m_sde, k_dpm_fast, a1111_ddim, a1111_ddim_cfgpp) in either pass, not ${hiresScheduler === undefined ? scheduler : `${scheduler} then ${hiresScheduler}`}`);
    }
    eta = numberInRange("eta", options.eta, 0, 100);
    // The first pass takes it only where its sampler does (the second pass: resolveHires).
    if (a1111SamplerUsesEta(scheduler)) out.eta = eta;
  }
  if (options.hires !== undefined) out.hires = resolveHires(options.hires, scheduler, out, eta, perImageGenerators, img2img, fractionalTimesteps, image);
  const used = (["subseeds", "subseedStrength", "seedResizeFrom", "ensd"] as const).filter((k) => options[k] !== undefined);
  if (used.length === 0) return out;
  const first = used[0]!;
  if (!perImageGenerators) {
    throw new InvalidOptionError(first, `${first} follows A1111's noise, which has one generator per image: give seeds (A1111's seed, seed + 1, …) instead of seed`);
  }
  if (img2img && !isA1111Sampler(scheduler)) {
    throw new InvalidOptionError(first, `${first} applies to txt2img, and to img2img with A1111's own samplers (k_euler_a, …, a1111_ddim, a1111_plms, a1111_unipc), not img2img with ${scheduler}`);
  }

  let subseeds: bigint[] | undefined;
  if (options.subseeds !== undefined) {
    if (!Array.isArray(options.subseeds) || options.subseeds.length !== batch) {
      throw invalidOption("subseeds", `an array of one seed per image (batch ${batch})`, options.subseeds);
    }
    subseeds = options.subseeds.map((s, i) => validateSeed(`subseeds[${i}]`, s));
  }
  const subseedStrength = options.subseedStrength === undefined ? 0 : numberInRange("subseedStrength", options.subseedStrength, 0, 1);
  if (subseedStrength > 0 && subseeds === undefined) {
    throw new InvalidOptionError("subseedStrength", "subseedStrength needs subseeds (the variation seeds it blends in)");
  }
  let seedResizeFromWidth = 0;
  let seedResizeFromHeight = 0;
  if (options.seedResizeFrom !== undefined) {
    const r = options.seedResizeFrom;
    if (typeof r !== "object" || r === null) throw invalidOption("seedResizeFrom", "an object { width, height } in pixels", r);
    seedResizeFromWidth = integerInRange("seedResizeFrom.width", r.width, 8, 16384);
    seedResizeFromHeight = integerInRange("seedResizeFrom.height", r.height, 8, 16384);
  }
  const ensd = options.ensd === undefined ? 0 : integerInRange("ensd", options.ensd, 0, Number.MAX_SAFE_INTEGER);
  out.noise = { subseedStrength, seedResizeFromWidth, seedResizeFromHeight, ensd };
  if (subseeds) out.noise.subseeds = subseeds;
  return out;
}

function resolveUniPc(raw: UniPcOptions | undefined): A1111UniPcSettings {
  if (raw === undefined) return { ...A1111_UNI_PC_DEFAULTS };
  if (typeof raw !== "object" || raw === null) throw invalidOption("uniPc", "an object { variant, skipType, order, lowerOrderFinal }", raw);
  const d = A1111_UNI_PC_DEFAULTS;
  return {
    uni_pc_variant: raw.variant === undefined ? d.uni_pc_variant : oneOf("uniPc.variant", raw.variant, UNI_PC_VARIANTS),
    uni_pc_skip_type: raw.skipType === undefined ? d.uni_pc_skip_type : oneOf("uniPc.skipType", raw.skipType, UNI_PC_SKIP_TYPES),
    // Order k keeps k + 1 steps of history; the executors hold 16 (A1111's slider goes to 50).
    uni_pc_order: raw.order === undefined ? d.uni_pc_order : integerInRange("uniPc.order", raw.order, 1, 15),
    uni_pc_lower_order_final: raw.lowerOrderFinal === undefined ? d.uni_pc_lower_order_final : booleanValue("uniPc.lowerOrderFinal", raw.lowerOrderFinal),
  };
}

function resolveHires(
  raw: HiresOptions,
  scheduler: SchedulerName,
  first: A1111Request,
  eta: number | undefined,
  perImageGenerators: boolean,
  img2img: boolean,
  fractionalTimesteps: boolean,
  image: { width: number | undefined; height: number | undefined; steps: number; limits: BackendLimits } | undefined,
): HiresRequest {
  if (typeof raw !== "object" || raw === null) {
    throw invalidOption("hires", "an object { scale, steps, upscaler, strength, resizeWidth, resizeHeight, prompt, negativePrompt, scheduler, sigmaSchedule }", raw);
  }
  if (img2img || !image || image.width === undefined || image.height === undefined) throw new InvalidOptionError("hires", "hires applies to txt2img only");
  if (!isA1111Sampler(scheduler)) {
    throw new InvalidOptionError("hires", `hires runs A1111's second pass, which sd-trt implements for A1111's own samplers (k_*, a1111_ddim, a1111_plms, a1111_unipc) only, not ${scheduler}`);
  }
  if (!perImageGenerators) throw new InvalidOptionError("hires", "hires follows A1111's noise, which has one generator per image: give seeds (A1111's seed, seed + 1, …) instead of seed");
  const upscaler = raw.upscaler ?? "Latent";
  if (!(LATENT_UPSCALERS as readonly string[]).includes(upscaler)) {
    const latent = LATENT_UPSCALERS.map((u) => JSON.stringify(u)).join(", ");
    throw new InvalidOptionError("hires.upscaler", `hires.upscaler must be one of ${latent} (A1111's latent upscalers; pixel upscalers such as ESRGAN or Lanczos are not supported), got ${JSON.stringify(upscaler)}`);
  }
  const { width, height, limits } = image;
  const rx = raw.resizeWidth === undefined ? 0 : integerInRange("hires.resizeWidth", raw.resizeWidth, 0, limits.maxWidth);
  const ry = raw.resizeHeight === undefined ? 0 : integerInRange("hires.resizeHeight", raw.resizeHeight, 0, limits.maxHeight);
  let targetW: number;
  let targetH: number;
  let truncateX = 0;
  let truncateY = 0;
  let scale: number | undefined;
  // A1111's StableDiffusionProcessingTxt2Img.calculate_target_resolution.
  if (rx === 0 && ry === 0) {
    scale = raw.scale === undefined ? 2 : numberInRange("hires.scale", raw.scale, 0, 8);
    if (scale <= 1) throw new InvalidOptionError("hires.scale", `hires.scale must be greater than 1 when no resize size is given (A1111's hr_scale), got ${scale}`);
    targetW = Math.trunc(width * scale);
    targetH = Math.trunc(height * scale);
  } else if (ry === 0) {
    targetW = rx;
    targetH = Math.floor((rx * height) / width);
  } else if (rx === 0) {
    targetW = Math.floor((ry * width) / height);
    targetH = ry;
  } else if (width / height < rx / ry) {
    targetW = rx;
    targetH = Math.floor((rx * height) / width);
    truncateY = Math.floor((targetH - ry) / 8);
  } else {
    targetW = Math.floor((ry * width) / height);
    targetH = ry;
    truncateX = Math.floor((targetW - rx) / 8);
  }
  const finalW = targetW - truncateX * 8;
  const finalH = targetH - truncateY * 8;
  const fits = (v: number, min: number, max: number) => v >= min && v <= max && v % limits.sizeMultiple === 0;
  if (!fits(finalW, limits.minWidth, limits.maxWidth) || !fits(finalH, limits.minHeight, limits.maxHeight) || targetW % 8 !== 0 || targetH % 8 !== 0) {
    throw new InvalidOptionError(
      raw.scale !== undefined || (rx === 0 && ry === 0) ? "hires.scale" : "hires.resizeWidth",
      `hires gives a second pass of ${finalW}×${finalH}; the model takes multiples of ${limits.sizeMultiple} in ${limits.minWidth}-${limits.maxWidth} × ${limits.minHeight}-${limits.maxHeight}`,
    );
  }
  const stepsGiven = raw.steps !== undefined && raw.steps !== 0;
  const steps = stepsGiven ? integerInRange("hires.steps", raw.steps, 1, 1000) : image.steps;
  const strength = raw.strength === undefined ? 0.75 : numberInRange("hires.strength", raw.strength, 0, 1);
  if (strength <= 0) throw new InvalidOptionError("hires.strength", "hires.strength must be greater than 0 (A1111 runs no second pass at 0)");
  // A1111's hr_sampler_name / hr_scheduler: the second pass's sampler, and its schedule type (hr_scheduler None is the first pass's).
  let hiresScheduler: SchedulerName = scheduler;
  if (raw.scheduler !== undefined) {
    // sample_hr_pass creates any of A1111's samplers by name (create_sampler(hr_sampler_name)).
    if (typeof raw.scheduler !== "string" || !isA1111Sampler(raw.scheduler)) {
      throw invalidOption("hires.scheduler", `one of A1111's own samplers (${[...KDIFFUSION_SAMPLER_NAMES, ...A1111_TIMESTEP_SAMPLER_NAMES, A1111_DDIM_CFGPP, "a1111_unipc"].join(", ")})`, raw.scheduler);
    }
    hiresScheduler = raw.scheduler as SchedulerName;
    const fractional = isKDiffusionSampler(hiresScheduler) ? kdiffusionFractionalTimesteps(hiresScheduler) : isA1111UniPc(hiresScheduler);
    if (fractional && !fractionalTimesteps) {
      throw new InvalidOptionError("hires.scheduler", `${hiresScheduler} feeds the UNet fractional timesteps, but this model's UNet takes an integer timestep: re-export the UNet with a float timestep`);
    }
  }
  const out: HiresRequest = { width: finalW, height: finalH, truncateX, truncateY, steps, strength, upscaler: upscaler as LatentUpscaler, stepsGiven, scheduler: hiresScheduler };
  if (isKDiffusionSampler(hiresScheduler)) {
    // hr_scheduler None is the first pass's name: "Automatic" after a timestep sampler (which has none).
    out.sigmaSchedule = raw.sigmaSchedule === undefined ? (first.sigmaSchedule ?? "automatic") : resolveSigmaSchedule(raw.sigmaSchedule, "hires.sigmaSchedule");
  } else if (raw.sigmaSchedule !== undefined) {
    throw new InvalidOptionError("hires.sigmaSchedule", `hires.sigmaSchedule applies to A1111's k-diffusion samplers (k_euler, k_dpmpp_2m, …); the second pass's ${hiresScheduler} has its own schedule`);
  }
  // Sampler.initialize: eta = p.eta, else the option's default (the program's own).
  if (eta !== undefined && a1111SamplerUsesEta(hiresScheduler)) out.eta = eta;
  for (const key of ["prompt", "negativePrompt"] as const) {
    const text = raw[key];
    if (text === undefined) continue;
    if (typeof text !== "string") throw invalidOption(`hires.${key}`, "a string (the second pass's text for every image)", text);
    // A1111's setup_prompts: an empty hr_prompt is the first pass's.
    if (text !== "") out[key] = text;
  }
  if (scale !== undefined) out.scale = scale;
  else out.resize = `${rx}x${ry}`;
  return out;
}

/**
 * A1111's infotext fields for these options, in the order its create_infotext writes them:
 * `Schedule type` (after `Sampler`), `Variation seed`, `Variation seed strength`,
 * `Seed resize from` (after the model fields), `ENSD` (after `Denoising strength`).
 */
/**
 * The `Schedule type` A1111's get_sigmas puts in extra_generation_params: the schedule's label,
 * none when "Automatic" leaves the sampler without a schedule function (its default sigmas).
 */
function scheduleTypeSet(scheduler: SchedulerName, schedule: SigmaSchedule | undefined): string | undefined {
  if (schedule === undefined || !isKDiffusionSampler(scheduler)) return undefined;
  const label = sigmaScheduleLabel(scheduler, schedule);
  return label === SIGMA_SCHEDULE_LABELS.automatic ? undefined : label;
}

export interface A1111InfotextFields {
  scheduleType?: string;
  /** A1111's `Eta` (written when it is not 1), after the hires fields. */
  eta?: number;
  /** A1111's `Eta DDIM` (its DDIM's eta, written when it is not 0). */
  etaDdim?: number;
  /** Hires fix: `Denoising strength`, then `Hires upscale` / `Hires resize`, `Hires steps`, `Hires upscaler`. */
  denoisingStrength?: number;
  hires?: [string, string][];
  variationSeed?: bigint;
  variationSeedStrength?: number;
  seedResizeFrom?: string;
  ensd?: number;
}

/**
 * `texts`: the image's first-pass prompt and negative prompt, which A1111's `Hires prompt` /
 * `Hires negative prompt` are written against.
 */
export function a1111InfotextFields(scheduler: SchedulerName, a1111: A1111Request, image: number, texts: { prompt: string; negativePrompt: string }): A1111InfotextFields {
  const out: A1111InfotextFields = {};
  if (a1111.sigmaSchedule !== undefined) out.scheduleType = sigmaScheduleLabel(scheduler, a1111.sigmaSchedule);
  // Sampler.initialize writes its eta field when eta differs from the sampler's default (1; DDIM 0).
  if (DDIM_ETA_SAMPLERS.includes(scheduler)) {
    if (a1111.eta !== undefined && a1111.eta !== 0) out.etaDdim = a1111.eta;
  } else if (a1111.eta !== undefined && a1111.eta !== 1) {
    out.eta = a1111.eta;
  }
  const hires = a1111.hires;
  // The second pass's sampler writes its own eta field the same way (into the same parameters).
  if (hires?.eta !== undefined && DDIM_ETA_SAMPLERS.includes(hires.scheduler)) {
    if (hires.eta !== 0) out.etaDdim = hires.eta;
  } else if (hires?.eta !== undefined && hires.eta !== 1) {
    out.eta = hires.eta;
  }
  if (hires) {
    out.denoisingStrength = hires.strength;
    // StableDiffusionProcessingTxt2Img.init sets these in this order, before calculate_target_resolution's.
    out.hires = [];
    if (hires.scheduler !== scheduler) out.hires.push(["Hires sampler", a1111SamplerName(hires.scheduler) ?? hires.scheduler]);
    if (hires.prompt !== undefined && hires.prompt !== texts.prompt) out.hires.push(["Hires prompt", hires.prompt]);
    if (hires.negativePrompt !== undefined && hires.negativePrompt !== texts.negativePrompt) out.hires.push(["Hires negative prompt", hires.negativePrompt]);
    // KDiffusionSampler.get_sigmas in the second pass: its schedule's label when it has one and it is not the first pass's `Schedule type`.
    const hiresLabel = scheduleTypeSet(hires.scheduler, hires.sigmaSchedule);
    if (hiresLabel !== undefined && hiresLabel !== scheduleTypeSet(scheduler, a1111.sigmaSchedule)) out.hires.push(["Hires schedule type", hiresLabel]);
    out.hires.push(hires.scale !== undefined ? ["Hires upscale", String(hires.scale)] : ["Hires resize", hires.resize!]);
    if (hires.stepsGiven) out.hires.push(["Hires steps", String(hires.steps)]);
    out.hires.push(["Hires upscaler", hires.upscaler]);
  }
  const noise = a1111.noise;
  if (noise) {
    if (noise.subseedStrength !== 0 && noise.subseeds) {
      out.variationSeed = noise.subseeds[image]!;
      out.variationSeedStrength = noise.subseedStrength;
    }
    if (noise.seedResizeFromWidth > 0 && noise.seedResizeFromHeight > 0) out.seedResizeFrom = `${noise.seedResizeFromWidth}x${noise.seedResizeFromHeight}`;
    // A1111 writes ENSD only for samplers whose noise it changes (uses_ensd, eta ≠ 0); its DDIM and PLMS have no uses_ensd.
    const usesEnsd = isKDiffusionSampler(scheduler) ? kdiffusionUsesEnsd(scheduler, a1111.eta ?? 1) : !isA1111Sampler(scheduler);
    if (noise.ensd !== 0 && usesEnsd) out.ensd = noise.ensd;
  }
  return out;
}
