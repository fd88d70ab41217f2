/**
 * img2img's start step, as diffusers' StableDiffusionImg2ImgPipeline.get_timesteps computes it
 * (src/diffusers/pipelines/stable_diffusion/pipeline_stable_diffusion_img2img.py at 58eb52c):
 * `init_timestep = min(int(steps * strength), steps); t_start = max(steps - init_timestep, 0)`,
 * then `timesteps[t_start * scheduler.order:]`.
 */
import { integerInRange, invalidOption, numberInRange } from "../validate.js";

/**
 * `t_start` for `steps` inference steps at `strength` (0…1]. Python's `int()` truncates the
 * float64 product: 20 × 0.6 = 12.000000000000002 → 12, so t_start = 8. Pass
 * `t_start * scheduler.order` to `compile(steps, { startIndex })`.
 * @throws InvalidOptionError when strength leaves no step to run (diffusers fails there too).
 */
export function strengthToStartStep(steps: number, strength: number): number {
  integerInRange("steps", steps, 1, Number.MAX_SAFE_INTEGER);
  numberInRange("strength", strength, 0, 1);
  const initTimestep = Math.min(Math.trunc(steps * strength), steps);
  if (initTimestep < 1) {
    throw invalidOption("strength", `at least 1/steps (${1 / steps}) so that int(steps · strength) ≥ 1 step runs`, strength);
  }
  return Math.max(steps - initTimestep, 0);
}
