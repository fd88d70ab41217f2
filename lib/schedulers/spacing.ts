/**
 * `timestep_spacing` ("linspace", "leading", "trailing"; Lin et al. 2023, "Common Diffusion Noise
 * Schedules and Sample Steps are Flawed", table 2) as each diffusers class family implements it in
 * `set_timesteps`. The families differ in dtype, in how many points they space and in rounding, so
 * each gets its own function rather than a flag soup.
 */
import { invalidOption } from "../validate.js";
import { f32 } from "./float32.js";
import { arange, linspace, roundHalfEven } from "./numpy.js";
import type { TimestepSpacing } from "./config.js";

function range(n: number): number[] {
  return Array.from({ length: n }, (_, i) => i);
}

/**
 * LMS / Euler / Euler ancestral / Heun: float32 timesteps, descending.
 * linspace: `np.linspace(0, T-1, N, dtype=float32)[::-1]` (fractional);
 * leading: `(arange(N) * (T // N)).round()[::-1] + steps_offset`;
 * trailing: `arange(T, 0, -T/N).round() - 1`.
 */
export function float32Timesteps(T: number, steps: number, spacing: TimestepSpacing, offset: number): number[] {
  switch (spacing) {
    case "linspace":
      return linspace(0, T - 1, steps).map(f32).reverse();
    case "leading": {
      const ratio = Math.floor(T / steps);
      return range(steps)
        .map((i) => f32(roundHalfEven(i * ratio) + offset))
        .reverse();
    }
    case "trailing":
      return arange(T, 0, -T / steps).map((t) => f32(roundHalfEven(t) - 1));
  }
}

/**
 * DDIM / DDPM: int64 timesteps, descending.
 * linspace: `np.linspace(0, T-1, N).round()[::-1]`; leading and trailing as above.
 */
export function integerTimesteps(T: number, steps: number, spacing: TimestepSpacing, offset: number): number[] {
  switch (spacing) {
    case "linspace":
      return linspace(0, T - 1, steps).map(roundHalfEven).reverse();
    case "leading": {
      const ratio = Math.floor(T / steps);
      return range(steps)
        .map((i) => i * ratio + offset)
        .reverse();
    }
    case "trailing":
      return arange(T, 0, -T / steps).map((t) => roundHalfEven(t) - 1);
  }
}

/**
 * DPM-Solver / UniPC: int64 timesteps, descending, from N+1 points with the last one dropped.
 * `lastTimestep` is DPM-Solver's `lambda_min_clipped` cut (T otherwise).
 * linspace: `np.linspace(0, last-1, N+1).round()[::-1][:-1]`;
 * leading: `(arange(N+1) * (last // (N+1))).round()[::-1][:-1] + steps_offset`;
 * trailing: `arange(last, 0, -T/N).round() - 1`.
 */
export function multistepTimesteps(
  T: number,
  lastTimestep: number,
  steps: number,
  spacing: TimestepSpacing,
  offset: number,
): number[] {
  switch (spacing) {
    case "linspace":
      return linspace(0, lastTimestep - 1, steps + 1).map(roundHalfEven).reverse().slice(0, steps);
    case "leading": {
      const ratio = Math.floor(lastTimestep / (steps + 1));
      return range(steps + 1)
        .map((i) => i * ratio)
        .reverse()
        .slice(0, steps)
        .map((t) => t + offset);
    }
    case "trailing":
      return arange(lastTimestep, 0, -T / steps).map((t) => roundHalfEven(t) - 1);
  }
}

/**
 * The checks diffusers does not make but whose failure would make it produce garbage: the
 * schedule must have one timestep per step (np.arange's length rule adds a spurious "-1" entry to
 * `trailing` for some N, e.g. 61) and, for table-indexed schedulers, stay inside the training
 * range (`leading` + steps_offset can reach T).
 */
export function checkSchedule(
  className: string,
  timesteps: readonly number[],
  steps: number,
  spacing: TimestepSpacing,
  trainRange?: { T: number },
): void {
  if (timesteps.length !== steps) {
    throw invalidOption(
      "steps",
      `a step count for which ${className}'s "${spacing}" spacing yields one timestep per step ` +
        `(diffusers' np.arange rounding gives ${timesteps.length} timesteps, ending at ${timesteps.at(-1)}, for ${steps} steps); try ${steps - 1} or ${steps + 1}`,
      steps,
    );
  }
  const outside = trainRange ? timesteps.filter((t) => t < 0 || t > trainRange.T - 1) : [];
  if (trainRange && outside.length > 0) {
    throw invalidOption(
      "steps",
      `a step count whose ${className} timesteps stay within 0…${trainRange.T - 1} (with "${spacing}" spacing and this steps_offset, ${steps} steps give timestep ${outside.join(", ")})`,
      steps,
    );
  }
}

/** Multistep solvers divide by sigma differences: the sigmas they step through must be distinct. */
export function checkStrictlyDecreasing(className: string, sigmas: readonly number[], steps: number, why: string): void {
  for (let i = 1; i < sigmas.length; i++) {
    if (!(sigmas[i]! < sigmas[i - 1]!)) {
      throw invalidOption(
        "steps",
        `a step count that gives ${className} distinct sigmas (${why}); with ${steps} steps sigmas ${i - 1} and ${i} are both ${sigmas[i]}`,
        steps,
      );
    }
  }
}
