/**
 * The random draws of one generation, in diffusers' order, from one generator for the batch or
 * one generator per image (`randn_tensor` with a generator list: row i from generator i).
 *
 * txt2img: (1) the initial latents [B,4,h,w]; (2…) one [B,4,h,w] draw per scheduler step that
 * draws (Euler a every step, the last included; DDPM while t > 0).
 * img2img: (1) the VAE posterior eps — [1,4,h,w] for the single encoded image with one
 * generator, one [1,4,h,w] per image with a list — drawn even when the encoder returns a sample
 * and it is discarded, so the stream stays aligned; (2) the add_noise draw [B,4,h,w]; (3…) step
 * noise as in txt2img.
 */
import { createGenerator, randn, randnRows, type Generator, type RngSource } from "../rng/index.js";

export class NoiseSource {
  readonly #generators: Generator[];
  readonly #perImage: boolean;

  /**
   * @param seeds one seed (one generator for every draw) or one per image.
   * @param perImage whether `seeds` holds one generator per image row.
   */
  constructor(rng: RngSource, seeds: readonly bigint[], perImage: boolean) {
    this.#generators = seeds.map((seed) => createGenerator(rng, seed));
    this.#perImage = perImage;
  }

  /** One `randn_tensor([batch, ...rest])` draw. */
  draw(batch: number, rest: readonly number[]): Float32Array {
    const shape = [batch, ...rest];
    return this.#perImage ? randnRows(shape, this.#generators) : randn(shape, this.#generators[0]!);
  }

  /**
   * The VAE posterior draw of img2img, one [1, ...rest] per encoded image: with one generator the
   * single init image is encoded once (one draw, used for every image); with a list, image i is
   * encoded with generator i. Returns one array per image row.
   */
  drawPosterior(batch: number, rest: readonly number[]): Float32Array[] {
    const shape = [1, ...rest];
    if (!this.#perImage) {
      const eps = randn(shape, this.#generators[0]!);
      return new Array<Float32Array>(batch).fill(eps);
    }
    return this.#generators.map((g) => randn(shape, g));
  }
}

/** `latents · scale` in float32 (diffusers' `randn · init_noise_sigma`, `scaling_factor · latents`). */
export function scaleFloat32(values: Float32Array, scale: number): Float32Array {
  const s = Math.fround(scale);
  const out = new Float32Array(values.length);
  for (let i = 0; i < values.length; i++) out[i] = values[i]! * s;
  return out;
}

/** `latents / divisor` in float32 (diffusers' `latents / scaling_factor` before the VAE decoder). */
export function divideFloat32(values: Float32Array, divisor: number): Float32Array {
  const d = Math.fround(divisor);
  const out = new Float32Array(values.length);
  for (let i = 0; i < values.length; i++) out[i] = values[i]! / d;
  return out;
}

/** `scheduler.add_noise`: signal · x + noise · n, each product and the sum rounded to float32. */
export function addNoise(original: Float32Array, noise: Float32Array, signal: number, noiseScale: number): Float32Array {
  const a = Math.fround(signal);
  const b = Math.fround(noiseScale);
  const out = new Float32Array(original.length);
  for (let i = 0; i < original.length; i++) out[i] = Math.fround(a * original[i]!) + Math.fround(b * noise[i]!);
  return out;
}

/** The posterior sample `mean + std · eps` in float32; just the mean when the graph gives no std. */
export function samplePosterior(mean: Float32Array, std: Float32Array | undefined, eps: Float32Array): Float32Array {
  if (!std) return mean;
  const out = new Float32Array(mean.length);
  for (let i = 0; i < mean.length; i++) out[i] = mean[i]! + Math.fround(std[i]! * eps[i]!);
  return out;
}
