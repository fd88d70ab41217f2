/**
 * A1111 sampler and schedule-type names for the HTTP API, on top of the name mapping of
 * `lib/schedulers/a1111.ts` (`schedulerFromA1111Name`, `a1111SamplerName`).
 *
 * A1111 names a sampler (`sampler_name`, e.g. "DPM++ 2M") and, since v1.9, a schedule type
 * (`scheduler`, e.g. "Karras"); before v1.9 the schedule was part of the sampler name
 * ("DPM++ 2M Karras"). Our schedulers are diffusers' classes, so only the combinations one of
 * them computes are offered; anything else is refused with a 422 naming the field and listing
 * what is available, rather than silently run with a different sampler.
 *
 * Also accepted as `sampler_name`: A1111's aliases (`k_euler_a`, …) and our canonical names
 * (`euler_a`, `dpmpp_2m_karras`, `ddpm`, …).
 */
import { a1111SamplerName, SCHEDULER_NAMES, schedulerFromA1111Name, type SchedulerName } from "../../schedulers/index.js";
import { invalidField } from "../http/errors.js";

/** One entry of `GET /sdapi/v1/samplers` (A1111's SamplerItem). */
export interface A1111SamplerItem {
  name: string;
  aliases: string[];
  options: Record<string, string>;
}

/** A1111's sampler aliases (its `samplers_k_diffusion` table) for the samplers we have. */
const A1111_ALIASES: Partial<Record<SchedulerName, string[]>> = {
  euler_a: ["k_euler_a", "k_euler_ancestral"],
  euler: ["k_euler"],
  lms: ["k_lms"],
  heun: ["k_heun"],
  dpmpp_2m: ["k_dpmpp_2m"],
  dpmpp_2m_karras: ["k_dpmpp_2m_ka"],
  ddim: ["ddim"],
  pndm: ["plms"],
  unipc: ["unipc"],
};

/** A1111 ≥ 1.9 schedule types (`scheduler` field): every label A1111 knows, and the ones we honour. */
const SCHEDULE_TYPES = [
  { name: "automatic", label: "Automatic", supported: true },
  { name: "uniform", label: "Uniform", supported: true },
  { name: "karras", label: "Karras", supported: true },
  { name: "exponential", label: "Exponential", supported: false },
  { name: "polyexponential", label: "Polyexponential", supported: false },
  { name: "sgm_uniform", label: "SGM Uniform", supported: false },
  { name: "kl_optimal", label: "KL Optimal", supported: false },
  { name: "align_your_steps", label: "Align Your Steps", supported: false },
  { name: "simple", label: "Simple", supported: false },
  { name: "normal", label: "Normal", supported: false },
  { name: "ddim", label: "DDIM", supported: false },
  { name: "beta", label: "Beta", supported: false },
] as const;

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

/** `GET /sdapi/v1/samplers`: our schedulers under their A1111 names (DDPM keeps ours). */
export function a1111SamplerList(): A1111SamplerItem[] {
  return SCHEDULER_NAMES.filter((canonical) => !canonical.startsWith("k_")).map((canonical): A1111SamplerItem => ({
    name: a1111NameOf(canonical),
    aliases: [...(A1111_ALIASES[canonical] ?? []), canonical].filter((a, i, all) => all.indexOf(a) === i && a !== a1111NameOf(canonical)),
    options: canonical === "dpmpp_2m_karras" ? { scheduler: "karras" } : ({} as Record<string, string>),
  }));
}

/** `GET /sdapi/v1/schedulers` (A1111 ≥ 1.9 SchedulerItem): the schedule types we honour. */
export function a1111ScheduleTypeList(): Array<{ name: string; label: string; aliases: string[] | null; default_rho: number | null; need_inner_model: boolean | null }> {
  return SCHEDULE_TYPES.filter((s) => s.supported).map((s) => ({
    name: s.name,
    label: s.label,
    aliases: null,
    default_rho: s.name === "karras" ? 7 : null,
    need_inner_model: false,
  }));
}

/** The A1111 display name of one of our schedulers (DDPM, which A1111 lacks, keeps its own). */
export function a1111NameOf(canonical: string): string {
  return (SCHEDULER_NAMES as readonly string[]).includes(canonical) ? (a1111SamplerName(canonical as SchedulerName) ?? canonical.toUpperCase()) : canonical;
}

export function describeValue(value: unknown): string {
  if (value === null) return "null";
  if (Array.isArray(value)) return "an array";
  if (typeof value === "string") return `${JSON.stringify(value.length > 60 ? value.slice(0, 57) + "..." : value)} (string)`;
  if (typeof value === "object") return "an object";
  return `${String(value)} (${typeof value})`;
}

/** An A1111 name, alias or canonical name → the A1111 display name it stands for. */
function displayNameOf(name: string): string | undefined {
  const wanted = name.trim().toLowerCase();
  for (const canonical of SCHEDULER_NAMES) {
    const display = a1111NameOf(canonical);
    if (display.toLowerCase() === wanted || canonical === wanted || A1111_ALIASES[canonical]?.some((a) => a.toLowerCase() === wanted)) return display;
  }
  return undefined;
}

export interface ResolvedSampler {
  /** Our scheduler name, for `Pipeline.generate({scheduler})`. */
  scheduler: SchedulerName;
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
  const requested = fromName ? (samplerName as string) : typeof samplerIndex === "string" && samplerIndex !== "" ? samplerIndex : A1111_DEFAULT_SAMPLER_INDEX;

  let schedule: string | undefined;
  if (typeof scheduleType === "string" && scheduleType !== "") {
    // The docs placeholder is unknown to A1111 too, which then uses its "Automatic" schedule.
    const known = scheduleType === DOCS_STRING_PLACEHOLDER ? SCHEDULE_TYPES[0] : SCHEDULE_TYPES.find((s) => s.name === scheduleType.toLowerCase() || s.label.toLowerCase() === scheduleType.toLowerCase());
    if (!known || !known.supported) {
      const offered = SCHEDULE_TYPES.filter((s) => s.supported).map((s) => JSON.stringify(s.label)).join(", ");
      throw invalidField("scheduler", `scheduler must be one of ${offered} (or omitted), got ${JSON.stringify(scheduleType)}`);
    }
    schedule = known.label;
  }

  let display: string | undefined;
  if (requested === DOCS_STRING_PLACEHOLDER) {
    // A1111 runs its default sampler for an unknown name, with the "Automatic" schedule unless one is named.
    display = A1111_DEFAULT_SAMPLER;
    schedule ??= "Automatic";
  } else {
    display = displayNameOf(requested);
  }
  if (display === undefined) {
    const names = a1111SamplerList().map((s) => JSON.stringify(s.name)).join(", ");
    throw invalidField(field, `${field} must be one of ${names}, got ${JSON.stringify(requested)}`);
  }
  // DDPM has no A1111 name, so the A1111 mapping does not know it: only its own schedule applies.
  const scheduler = display === "DDPM" ? (schedule === undefined || schedule === "Automatic" || schedule === "Uniform" ? "ddpm" : null) : schedulerFromA1111Name(display, schedule);
  if (scheduler === null) {
    const withKarras = SCHEDULER_NAMES.filter((n) => n.endsWith("_karras")).map((n) => JSON.stringify(a1111SamplerName(n)?.replace(/ Karras$/, ""))).join(", ");
    throw invalidField("scheduler", `the ${JSON.stringify(schedule)} schedule is not available with ${JSON.stringify(display)}: Karras only with ${withKarras}; "Automatic" or "Uniform" with the others`);
  }
  return { scheduler, field };
}
