/**
 * The float32 latent arithmetic around the sampler program that both backends share, each step
 * rounded exactly as diffusers' PyTorch pipelines round it: the initial scale, `add_noise`, the
 * VAE posterior sample, the scaling factor on the way into and out of the VAE.
 */
import { InvalidArgumentError } from "../errors.js";
import type { AddNoiseSpec } from "./program.js";

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

/**
 * diffusers' `DiagonalGaussianDistribution` on `latent_parameters` [B, 8, h, w]: mean = the first
 * 4 channels, std = exp(0.5 · clamp(logvar, −30, 20)) in float32.
 */
export function splitPosterior(parameters: Float32Array, batch: number, height: number, width: number): { mean: Float32Array; std: Float32Array } {
  const plane = 4 * height * width;
  const mean = new Float32Array(batch * plane);
  const std = new Float32Array(batch * plane);
  for (let b = 0; b < batch; b++) {
    mean.set(parameters.subarray(2 * b * plane, (2 * b + 1) * plane), b * plane);
    for (let i = 0; i < plane; i++) {
      const logvar = Math.min(20, Math.max(-30, parameters[(2 * b + 1) * plane + i]!));
      std[b * plane + i] = Math.exp(Math.fround(0.5 * logvar));
    }
  }
  return { mean, std };
}

/**
 * img2img's x_0 for one init image, as diffusers' `StableDiffusionImg2ImgPipeline.prepare_latents`
 * makes it: a posterior sample per row (`eps[row]`; with one generator every row shares one draw)
 * times the scaling factor, then `add_noise` at the first timestep of the sliced schedule with
 * the second draw. No init_noise_sigma factor.
 * @param encoded the VAE encoder's posterior of the image ([1, 4, h, w] mean, and std when the
 *   graph returns latent parameters).
 */
export function img2imgStartLatents(
  encoded: { mean: Float32Array; std?: Float32Array | undefined },
  eps: readonly Float32Array[],
  noise: Float32Array,
  spec: AddNoiseSpec,
  scalingFactor: number,
): Float32Array {
  const plane = encoded.mean.length;
  if (noise.length !== eps.length * plane) {
    throw new InvalidArgumentError(`img2img: the add_noise draw has ${noise.length} values, expected ${eps.length}·${plane}`);
  }
  const imageLatents = new Float32Array(eps.length * plane);
  eps.forEach((e, row) => {
    imageLatents.set(scaleFloat32(samplePosterior(encoded.mean, encoded.std, e), scalingFactor), row * plane);
  });
  return addNoise(imageLatents, noise, spec.signal, spec.noise);
}
