/**
 * The generate() options that exist to reproduce A1111: the schedule type of its k-diffusion
 * samplers, and its noise (variation seeds, "resize seed from", ENSD). Validated here, kept apart
 * from options.ts; the resolved values travel on the request as `a1111`.
 */
import { InvalidOptionError } from "../errors.js";
import { integerInRange, invalidOption, numberInRange } from "../validate.js";
import { validateSeed } from "../rng/index.js";
import {
  isKDiffusionSampler,
  kdiffusionUsesEnsd,
  resolveSigmaSchedule,
  sigmaScheduleLabel,
  type SchedulerName,
  type SigmaSchedule,
} from "../schedulers/index.js";

export interface A1111GenerateOptions {
  /**
   * A1111's schedule type for its k-diffusion samplers (`k_*` schedulers): `automatic` (the
   * sampler's own default, as A1111's "Automatic"), `uniform`, `karras`, `exponential`,
   * `polyexponential`, `sgm_uniform`, `kl_optimal`, `align_your_steps`, `simple`, `normal`,
   * `ddim`, or their A1111 labels ("Karras", "SGM Uniform", …). Defaults to `automatic`.
   */
  sigmaSchedule?: string;
  /** A1111's variation seeds, one per image (its all_subseeds: subseed, subseed + 1, …). Needs `seeds`. */
  subseeds?: (number | bigint)[];
  /** How much of the variation seed's noise to blend in (A1111's slerp), 0 … 1. Defaults to 0. */
  subseedStrength?: number;
  /** A1111's "Resize seed from": the size (pixels) the seeds' noise is made at, centred into this image's. Needs `seeds`. */
  seedResizeFrom?: { width: number; height: number };
  /** A1111's eta_noise_seed_delta (ENSD): after the initial noise each image's generator is re-seeded with seed + ENSD. Needs `seeds`. */
  ensd?: number;
}

export const A1111_OPTION_NAMES = ["sigmaSchedule", "subseeds", "subseedStrength", "seedResizeFrom", "ensd"] as const;

/** Resolved A1111 options of a request. */
export interface A1111Request {
  /** Set for k-diffusion samplers only. */
  sigmaSchedule?: SigmaSchedule;
  /** A1111's ImageRNG settings; absent when none of its options is used. */
  noise?: {
    subseeds?: bigint[];
    subseedStrength: number;
    seedResizeFromWidth: number;
    seedResizeFromHeight: number;
    ensd: number;
  };
}

export function resolveA1111Options(
  options: A1111GenerateOptions,
  scheduler: SchedulerName,
  batch: number,
  perImageGenerators: boolean,
  img2img: boolean,
  fractionalTimesteps: boolean,
): A1111Request {
  const out: A1111Request = {};
  if (isKDiffusionSampler(scheduler) && !fractionalTimesteps) {
    throw new InvalidOptionError(
      "scheduler",
      `${scheduler} feeds the UNet fractional timesteps (A1111's sigma_to_t), but this model's UNet takes an integer timestep, which would truncate them: re-export the UNet with a float timestep, or use a diffusers scheduler`,
    );
  }
  if (img2img && isKDiffusionSampler(scheduler)) {
    // The program-level rule exists (a1111Img2imgStartIndex); what generate() lacks is A1111's
    // init latent: A1111 samples the VAE posterior from torch's global generator, which it does
    // not seed per request, so no draw order can match it.
    throw new InvalidOptionError(
      "scheduler",
      `img2img with A1111's k-diffusion samplers (${scheduler}) is not supported yet: A1111 samples the VAE posterior from torch's unseeded global generator, so its init latents cannot be reproduced; use a diffusers scheduler (euler_a, dpmpp_2m_karras, …) for img2img`,
    );
  }
  if (options.sigmaSchedule !== undefined) {
    if (!isKDiffusionSampler(scheduler)) {
      throw new InvalidOptionError("sigmaSchedule", `sigmaSchedule applies to A1111's k-diffusion samplers (k_euler, k_euler_a, k_dpmpp_2m, …); ${scheduler} has its own schedule`);
    }
    out.sigmaSchedule = resolveSigmaSchedule(options.sigmaSchedule);
  } else if (isKDiffusionSampler(scheduler)) {
    out.sigmaSchedule = "automatic";
  }

  const used = (["subseeds", "subseedStrength", "seedResizeFrom", "ensd"] as const).filter((k) => options[k] !== undefined);
  if (used.length === 0) return out;
  const first = used[0]!;
  if (!perImageGenerators) {
    throw new InvalidOptionError(first, `${first} follows A1111's noise, which has one generator per image: give seeds (A1111's seed, seed + 1, …) instead of seed`);
  }
  if (img2img) throw new InvalidOptionError(first, `${first} applies to txt2img only (A1111's img2img noise is not implemented)`);

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

/**
 * A1111's infotext fields for these options, in the order its create_infotext writes them:
 * `Schedule type` (after `Sampler`), `Variation seed`, `Variation seed strength`,
 * `Seed resize from` (after the model fields), `ENSD` (after `Denoising strength`).
 */
export interface A1111InfotextFields {
  scheduleType?: string;
  variationSeed?: bigint;
  variationSeedStrength?: number;
  seedResizeFrom?: string;
  ensd?: number;
}

export function a1111InfotextFields(scheduler: SchedulerName, a1111: A1111Request, image: number): A1111InfotextFields {
  const out: A1111InfotextFields = {};
  if (a1111.sigmaSchedule !== undefined) out.scheduleType = sigmaScheduleLabel(scheduler, a1111.sigmaSchedule);
  const noise = a1111.noise;
  if (noise) {
    if (noise.subseedStrength !== 0 && noise.subseeds) {
      out.variationSeed = noise.subseeds[image]!;
      out.variationSeedStrength = noise.subseedStrength;
    }
    if (noise.seedResizeFromWidth > 0 && noise.seedResizeFromHeight > 0) out.seedResizeFrom = `${noise.seedResizeFromWidth}x${noise.seedResizeFromHeight}`;
    // A1111 writes ENSD only for samplers whose noise it changes (uses_ensd, eta ≠ 0).
    if (noise.ensd !== 0 && (!isKDiffusionSampler(scheduler) || kdiffusionUsesEnsd(scheduler))) out.ensd = noise.ensd;
  }
  return out;
}
