/**
 * A1111 sampler and schedule-type names for the HTTP API, on top of the name mapping of
 * `lib/schedulers/a1111.ts` (`a1111SamplerSelection`, `a1111SamplerName`).
 *
 * A1111 names a sampler (`sampler_name`, e.g. "DPM++ 2M") and, since v1.9, a schedule type
 * (`scheduler`, e.g. "Karras"); before v1.9 the schedule was part of the sampler name
 * ("DPM++ 2M Karras"). Its k-diffusion samplers, DDIM, DDIM CFG++, PLMS and UniPC run as A1111 runs them (the
 * `k_*` schedulers, `a1111_ddim`, `a1111_ddim_cfgpp`, `a1111_plms`, `a1111_unipc`). Names sd-trt does not run are refused with a 422
 * naming the field, saying why when A1111 has the sampler.
 *
 * Also accepted as `sampler_name`: A1111's aliases (`k_euler_a`, …) and our canonical names
 * (`euler_a`, `dpmpp_2m_karras`, `ddpm`, … — diffusers' schedulers).
 */
import {
  a1111SamplerName,
  a1111SamplerSelection,
  findSigmaSchedule,
  isA1111Sampler,
  isKDiffusionSampler,
  refusedA1111SamplerReason,
  REFUSED_SIGMA_SCHEDULES,
  SCHEDULER_NAMES,
  SIGMA_SCHEDULE_LABELS,
  SIGMA_SCHEDULES,
  type SchedulerName,
  type SigmaSchedule,
} from "../../schedulers/index.js";
import { invalidField } from "../http/errors.js";

/** One entry of `GET /sdapi/v1/samplers` (A1111's SamplerItem). */
export interface A1111SamplerItem {
  name: string;
  aliases: string[];
  options: Record<string, string>;
}

/** A1111's sampler aliases and options (its samplers table, v1.10.1) for the samplers we run as A1111 does. */
const A1111_SAMPLERS: Array<{ scheduler: SchedulerName; aliases: string[]; options: Record<string, string> }> = [
  { scheduler: "k_dpmpp_2m", aliases: ["k_dpmpp_2m"], options: { scheduler: "karras" } },
  { scheduler: "k_dpmpp_sde", aliases: ["k_dpmpp_sde"], options: { scheduler: "karras", second_order: "True", brownian_noise: "True" } },
  { scheduler: "k_dpmpp_2m_sde", aliases: ["k_dpmpp_2m_sde"], options: { scheduler: "exponential", brownian_noise: "True" } },
  { scheduler: "k_dpmpp_2m_sde_heun", aliases: ["k_dpmpp_2m_sde_heun"], options: { scheduler: "exponential", brownian_noise: "True", solver_type: "heun" } },
  { scheduler: "k_dpmpp_2s_a", aliases: ["k_dpmpp_2s_a"], options: { scheduler: "karras", uses_ensd: "True", second_order: "True" } },
  { scheduler: "k_dpmpp_3m_sde", aliases: ["k_dpmpp_3m_sde"], options: { scheduler: "exponential", discard_next_to_last_sigma: "True", brownian_noise: "True" } },
  { scheduler: "k_euler_a", aliases: ["k_euler_a", "k_euler_ancestral"], options: { uses_ensd: "True" } },
  { scheduler: "k_euler", aliases: ["k_euler"], options: {} },
  { scheduler: "k_lms", aliases: ["k_lms"], options: {} },
  { scheduler: "k_heun", aliases: ["k_heun"], options: { second_order: "True" } },
  { scheduler: "k_dpm_2", aliases: ["k_dpm_2"], options: { scheduler: "karras", discard_next_to_last_sigma: "True", second_order: "True" } },
  { scheduler: "k_dpm_2_a", aliases: ["k_dpm_2_a"], options: { scheduler: "karras", discard_next_to_last_sigma: "True", uses_ensd: "True", second_order: "True" } },
  { scheduler: "k_dpm_fast", aliases: ["k_dpm_fast"], options: { uses_ensd: "True" } },
  { scheduler: "k_restart", aliases: ["restart"], options: { scheduler: "karras", second_order: "True" } },
  { scheduler: "k_lcm", aliases: ["k_lcm"], options: {} },
  { scheduler: "a1111_ddim", aliases: ["ddim"], options: {} },
  { scheduler: "a1111_ddim_cfgpp", aliases: ["ddim_cfgpp"], options: {} },
  { scheduler: "a1111_plms", aliases: ["plms"], options: {} },
  { scheduler: "a1111_unipc", aliases: ["unipc"], options: {} },
];

/**
 * The value OpenAPI/Swagger puts in every string field of the example body on A1111's `/docs`
 * page (which clients copy). A1111 treats it like any unknown name and falls back to its default
 * (its default sampler; the "Automatic" schedule). We accept exactly this placeholder that way,
 * and refuse other unknown names.
 */
export const DOCS_STRING_PLACEHOLDER = "string";

/** A1111's default sampler (`samplers[0]`), what it runs for an unknown `sampler_name`. */
const A1111_DEFAULT_SAMPLER = "DPM++ 2M";

/** What A1111's API runs when no `sampler_name` is sent: its `sampler_index` default. */
export const A1111_DEFAULT_SAMPLER_INDEX = "Euler";

/**
 * `GET /sdapi/v1/samplers`: A1111's samplers we run, under A1111's names, then diffusers'
 * schedulers under our names (what `sampler_name` accepts for them).
 */
export function a1111SamplerList(): A1111SamplerItem[] {
  const named = A1111_SAMPLERS.map(({ scheduler, aliases, options }) => ({ name: a1111NameOf(scheduler), aliases, options }));
  const listed = new Set(A1111_SAMPLERS.map((s) => s.scheduler));
  // Not "ddim": as a sampler_name it is A1111's alias of its own DDIM.
  const aliases = new Set(A1111_SAMPLERS.flatMap((s) => s.aliases));
  const diffusers = SCHEDULER_NAMES.filter((n) => !listed.has(n) && !isA1111Sampler(n) && !aliases.has(n)).map((n) => ({ name: n, aliases: [], options: {} }));
  return [...named, ...diffusers];
}

/** `GET /sdapi/v1/schedulers` (A1111 ≥ 1.9 SchedulerItem): the schedule types we honour. */
export function a1111ScheduleTypeList(): Array<{ name: string; label: string; aliases: string[] | null; default_rho: number; need_inner_model: boolean }> {
  const rho: Partial<Record<SigmaSchedule, number>> = { karras: 7, polyexponential: 1 };
  const innerModel = new Set<SigmaSchedule>(["uniform", "sgm_uniform", "simple", "normal", "ddim"]);
  return SIGMA_SCHEDULES.map((s) => ({
    name: s,
    label: SIGMA_SCHEDULE_LABELS[s],
    aliases: s === "sgm_uniform" ? ["SGMUniform"] : null,
    default_rho: rho[s] ?? -1,
    need_inner_model: innerModel.has(s),
  }));
}

/** The name `info.sampler_name` reports: A1111's for its samplers, ours for diffusers' others. */
export function a1111NameOf(canonical: string): string {
  if (isKDiffusionSampler(canonical) || A1111_SAMPLERS.some((s) => s.scheduler === canonical)) return a1111SamplerName(canonical as SchedulerName) ?? canonical;
  return canonical;
}

export function describeValue(value: unknown): string {
  if (value === null) return "null";
  if (Array.isArray(value)) return "an array";
  if (typeof value === "string") return `${JSON.stringify(value.length > 60 ? value.slice(0, 57) + "..." : value)} (string)`;
  if (typeof value === "object") return "an object";
  return `${String(value)} (${typeof value})`;
}

export interface ResolvedSampler {
  /** Our scheduler name, for `Pipeline.generate({scheduler})`. */
  scheduler: SchedulerName;
  /** The schedule type of a k-diffusion sampler. */
  sigmaSchedule?: SigmaSchedule;
  /** Which request field named the sampler. */
  field: "sampler_name" | "sampler_index";
}

/**
 * Resolves A1111's `sampler_name` / `sampler_index` / `scheduler` the way its API does
 * (`sampler_name or sampler_index`, then the schedule type), refusing names and combinations we
 * cannot run with a 422 naming the field.
 */
export function resolveA1111Sampler(samplerName: unknown, samplerIndex: unknown, scheduleType: unknown): ResolvedSampler {
  for (const [field, value] of [["sampler_name", samplerName], ["sampler_index", samplerIndex], ["scheduler", scheduleType]] as const) {
    if (value !== undefined && value !== null && typeof value !== "string") {
      throw invalidField(field, `${field} must be a string, got ${describeValue(value)}`);
    }
  }
  const fromName = typeof samplerName === "string" && samplerName !== "";
  const field = fromName ? "sampler_name" : "sampler_index";
  let requested = fromName ? (samplerName as string) : typeof samplerIndex === "string" && samplerIndex !== "" ? samplerIndex : A1111_DEFAULT_SAMPLER_INDEX;
  // The docs placeholder is unknown to A1111 too: its default sampler, its "Automatic" schedule.
  if (requested === DOCS_STRING_PLACEHOLDER) requested = A1111_DEFAULT_SAMPLER;
  const schedule = typeof scheduleType === "string" && scheduleType !== "" && scheduleType !== DOCS_STRING_PLACEHOLDER ? scheduleType : undefined;

  if (schedule !== undefined && findSigmaSchedule(schedule) === undefined) {
    const offered = SIGMA_SCHEDULES.map((s) => JSON.stringify(SIGMA_SCHEDULE_LABELS[s])).join(", ");
    const why = REFUSED_SIGMA_SCHEDULES[schedule.toLowerCase()];
    throw invalidField("scheduler", `scheduler must be one of ${offered} (or omitted), got ${JSON.stringify(schedule)}${why ? `: ${why}` : ""}`);
  }

  const wanted = requested.trim().toLowerCase();
  // A1111's aliases, and our canonical names exactly ("euler" is diffusers' Euler, "Euler" A1111's).
  const alias = A1111_SAMPLERS.find((s) => s.aliases.some((a) => a.toLowerCase() === wanted));
  const canonical = SCHEDULER_NAMES.find((n) => n === requested.trim());
  if (alias === undefined && canonical !== undefined && !isKDiffusionSampler(canonical)) {
    if (schedule !== undefined && !["automatic", "uniform"].includes(schedule.toLowerCase())) {
      throw invalidField("scheduler", `the ${JSON.stringify(schedule)} schedule is not available with ${canonical} (a diffusers scheduler with its own schedule): use "Automatic" or an A1111 sampler name`);
    }
    return { scheduler: canonical, field };
  }
  const name = alias ? a1111NameOf(alias.scheduler) : canonical ? a1111NameOf(canonical) : requested;
  const selection = a1111SamplerSelection(name, schedule);
  if (selection === null) {
    const refused = refusedA1111SamplerReason(name);
    if (refused !== undefined) throw invalidField(field, `${field} ${JSON.stringify(requested)} is not supported: ${refused}`);
    const sampler = a1111SamplerSelection(name);
    if (sampler !== null) {
      throw invalidField("scheduler", `the ${JSON.stringify(schedule)} schedule is not available with ${JSON.stringify(a1111NameOf(sampler.scheduler))} (A1111's DDIM, PLMS and UniPC take no schedule type): use "Automatic"`);
    }
    const names = a1111SamplerList().map((s) => JSON.stringify(s.name)).join(", ");
    throw invalidField(field, `${field} must be one of ${names}, got ${JSON.stringify(requested)}`);
  }
  return selection.sigmaSchedule === undefined ? { scheduler: selection.scheduler, field } : { scheduler: selection.scheduler, sigmaSchedule: selection.sigmaSchedule, field };
}
