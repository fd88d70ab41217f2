/**
 * `sd-trt convert <checkpoint.safetensors | diffusers-folder> --out DIR [--dtype fp16|fp32]
 * [--lora FILE[:SCALE]]…`: writes the ONNX model folder every other command takes as `--model`
 * (lib/convert), with the LoRAs merged into its weights (lib/convert/lora/checkpoint.ts). Nothing is
 * left at DIR unless the whole folder was written; Ctrl-C stops between graphs and cleans up.
 */
import { resolve } from "node:path";
import type { ArgumentsCamelCase, Argv, CommandModule } from "yargs";
import type { GraphDtype } from "../../convert/index.js";
import { parseLoraSpec } from "../../convert/lora/set.js";
import { createProgress } from "../shared/progress.js";
import { type CheckpointArgs, checkpointOptions, checkpointReadOptions, conversionProgress, withConversionSignals } from "../shared/model-source.js";

export interface ConvertArgs extends CheckpointArgs {
  checkpoint: string;
  out: string;
  dtype: GraphDtype;
  quiet: boolean;
  json: boolean;
  lora?: string[];
}

/** Runs `sd-trt convert`. @throws ModelFileError / OutputFileError naming the file, AbortError on Ctrl-C. */
export async function runConvert(args: ConvertArgs, stderr: NodeJS.WriteStream = process.stderr, stdout: NodeJS.WritableStream = process.stdout): Promise<void> {
  // Checked before anything is read: a typo in --lora fails at once.
  const loras = (args.lora ?? []).map((value) => parseLoraSpec(value));
  const log = args.quiet ? () => {} : (line: string) => stderr.write(`sd-trt: ${line}\n`);
  const progress = createProgress({ quiet: args.quiet, stream: stderr });
  const started = performance.now();
  // Loaded here, not at start-up: every other command skips the converter's modules (~85 ms of imports).
  const [{ convertCheckpoint }, { checkpointWithLoras }] = await Promise.all([import("../../convert/index.js"), import("../../convert/lora/checkpoint.js")]);
  const result = await withConversionSignals(
    (signal, onTemporaryPath) =>
      convertCheckpoint(args.checkpoint, resolve(args.out), {
        ...checkpointReadOptions(args),
        dtype: args.dtype,
        signal,
        onTemporaryPath,
        onProgress: conversionProgress(progress, log),
        ...(loras.length > 0 ? { transform: (source) => checkpointWithLoras(source, loras) } : {}),
      }),
    log,
  ).finally(() => progress.stop());
  const seconds = ((performance.now() - started) / 1000).toFixed(1);
  if (args.json) stdout.write(`${JSON.stringify({ ...result, seconds: Number(seconds) }, null, 2)}\n`);
  else log(`wrote ${result.dir} (${args.dtype}) from ${args.checkpoint} in ${seconds} s`);
}

const command: CommandModule<object, ConvertArgs> = {
  command: "convert <checkpoint>",
  describe: "Convert a .safetensors checkpoint or a diffusers folder into an ONNX model folder",
  builder: (yargs: Argv) =>
    yargs
      .positional("checkpoint", { type: "string", demandOption: true, describe: "A single-file .safetensors checkpoint (SD 1.x, 2.x, SDXL base or refiner) or a diffusers folder; pickles (.ckpt, .pt, .bin) are refused" })
      .option("out", { type: "string", demandOption: true, describe: "The model folder to write (must not exist)" })
      .option("dtype", { choices: ["fp16", "fp32"] as const, default: "fp16" as const, describe: "Precision of the graphs' weights and arithmetic (fp16 for TensorRT, fp32 for the CPU backend's exact results)" })
      .option("quiet", { type: "boolean", default: false, describe: "No progress output" })
      .option("json", { type: "boolean", default: false, describe: "Print what was written as JSON" })
      .option("lora", { type: "string", array: true, describe: "A LoRA (.safetensors, kohya/A1111 or diffusers/PEFT) merged into the written weights, FILE or FILE:SCALE (default scale 1); repeatable" })
      .options(checkpointOptions()) as unknown as Argv<ConvertArgs>,
  handler: async (argv: ArgumentsCamelCase<ConvertArgs>) => {
    await runConvert(argv);
  },
};

export default command;
