/**
 * A1111's hires-fix fields (txt2img): `enable_hr`, `hr_scale`, `hr_resize_x/y`,
 * `hr_second_pass_steps`, `hr_upscaler` (latent upscalers only), and the second pass's strength
 * `denoising_strength`. The pipeline checks the sizes and the sampler; the second pass must use
 * the first pass's sampler, schedule and prompts (`hr_sampler_name`, `hr_scheduler`,
 * `hr_prompt`, `hr_negative_prompt` empty or equal), as sd-trt runs it.
 */
import type { HiresOptions } from "../../pipeline/a1111-options.js";
import { invalidField } from "../http/errors.js";
import { type Body, isAbsent, optionalBoolean, optionalNumber, optionalString } from "./fields.js";
import { describeValue } from "./samplers.js";

/** What A1111 runs for `hr_upscaler` null: its latent_upscale_default_mode. */
const DEFAULT_UPSCALER = "Latent";

/** The hires options of a txt2img body; undefined when enable_hr is off. */
export function parseA1111Hires(body: Body, first: { samplerName: unknown; scheduler: unknown; prompt: string; negativePrompt: string }): HiresOptions | undefined {
  const enabled = optionalBoolean(body, "enable_hr") === true;
  // The other fields are read only when enable_hr is true (A1111 ignores them otherwise).
  for (const field of ["hr_scale", "hr_second_pass_steps", "hr_resize_x", "hr_resize_y", "hr_cfg", "hr_distilled_cfg"]) optionalNumber(body, field);
  for (const field of ["hr_upscaler", "hr_checkpoint_name", "hr_sampler_name", "hr_scheduler", "hr_prompt", "hr_negative_prompt"]) optionalString(body, field);
  if (!enabled) return undefined;

  const same = (field: string, value: string | null, expected: unknown, what: string) => {
    if (value !== null && value !== "" && value !== expected && !(field === "hr_sampler_name" && value === "Use same sampler") && !(field === "hr_scheduler" && value === "Use same scheduler")) {
      throw invalidField(field, `${field} must be empty or ${what} (the second pass runs with the first pass's), got ${describeValue(value)}`);
    }
  };
  same("hr_sampler_name", optionalString(body, "hr_sampler_name"), first.samplerName, "the sampler_name");
  same("hr_scheduler", optionalString(body, "hr_scheduler"), first.scheduler, "the scheduler");
  same("hr_prompt", optionalString(body, "hr_prompt"), first.prompt, "the prompt");
  same("hr_negative_prompt", optionalString(body, "hr_negative_prompt"), first.negativePrompt, "the negative_prompt");
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
  const rx = optionalNumber(body, "hr_resize_x") ?? 0;
  const ry = optionalNumber(body, "hr_resize_y") ?? 0;
  if (rx !== 0 || ry !== 0) {
    options.resizeWidth = rx;
    options.resizeHeight = ry;
  }
  return options;
}
