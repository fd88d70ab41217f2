/**
 * The step noise of one generation (the draws a sampler program consumes, one [batch, 4, h, w]
 * array per evaluation with `drawsNoise`), handed to a backend undrawn and drawn in order when
 * asked. Drawing is ~0.1 µs a value on the main thread (~50 ms at 256² × 4 images for Euler a):
 * the CPU backend draws while its worker thread runs the text encoder and the UNet, so the draws
 * leave the critical path; the TensorRT backend draws them all before its one upload.
 *
 * The order is the generators' order, so the numbers are the ones an up-front draw would give.
 * A1111's SDE samplers draw from Brownian trees instead (`brownianStepNoise`), also lazily: the
 * trees are built at the first draw and walked one query per draw.
 */
import { InternalError } from "../errors.js";
import { BrownianNoiseSampler } from "../rng/brownian-tree.js";
import type { RngSource } from "../rng/index.js";
import type { BrownianNoiseSpec, SamplerProgram } from "./program.js";

export interface StepNoise {
  /** How many draws the program consumes. */
  readonly count: number;
  /** Whether each draw is a new array the consumer may keep or move to another thread. */
  readonly fresh: boolean;
  /** The next draw. Taken once, in order. @throws InternalError past `count`. */
  next(): Float32Array;
}

/** How many noise draws a program consumes (its evaluations with `drawsNoise`). */
export function noiseDrawCount(program: SamplerProgram): number {
  return program.evals.reduce((n, e) => n + (e.drawsNoise ? 1 : 0), 0);
}

/** `count` draws, each made by `draw` when it is asked for. */
export function lazyStepNoise(count: number, draw: () => Float32Array, fresh = true): StepNoise {
  let drawn = 0;
  return {
    count,
    fresh,
    next() {
      if (drawn >= count) throw new InternalError(`step noise: all ${count} draws were taken`);
      drawn++;
      return draw();
    },
  };
}

/**
 * The noise of a job: draws already made (the caller's arrays, left untouched and reusable), or a
 * StepNoise to take once.
 */
export function stepNoiseOf(noise: readonly Float32Array[] | StepNoise): StepNoise {
  if (!Array.isArray(noise)) return noise as StepNoise;
  let k = 0;
  return lazyStepNoise(noise.length, () => noise[k++]!, false);
}

/** Several requests' step noise as one batch's: draw k is each part's draw k, rows in part order. */
export function joinStepNoise(parts: readonly StepNoise[]): StepNoise {
  const count = parts[0]?.count ?? 0;
  if (parts.some((p) => p.count !== count)) throw new InternalError("step noise: the requests of a batch must draw equally often");
  if (parts.length === 1) return parts[0]!;
  return lazyStepNoise(count, () => {
    const draws = parts.map((p) => p.next());
    const out = new Float32Array(draws.reduce((n, d) => n + d.length, 0));
    let offset = 0;
    for (const d of draws) {
      out.set(d, offset);
      offset += d.length;
    }
    return out;
  });
}

/** Every draw, in order (for a backend that uploads them at once). */
export function drawAllStepNoise(noise: StepNoise): Float32Array[] {
  return Array.from({ length: noise.count }, () => noise.next());
}

/**
 * The step noise of a program with Brownian draws (A1111's SDE samplers): draw k is the noise
 * sampler's value at `spec.draws[k]`, one tree per image seed (A1111's p.all_seeds of the batch).
 * @param shape one image's latent shape [4, h, w].
 */
export function brownianStepNoise(spec: BrownianNoiseSpec, rng: RngSource, seeds: readonly bigint[], shape: readonly number[]): StepNoise {
  let sampler: BrownianNoiseSampler | undefined;
  let k = 0;
  return lazyStepNoise(spec.draws.length, () => {
    sampler ??= new BrownianNoiseSampler(rng, seeds, shape, spec.sigmaMin, spec.sigmaMax);
    const [sigma, next] = spec.draws[k++]!;
    return sampler.noise(sigma, next);
  });
}
