/**
 * x_0 of a generation job, shared by both backends: txt2img's latents as given, or img2img's
 * built from each init image's VAE posterior (the backend's own encoder) in row order.
 */
import { InternalError, InvalidArgumentError, throwIfAborted } from "../errors.js";
import { img2imgStartLatents } from "../sampler/latents.js";
import type { GenerationJob } from "./backend.js";

/** A backend's VAE encoder on one image [1, 3, H, W]: the posterior mean, and std when the model returns latent parameters. */
export type EncodeImage = (pixels: Float32Array, height: number, width: number) => Promise<{ mean: Float32Array; std?: Float32Array }>;

/**
 * The job's starting latents [batch, 4, h, w]. For img2img each image is encoded once and serves
 * its rows (their posterior samples differ only with a generator per image); `imageEncode` gets
 * each image's time, and the signal is checked between images.
 */
export async function startLatents(job: GenerationJob, encode: EncodeImage, scalingFactor: number, imageEncode: number[]): Promise<Float32Array> {
  if ("latents" in job.start) return job.start.latents;
  const spec = job.program.addNoise;
  if (!spec) throw new InternalError(`the ${job.program.scheduler} program was compiled without add_noise (compile it with startIndex for img2img)`);
  const plane = 4 * job.latentHeight * job.latentWidth;
  const rows = job.start.images.reduce((n, image) => n + image.rows, 0);
  if (rows !== job.batch) throw new InvalidArgumentError(`generate: the init images start ${rows} rows, the batch has ${job.batch}`);
  const latents = new Float32Array(job.batch * plane);
  let row = 0;
  for (const image of job.start.images) {
    const t = performance.now();
    const encoded = await encode(image.pixels, job.latentHeight * 8, job.latentWidth * 8);
    latents.set(img2imgStartLatents(encoded, image.eps, image.noise, spec, scalingFactor), row * plane);
    row += image.rows;
    imageEncode.push(performance.now() - t);
    throwIfAborted(job.signal);
  }
  return latents;
}
