/**
 * AUTOMATIC1111 web UI sampler names (the `Sampler:` / `Schedule type:` fields of its infotext)
 * for sd-trt's schedulers, both ways. Before v1.9 the Karras variant was its own sampler
 * ("DPM++ 2M Karras"); from v1.9 the sampler is "DPM++ 2M" and the schedule type says "Karras"
 * (and "Automatic" picks the sampler's default, Karras for DPM++ 2M). DDPM has no A1111 sampler.
 */
import type { SchedulerName } from "./registry.js";

const TO_A1111: Record<SchedulerName, string | null> = {
  pndm: "PLMS",
  ddim: "DDIM",
  euler: "Euler",
  euler_a: "Euler a",
  lms: "LMS",
  heun: "Heun",
  dpmpp_2m: "DPM++ 2M",
  dpmpp_2m_karras: "DPM++ 2M Karras",
  unipc: "UniPC",
  ddpm: null,
  // A1111's k-diffusion samplers: named by the server's mapping (lib/server/a1111/samplers.ts).
  k_euler: null,
  k_euler_a: null,
  k_lms: null,
  k_heun: null,
  k_dpm_2: null,
  k_dpm_2_a: null,
  k_dpmpp_2s_a: null,
  k_dpmpp_2m: null,
};

/** The A1111 (pre-1.9 style) sampler name for a canonical scheduler name; null for DDPM. */
export function a1111SamplerName(name: SchedulerName): string | null {
  return TO_A1111[name];
}

/**
 * The scheduler for an A1111 sampler name and, for v1.9+ infotexts, its schedule type.
 * Names compare case-insensitively. Returns null for samplers (or sampler + schedule type pairs)
 * sd-trt has no exact equivalent for, e.g. "DPM++ SDE" or "Euler" + "Karras".
 *
 * @param sampler e.g. "Euler a", "PLMS", "DPM++ 2M Karras", "DPM++ 2M".
 * @param scheduleType the `Schedule type:` field ("Automatic", "Uniform", "Karras", …), if any.
 */
export function schedulerFromA1111Name(sampler: string, scheduleType?: string): SchedulerName | null {
  const wanted = sampler.trim().toLowerCase();
  const base = (Object.keys(TO_A1111) as SchedulerName[]).find((name) => TO_A1111[name]?.toLowerCase() === wanted);
  if (base === undefined) return null;
  const schedule = scheduleType?.trim().toLowerCase();
  // Pre-1.9 infotexts have no schedule type: the sampler name says it all.
  if (schedule === undefined || schedule === "") return base;
  if (base === "dpmpp_2m" || base === "dpmpp_2m_karras") {
    if (schedule === "karras" || schedule === "automatic") return "dpmpp_2m_karras";
    if (schedule === "uniform" && base === "dpmpp_2m") return "dpmpp_2m";
    return null;
  }
  return schedule === "automatic" || schedule === "uniform" ? base : null;
}
