/**
 * img2img's starting latents, as diffusers' StableDiffusionImg2ImgPipeline.prepare_latents makes
 * them: the init image through the VAE encoder, a posterior sample (`mean + std · eps`; `eps` is
 * drawn even when the graph returns no std, so the stream stays aligned), times the scaling
 * factor, repeated for the batch, then `scheduler.add_noise` at the first timestep of the sliced
 * schedule with a second draw. No init_noise_sigma factor.
 *
 * Both draws are taken in advance by the caller in diffusers' order (`NoiseSource.drawPosterior`,
 * then `NoiseSource.draw`), so the encoder can run later, when the batch runs.
 */
import { SdTrtError } from "../errors.js";
import type { Backend } from "../backends/backend.js";
import type { SamplerProgram } from "../sampler/program.js";
import type { RgbImage } from "../image/read.js";
import { rgbToPixels } from "../image/pixels.js";
import { addNoise, samplePosterior, scaleFloat32 } from "./noise.js";

export interface Img2ImgInputs {
  backend: Backend;
  /** The init image, already at the output size. */
  image: RgbImage;
  /** The posterior draws, one [1, 4, h, w] array per image row (`NoiseSource.drawPosterior`). */
  eps: Float32Array[];
  /** The add_noise draw [batch, 4, h, w]. */
  noise: Float32Array;
  /** The program compiled with `startIndex` (it carries `addNoise`). */
  program: SamplerProgram;
}

export async function img2imgLatents({ backend, image, eps, noise, program }: Img2ImgInputs): Promise<Float32Array> {
  const spec = program.addNoise;
  if (!spec) throw new SdTrtError("ERR_INTERNAL", `the ${program.scheduler} program was compiled without add_noise (compile it with startIndex for img2img)`);
  // One image encoded once serves every row; its posterior sample differs per row only with a generator list.
  const { mean, std } = await backend.encodeImage(rgbToPixels(image.rgb, image.height, image.width), 1, image.height, image.width);
  const batch = eps.length;
  const imageLatents = new Float32Array(batch * mean.length);
  for (let i = 0; i < batch; i++) {
    imageLatents.set(scaleFloat32(samplePosterior(mean, std, eps[i]!), backend.scalingFactor), i * mean.length);
  }
  return addNoise(imageLatents, noise, spec.signal, spec.noise);
}
