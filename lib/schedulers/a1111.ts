/**
 * AUTOMATIC1111 web UI sampler names (the `Sampler:` / `Schedule type:` fields of its infotext)
 * for sd-trt's schedulers, both ways.
 *
 * An A1111 name means what A1111 runs: "Euler a", "DPM++ 2M", … are its k-diffusion samplers
 * (the `k_*` schedulers, kdiffusion.ts) with a schedule type; "DDIM" and "PLMS" its own timestep
 * samplers (`a1111_ddim`, `a1111_plms`, a1111-timesteps.ts) and "UniPC" its own UniPC port
 * (`a1111_unipc`, a1111-unipc.ts); diffusers' UniPC (`unipc`) is written as "UniPC" in infotexts.
 * Before v1.9 the schedule was part of the name ("DPM++ 2M Karras"); like A1111's
 * get_sampler_and_scheduler, a schedule label at the end of the name is split off and wins.
 */
import { a1111TimestepLabel, isA1111TimestepSampler } from "./a1111-timesteps.js";
import { A1111_DDIM_CFGPP, A1111_DDIM_CFGPP_LABEL } from "./a1111-ddim-cfgpp.js";
import { isA1111UniPc } from "./a1111-unipc.js";
import { kdiffusionLabel, isKDiffusionSampler, KDIFFUSION_SAMPLER_NAMES, type KDiffusionSamplerName } from "./kdiffusion.js";
import { findSigmaSchedule, SIGMA_SCHEDULE_LABELS, SIGMA_SCHEDULES, type SigmaSchedule } from "./kdiffusion-schedule.js";
import type { SchedulerName } from "./registry.js";

/** The A1111 names of diffusers' schedulers, for their infotext (A1111 would run its own sampler). */
const DIFFUSERS_TO_A1111: Partial<Record<SchedulerName, string>> = {
  pndm: "PLMS",
  ddim: "DDIM",
  euler: "Euler",
  euler_a: "Euler a",
  lms: "LMS",
  heun: "Heun",
  dpmpp_2m: "DPM++ 2M",
  dpmpp_2m_karras: "DPM++ 2M Karras",
  unipc: "UniPC",
};

/** A1111's timestep samplers, which take no schedule type: its own DDIM, DDIM CFG++, PLMS and UniPC. */
const A1111_TIMESTEP_SAMPLERS: Record<string, SchedulerName> = { ddim: "a1111_ddim", [A1111_DDIM_CFGPP_LABEL.toLowerCase()]: A1111_DDIM_CFGPP, plms: "a1111_plms", unipc: "a1111_unipc" };

/**
 * Whether the scheduler is one of A1111's own samplers (k-diffusion's or its DDIM / PLMS / UniPC):
 * these follow A1111's img2img rule and draw from its ImageRNG in its order.
 */
export function isA1111Sampler(name: string): boolean {
  return isKDiffusionSampler(name) || isA1111TimestepSampler(name) || name === A1111_DDIM_CFGPP || isA1111UniPc(name);
}

/**
 * The A1111 sampler name for a scheduler: k-diffusion samplers by their A1111 label, diffusers'
 * schedulers by the A1111 sampler closest to them; null for DDPM (A1111 has none).
 */
export function a1111SamplerName(name: SchedulerName): string | null {
  if (isKDiffusionSampler(name)) return kdiffusionLabel(name);
  if (isA1111TimestepSampler(name)) return a1111TimestepLabel(name);
  if (name === A1111_DDIM_CFGPP) return A1111_DDIM_CFGPP_LABEL;
  if (isA1111UniPc(name)) return "UniPC";
  return DIFFUSERS_TO_A1111[name] ?? null;
}

/** What an A1111 sampler name (and schedule type) selects. */
export interface A1111SamplerSelection {
  scheduler: SchedulerName;
  /** For k-diffusion samplers: the schedule type ("automatic" when none was named). */
  sigmaSchedule?: SigmaSchedule;
}


/**
 * The scheduler for an A1111 sampler name and, for v1.9+ requests and infotexts, its schedule
 * type. Names compare case-insensitively. Returns null for names sd-trt does not run (e.g.
 * "DPM adaptive") and for an unknown schedule type, or one a timestep sampler (DDIM, PLMS, UniPC)
 * cannot take.
 *
 * @param sampler e.g. "Euler a", "PLMS", "DPM++ 2M Karras", "DPM++ 2M".
 * @param scheduleType the `Schedule type:` field ("Automatic", "Uniform", "Karras", …), if any.
 */
export function a1111SamplerSelection(sampler: string, scheduleType?: string): A1111SamplerSelection | null {
  let name = sampler.trim().toLowerCase();
  let schedule: SigmaSchedule | undefined;
  if (scheduleType !== undefined && scheduleType.trim() !== "") {
    schedule = findSigmaSchedule(scheduleType);
    if (schedule === undefined) return null;
  }
  // "DPM++ 2M Karras": a schedule label at the end of the name is split off and wins.
  for (const s of SIGMA_SCHEDULES) {
    const suffix = ` ${SIGMA_SCHEDULE_LABELS[s].toLowerCase()}`;
    if (name.endsWith(suffix)) {
      name = name.slice(0, -suffix.length);
      schedule = s;
      break;
    }
  }
  const k = KDIFFUSION_SAMPLER_NAMES.find((n: KDiffusionSamplerName) => kdiffusionLabel(n).toLowerCase() === name);
  if (k !== undefined) return { scheduler: k, sigmaSchedule: schedule ?? "automatic" };
  const timestep = A1111_TIMESTEP_SAMPLERS[name];
  if (timestep === undefined) return null;
  return schedule === undefined || schedule === "automatic" || schedule === "uniform" ? { scheduler: timestep } : null;
}
