/**
 * Runs several compatible generation requests as one batch on a pipeline's backend, such that
 * each request gets exactly the images it would get from `Pipeline.generate` alone.
 *
 * `Pipeline.generate` takes one request; merging needs the same steps with per-request pieces,
 * so this module follows `Pipeline.#generate` step by step (lib/pipeline.ts) and keeps every
 * per-request quantity per request:
 *
 * - **Noise**: each request has its own `NoiseSource` (its own generator, or one per image), and
 *   draws in its own diffusers order: initial latents (img2img: posterior eps, then add_noise),
 *   then one draw per noise-consuming evaluation. The merged arrays are the per-request arrays
 *   concatenated along the batch axis, so no request's stream depends on another request.
 * - **Text**: prompts and negative prompts of every image, concatenated in request order. The
 *   text encoder computes each row independently of the others.
 * - **Guidance**: one scale per image (`DenoiseRequest.guidance`), so requests with different
 *   `cfg_scale` share a batch. Whether classifier-free guidance runs at all (scale > 1) changes
 *   the UNet batch layout, so it is part of the compatibility key.
 * - **Program**: the scheduler, step count and (img2img) strength decide the sampler program;
 *   they are part of the key, so one program serves the whole batch.
 * - **img2img**: each request's init image is read and VAE-encoded on its own, as alone.
 *
 * The backend runs the UNet and the VAE decoder on the merged batch. ONNX Runtime's CPU kernels
 * compute each batch row independently, which the service tests check pixel for pixel.
 */
import { throwIfAborted, SdTrtError, InvalidOptionError } from "../errors.js";
import type { Backend, TextEmbeddings } from "../backends/backend.js";
import type { CpuDenoiseRequest } from "../backends/cpu.js";
import type { GenerateResult, GeneratedImage, Pipeline } from "../pipeline.js";
import type { ProgressEvent, ResolvedRequest } from "../pipeline/options.js";
import { NoiseSource, addNoise, divideFloat32, samplePosterior, scaleFloat32 } from "../pipeline/noise.js";
import { readImage } from "../image/read.js";
import { rgbToPixels } from "../image/pixels.js";
import { formatInfotext } from "../image/infotext.js";
import { a1111SamplerName, createScheduler, strengthToStartStep } from "../schedulers/index.js";
import type { SamplerProgram } from "../sampler/program.js";
import type { ClipTokenizer } from "../tokenizer/index.js";

const TOKENS = 77;

/** What merged execution needs besides the pipeline: the pieces `Pipeline` keeps private. */
export interface MergeContext {
  pipeline: Pipeline;
  backend: Backend;
  tokenizer: ClipTokenizer;
  schedulerConfig: Record<string, unknown>;
}

/**
 * The compatibility key of a validated request: requests with equal keys can share a batch.
 * Null when the request must run alone (it observes per-step latents, or its size comes from
 * its init image, which is unknown until the image is read).
 */
export function mergeKey(request: ResolvedRequest): string | null {
  if (request.onLatents) return null;
  if (request.width === undefined || request.height === undefined) return null;
  const img2img = request.initImage !== undefined;
  return JSON.stringify([request.width, request.height, request.steps, request.scheduler, request.guidance > 1, img2img, img2img ? request.strength : null]);
}

function tokenize(tokenizer: ClipTokenizer, texts: string[], option: string, warnings: string[], ids: Int32Array, firstRow: number): void {
  const seen = new Map<string, number[]>();
  texts.forEach((text, row) => {
    let rowIds = seen.get(text);
    if (!rowIds) {
      const tokens = tokenizer.tokenize(text);
      rowIds = tokens.inputIds77;
      seen.set(text, rowIds);
      if (tokens.truncated) {
        warnings.push(`${option}${texts.length > 1 ? `[${row}]` : ""} is longer than CLIP's ${TOKENS} tokens; the last ${tokens.droppedTokens} tokens are ignored`);
      }
    }
    ids.set(rowIds, (firstRow + row) * TOKENS);
  });
}

function concatenate(parts: Float32Array[]): Float32Array {
  const out = new Float32Array(parts.reduce((n, p) => n + p.length, 0));
  let offset = 0;
  for (const part of parts) {
    out.set(part, offset);
    offset += part.length;
  }
  return out;
}

/**
 * Runs compatible requests (equal `mergeKey`) as one batch. Results are in request order and
 * equal what `pipeline.generate` returns for each request alone (timings are the batch's).
 */
export async function generateMerged(
  context: MergeContext,
  requests: ResolvedRequest[],
  signal: AbortSignal,
  onProgress: (event: ProgressEvent) => void,
): Promise<GenerateResult[]> {
  const started = performance.now();
  const { backend, tokenizer } = context;
  if (requests.length === 0) return [];
  const first = requests[0]!;
  const key = mergeKey(first);
  if (key === null || requests.some((r) => mergeKey(r) !== key)) {
    throw new SdTrtError("ERR_INTERNAL", "generateMerged: the requests are not compatible (different merge keys)");
  }
  const total = requests.reduce((n, r) => n + r.batch, 0);
  if (total > backend.limits.maxBatch) {
    throw new InvalidOptionError("batch", `the merged batch of ${total} images exceeds the backend's maximum batch ${backend.limits.maxBatch}`);
  }
  throwIfAborted(signal);
  const cfg = first.guidance > 1;
  const width = first.width!;
  const height = first.height!;
  const latentHeight = height / 8;
  const latentWidth = width / 8;
  const rest = [4, latentHeight, latentWidth];
  const warnings = requests.map(() => [] as string[]);

  // Tokenize every image's prompt (and negative prompt), in request order.
  let t = performance.now();
  const condIds = new Int32Array(total * TOKENS);
  const uncondIds = cfg ? new Int32Array(total * TOKENS) : null;
  let row = 0;
  requests.forEach((r, i) => {
    tokenize(tokenizer, r.prompts, "prompt", warnings[i]!, condIds, row);
    if (uncondIds) tokenize(tokenizer, r.negativePrompts, "negativePrompt", warnings[i]!, uncondIds, row);
    row += r.batch;
  });
  const tokenizeMs = performance.now() - t;

  t = performance.now();
  const embeddings: TextEmbeddings[] = [];
  try {
    const cond = await backend.encodeText(condIds, total);
    embeddings.push(cond);
    const uncond = uncondIds ? await backend.encodeText(uncondIds, total) : null;
    if (uncond) embeddings.push(uncond);
    const textEncodeMs = performance.now() - t;
    onProgress({ stage: "encode-text", step: 1, total: 1 });
    throwIfAborted(signal);

    // One program for the batch; every random draw per request, in that request's order.
    const scheduler = createScheduler(first.scheduler, context.schedulerConfig);
    const img2img = first.initImage !== undefined;
    const program: SamplerProgram = img2img
      ? scheduler.compile(first.steps, { startIndex: strengthToStartStep(first.steps, first.strength!) * scheduler.order })
      : scheduler.compile(first.steps);
    const drawingEvals = program.evals.filter((e) => e.drawsNoise).length;
    const latentParts: Float32Array[] = [];
    const noiseParts: Float32Array[][] = Array.from({ length: drawingEvals }, () => []);
    let imageEncodeMs = 0;
    for (const r of requests) {
      const noise = new NoiseSource(r.rng, r.generatorSeeds, r.perImageGenerators);
      if (img2img) {
        t = performance.now();
        const image = await readImage(r.initImage!, { width, height });
        const eps = noise.drawPosterior(r.batch, rest);
        const { mean, std } = await backend.encodeImage(rgbToPixels(image.rgb, height, width), 1, height, width);
        const imageLatents = new Float32Array(r.batch * mean.length);
        for (let i = 0; i < r.batch; i++) imageLatents.set(scaleFloat32(samplePosterior(mean, std, eps[i]!), backend.scalingFactor), i * mean.length);
        const addNoiseDraw = noise.draw(r.batch, rest);
        const spec = program.addNoise;
        if (!spec) throw new SdTrtError("ERR_INTERNAL", `scheduler ${r.scheduler} compiled an img2img program without add_noise`);
        latentParts.push(addNoise(imageLatents, addNoiseDraw, spec.signal, spec.noise));
        imageEncodeMs += performance.now() - t;
        throwIfAborted(signal);
      } else {
        latentParts.push(scaleFloat32(noise.draw(r.batch, rest), program.initNoiseSigma));
      }
      for (let k = 0; k < drawingEvals; k++) noiseParts[k]!.push(noise.draw(r.batch, rest));
    }
    if (img2img) onProgress({ stage: "encode-image", step: 1, total: 1 });

    const guidance = new Float64Array(total);
    row = 0;
    for (const r of requests) {
      guidance.fill(r.guidance, row, row + r.batch);
      row += r.batch;
    }

    // Denoise the whole batch.
    t = performance.now();
    const evaluations = program.evals.length;
    const denoiseRequest: CpuDenoiseRequest = {
      program,
      latents: concatenate(latentParts),
      batch: total,
      latentHeight,
      latentWidth,
      cond,
      uncond,
      guidance,
      noise: noiseParts.map(concatenate),
      signal,
      onStep: (evalIndex) => onProgress({ stage: "denoise", step: evalIndex + 1, total: evaluations, timestep: program.evals[evalIndex]!.t }),
    };
    const final = await backend.denoise(denoiseRequest);
    const denoiseMs = performance.now() - t;
    throwIfAborted(signal);

    t = performance.now();
    const pixels = await backend.decode(divideFloat32(final, backend.scalingFactor), total, latentHeight, latentWidth);
    const decodeMs = performance.now() - t;
    onProgress({ stage: "decode", step: 1, total: 1 });

    const modelHash = await context.pipeline.modelHash();
    const perImage = 4 * latentHeight * latentWidth;
    const results: GenerateResult[] = [];
    row = 0;
    requests.forEach((r, index) => {
      const sampler = a1111SamplerName(r.scheduler) ?? r.scheduler;
      const images: GeneratedImage[] = [];
      for (let i = 0; i < r.batch; i++) {
        const seed = r.perImageGenerators ? r.generatorSeeds[i]! : r.generatorSeeds[0]! + BigInt(i);
        const infotext = formatInfotext({
          prompt: r.prompts[i]!,
          negativePrompt: cfg ? r.negativePrompts[i]! : "",
          steps: r.steps,
          sampler,
          cfgScale: r.guidance,
          seed,
          width,
          height,
          modelHash,
          ...(r.strength !== undefined ? { denoisingStrength: r.strength } : {}),
          rng: r.rng,
        });
        images.push({ rgb: pixels[row + i]!, width, height, seed, infotext });
      }
      const result: GenerateResult = {
        images,
        seeds: [...r.generatorSeeds],
        randomSeed: r.randomSeed,
        width,
        height,
        steps: r.steps,
        guidance: r.guidance,
        scheduler: r.scheduler,
        backend: backend.name,
        evaluations,
        timings: {
          tokenize: tokenizeMs,
          textEncode: textEncodeMs,
          imageEncode: imageEncodeMs,
          denoise: denoiseMs,
          decode: decodeMs,
          total: performance.now() - started,
        },
        warnings: warnings[index]!,
      };
      if (r.returnLatents) result.latents = final.slice(row * perImage, (row + r.batch) * perImage);
      results.push(result);
      row += r.batch;
    });
    return results;
  } finally {
    for (const e of embeddings) e.dispose();
  }
}
