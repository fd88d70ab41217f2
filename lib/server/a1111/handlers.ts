/**
 * The A1111 generation endpoints and the progress endpoint.
 *
 * A generation request becomes `n_iter` service requests of `batch_size` images each, with
 * A1111's per-image seeds (seed + i), submitted together (all admitted or a 503 busy). The
 * response is A1111's `{images, parameters, info}`: base64 PNGs that carry the infotext in their
 * `parameters` chunk, the request echoed back, and `info`, a JSON *string* as A1111 returns it
 * (`Processed.js()`: all_seeds, infotexts, …).
 *
 * If the client disconnects, its requests are cancelled (removed from the queue, or dropped
 * from their batch). An interrupted request (`/sdapi/v1/interrupt`) is answered 409: A1111
 * returns the half-denoised picture, which this server cannot produce.
 */
import { randomInt } from "node:crypto";
import { loadSharp } from "../../image/sharp.js";
import { encodeImage } from "../../image/encode.js";
import type { RawImage } from "../../image/read.js";
import { packageVersion } from "../../package-info.js";
import type { GenerationService, ServiceRequest } from "../../service/generation-service.js";
import type { ServiceResult } from "../../service/pipeline-service.js";
import { parseJsonObject, readBody } from "../http/body.js";
import { invalidField } from "../http/errors.js";
import { sendJson } from "../http/respond.js";
import type { RouteContext } from "../http/router.js";
import { type A1111Generation, type A1111Mode, parseA1111Request } from "./request.js";
import { noiseOptions } from "./a1111-noise.js";
import { emphasisOf, type A1111Settings } from "./settings.js";

export interface GenerationContext {
  service: GenerationService;
  maxBodyBytes: number;
  /** The server's A1111 settings (`/sdapi/v1/options`). */
  settings: A1111Settings;
}

/** Most steps a request may ask for: SD 1.x schedules have 1000 training timesteps. */
const MAX_STEPS = 1000;

/** A1111's `job_timestamp`: local time as YYYYMMDDhhmmss. */
function jobTimestamp(date = new Date()): string {
  const pad = (n: number) => String(n).padStart(2, "0");
  return `${date.getFullYear()}${pad(date.getMonth() + 1)}${pad(date.getDate())}${pad(date.getHours())}${pad(date.getMinutes())}${pad(date.getSeconds())}`;
}

/** Decodes the init image and fits it to width×height as A1111's resize_mode asks. */
async function prepareInitImage(generation: A1111Generation): Promise<RawImage> {
  const { width, height } = generation;
  const sharp = await loadSharp();
  try {
    const fit = generation.resizeMode === 1 ? "cover" : "fill";
    const { data, info } = await sharp(generation.initImage!, { failOn: "error" })
      .rotate()
      .removeAlpha()
      .toColourspace("srgb")
      .resize(width, height, { fit, position: "centre", kernel: "lanczos3" })
      .raw({ depth: "uchar" })
      .toBuffer({ resolveWithObject: true });
    return { data: new Uint8Array(data.buffer, data.byteOffset, data.byteLength), width: info.width, height: info.height, channels: info.channels as 3 };
  } catch (error) {
    throw invalidField("init_images[0]", `init_images[0] is not an image this server can read: ${(error as Error).message}`);
  }
}

/** A1111's uni_pc_* settings as the pipeline's `uniPc` option. */
function uniPcOptions(settings: A1111Settings) {
  return { variant: settings.uni_pc_variant, skipType: settings.uni_pc_skip_type, order: settings.uni_pc_order, lowerOrderFinal: settings.uni_pc_lower_order_final };
}

/** The service requests of one A1111 request: n_iter batches with seeds seed + i. */
function serviceRequests(generation: A1111Generation, initImage: RawImage | undefined): ServiceRequest[] {
  const requests: ServiceRequest[] = [];
  for (let n = 0; n < generation.nIter; n++) {
    requests.push({
      prompt: generation.prompt,
      // An empty negative prompt is left out: on SDXL that is the zero-uncond path, as A1111's
      // force_zero_negative_prompt (sd_models_xl.py) zeroes an all-empty negative batch's text
      // embeddings; on SD 1.x/2.x the pipeline's default negative prompt is "" anyway.
      ...(generation.negativePrompt !== "" ? { negativePrompt: generation.negativePrompt } : {}),
      width: generation.width,
      height: generation.height,
      steps: generation.steps,
      guidance: generation.cfgScale,
      scheduler: generation.scheduler,
      ...(generation.sigmaSchedule !== undefined ? { sigmaSchedule: generation.sigmaSchedule } : {}),
      ...(generation.eta !== undefined ? { eta: generation.eta } : {}),
      ...noiseOptions(generation.noise, generation.seed, n * generation.batchSize, generation.batchSize),
      ...(generation.hires ? { hires: generation.hires } : {}),
      ...(generation.scheduler === "a1111_unipc" || generation.hires?.scheduler === "a1111_unipc" ? { uniPc: uniPcOptions(generation.settings) } : {}),
      batch: generation.batchSize,
      rng: generation.rng,
      promptSyntax: "a1111",
      emphasis: emphasisOf(generation.settings),
      commaPaddingBacktrack: generation.settings.comma_padding_backtrack,
      padCondUncond: generation.settings.pad_cond_uncond,
      clipSkip: generation.settings.CLIP_stop_at_last_layers,
      // A1111: clip skip reaches SDXL's CLIP-L only with this setting (no effect on SD 1.x/2.x).
      sdxlClipLSkip: generation.settings.sdxl_clip_l_skip,
      ...(initImage ? { initImage, strength: generation.strength } : {}),
    });
  }
  return requests;
}

export async function handleA1111Generation(mode: A1111Mode, { request, response, signal }: RouteContext, context: GenerationContext): Promise<void> {
  const { service } = context;
  const body = parseJsonObject(await readBody(request, context.maxBodyBytes));
  const generation = parseA1111Request(mode, body, {
    backend: service.limits,
    maxIterations: service.maxQueue,
    maxSteps: MAX_STEPS,
    modelName: service.modelName,
    settings: context.settings,
  });
  if (mode === "img2img" && !service.limits.canEncodeImages) {
    throw invalidField("init_images", `img2img needs a VAE encoder, and the model ${service.modelName} has none`);
  }
  const initImage = mode === "img2img" ? await prepareInitImage(generation) : undefined;
  const requests = serviceRequests(generation, initImage);
  const results: ServiceResult[] = await Promise.all(service.generateAll(requests, { signal }));

  const images: string[] = [];
  const infotexts: string[] = [];
  const allSeeds: number[] = [];
  for (const result of results) {
    for (let i = 0; i < result.images.length; i++) {
      const image = result.images[i]!;
      const infotext = image.infotext;
      infotexts.push(infotext);
      allSeeds.push(Number(image.seed));
      if (generation.sendImages) {
        const png = await encodeImage(image.rgb, image.width, image.height, { format: "png", parameters: infotext });
        images.push(png.toString("base64"));
      }
    }
  }

  const count = allSeeds.length;
  const subseed = generation.noise && generation.noise.subseedStrength > 0 ? generation.noise.subseed : typeof body.subseed === "number" && body.subseed >= 0 ? body.subseed : randomInt(4294967294);
  const info = {
    prompt: generation.prompt,
    all_prompts: Array<string>(count).fill(generation.prompt),
    negative_prompt: generation.negativePrompt,
    all_negative_prompts: Array<string>(count).fill(generation.negativePrompt),
    seed: generation.seed,
    all_seeds: allSeeds,
    subseed,
    all_subseeds: Array.from({ length: count }, (_, i) => subseed + i),
    subseed_strength: generation.noise?.subseedStrength ?? 0,
    width: generation.width,
    height: generation.height,
    sampler_name: generation.samplerName,
    cfg_scale: generation.cfgScale,
    steps: generation.steps,
    batch_size: generation.batchSize,
    restore_faces: body.restore_faces === true,
    face_restoration_model: null,
    sd_model_name: service.modelName,
    sd_model_hash: service.modelHash ?? null,
    sd_vae_name: null,
    sd_vae_hash: null,
    seed_resize_from_w: generation.noise?.seedResizeFrom?.width ?? -1,
    seed_resize_from_h: generation.noise?.seedResizeFrom?.height ?? -1,
    denoising_strength: mode === "img2img" ? generation.strength : (generation.hires?.strength ?? null),
    extra_generation_params: {},
    index_of_first_image: 0,
    infotexts,
    styles: Array.isArray(body.styles) ? body.styles : [],
    job_timestamp: jobTimestamp(),
    clip_skip: generation.settings.CLIP_stop_at_last_layers,
    is_using_inpainting_conditioning: false,
    version: `sd-trt ${packageVersion()}`,
    sd_trt_ignored: generation.ignored,
    sd_trt_backend: service.backendName,
    sd_trt_scheduler: generation.scheduler,
  };
  const headers: Record<string, string> = generation.ignored.length ? { "X-SD-TRT-Ignored": generation.ignored.join(", ") } : {};
  sendJson(response, 200, { images, parameters: generation.parameters, info: JSON.stringify(info) }, headers);
}

/** `GET /sdapi/v1/progress`: A1111's ProgressResponse for the batch that is running. */
export function a1111ProgressResponse(service: GenerationService) {
  const running = service.running();
  const counters = service.counters();
  // A1111's progress is the sampling progress: denoise steps; decoding counts as done.
  const event = running?.progress;
  const step = event?.stage === "denoise" || event?.stage === "decode" ? (event.stage === "decode" ? 1 : event.step) : 0;
  const total = event?.stage === "denoise" ? event.total : event?.stage === "decode" ? 1 : 0;
  const progress = running && total > 0 ? Math.min(1, step / total) : 0;
  const elapsed = running ? (performance.now() - running.startedAt) / 1000 : 0;
  const eta = progress > 0 ? (elapsed / progress) * (1 - progress) : 0;
  return {
    progress,
    eta_relative: eta,
    state: {
      skipped: false,
      interrupted: false,
      stopping_generation: false,
      job: running ? `${running.requests} request(s), ${running.images} image(s)` : "",
      job_count: (running ? 1 : 0) + counters.queued,
      job_timestamp: jobTimestamp(),
      job_no: 0,
      sampling_step: step,
      sampling_steps: total,
    },
    current_image: null,
    textinfo: null,
  };
}
