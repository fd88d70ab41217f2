/**
 * A1111's hires-fix fields (txt2img): `enable_hr`, `hr_scale`, `hr_resize_x/y`,
 * `hr_second_pass_steps`, `hr_upscaler` (latent upscalers only), the second pass's strength
 * `denoising_strength`, its sampler and schedule type (`hr_sampler_name`, `hr_scheduler`: empty,
 * "Use same sampler" / "Use same scheduler" keep the first pass's) and its prompts (`hr_prompt`,
 * `hr_negative_prompt`: empty keeps the first pass's). The pipeline checks the sizes and the samplers.
 */
import type { HiresOptions } from "../../pipeline/a1111-options.js";
import { HttpError, invalidField } from "../http/errors.js";
import { type Body, isAbsent, optionalBoolean, optionalNumber, optionalString } from "./fields.js";
import { describeValue, resolveA1111Sampler, type ResolvedSampler } from "./samplers.js";

/** What A1111 runs for `hr_upscaler` null: its latent_upscale_default_mode. */
const DEFAULT_UPSCALER = "Latent";

/** The hires options of a txt2img body; undefined when enable_hr is off. */
export function parseA1111Hires(body: Body): HiresOptions | undefined {
  const enabled = optionalBoolean(body, "enable_hr") === true;
  // The other fields are read only when enable_hr is true (A1111 ignores them otherwise).
  for (const field of ["hr_scale", "hr_second_pass_steps", "hr_resize_x", "hr_resize_y", "hr_cfg", "hr_distilled_cfg"]) optionalNumber(body, field);
  for (const field of ["hr_upscaler", "hr_checkpoint_name", "hr_sampler_name", "hr_scheduler", "hr_prompt", "hr_negative_prompt"]) optionalString(body, field);
  if (!enabled) return undefined;

  const given = (field: string, same?: string) => {
    const value = optionalString(body, field);
    return value === null || value === "" || value === same ? undefined : value;
  };
  const hrSampler = given("hr_sampler_name", "Use same sampler");
  const hrSchedule = given("hr_scheduler", "Use same scheduler");
  const hrPrompt = given("hr_prompt");
  const hrNegativePrompt = given("hr_negative_prompt");
  const checkpoint = optionalString(body, "hr_checkpoint_name");
  if (checkpoint !== null && checkpoint !== "" && checkpoint !== "Use same checkpoint") {
    throw invalidField("hr_checkpoint_name", `hr_checkpoint_name must be empty or "Use same checkpoint" (this server runs one model), got ${describeValue(checkpoint)}`);
  }
  const cfg = optionalNumber(body, "hr_cfg");
  if (cfg !== null && body.cfg_scale !== undefined && cfg !== body.cfg_scale && cfg !== 0) {
    throw invalidField("hr_cfg", `hr_cfg must equal cfg_scale (the second pass uses the first pass's guidance), got ${describeValue(cfg)}`);
  }

  const options: HiresOptions = {
    scale: optionalNumber(body, "hr_scale") ?? 2,
    steps: optionalNumber(body, "hr_second_pass_steps") ?? 0,
    upscaler: isAbsent(body.hr_upscaler) ? DEFAULT_UPSCALER : (optionalString(body, "hr_upscaler") as string),
    strength: optionalNumber(body, "denoising_strength") ?? 0.75,
  };
  if (hrSampler !== undefined) {
    const sampler = hrSamplerSelection(hrSampler, hrSchedule);
    options.scheduler = sampler.scheduler;
    if (sampler.sigmaSchedule !== undefined) options.sigmaSchedule = sampler.sigmaSchedule;
  } else if (hrSchedule !== undefined) {
    options.sigmaSchedule = hrSchedule; // checked as hires.sigmaSchedule (hr_scheduler)
  }
  if (hrPrompt !== undefined) options.prompt = hrPrompt;
  if (hrNegativePrompt !== undefined) options.negativePrompt = hrNegativePrompt;
  const rx = optionalNumber(body, "hr_resize_x") ?? 0;
  const ry = optionalNumber(body, "hr_resize_y") ?? 0;
  if (rx !== 0 || ry !== 0) {
    options.resizeWidth = rx;
    options.resizeHeight = ry;
  }
  return options;
}

/** hr_sampler_name (and hr_scheduler) read as sampler_name and scheduler are, errors naming the hr_ fields. */
function hrSamplerSelection(name: string, schedule: string | undefined): ResolvedSampler {
  try {
    return resolveA1111Sampler(name, undefined, schedule);
  } catch (error) {
    const field = error instanceof HttpError ? error.field : undefined;
    if (field === "sampler_name" || field === "scheduler") {
      const hrField = field === "sampler_name" ? "hr_sampler_name" : "hr_scheduler";
      throw invalidField(hrField, (error as HttpError).message.replace(new RegExp(`\\b${field}\\b`, "g"), hrField));
    }
    throw error;
  }
}
