/**
 * img2img's starting latents, as diffusers' StableDiffusionImg2ImgPipeline.prepare_latents makes
 * them: the init image through the VAE encoder, a posterior sample (`mean + std · eps`, with
 * `eps` drawn first from the generator even when the graph returns no std, so the stream stays
 * aligned), times the scaling factor, repeated for the batch, then `scheduler.add_noise` at the
 * first timestep of the sliced schedule with a second draw. No init_noise_sigma factor.
 */
import { SdTrtError } from "../errors.js";
import type { Backend } from "../backends/backend.js";
import type { SamplerProgram } from "../sampler/program.js";
import type { RgbImage } from "../image/read.js";
import { rgbToPixels } from "../image/pixels.js";
import { addNoise, samplePosterior, scaleFloat32, type NoiseSource } from "./noise.js";

export interface Img2ImgInputs {
  backend: Backend;
  /** The init image, already at the output size. */
  image: RgbImage;
  noise: NoiseSource;
  batch: number;
  /** [4, h, w] of one image's latents. */
  latentShape: number[];
  /** The program compiled with `startIndex` (it carries `addNoise`). */
  program: SamplerProgram;
}

export async function img2imgLatents({ backend, image, noise, batch, latentShape, program }: Img2ImgInputs): Promise<Float32Array> {
  const spec = program.addNoise;
  if (!spec) throw new SdTrtError("ERR_INTERNAL", `the ${program.scheduler} program was compiled without add_noise (compile it with startIndex for img2img)`);
  const eps = noise.drawPosterior(batch, latentShape); // (1) latent_dist.sample(generator)
  // One image encoded once serves every row; its posterior sample differs per row only with a generator list.
  const { mean, std } = await backend.encodeImage(rgbToPixels(image.rgb, image.height, image.width), 1, image.height, image.width);
  const imageLatents = new Float32Array(batch * mean.length);
  for (let i = 0; i < batch; i++) {
    imageLatents.set(scaleFloat32(samplePosterior(mean, std, eps[i]!), backend.scalingFactor), i * mean.length);
  }
  const draw = noise.draw(batch, latentShape); // (2) the add_noise noise
  return addNoise(imageLatents, draw, spec.signal, spec.noise);
}
