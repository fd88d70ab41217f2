/**
 * The random draws of one generation, in diffusers' order, from one generator for the batch or
 * one generator per image (`randn_tensor` with a generator list: row i from generator i).
 *
 * txt2img: (1) the initial latents [B,4,h,w]; (2…) one [B,4,h,w] draw per scheduler step that
 * draws (Euler a every step, the last included; DDPM while t > 0).
 * img2img: (1) the VAE posterior eps — [1,4,h,w] for the single encoded image with one
 * generator, one [1,4,h,w] per image with a list — drawn even when the encoder returns a sample
 * and it is discarded, so the stream stays aligned; (2) the add_noise draw [B,4,h,w]; (3…) step
 * noise as in txt2img. A1111's own samplers order img2img's draws their own way
 * (generation.ts, `drawA1111Img2img`).
 */
import { A1111ImageRng, type ImageRngOptions } from "../rng/a1111-image-rng.js";
import { createGenerator, randn, randnRows, type Generator, type RngSource } from "../rng/index.js";

/** Where a request's draws come from, in the order generation.ts asks for them. */
export interface RequestNoise {
  /** One [batch, ...rest] draw. */
  draw(batch: number, rest: readonly number[]): Float32Array;
  /** img2img's VAE posterior draws, one [1, ...rest] per image. */
  drawPosterior(batch: number, rest: readonly number[]): Float32Array[];
}

export class NoiseSource implements RequestNoise {
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

/**
 * A1111's noise for requests that use its variation seeds, seed resize or ENSD: its ImageRNG
 * (lib/rng/a1111-image-rng.ts) with one generator per image. Every draw is the ImageRNG's next()
 * (the first one the initial noise — img2img's too — then one per evaluation that draws, as
 * A1111's sampler calls randn_like).
 */
export class A1111NoiseSource implements RequestNoise {
  readonly #rng: A1111ImageRng;

  constructor(rng: RngSource, seeds: readonly bigint[], rest: readonly [number, number, number], options: ImageRngOptions) {
    this.#rng = new A1111ImageRng((seed) => createGenerator(rng, seed), rest, seeds, options);
  }

  draw(): Float32Array {
    return this.#rng.next();
  }

  /** img2img's posterior eps: the ImageRNG's next draw, one row per image. */
  drawPosterior(batch: number): Float32Array[] {
    const draw = this.#rng.next();
    const plane = draw.length / batch;
    return Array.from({ length: batch }, (_, i) => draw.subarray(i * plane, (i + 1) * plane));
  }
}
