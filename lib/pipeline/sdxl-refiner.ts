/**
 * Base + refiner in one generation, as diffusers runs SDXL's two pipelines: the base
 * (`StableDiffusionXLPipeline(denoising_end=switchAt, output_type="latent")`) runs the first part of
 * the schedule, and the refiner (`StableDiffusionXLImg2ImgPipeline(image=those latents,
 * denoising_start=switchAt)`) the rest from the base's latents, with no noise added between them:
 *
 * - cutoff = int(round(T − switchAt · T)) (Python's round: half to even), T = num_train_timesteps;
 * - the base keeps the timesteps ≥ cutoff (a prefix of the full schedule);
 * - the refiner takes the n timesteps < cutoff: t_start = steps − n, a fresh scheduler started at
 *   `set_begin_index(t_start)` (the img2img program for that start, without its add_noise).
 *
 * Both programs come from the same scheduler and step count. Only schedulers with one model
 * evaluation per step are split (diffusers' +1 for second-order ones is not reproduced).
 */
import { InvalidOptionError, ModelFileError } from "../errors.js";
import type { ModelFolder } from "../model/folder.js";
import type { SamplerProgram } from "../sampler/program.js";

/** Python's `round()` on a float: ties to even. */
function roundHalfEven(x: number): number {
  const floor = Math.floor(x);
  const diff = x - floor;
  if (diff > 0.5) return floor + 1;
  if (diff < 0.5) return floor;
  return floor % 2 === 0 ? floor : floor + 1;
}

/** diffusers' `discrete_timestep_cutoff` for a switch fraction. */
export function refinerCutoff(switchAt: number, numTrainTimesteps: number): number {
  return roundHalfEven(numTrainTimesteps - switchAt * numTrainTimesteps);
}

export interface RefinerSplit {
  /** The base's part: the full program's first evaluations. */
  base: SamplerProgram;
  /** The refiner's part, starting from the base's latents. */
  refiner: SamplerProgram;
}

/**
 * Splits a txt2img program at `switchAt`.
 * @param full the base program for `full.steps` steps (txt2img).
 * @param refinerFrom the refiner scheduler's program for the same steps starting at a schedule index.
 * @throws InvalidOptionError naming `refiner.switchAt` when a part would run no step, or the
 *   scheduler evaluates the model more than once per step.
 */
export function splitForRefiner(full: SamplerProgram, switchAt: number, numTrainTimesteps: number, refinerFrom: (startIndex: number) => SamplerProgram): RefinerSplit {
  if (full.brownian) {
    // A1111 has no such split; its noise sampler spans the whole schedule, one draw list for both halves.
    throw new InvalidOptionError("refiner", `the refiner split does not take A1111's SDE samplers (${full.scheduler}): their Brownian noise spans the whole schedule; use another scheduler with the refiner`);
  }
  if (full.evals.length !== full.steps) {
    throw new InvalidOptionError("refiner", `the refiner split needs a scheduler with one model evaluation per step; ${full.scheduler} makes ${full.evals.length} for ${full.steps} steps`);
  }
  const cutoff = refinerCutoff(switchAt, numTrainTimesteps);
  const baseSteps = full.evals.filter((e) => e.t >= cutoff).length;
  const refinerSteps = full.evals.filter((e) => e.t < cutoff).length;
  if (baseSteps === 0 || refinerSteps === 0) {
    throw new InvalidOptionError(
      "refiner.switchAt",
      `refiner.switchAt ${switchAt} puts all ${full.steps} steps on the ${baseSteps === 0 ? "refiner" : "base"} (timestep cutoff ${cutoff}); choose a switch point between the schedule's timesteps`,
    );
  }
  // The base's timesteps are a prefix (they decrease); its program is the full one, stopped early.
  const base: SamplerProgram = { ...full, evals: full.evals.slice(0, baseSteps) };
  const { addNoise: _unused, ...refiner } = refinerFrom(full.steps - refinerSteps);
  return { base, refiner };
}

/**
 * A refiner is not a model of its own: its UNet takes the aesthetic-score time ids of a refiner pass,
 * which a generation from the model gives only to the refiner. Refused, saying how to use it.
 * @throws ModelFileError naming the folder.
 */
export function checkNotRefiner(folder: ModelFolder): void {
  if (folder.sdxl?.requiresAestheticsScore) {
    throw new ModelFileError(
      folder.dir,
      `${folder.dir} is an SDXL refiner (model_index.json says requires_aesthetics_score: its time ids carry an aesthetic score); it finishes a base model's generation: load an SDXL base model with this one as its refiner (the refiner option, --refiner)`,
    );
  }
}

/** What a refiner folder must share with its base; the first mismatch is refused with the reason. */
export function checkRefinerMatchesBase(base: ModelFolder, refiner: ModelFolder): void {
  const fail = (reason: string): never => {
    throw new InvalidOptionError("refiner", `the refiner ${refiner.dir} does not match the base ${base.dir}: ${reason}`);
  };
  if (!base.sdxl || base.sdxl.secondEncoderOnly) fail("the base is not an SDXL base model (it needs text_encoder and text_encoder_2)");
  if (!refiner.sdxl) fail("the refiner is not SDXL (it has no text_encoder_2)");
  if (!refiner.sdxl!.requiresAestheticsScore) {
    fail("its time-id layout is the base's (model_index.json has no requires_aesthetics_score: original size, crop, target size), not a refiner's (original size, crop, aesthetic score)");
  }
  const channels = (folder: ModelFolder) => folder.unetConfig?.["in_channels"] ?? folder.vaeConfig?.["latent_channels"];
  if (channels(base) !== undefined && channels(refiner) !== undefined && channels(base) !== channels(refiner)) {
    fail(`its UNet takes ${String(channels(refiner))} latent channels, the base makes ${String(channels(base))}`);
  }
  if (base.scalingFactor !== refiner.scalingFactor) {
    fail(`its VAE scaling factor is ${refiner.scalingFactor}, the base's ${base.scalingFactor} (the latents would not be in the same space)`);
  }
}
