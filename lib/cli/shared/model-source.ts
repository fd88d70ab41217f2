/**
 * `--model` for every command that runs a model (generate, serve, bench, build): an ONNX model
 * folder is used as it is; a checkpoint (`.safetensors` file, diffusers folder) is converted once
 * into the model cache (lib/convert/cache.ts) and the converted folder used. One resolver, one set
 * of options (`--cache-dir`, `--model-config`, `--prediction-type`, `--upcast-attention`), shared
 * with `sd-trt convert`. `generate --refiner` takes the same kinds of paths through the same resolver
 * and cache (its configs from `--refiner-config`).
 */
import { rmSync } from "node:fs";
import { stat } from "node:fs/promises";
import { extname, join, resolve } from "node:path";
import type { Options } from "yargs";
import type { ConvertEvent, ConvertOptions, GraphDtype } from "../../convert/index.js";
import { AbortError, InvalidOptionError } from "../../errors.js";
import { PICKLE_EXTENSIONS } from "../../model/pickle.js";
import { defaultModelCacheDir } from "../../package-info.js";
import { createProgress, type ProgressDisplay } from "./progress.js";

export interface CheckpointArgs {
  "cache-dir"?: string;
  "model-config"?: string;
  "prediction-type"?: "epsilon" | "v_prediction";
  "upcast-attention"?: boolean;
}

/** The yargs options of checkpoint reading (`.options(checkpointOptions())`). */
export function checkpointOptions(): Record<keyof CheckpointArgs, Options> {
  return {
    "cache-dir": { type: "string", describe: "Where --model checkpoints are converted to, once (default: $SDTRT_CACHE_DIR or the user's cache folder, sd-trt/models)" },
    "model-config": { type: "string", describe: "A diffusers folder whose configs describe a single-file checkpoint (as diffusers' from_single_file config=); by default they are derived from its shapes" },
    "prediction-type": { choices: ["epsilon", "v_prediction"], describe: "Override the detected prediction type of a checkpoint (SD 2.x files default to v_prediction; SD 2.x base 512 models are epsilon)" },
    "upcast-attention": { type: "boolean", describe: "Override whether a checkpoint's UNet computes attention scores in fp32 (default: on for SD 2.x, off for SD 1.x)" },
  };
}

/** The reading options the flags give. */
export function checkpointReadOptions(args: CheckpointArgs): Pick<ConvertOptions, "configFolder" | "predictionType" | "upcastAttention"> {
  return {
    ...(args["model-config"] !== undefined ? { configFolder: args["model-config"] } : {}),
    ...(args["prediction-type"] !== undefined ? { predictionType: args["prediction-type"] } : {}),
    ...(args["upcast-attention"] !== undefined ? { upcastAttention: args["upcast-attention"] } : {}),
  };
}

const exists = (path: string) => stat(path).then(() => true, () => false);

/**
 * True when `model` is a checkpoint to convert: a `.safetensors` file (or a pickle, to be refused
 * with its own message), or a diffusers folder (a `unet/config.json` and no `unet/model.onnx`).
 * An ONNX model folder, another file, or a path that does not exist is left to the model-folder
 * reader and its messages.
 */
export async function isCheckpoint(model: string): Promise<boolean> {
  const info = await stat(model).catch(() => undefined);
  if (info === undefined) return false;
  if (info.isFile()) {
    const extension = extname(model).toLowerCase();
    return extension === ".safetensors" || PICKLE_EXTENSIONS.includes(extension);
  }
  return (await exists(join(model, "unet", "config.json"))) && !(await exists(join(model, "unet", "model.onnx")));
}

/** Shows a conversion's progress on a ProgressDisplay: the hash in MB, then each graph. */
export function conversionProgress(progress: ProgressDisplay, log: (line: string) => void): (event: ConvertEvent) => void {
  let hashing = false;
  return (event) => {
    if (event.stage === "hash") {
      if (!hashing) progress.start("hashing (sha256)", Math.max(1, Math.round(event.total / 2 ** 20)), "MB");
      hashing = true;
      progress.update(Math.round(event.bytes / 2 ** 20));
    } else if (event.stage === "graph") {
      if (hashing) progress.stop();
      hashing = false;
      log(`converting: ${event.graph} (${event.index + 1}/${event.count})`);
    }
  };
}

/**
 * Runs `work` with Ctrl-C/SIGTERM handled for a conversion: the first signal stops it between
 * graphs (it cleans up and rejects with an AbortError), a second removes the temporary folder at
 * once and exits with 130.
 */
export async function withConversionSignals<T>(work: (signal: AbortSignal, onTemporaryPath: (path: string) => void) => Promise<T>, log: (line: string) => void): Promise<T> {
  const controller = new AbortController();
  const temporaries: string[] = [];
  const onSignal = (signal: NodeJS.Signals) => {
    if (!controller.signal.aborted) {
      log(`${signal}: stopping the conversion (again to exit at once)`);
      controller.abort(new AbortError(`interrupted by ${signal}`));
      return;
    }
    for (const path of temporaries) rmSync(path, { recursive: true, force: true });
    process.exit(130);
  };
  process.on("SIGINT", onSignal);
  process.on("SIGTERM", onSignal);
  try {
    return await work(controller.signal, (path) => temporaries.push(path));
  } finally {
    process.off("SIGINT", onSignal);
    process.off("SIGTERM", onSignal);
  }
}

/**
 * What a command runs the checkpoint as: `base` (generate and serve's `--model`: an SDXL refiner is
 * refused), `refiner` (generate's `--refiner`: only an SDXL refiner), or either (build, bench, convert).
 */
export type CheckpointRole = "base" | "refiner";

/** The flags that resolve `--refiner`: the same cache, the refiner's own config folder; the base's overrides do not apply. */
export function refinerCheckpointArgs(args: CheckpointArgs & { "refiner-config"?: string; quiet?: boolean }): CheckpointArgs & { quiet?: boolean } {
  return {
    ...(args["cache-dir"] !== undefined ? { "cache-dir": args["cache-dir"] } : {}),
    ...(args["refiner-config"] !== undefined ? { "model-config": args["refiner-config"] } : {}),
    ...(args.quiet !== undefined ? { quiet: args.quiet } : {}),
  };
}

/**
 * Refuses a checkpoint read as the wrong kind for `role`, before anything is hashed or converted
 * (reading a checkpoint reads its header and configs only).
 * @throws InvalidOptionError naming the flag, the file and what it is.
 */
async function checkRole(model: string, args: CheckpointArgs, role: CheckpointRole): Promise<void> {
  const { readCheckpoint } = await import("../../convert/checkpoint/index.js");
  // A checkpoint that cannot be read is left to the conversion, which reports why (one place for those messages).
  const source = await readCheckpoint(model, checkpointReadOptions(args)).catch(() => undefined);
  if (source === undefined) return;
  const isRefiner = source.refiner === true;
  if (role === "base" && isRefiner) {
    throw new InvalidOptionError("model", `--model ${model} is an SDXL refiner checkpoint (text_encoder_2 alone, aesthetic-score time ids): it finishes a base model's generation; pass an SDXL base as --model and this one as --refiner`);
  }
  if (role === "refiner" && !isRefiner) {
    const kind = source.family === "sdxl" ? "an SDXL base" : source.family === "sd2" ? "an SD 2.x" : "an SD 1.x";
    throw new InvalidOptionError("refiner", `--refiner ${model} is ${kind} checkpoint, not an SDXL refiner (text_encoder_2 alone, aesthetic-score time ids)`);
  }
}

/**
 * The model folder `--model` (or `--refiner`) names: itself, or the cached conversion of the checkpoint it names.
 * @param dtype the graphs' precision: fp32 for ONNX Runtime (exact), fp16 for TensorRT builds.
 * @param role when given, a checkpoint of the other kind is refused before it is converted.
 */
export async function resolveModelArgument(model: string, args: CheckpointArgs & { quiet?: boolean }, dtype: GraphDtype, stderr: NodeJS.WriteStream = process.stderr, role?: CheckpointRole): Promise<string> {
  if (!(await isCheckpoint(model))) return model;
  if (role !== undefined) await checkRole(model, args, role);
  // Loaded only for a checkpoint: a model folder skips the converter's modules (~85 ms of imports).
  const { cachedConversion } = await import("../../convert/cache.js");
  const log = args.quiet ? () => {} : (line: string) => stderr.write(`sd-trt: ${line}\n`);
  const progress = createProgress({ quiet: args.quiet ?? false, stream: stderr });
  const cacheDir = resolve(args["cache-dir"] ?? defaultModelCacheDir());
  const cached = await withConversionSignals(
    (signal, onTemporaryPath) =>
      cachedConversion(model, cacheDir, { ...checkpointReadOptions(args), dtype, signal, onTemporaryPath, onProgress: conversionProgress(progress, log) }),
    log,
  ).finally(() => progress.stop());
  log(cached.converted ? `converted ${model} into ${cached.dir}` : `using ${cached.dir} (converted from ${model})`);
  return cached.dir;
}
