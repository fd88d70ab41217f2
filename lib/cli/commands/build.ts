/**
 * `sd-trt build`: builds the TensorRT engines of a model folder for this GPU (engines/README.md).
 *
 *   sd-trt build --model DIR --out engines/NAME [--batch 1-4] [--size 512x512 | --width W --height H]
 *                [--dynamic] [--max-prompt-chunks K] [--fp32-vae] [--refittable] [--timing-cache FILE] [--force]
 *
 * Progress goes to stderr; Ctrl-C cancels the build through TensorRT's progress monitor (a second
 * Ctrl-C quits at once) and leaves the previous engines as they were. Without TensorRT (or a GPU)
 * it prints what is missing and what to do, writes nothing, and exits 1.
 */
import { basename, resolve } from "node:path";
import type { ArgumentsCamelCase, Argv, CommandModule } from "yargs";
import { buildEngines, type BuildEvent } from "../../backends/tensorrt/build.js";
import { parseShapeOptions, shapesForModel } from "../../backends/tensorrt/profiles.js";
import { engineTitle } from "../../backends/tensorrt/layout.js";
import type { ModelFolder } from "../../model/folder.js";
import { defaultModelDir } from "../../package-info.js";
import { type CheckpointArgs, checkpointOptions, resolveModelArgument } from "../shared/model-source.js";

export interface BuildArgs extends CheckpointArgs {
  model: string;
  out?: string;
  batch: string;
  size?: string;
  width?: string;
  height?: string;
  dynamic: boolean;
  maxPromptChunks: number;
  "fp32-vae": boolean;
  refittable: boolean;
  "timing-cache"?: string;
  force: boolean;
  "optimization-level"?: number;
  device: number;
  json: boolean;
}

function mib(bytes: number): string {
  return `${(bytes / 2 ** 20).toFixed(1)} MiB`;
}

/** Turns build events into progress lines on stderr (one updating line on a terminal). */
export class BuildReporter {
  #line = "";
  constructor(private readonly stream: NodeJS.WriteStream = process.stderr) {}

  #print(text: string): void {
    this.#clear();
    this.stream.write(`${text}\n`);
  }

  #status(text: string): void {
    if (!this.stream.isTTY) return;
    const width = Math.max(20, (this.stream.columns ?? 100) - 1);
    this.#line = text.length > width ? `${text.slice(0, width - 1)}…` : text;
    this.stream.write(`\r\x1b[2K${this.#line}`);
  }

  #clear(): void {
    if (this.#line && this.stream.isTTY) this.stream.write("\r\x1b[2K");
    this.#line = "";
  }

  event(event: BuildEvent): void {
    switch (event.type) {
      case "plan":
        this.#print(`Building ${event.roles.length} engines into ${event.variantDir} (timing cache ${event.timingCache})`);
        break;
      case "up-to-date":
        this.#print(`The engines in ${event.variantDir} are up to date (same model files, shapes, GPU and TensorRT); --force rebuilds them`);
        break;
      case "model-start":
        this.#print(
          `[${event.index + 1}/${event.total}] ${engineTitle(event.role)}: ${event.onnx}` +
            `${event.conversion === "fp32-to-fp16" ? ", converting fp32 → fp16" : event.conversion === "fp32-to-fp16-fp32-attention" ? ", converting fp32 → fp16 with fp32 attention scores (upcast_attention)" : ""}` +
            `${event.fp32Reason ? `, fp32 (${event.fp32Reason})` : ""}, ${event.profiles} optimization profile${event.profiles === 1 ? "" : "s"}`,
        );
        break;
      case "converted": {
        const r = event.report;
        const kept = Object.entries(r.fp32ByOp)
          .map(([op, n]) => `${op} ${n}`)
          .join(", ");
        this.#print(`      fp16: ${r.fp16Nodes} nodes fp16, ${r.fp32Nodes} kept fp32 (${kept || "none"}), ${r.castsInserted} casts` + (r.valuesClamped ? `, ${r.valuesClamped} weights clamped to ±65504` : ""));
        break;
      }
      case "builder": {
        const p = event.progress;
        if (p.kind === "start" && p.parent === null) this.#print(`      ${p.phase}`);
        else if (p.kind === "step") this.#status(`      ${p.phase}: step ${p.step}`);
        else if (p.kind === "start" && p.steps > 0) this.#status(`      ${p.phase} (${p.steps} steps)`);
        break;
      }
      case "model-done":
        this.#print(`      done in ${event.seconds.toFixed(1)} s: ${mib(event.planBytes)}${event.warnings ? `, ${event.warnings} TensorRT warnings` : ""}`);
        break;
      case "warning":
        this.#print(`warning: ${event.message}`);
        break;
      case "done":
        this.#print(`Built in ${event.seconds.toFixed(1)} s (${event.engines.map((e) => `${engineTitle(e.role)} ${e.seconds.toFixed(1)} s`).join(", ")})`);
        break;
    }
  }

  finish(): void {
    this.#clear();
  }
}

const command: CommandModule<object, BuildArgs> = {
  command: "build",
  describe: "Build the TensorRT engines of a model folder for this GPU (fp16, optimization profiles, timing cache, manifest)",
  builder: (yargs: Argv) =>
    yargs
      .option("model", { type: "string", default: defaultModelDir, defaultDescription: "the tiny test model in models/tiny-sd", describe: "Model folder (optimum or TensorRT demo ONNX layout), or a checkpoint to convert once to fp16 graphs (.safetensors file, diffusers folder)" })
      .options(checkpointOptions())
      .option("out", { type: "string", describe: "Engine folder engines/<name> (default: engines/<model folder name>); plans go to <out>/<gpu-sm>-trt<version>/" })
      .option("batch", { type: "string", default: "1", describe: "Images per call: N or a range N-M (static: one profile per batch size)" })
      .option("size", { type: "string", describe: "Image size WxH, or a range WxH-WxH with --dynamic (default 512x512; SDXL: 640x640-1536x1536 dynamic, optimised for 1024x1024)" })
      .option("width", { type: "string", describe: "Image width N or N-M (with --height, instead of --size)" })
      .option("height", { type: "string", describe: "Image height N or N-M (with --width, instead of --size)" })
      .option("dynamic", { type: "boolean", default: false, describe: "One dynamic-shape profile over the ranges instead of static profiles" })
      .option("max-prompt-chunks", { type: "number", default: 3, describe: "Longest prompt in 75-token chunks (A1111's long prompts; the UNet's text length is up to 77 × this), 1-32" })
      .option("fp32-vae", { type: "boolean", default: false, describe: "Build the VAE in fp32 (the fp16 SD VAE can overflow to NaN)" })
      .option("refittable", { type: "boolean", default: false, describe: "Build the text encoder(s) and UNet refittable, so LoRAs (--lora) are applied by refitting their weights" })
      .option("timing-cache", { type: "string", describe: "Timing cache file (default: engines/timing-<gpu-sm>-trt<version>.cache)" })
      .option("force", { type: "boolean", default: false, describe: "Rebuild even when the engines are up to date" })
      .option("optimization-level", { type: "number", describe: "TensorRT builder optimization level 0-5 (default 3)" })
      .option("device", { type: "number", default: 0, describe: "CUDA device index" })
      .option("json", { type: "boolean", default: false, describe: "Print the manifest as JSON on stdout" }) as unknown as Argv<BuildArgs>,
  handler: async (argv: ArgumentsCamelCase<BuildArgs>) => {
    // Every option is checked (with its name in the message) before anything is loaded or written.
    const shapeOptions = {
      batch: argv.batch,
      ...(argv.size !== undefined ? { size: argv.size } : {}),
      ...(argv.width !== undefined ? { width: argv.width } : {}),
      ...(argv.height !== undefined ? { height: argv.height } : {}),
      dynamic: argv.dynamic,
      maxPromptChunks: argv.maxPromptChunks,
    };
    parseShapeOptions(shapeOptions);
    // Without a size the model picks it (SDXL: 640…1536 dynamic, optimised for 1024²; else 512²).
    const shapes = (folder: ModelFolder) => shapesForModel(shapeOptions, folder);
    // A checkpoint is converted (once, into the model cache) to the fp16 graphs TensorRT takes as they are.
    const model = await resolveModelArgument(argv.model, argv, "fp16");
    const out = argv.out ?? resolve("engines", basename(resolve(model)));
    const controller = new AbortController();
    let interrupts = 0;
    const onSigint = () => {
      interrupts++;
      if (interrupts === 1) {
        process.stderr.write("\nCancelling the build (Ctrl-C again to quit at once)…\n");
        controller.abort();
      } else {
        process.exit(130);
      }
    };
    process.on("SIGINT", onSigint);
    const reporter = new BuildReporter();
    try {
      const result = await buildEngines({
        model,
        out,
        shapes,
        fp32Vae: argv["fp32-vae"],
        refittable: argv.refittable,
        force: argv.force,
        device: argv.device,
        ...(argv["timing-cache"] !== undefined ? { timingCache: argv["timing-cache"] } : {}),
        ...(argv["optimization-level"] !== undefined ? { optimizationLevel: argv["optimization-level"] } : {}),
        signal: controller.signal,
        onProgress: (event) => reporter.event(event),
      });
      reporter.finish();
      if (argv.json) {
        process.stdout.write(`${JSON.stringify(result.manifest, null, 2)}\n`);
      } else if (!result.upToDate) {
        process.stderr.write(`Engines written to ${result.variantDir}\n`);
      }
    } finally {
      reporter.finish();
      process.off("SIGINT", onSigint);
    }
  },
};

export default command;
