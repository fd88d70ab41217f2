/**
 * `sd-trt generate`: text-to-image (and img2img with `--init-image`) to PNG/JPEG/WebP files.
 *
 * Progress goes to stderr (a bar on a terminal, plain lines otherwise); the result summary to
 * stdout (`--json` for a machine-readable one). Every output file is written to a temporary name
 * first and renamed into place only when all of them are written, so a failed or interrupted run
 * (Ctrl-C: exit code 130) leaves no partial or half-written file.
 */
import { extname } from "node:path";
import type { ArgumentsCamelCase, Argv, CommandModule } from "yargs";
import { AbortError, InvalidOptionError } from "../../errors.js";
import { UsageError } from "../errors.js";
import { Pipeline, type GenerateOptions, type GenerateResult, type PipelineLoadOptions } from "../../pipeline/pipeline.js";
import { loraCliOptions, loraLoadOptions } from "../shared/serve-service.js";
import { defaultModelDir } from "../../package-info.js";
import { encodeImage, formatFromExtension, IMAGE_FORMATS, type ImageFormat } from "../../image/encode.js";
import { preloadSharp } from "../../image/sharp.js";
import { BACKEND_CHOICES, type BackendChoice } from "../../backends/select.js";
import { RNG_SOURCES, type RngSource } from "../../rng/index.js";
import { a1111SamplerName, a1111SamplerSelection, canonicalSchedulerName, KDIFFUSION_SAMPLER_NAMES, refusedA1111SamplerReason, SCHEDULER_NAMES } from "../../schedulers/index.js";
import { EMPHASIS_MODES, PROMPT_SYNTAXES, type Emphasis, type PromptSyntax } from "../../prompt/index.js";
import { encodeNpyFloat32 } from "../shared/npy.js";
import { StagedFiles, checkWritable } from "../shared/staged-files.js";
import { outputPaths, outputPath } from "../shared/output-paths.js";
import { createProgress } from "../shared/progress.js";
import { stopBackendWorkers } from "../../backends/select.js";
import { type CheckpointArgs, checkpointOptions, refinerCheckpointArgs, resolveModelArgument } from "../shared/model-source.js";

export interface GenerateArgs extends CheckpointArgs {
  /** Positional prompts, and those after `--`. */
  prompts?: string[];
  _?: Array<string | number>;
  prompt?: string | string[];
  "negative-prompt"?: string | string[];
  prompt2?: string | string[];
  "negative-prompt2"?: string | string[];
  "original-size"?: string;
  "crops-coords-top-left"?: string;
  "target-size"?: string;
  "negative-original-size"?: string;
  "negative-crops-coords-top-left"?: string;
  "negative-target-size"?: string;
  refiner?: string;
  "refiner-config"?: string;
  "refiner-engines"?: string;
  "refiner-switch-at"?: number;
  "aesthetic-score"?: number;
  "negative-aesthetic-score"?: number;
  model: string;
  backend: BackendChoice;
  engines?: string;
  threads?: number;
  "memory-limit"?: number;
  lora?: string[];
  "lora-cache-dir"?: string;
  steps?: number;
  guidance?: number;
  scheduler?: string;
  schedule?: string;
  subseed?: string;
  "subseed-strength"?: number;
  "seed-resize-from"?: string;
  ensd?: number;
  eta?: number;
  "unipc-variant"?: string;
  "unipc-skip-type"?: string;
  "unipc-order"?: number;
  "unipc-lower-order-final"?: boolean;
  "hires-scale"?: number;
  "hires-resize"?: string;
  "hires-steps"?: number;
  "hires-upscaler"?: string;
  "hires-strength"?: number;
  "hires-prompt"?: string;
  "hires-negative-prompt"?: string;
  "hires-scheduler"?: string;
  "hires-schedule"?: string;
  seed?: string;
  seeds?: string;
  batch?: number;
  rng?: RngSource;
  width?: number;
  height?: number;
  "init-image"?: string;
  strength?: number;
  out: string;
  format?: ImageFormat;
  quality?: number;
  "latents-out"?: string;
  "prompt-syntax"?: PromptSyntax;
  emphasis?: Emphasis;
  "comma-padding-backtrack"?: number;
  "pad-cond-uncond"?: boolean;
  "clip-skip"?: number;
  "sdxl-clip-l-skip"?: boolean;
  "embeddings-dir"?: string;
  quiet: boolean;
  json: boolean;
}

/** Where the command writes; tests pass their own streams. */
export interface CommandIo {
  stdout: NodeJS.WritableStream;
  stderr: NodeJS.WriteStream;
}

/** The CLI flag of each `generate()` option, so messages name what the user typed. */
const FLAG_OF: Record<string, string> = {
  prompt: "--prompt",
  negativePrompt: "--negative-prompt",
  prompt2: "--prompt2",
  negativePrompt2: "--negative-prompt2",
  originalSize: "--original-size",
  cropsCoordsTopLeft: "--crops-coords-top-left",
  targetSize: "--target-size",
  negativeOriginalSize: "--negative-original-size",
  negativeCropsCoordsTopLeft: "--negative-crops-coords-top-left",
  negativeTargetSize: "--negative-target-size",
  refiner: "--refiner-switch-at",
  "refiner.switchAt": "--refiner-switch-at",
  refinerEngines: "--refiner-engines",
  "refiner.aestheticScore": "--aesthetic-score",
  "refiner.negativeAestheticScore": "--negative-aesthetic-score",
  width: "--width",
  height: "--height",
  steps: "--steps",
  guidance: "--guidance",
  scheduler: "--scheduler",
  sigmaSchedule: "--schedule",
  subseeds: "--subseed",
  subseedStrength: "--subseed-strength",
  seedResizeFrom: "--seed-resize-from",
  ensd: "--ensd",
  eta: "--eta",
  uniPc: "--unipc-order",
  "uniPc.variant": "--unipc-variant",
  "uniPc.skipType": "--unipc-skip-type",
  "uniPc.order": "--unipc-order",
  "uniPc.lowerOrderFinal": "--unipc-lower-order-final",
  hires: "--hires-scale",
  "hires.scale": "--hires-scale",
  "hires.resizeWidth": "--hires-resize",
  "hires.resizeHeight": "--hires-resize",
  "hires.steps": "--hires-steps",
  "hires.upscaler": "--hires-upscaler",
  "hires.strength": "--hires-strength",
  "hires.prompt": "--hires-prompt",
  "hires.negativePrompt": "--hires-negative-prompt",
  "hires.scheduler": "--hires-scheduler",
  "hires.sigmaSchedule": "--hires-schedule",
  seed: "--seed",
  seeds: "--seeds",
  batch: "--batch",
  rng: "--rng",
  initImage: "--init-image",
  strength: "--strength",
  backend: "--backend",
  engines: "--engines",
  format: "--format",
  quality: "--quality",
  out: "--out",
  threads: "--threads",
  promptSyntax: "--prompt-syntax",
  emphasis: "--emphasis",
  commaPaddingBacktrack: "--comma-padding-backtrack",
  padCondUncond: "--pad-cond-uncond",
  clipSkip: "--clip-skip",
  sdxlClipLSkip: "--sdxl-clip-l-skip",
};

function flagError(error: InvalidOptionError): InvalidOptionError {
  const flag = FLAG_OF[error.option.replace(/\[\d+\]$/, "")] ?? FLAG_OF[error.option.split(".")[0]!];
  if (!flag || error.message.startsWith(flag)) return error;
  const rethrown = new InvalidOptionError(error.option, `${flag}: ${error.message}`);
  rethrown.stack = error.stack;
  return rethrown;
}

/** --memory-limit in GiB → bytes; errors name the flag. */
export function memoryLimitBytes(gib: number): number {
  if (!Number.isFinite(gib) || gib <= 0 || gib > 1 << 20) throw new InvalidOptionError("memory-limit", `--memory-limit must be a number of GiB greater than 0 and at most 1048576, got ${gib}`);
  return Math.floor(gib * 2 ** 30);
}

/** Parses a seed flag: a non-negative decimal integer, kept exact up to 2⁶⁴ − 1. */
function parseSeed(flag: string, option: string, text: string): bigint {
  const trimmed = text.trim();
  if (!/^\d+$/.test(trimmed)) throw new InvalidOptionError(option, `${flag} must be a non-negative integer (0 to 18446744073709551615), got ${JSON.stringify(text)}`);
  return BigInt(trimmed);
}

function jsonSeed(seed: bigint): number | string {
  return seed <= BigInt(Number.MAX_SAFE_INTEGER) ? Number(seed) : seed.toString();
}

function resolveFormat(args: GenerateArgs): ImageFormat {
  const fromExtension = formatFromExtension(args.out);
  const extension = extname(args.out.replaceAll("{i}", "").replaceAll("{seed}", ""));
  if (fromExtension === undefined && extension !== "" && args.format === undefined) {
    // Writing PNG bytes into x.bmp would give a file no .bmp reader can open.
    throw new InvalidOptionError("out", `--out ${args.out}: sd-trt does not write ${extension} files; use .png, .jpg, .jpeg or .webp, or give --format (png, jpeg, webp)`);
  }
  if (args.format !== undefined) {
    if (fromExtension !== undefined && fromExtension !== args.format) {
      throw new InvalidOptionError("format", `--format ${args.format} does not match the extension of --out ${args.out} (${fromExtension})`);
    }
    return args.format;
  }
  return fromExtension ?? "png";
}

/** Builds the `generate()` options from the flags (the pipeline validates the values). */
function generateOptions(args: GenerateArgs, signal: AbortSignal): GenerateOptions {
  // Prompts as arguments (`generate "a cat" "a dog"`, or after `--` when one starts with "-"), or
  // as --prompt: several give one image each.
  const positional = [...(args.prompts ?? []), ...(args._ ?? []).slice(1)].map(String);
  if (positional.length > 0 && args.prompt !== undefined) throw new UsageError("give the prompts either as arguments or with --prompt, not both");
  const prompt = positional.length > 1 ? positional : positional.length === 1 ? positional[0]! : args.prompt;
  if (prompt === undefined) throw new InvalidOptionError("prompt", "--prompt (or a positional prompt) is required");
  // A repeated --prompt (or --negative-prompt) gives one per image.
  const options: GenerateOptions = { prompt, signal };
  if (args["negative-prompt"] !== undefined) options.negativePrompt = args["negative-prompt"];
  if (args.width !== undefined) options.width = args.width;
  if (args.height !== undefined) options.height = args.height;
  if (args.steps !== undefined) options.steps = args.steps;
  if (args.guidance !== undefined) options.guidance = args.guidance;
  if (args.scheduler !== undefined) Object.assign(options, schedulerOptions(String(args.scheduler), args.schedule));
  else if (args.schedule !== undefined) options.sigmaSchedule = args.schedule;
  if (args.seed !== undefined) options.seed = parseSeed("--seed", "seed", String(args.seed));
  if (args.seeds !== undefined) options.seeds = String(args.seeds).split(",").map((s, i) => parseSeed("--seeds", `seeds[${i}]`, s));
  if (args.subseed !== undefined) {
    // A1111: image i of the call gets subseed + i.
    const subseed = parseSeed("--subseed", "subseeds", String(args.subseed));
    const count = args.seeds !== undefined ? String(args.seeds).split(",").length : (args.batch ?? 1);
    options.subseeds = Array.from({ length: count }, (_, i) => subseed + BigInt(i));
  }
  if (args["subseed-strength"] !== undefined) options.subseedStrength = args["subseed-strength"];
  if (args["seed-resize-from"] !== undefined) {
    const match = /^(\d+)x(\d+)$/.exec(String(args["seed-resize-from"]).trim());
    if (!match) throw new InvalidOptionError("seedResizeFrom", `--seed-resize-from must be WIDTHxHEIGHT in pixels (e.g. 512x768), got ${JSON.stringify(args["seed-resize-from"])}`);
    options.seedResizeFrom = { width: Number(match[1]), height: Number(match[2]) };
  }
  if (args.ensd !== undefined) options.ensd = args.ensd;
  if (args.eta !== undefined) options.eta = args.eta;
  // A1111's uni_pc_* settings, for its own UniPC in either pass (--scheduler / --hires-scheduler UniPC).
  const uniPc: NonNullable<GenerateOptions["uniPc"]> = {};
  if (args["unipc-variant"] !== undefined) uniPc.variant = args["unipc-variant"];
  if (args["unipc-skip-type"] !== undefined) uniPc.skipType = args["unipc-skip-type"];
  if (args["unipc-order"] !== undefined) uniPc.order = args["unipc-order"];
  if (args["unipc-lower-order-final"] !== undefined) uniPc.lowerOrderFinal = args["unipc-lower-order-final"];
  if (Object.keys(uniPc).length > 0) options.uniPc = uniPc;
  const hiresFlags = (
    ["hires-scale", "hires-resize", "hires-steps", "hires-upscaler", "hires-strength", "hires-prompt", "hires-negative-prompt", "hires-scheduler", "hires-schedule"] as const
  ).filter((f) => args[f] !== undefined);
  if (hiresFlags.length > 0) {
    // Any --hires-* flag turns A1111's hires fix on (scale 2, "Latent", strength 0.75 unless given).
    const hires: NonNullable<GenerateOptions["hires"]> = {};
    if (args["hires-scale"] !== undefined) hires.scale = args["hires-scale"];
    if (args["hires-steps"] !== undefined) hires.steps = args["hires-steps"];
    if (args["hires-upscaler"] !== undefined) hires.upscaler = String(args["hires-upscaler"]);
    if (args["hires-strength"] !== undefined) hires.strength = args["hires-strength"];
    if (args["hires-prompt"] !== undefined) hires.prompt = String(args["hires-prompt"]);
    if (args["hires-negative-prompt"] !== undefined) hires.negativePrompt = String(args["hires-negative-prompt"]);
    if (args["hires-scheduler"] !== undefined) {
      const sampler = schedulerOptions(String(args["hires-scheduler"]), args["hires-schedule"], HIRES_SAMPLER_FLAGS);
      hires.scheduler = sampler.scheduler!;
      if (sampler.sigmaSchedule !== undefined) hires.sigmaSchedule = sampler.sigmaSchedule;
    } else if (args["hires-schedule"] !== undefined) {
      hires.sigmaSchedule = String(args["hires-schedule"]);
    }
    if (args["hires-resize"] !== undefined) {
      const match = /^(\d+)x(\d+)$/.exec(String(args["hires-resize"]).trim());
      if (!match) throw new InvalidOptionError("hires.resizeWidth", `--hires-resize must be WIDTHxHEIGHT in pixels (0 for one keeps the aspect ratio), got ${JSON.stringify(args["hires-resize"])}`);
      hires.resizeWidth = Number(match[1]);
      hires.resizeHeight = Number(match[2]);
    }
    options.hires = hires;
  }
  if (args.batch !== undefined) options.batch = args.batch;
  if (args.rng !== undefined) options.rng = args.rng;
  if (args["init-image"] !== undefined) options.initImage = args["init-image"];
  if (args.strength !== undefined) options.strength = args.strength;
  if (args["latents-out"] !== undefined) options.returnLatents = true;
  if (args["prompt-syntax"] !== undefined) options.promptSyntax = args["prompt-syntax"];
  if (args.emphasis !== undefined) options.emphasis = args.emphasis;
  if (args["comma-padding-backtrack"] !== undefined) options.commaPaddingBacktrack = args["comma-padding-backtrack"];
  if (args["pad-cond-uncond"] !== undefined) options.padCondUncond = args["pad-cond-uncond"];
  sdxlOptions(args, options);
  if (args["clip-skip"] !== undefined) options.clipSkip = args["clip-skip"];
  if (args["sdxl-clip-l-skip"] !== undefined) options.sdxlClipLSkip = args["sdxl-clip-l-skip"];
  return options;
}

/** SDXL's flags: the second encoder's prompts and the size/crop micro-conditioning (WIDTHxHEIGHT, TOP,LEFT). */
function sdxlOptions(args: GenerateArgs, options: GenerateOptions): void {
  if (args.prompt2 !== undefined) options.prompt2 = args.prompt2;
  if (args["negative-prompt2"] !== undefined) options.negativePrompt2 = args["negative-prompt2"];
  const size = (flag: string, option: string, text: string | undefined) => {
    if (text === undefined) return undefined;
    const match = /^(\d+)x(\d+)$/.exec(String(text).trim());
    if (!match) throw new InvalidOptionError(option, `${flag} must be WIDTHxHEIGHT in pixels (e.g. 1024x1024), got ${JSON.stringify(text)}`);
    return { width: Number(match[1]), height: Number(match[2]) };
  };
  const crop = (flag: string, option: string, text: string | undefined) => {
    if (text === undefined) return undefined;
    const match = /^(\d+),(\d+)$/.exec(String(text).trim());
    if (!match) throw new InvalidOptionError(option, `${flag} must be TOP,LEFT in pixels (e.g. 0,0), got ${JSON.stringify(text)}`);
    return { top: Number(match[1]), left: Number(match[2]) };
  };
  const originalSize = size("--original-size", "originalSize", args["original-size"]);
  const cropsCoordsTopLeft = crop("--crops-coords-top-left", "cropsCoordsTopLeft", args["crops-coords-top-left"]);
  const targetSize = size("--target-size", "targetSize", args["target-size"]);
  const negativeOriginalSize = size("--negative-original-size", "negativeOriginalSize", args["negative-original-size"]);
  const negativeCropsCoordsTopLeft = crop("--negative-crops-coords-top-left", "negativeCropsCoordsTopLeft", args["negative-crops-coords-top-left"]);
  const negativeTargetSize = size("--negative-target-size", "negativeTargetSize", args["negative-target-size"]);
  if (originalSize) options.originalSize = originalSize;
  if (cropsCoordsTopLeft) options.cropsCoordsTopLeft = cropsCoordsTopLeft;
  if (targetSize) options.targetSize = targetSize;
  if (negativeOriginalSize) options.negativeOriginalSize = negativeOriginalSize;
  if (negativeCropsCoordsTopLeft) options.negativeCropsCoordsTopLeft = negativeCropsCoordsTopLeft;
  if (negativeTargetSize) options.negativeTargetSize = negativeTargetSize;
  const refinerFlags = (["refiner-switch-at", "refiner-config", "aesthetic-score", "negative-aesthetic-score"] as const).filter((f) => args[f] !== undefined);
  if (args.refiner !== undefined || refinerFlags.length > 0) {
    if (args.refiner === undefined) throw new InvalidOptionError("refiner", `--${refinerFlags[0]} needs --refiner (the refiner model folder or checkpoint)`);
    if (args["refiner-switch-at"] === undefined) throw new InvalidOptionError("refiner.switchAt", "--refiner needs --refiner-switch-at (where the refiner takes over, e.g. 0.8)");
    const refiner: NonNullable<GenerateOptions["refiner"]> = { switchAt: args["refiner-switch-at"] };
    if (args["aesthetic-score"] !== undefined) refiner.aestheticScore = args["aesthetic-score"];
    if (args["negative-aesthetic-score"] !== undefined) refiner.negativeAestheticScore = args["negative-aesthetic-score"];
    options.refiner = refiner;
  }
}

/** The flags a sampler and its schedule type come from, and the option their errors name. */
interface SamplerFlags {
  sampler: string;
  schedule: string;
  option: string;
}
const SAMPLER_FLAGS: SamplerFlags = { sampler: "--scheduler", schedule: "--schedule", option: "scheduler" };
/** Hires fix's second-pass sampler (A1111's hr_sampler_name / hr_scheduler). */
const HIRES_SAMPLER_FLAGS: SamplerFlags = { sampler: "--hires-scheduler", schedule: "--hires-schedule", option: "hires.scheduler" };

/**
 * `--scheduler` takes our names (diffusers' schedulers, k_* samplers) or an A1111 sampler name
 * ("Euler a", "DPM++ 2M", "DPM++ 2M Karras"), which selects the sampler A1111 runs; `--schedule`
 * is A1111's schedule type (a name's own " Karras" suffix wins, as in A1111).
 */
function schedulerOptions(name: string, schedule: string | undefined, flags: SamplerFlags = SAMPLER_FLAGS): Pick<GenerateOptions, "scheduler" | "sigmaSchedule"> {
  const { sampler: samplerFlag, schedule: scheduleFlag, option } = flags;
  if (canonicalSchedulerName(name) !== undefined) {
    return schedule === undefined ? { scheduler: name } : { scheduler: name, sigmaSchedule: schedule };
  }
  const selection = a1111SamplerSelection(name, schedule);
  const sampler = a1111SamplerSelection(name);
  // A k-diffusion sampler with a schedule type A1111's names do not include: the pipeline's
  // check of sigmaSchedule says what is wrong with it.
  if (selection === null && sampler?.sigmaSchedule !== undefined && schedule !== undefined) return { scheduler: sampler.scheduler, sigmaSchedule: schedule };
  if (selection === null) {
    const labels = [...KDIFFUSION_SAMPLER_NAMES.map((n) => a1111SamplerName(n)), "DDIM", "DDIM CFG++", "PLMS", "UniPC"].map((l) => JSON.stringify(l)).join(", ");
    const refused = refusedA1111SamplerReason(name);
    throw new InvalidOptionError(
      option,
      refused
        ? `${samplerFlag} ${JSON.stringify(name)} is not supported: ${refused}`
        : `${samplerFlag} must be one of ${SCHEDULER_NAMES.join(", ")} or an A1111 sampler name (${labels}, optionally with a schedule suffix such as " Karras") with a ${scheduleFlag} it takes, got ${JSON.stringify(name)}${schedule !== undefined ? ` with ${scheduleFlag} ${JSON.stringify(schedule)}` : ""}`,
    );
  }
  return selection.sigmaSchedule === undefined ? { scheduler: selection.scheduler } : { scheduler: selection.scheduler, sigmaSchedule: selection.sigmaSchedule };
}

function summary(result: GenerateResult, files: string[], latentsFile: string | undefined, pipeline: Pipeline) {
  return {
    backend: result.backend,
    backendReason: pipeline.backendReason,
    model: pipeline.modelDir,
    scheduler: result.scheduler,
    steps: result.steps,
    guidance: result.guidance,
    width: result.width,
    height: result.height,
    seeds: result.seeds.map(jsonSeed),
    randomSeed: result.randomSeed,
    images: result.images.map((image, i) => ({ file: files[i], seed: jsonSeed(image.seed), width: image.width, height: image.height, infotext: image.infotext })),
    latents: latentsFile ?? null,
    timings: result.timings,
    warnings: result.warnings,
  };
}

/**
 * Runs `sd-trt generate` with parsed flags. Throws the error to report (InvalidOptionError for
 * bad flags, AbortError on Ctrl-C, ModelFileError / OutputFileError naming the file).
 */
export async function runGenerate(args: GenerateArgs, io: CommandIo = { stdout: process.stdout, stderr: process.stderr }): Promise<void> {
  const staged = new StagedFiles();
  const controller = new AbortController();
  // First Ctrl-C: stop between steps and clean up. A second one: remove temporary files, exit now.
  const onSignal = (signal: NodeJS.Signals) => {
    if (!controller.signal.aborted) {
      if (!args.quiet) io.stderr.write(`\nsd-trt: ${signal}: stopping after the current step (again to exit at once)\n`);
      controller.abort(new AbortError(`interrupted by ${signal}`));
      return;
    }
    staged.discardSync();
    // Exit once no ONNX Runtime call is running: terminating the worker inside one aborts the
    // process (see stopBackendWorkers). The first signal already asked the loop to stop.
    void stopBackendWorkers().finally(() => process.exit(130));
  };
  process.on("SIGINT", onSignal);
  process.on("SIGTERM", onSignal);
  const progress = createProgress({ quiet: args.quiet, stream: io.stderr });
  let pipeline: Pipeline | undefined;
  try {
    const format = resolveFormat(args);
    const options = generateOptions(args, controller.signal);
    if (args.quality !== undefined && format === "png") throw new InvalidOptionError("quality", "--quality applies to --format jpeg or webp");
    // Fail on an unwritable destination before spending time on the models.
    await checkWritable(outputPath(args.out, 0, 0n, 1), "--out");
    if (args["latents-out"] !== undefined) await checkWritable(args["latents-out"], "--latents-out");

    const loadOptions: PipelineLoadOptions = { backend: args.backend, ...loraLoadOptions(args) };
    if (args["memory-limit"] !== undefined) loadOptions.memoryLimit = memoryLimitBytes(args["memory-limit"]);
    if (args.refiner !== undefined) loadOptions.refiner = await resolveModelArgument(args.refiner, refinerCheckpointArgs(args), "fp32", io.stderr, "refiner");
    if (args.engines !== undefined) loadOptions.engines = args.engines;
    if (args["refiner-engines"] !== undefined) {
      if (args.refiner === undefined) throw new InvalidOptionError("refinerEngines", "--refiner-engines needs --refiner (the refiner whose engines they are)");
      loadOptions.refinerEngines = args["refiner-engines"];
    }
    if (args.threads !== undefined) loadOptions.threads = args.threads;
    if (args["embeddings-dir"] !== undefined) loadOptions.embeddingsDir = args["embeddings-dir"];
    // The image encoder (sharp) loads while the worker thread makes the model's sessions.
    loadOptions.onWaitingForModel = preloadSharp;
    pipeline = await Pipeline.load(await resolveModelArgument(args.model, args, "fp32", io.stderr, "base"), loadOptions);
    if (!args.quiet && !args.json) io.stderr.write(`sd-trt: ${pipeline.backendName} backend (${pipeline.backendReason})\n`);

    let denoiseStarted = false;
    options.onProgress = (event) => {
      if (event.stage !== "denoise") return;
      if (!denoiseStarted) {
        denoiseStarted = true;
        // The bar counts UNet evaluations, which can exceed the steps (PNDM evaluates once
        // more, Heun twice a step): "51/51 UNet evaluations" for 50 PNDM steps, not "51/51" steps.
        progress.start("denoise", event.total, "UNet evaluations");
      }
      progress.update(event.step);
    };
    const result = await pipeline.generate(options);
    progress.stop();

    const files = outputPaths(args.out, result.images.map((image) => image.seed));
    for (const [i, image] of result.images.entries()) {
      controller.signal.throwIfAborted();
      const encoded = await encodeImage(image.rgb, image.width, image.height, {
        format,
        parameters: image.infotext,
        ...(args.quality !== undefined ? { quality: args.quality } : {}),
      });
      await staged.stage(files[i]!, encoded, "--out");
    }
    const latentsFile = args["latents-out"];
    if (latentsFile !== undefined) {
      const shape = [result.images.length, 4, result.height / 8, result.width / 8];
      await staged.stage(latentsFile, encodeNpyFloat32(result.latents!, shape), "--latents-out");
    }
    controller.signal.throwIfAborted();
    await staged.commit();

    if (args.json) {
      io.stdout.write(`${JSON.stringify(summary(result, files, latentsFile, pipeline), null, 2)}\n`);
    } else if (!args.quiet) {
      const seconds = (result.timings.total / 1000).toFixed(2);
      for (const [i, image] of result.images.entries()) io.stdout.write(`wrote ${files[i]} (seed ${image.seed}, ${image.width}x${image.height})\n`);
      if (latentsFile !== undefined) io.stdout.write(`wrote ${latentsFile} (final latents, float32 [${result.images.length}, 4, ${result.height / 8}, ${result.width / 8}])\n`);
      io.stdout.write(`${result.steps} steps of ${result.scheduler} on ${result.backend} in ${seconds} s\n`);
      for (const warning of result.warnings) io.stderr.write(`sd-trt: warning: ${warning}\n`);
    }
  } catch (error) {
    progress.stop();
    await staged.discard();
    // An abort surfaces as the reason we gave, whichever stage noticed it.
    if (controller.signal.aborted) throw controller.signal.reason;
    if (error instanceof InvalidOptionError) throw flagError(error);
    throw error;
  } finally {
    // The handlers stay until the worker is gone: a second signal during the dispose still
    // exits 130 through onSignal instead of the default action killing the process.
    await pipeline?.dispose();
    process.off("SIGINT", onSignal);
    process.off("SIGTERM", onSignal);
  }
}

const command: CommandModule<object, GenerateArgs> = {
  command: "generate [prompts..]",
  describe: "Generate images from a prompt (img2img with --init-image)",
  builder: (yargs: Argv) =>
    yargs
      .positional("prompts", {
        type: "string",
        array: true,
        describe: 'The prompt (or use --prompt); several prompts give one image each. Quote a prompt with spaces; put one that starts with "-" after --: generate -- "-prompt"',
      })
      .option("prompt", { alias: "p", type: "string", describe: "The prompt; repeat it for one prompt per image" })
      .option("negative-prompt", { alias: "n", type: "string", describe: "What to steer away from (with guidance > 1); repeat it for one per image" })
      .option("prompt2", { type: "string", describe: "SDXL: the prompt for the second text encoder (prompt_2; default: the prompt); repeat it for one per image" })
      .option("negative-prompt2", { type: "string", describe: "SDXL: the negative prompt for the second text encoder (negative_prompt_2; default: the negative prompt)" })
      .option("original-size", { type: "string", describe: "SDXL micro-conditioning original_size, WIDTHxHEIGHT (default: the image size)" })
      .option("crops-coords-top-left", { type: "string", describe: "SDXL micro-conditioning crops_coords_top_left, TOP,LEFT (default 0,0)" })
      .option("target-size", { type: "string", describe: "SDXL micro-conditioning target_size, WIDTHxHEIGHT (default: the image size)" })
      .option("negative-original-size", { type: "string", describe: "SDXL: original_size of the uncond rows, WIDTHxHEIGHT (with --negative-target-size)" })
      .option("negative-crops-coords-top-left", { type: "string", describe: "SDXL: crops_coords_top_left of the uncond rows, TOP,LEFT" })
      .option("negative-target-size", { type: "string", describe: "SDXL: target_size of the uncond rows, WIDTHxHEIGHT (with --negative-original-size)" })
      .option("refiner", { type: "string", describe: "SDXL: a refiner that finishes the base's generation (with --refiner-switch-at): a model folder, or a checkpoint (.safetensors file, diffusers folder) converted once into the model cache" })
      .option("refiner-config", { type: "string", describe: "A diffusers folder whose configs describe a single-file --refiner (as --model-config for --model)" })
      .option("refiner-switch-at", { type: "number", describe: "SDXL refiner: where it takes over, (0, 1) (the base's denoising_end, the refiner's denoising_start)" })
      .option("aesthetic-score", { type: "number", describe: "SDXL refiner: aesthetic_score time id (default 6)" })
      .option("negative-aesthetic-score", { type: "number", describe: "SDXL refiner: negative_aesthetic_score time id (default 2.5)" })
      .option("model", { type: "string", default: defaultModelDir, defaultDescription: "the tiny test model in models/tiny-sd", describe: "Model folder (optimum ONNX layout or TensorRT demo names), or a checkpoint to convert once: a .safetensors file or a diffusers folder" })
      .options(checkpointOptions())
      .option("backend", { choices: BACKEND_CHOICES, default: "auto" as BackendChoice, describe: "Inference backend: TensorRT engines, the ONNX Runtime CPU backend, or auto (TensorRT when usable)" })
      .option("refiner-engines", { type: "string", describe: "Folder of the refiner's TensorRT engines (sd-trt build --model <refiner>; default: the refiner's own engine folder, not --engines)" })
      .option("engines", { type: "string", describe: "Folder of TensorRT engines built by sd-trt build (tensorrt backend)" })
      .option("threads", { type: "number", describe: "ONNX Runtime threads (cpu backend; default: physical cores)" })
      .option("memory-limit", { type: "number", describe: "Most memory (GiB) one generation may need on the cpu backend; larger requests are refused before they run (default: this machine's memory)" })
      .options(loraCliOptions())
      .option("steps", { type: "number", describe: "Denoising steps, 1-1000 (default 50); some schedulers take fewer (pndm, SD 1.x's default, at most 999)" })
      .option("guidance", { type: "number", describe: "Classifier-free guidance scale, 0-100; ≤ 1 turns guidance off (default 7.5)" })
      .option("scheduler", { type: "string", describe: "diffusers' lms, euler, euler_a, ddim, pndm, dpmpp_2m, dpmpp_2m_karras, heun, ddpm, unipc; A1111's samplers by name (\"Euler a\", \"DPM++ 2M\", \"DDIM\", \"UniPC\", …) or k_* / a1111_* name (default: the model's scheduler config)" })
      .option("schedule", { type: "string", describe: "A1111 schedule type for its samplers: automatic, uniform, karras, exponential, polyexponential, sgm_uniform, kl_optimal, align_your_steps, simple, normal, ddim (default automatic)" })
      .option("subseed", { type: "string", describe: "A1111 variation seed of the first image (image i gets subseed + i); needs --seeds" })
      .option("subseed-strength", { type: "number", describe: "A1111 variation strength, 0-1 (default 0)" })
      .option("seed-resize-from", { type: "string", describe: "A1111 \"resize seed from\" size, WIDTHxHEIGHT pixels" })
      .option("hires-scale", { type: "number", describe: "A1111 hires fix: upscale factor of the second pass (> 1; default 2 when another --hires-* flag is given)" })
      .option("hires-resize", { type: "string", describe: "A1111 hires fix: second-pass size WIDTHxHEIGHT instead of a scale (hr_resize_x/y)" })
      .option("hires-prompt", { type: "string", describe: "A1111 hires fix: the second pass's prompt (hr_prompt; default: --prompt)" })
      .option("hires-negative-prompt", { type: "string", describe: "A1111 hires fix: the second pass's negative prompt (hr_negative_prompt; default: --negative-prompt)" })
      .option("hires-scheduler", { type: "string", describe: "A1111 hires fix: the second pass's sampler, any of A1111's own (k_*, DDIM, DDIM CFG++, PLMS, UniPC) by key or A1111 name (hr_sampler_name; default: --scheduler)" })
      .option("hires-schedule", { type: "string", describe: "A1111 hires fix: the second pass's schedule type (hr_scheduler; default: --schedule)" })
      .option("hires-steps", { type: "number", describe: "A1111 hires fix: second-pass steps (default: --steps)" })
      .option("hires-upscaler", { type: "string", describe: "A1111 hires fix: latent upscaler: Latent, \"Latent (antialiased)\", \"Latent (bicubic)\", \"Latent (bicubic antialiased)\", \"Latent (nearest)\", \"Latent (nearest-exact)\" (default Latent)" })
      .option("hires-strength", { type: "number", describe: "A1111 hires fix: second-pass denoising strength (default 0.75)" })
      .option("eta", { type: "number", describe: "A1111 eta: noise of the ancestral and SDE samplers, DPM fast, DDIM and DDIM CFG++ (A1111's default for each when left out)" })
      .option("ensd", { type: "number", describe: "A1111 eta noise seed delta (ENSD): re-seeds each image's generator with seed + ENSD after the initial noise" })
      .option("unipc-variant", { type: "string", describe: "A1111's UniPC (--scheduler UniPC): uni_pc_variant bh1, bh2 or vary_coeff (default bh1)" })
      .option("unipc-skip-type", { type: "string", describe: "A1111's UniPC: uni_pc_skip_type time_uniform, time_quadratic or logSNR (default time_uniform)" })
      .option("unipc-order", { type: "number", describe: "A1111's UniPC: uni_pc_order, 1-15 (default 3; needs at least that many steps)" })
      .option("unipc-lower-order-final", { type: "boolean", describe: "A1111's UniPC: uni_pc_lower_order_final (default true)" })
      .option("seed", { type: "string", describe: "One seed for the batch (one generator, diffusers semantics); random when absent" })
      .option("seeds", { type: "string", describe: "One seed per image, comma-separated (one generator each, A1111 semantics)" })
      .option("batch", { type: "number", describe: "Images to generate (default: the number of --seeds, else 1)" })
      .option("rng", { choices: RNG_SOURCES, describe: "Noise source: cpu (torch CPU) or nv (torch CUDA / A1111 NV) (default cpu)" })
      .option("width", { type: "number", describe: "Width in pixels, a multiple of what the model's UNet takes (8 · 2 per downsampling: 64 for SD 1.x, 16 for the tiny model) (default: the model's native size)" })
      .option("height", { type: "number", describe: "Height in pixels, a multiple like --width (default: the model's native size)" })
      .option("init-image", { type: "string", describe: "img2img: the starting image (any format sharp reads)" })
      .option("strength", { type: "number", describe: "img2img: how much to change the init image, (0, 1] (default 0.8); with A1111 samplers A1111's denoising strength" })
      .option("out", { alias: "o", type: "string", default: "out.png", describe: "Output file (.png, .jpg, .jpeg, .webp); {i} = image index, {seed} = its seed; else -<i> is added for several images" })
      .option("format", { choices: IMAGE_FORMATS, describe: "Image format (default: from the --out extension, else png)" })
      .option("quality", { type: "number", describe: "JPEG/WebP quality, 1-100" })
      .option("latents-out", { type: "string", describe: "Also write the final latents as a NumPy .npy file (float32 [B,4,H/8,W/8])" })
      .option("prompt-syntax", { choices: PROMPT_SYNTAXES, describe: "a1111: (x:1.2), [x], BREAK and long prompts, read as A1111 reads them; plain: literal text cut at 77 tokens, as diffusers (default a1111)" })
      .option("emphasis", { choices: EMPHASIS_MODES, describe: "A1111's emphasis: original (weights, then the mean restored), no-norm, ignore (parse, no weights), none (no parsing) (default original)" })
      .option("comma-padding-backtrack", { type: "number", describe: "A1111's comma_padding_backtrack: move a chunk boundary back to a comma this many tokens away, 0-74 (default 20)" })
      .option("pad-cond-uncond", { type: "boolean", describe: "A1111's pad_cond_uncond: pad the shorter of prompt and negative prompt with empty chunks (one UNet call) instead of two UNet calls (default false)" })
      .option("embeddings-dir", { type: "string", describe: "A folder of A1111 textual-inversion embeddings (.safetensors): a prompt word equal to a file's name uses its vectors (cpu backend)" })
      .option("clip-skip", { type: "number", describe: "A1111's clip skip: condition on the text encoder's layer N from the end (through its final layer norm), 1 to its layer count (default 1)" })
      .option("sdxl-clip-l-skip", { type: "boolean", describe: "SDXL: A1111's \"Clip skip SDXL\" (sdxl_clip_l_skip): --clip-skip N takes CLIP-L's hidden_states[-N] (no final norm); false: clip skip has no effect on SDXL, as in A1111 (cpu backend)" })
      .option("quiet", { alias: "q", type: "boolean", default: false, describe: "No progress or summary output" })
      .option("json", { type: "boolean", default: false, describe: "Print a JSON summary on stdout" }) as unknown as Argv<GenerateArgs>,
  handler: async (argv: ArgumentsCamelCase<GenerateArgs>) => {
    await runGenerate(argv);
  },
};

export default command;
