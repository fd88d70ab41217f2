/**
 * A1111's ImageRNG (modules/rng.py, v1.6+): one generator per image, seeded with the image's
 * seed. The first draw is the initial noise, where variation seeds (`subseed`, blended in with
 * A1111's `slerp`) and "resize seed from" apply; after it, `eta_noise_seed_delta` (ENSD) re-seeds
 * every image's generator with seed + ENSD, and each later draw (every `torch.randn_like` of the
 * sampler) is one [C,H,W] draw per image from its generator.
 *
 * The arithmetic of `slerp` is torch's float32 arithmetic (norms and sums accumulate in float64
 * here and round once, which can differ from torch's float32 reductions in the last bit).
 */
import { invalidOption } from "../validate.js";
import { MAX_SEED, type Generator } from "./generator.js";

/** Creates a generator of the image's random source for a seed. */
export type GeneratorFactory = (seed: bigint) => Generator;

export interface ImageRngOptions {
  /** One variation seed per image (A1111's all_subseeds). */
  subseeds?: readonly bigint[];
  /** 0 … 1; 0 (the default) leaves the variation seeds unused. */
  subseedStrength?: number;
  /** "Resize seed from": the image size (pixels) the seed's noise was made for; 0 = off. */
  seedResizeFromWidth?: number;
  seedResizeFromHeight?: number;
  /** eta_noise_seed_delta; 0 = off. */
  ensd?: number;
}

const f32 = Math.fround;

/** torch.norm(x, dim=1, keepdim=True) of a [C,H,W] tensor: [C,W]. */
function normOverHeight(x: Float32Array, c: number, h: number, w: number): Float32Array {
  const out = new Float32Array(c * w);
  for (let ci = 0; ci < c; ci++) {
    for (let wi = 0; wi < w; wi++) {
      let sum = 0;
      for (let hi = 0; hi < h; hi++) sum += x[(ci * h + hi) * w + wi]! ** 2;
      out[ci * w + wi] = Math.sqrt(sum);
    }
  }
  return out;
}

/**
 * A1111's `slerp(val, low, high)` on [C,H,W] noise: spherical interpolation per (channel, column)
 * over the height axis; when the mean cosine exceeds 0.9995 it returns `low·val + high·(1 − val)`
 * (A1111's own formula, weights as written there).
 */
export function a1111Slerp(val: number, low: Float32Array, high: Float32Array, shape: readonly [number, number, number]): Float32Array {
  const [c, h, w] = shape;
  const lowNorm = normOverHeight(low, c, h, w);
  const highNorm = normOverHeight(high, c, h, w);
  const dot = new Float32Array(c * w);
  let dotSum = 0;
  for (let ci = 0; ci < c; ci++) {
    for (let wi = 0; wi < w; wi++) {
      let sum = 0;
      for (let hi = 0; hi < h; hi++) {
        const k = (ci * h + hi) * w + wi;
        sum += f32(f32(low[k]! / lowNorm[ci * w + wi]!) * f32(high[k]! / highNorm[ci * w + wi]!));
      }
      dot[ci * w + wi] = sum;
      dotSum += dot[ci * w + wi]!;
    }
  }
  const out = new Float32Array(low.length);
  if (dotSum / dot.length > 0.9995) {
    const a = f32(val);
    const b = f32(1 - val);
    for (let k = 0; k < out.length; k++) out[k] = f32(low[k]! * a) + f32(high[k]! * b);
    return out;
  }
  const lowScale = new Float32Array(c * w);
  const highScale = new Float32Array(c * w);
  for (let i = 0; i < dot.length; i++) {
    const omega = f32(Math.acos(dot[i]!));
    const so = f32(Math.sin(omega));
    lowScale[i] = f32(f32(Math.sin(f32(f32(1 - val) * omega))) / so);
    highScale[i] = f32(f32(Math.sin(f32(f32(val) * omega))) / so);
  }
  for (let ci = 0; ci < c; ci++) {
    for (let hi = 0; hi < h; hi++) {
      for (let wi = 0; wi < w; wi++) {
        const k = (ci * h + hi) * w + wi;
        out[k] = f32(f32(lowScale[ci * w + wi]! * low[k]!) + f32(highScale[ci * w + wi]! * high[k]!));
      }
    }
  }
  return out;
}

export class A1111ImageRng {
  readonly #shape: [number, number, number];
  readonly #seeds: readonly bigint[];
  readonly #create: GeneratorFactory;
  readonly #options: ImageRngOptions;
  #generators: Generator[];
  #first = true;

  /**
   * @param shape the latent shape of one image [C, H, W].
   * @param seeds one seed per image.
   */
  constructor(create: GeneratorFactory, shape: readonly [number, number, number], seeds: readonly bigint[], options: ImageRngOptions = {}) {
    this.#shape = [...shape];
    this.#seeds = [...seeds];
    this.#create = create;
    this.#options = options;
    const ensd = options.ensd ?? 0;
    if (ensd !== 0) {
      for (const seed of seeds) {
        if (seed + BigInt(ensd) > MAX_SEED || seed + BigInt(ensd) < 0n) {
          throw invalidOption("ensd", `a value that keeps seed + ENSD within 0 … ${MAX_SEED} (seed ${seed})`, ensd);
        }
      }
    }
    this.#generators = seeds.map(create);
  }

  /** The next draw for every image, [B, C, H, W] (the first is the initial noise). */
  next(): Float32Array {
    if (this.#first) {
      this.#first = false;
      return this.#initial();
    }
    const size = this.#shape[0] * this.#shape[1] * this.#shape[2];
    const out = new Float32Array(size * this.#generators.length);
    for (const [i, g] of this.#generators.entries()) out.set(g.randn(this.#shape), i * size);
    return out;
  }

  #initial(): Float32Array {
    const shape = this.#shape;
    const [c, h, w] = shape;
    const { subseeds, subseedStrength = 0, seedResizeFromWidth = 0, seedResizeFromHeight = 0, ensd = 0 } = this.#options;
    const resized = seedResizeFromHeight > 0 && seedResizeFromWidth > 0;
    const noiseShape: [number, number, number] = resized ? [c, Math.floor(seedResizeFromHeight / 8), Math.floor(seedResizeFromWidth / 8)] : shape;
    const sameShape = noiseShape[1] === h && noiseShape[2] === w;
    const size = c * h * w;
    const out = new Float32Array(size * this.#seeds.length);
    this.#seeds.forEach((seed, i) => {
      const generator = this.#generators[i]!;
      const subnoise = subseeds !== undefined && subseedStrength !== 0 ? this.#create(subseeds[i] ?? 0n).randn(noiseShape) : null;
      // A1111: the image's own generator draws the noise unless it is resized; then a fresh one
      // draws the old-size noise and the image's generator the new-size canvas.
      let noise = sameShape ? generator.randn(shape) : this.#create(seed).randn(noiseShape);
      if (subnoise) noise = a1111Slerp(subseedStrength, noise, subnoise, noiseShape);
      if (!sameShape) {
        const canvas = generator.randn(shape);
        let dx = Math.floor((w - noiseShape[2]) / 2);
        let dy = Math.floor((h - noiseShape[1]) / 2);
        const cw = dx >= 0 ? noiseShape[2] : noiseShape[2] + 2 * dx;
        const ch = dy >= 0 ? noiseShape[1] : noiseShape[1] + 2 * dy;
        const tx = Math.max(dx , 0);
        const ty = Math.max(dy , 0);
        dx = Math.max(-dx, 0);
        dy = Math.max(-dy, 0);
        for (let ci = 0; ci < c; ci++) {
          for (let y = 0; y < ch; y++) {
            for (let x = 0; x < cw; x++) {
              canvas[(ci * h + ty + y) * w + tx + x] = noise[(ci * noiseShape[1] + dy + y) * noiseShape[2] + dx + x]!;
            }
          }
        }
        noise = canvas;
      }
      out.set(noise, i * size);
    });
    if (ensd !== 0) this.#generators = this.#seeds.map((seed) => this.#create(seed + BigInt(ensd)));
    return out;
  }
}
