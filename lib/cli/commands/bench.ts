/**
 * `sd-trt bench`: warm-up runs, then timed generations per batch size × size × step count, with
 * per-stage times, it/s, images/s, p50/p90/p99, peak RSS (GPU memory on TensorRT), the ONNX
 * Runtime overhead ratio on the CPU backend; a table on stdout, or the JSON report with `--json`.
 */
import { checkWritable, StagedFiles } from "../shared/staged-files.js";
import type { ArgumentsCamelCase, Argv, CommandModule } from "yargs";
import { InvalidOptionError } from "../../errors.js";
import { defaultModelDir } from "../../package-info.js";
import { formatBenchReport } from "../../bench/report.js";
import { runBench, type BenchSize } from "../../bench/run-bench.js";
import { type CheckpointArgs, checkpointOptions, resolveModelArgument } from "../shared/model-source.js";

interface BenchArgs extends CheckpointArgs {
  model: string;
  backend: "cpu" | "tensorrt" | "auto";
  engines?: string;
  threads?: number;
  batch: string;
  size?: string;
  steps: string;
  warmup: number;
  runs: number;
  scheduler?: string;
  guidance: number;
  prompt?: string;
  rng: "cpu" | "nv";
  graphs: boolean;
  json: boolean;
  out?: string;
}

/** "1,2,4" → [1, 2, 4]; errors name the flag. */
export function parseIntegerList(flag: string, text: string): number[] {
  const parts = String(text).split(",").map((s) => s.trim());
  const values = parts.map(Number);
  if (parts.length === 0 || parts.some((p) => p === "") || values.some((v) => !Number.isInteger(v) || v < 1)) {
    throw new InvalidOptionError(flag, `--${flag} must be a comma-separated list of positive integers, e.g. 1,2,4; got ${JSON.stringify(text)}`);
  }
  return values;
}

/** "512x512,768x512" or "512" (square) → sizes; errors name --size. */
export function parseSizeList(text: string): BenchSize[] {
  return String(text)
    .split(",")
    .map((part) => {
      const match = /^\s*(\d+)(?:\s*[x×]\s*(\d+))?\s*$/.exec(part);
      if (!match) throw new InvalidOptionError("size", `--size must be a comma-separated list of WIDTHxHEIGHT (or one number for a square), e.g. 512x512,768x512; got ${JSON.stringify(text)}`);
      const width = Number(match[1]);
      return { width, height: match[2] === undefined ? width : Number(match[2]) };
    });
}

const command: CommandModule<object, BenchArgs> = {
  command: "bench",
  describe: "Benchmark generation: per-stage times, it/s, images/s, latency percentiles, memory",
  builder: (yargs: Argv) =>
    yargs
      .option("model", { type: "string", default: defaultModelDir, defaultDescription: "the tiny test model in models/tiny-sd", describe: "Model folder, or a checkpoint to convert once (.safetensors file, diffusers folder)" })
      .options(checkpointOptions())
      .option("backend", { choices: ["cpu", "tensorrt", "auto"] as const, default: "auto" as const, describe: "Inference backend" })
      .option("engines", { type: "string", describe: "TensorRT engine folder (tensorrt backend)" })
      .option("threads", { type: "number", describe: "ONNX Runtime threads (cpu backend)" })
      .option("batch", { type: "string", default: "1", describe: "Batch sizes, comma-separated (e.g. 1,2,4)" })
      .option("size", { type: "string", describe: "Image sizes WIDTHxHEIGHT, comma-separated (default: the model's native size)" })
      .option("steps", { type: "string", default: "20", describe: "Step counts, comma-separated" })
      .option("warmup", { type: "number", default: 2, describe: "Unmeasured runs before each case" })
      .option("runs", { type: "number", default: 10, describe: "Measured runs per case" })
      .option("scheduler", { type: "string", describe: "Scheduler (default: the model's)" })
      .option("guidance", { type: "number", default: 7.5, describe: "Guidance scale" })
      .option("prompt", { type: "string", describe: "Prompt" })
      .option("rng", { choices: ["cpu", "nv"] as const, default: "cpu" as const, describe: "Noise source" })
      .option("graphs", { type: "boolean", default: true, describe: "TensorRT: run the denoise loop under CUDA graphs (--no-graphs to compare)" })
      .option("json", { type: "boolean", default: false, describe: "Print the JSON report instead of the table" })
      .option("out", { type: "string", describe: "Also write the JSON report to this file" }) as unknown as Argv<BenchArgs>,
  handler: async (argv: ArgumentsCamelCase<BenchArgs>) => {
    // A benchmark can take minutes: find out now that its report could not be written.
    if (argv.out) await checkWritable(argv.out, "--out");
    let report: Awaited<ReturnType<typeof runBench>>;
    try {
      report = await runBench({
        model: await resolveModelArgument(argv.model, { ...argv, quiet: argv.json }, "fp32"),
        backend: argv.backend,
        ...(argv.engines !== undefined ? { engines: argv.engines } : {}),
        ...(argv.threads !== undefined ? { threads: argv.threads } : {}),
        batches: parseIntegerList("batch", argv.batch),
        ...(argv.size !== undefined ? { sizes: parseSizeList(argv.size) } : {}),
        steps: parseIntegerList("steps", argv.steps),
        warmup: argv.warmup,
        runs: argv.runs,
        ...(argv.scheduler !== undefined ? { scheduler: argv.scheduler } : {}),
        guidance: argv.guidance,
        ...(argv.prompt !== undefined ? { prompt: argv.prompt } : {}),
        rng: argv.rng,
        useGraphs: argv.graphs,
        onCase: argv.json ? undefined : (label, index, count) => console.error(`[${index + 1}/${count}] ${label}`),
      });
    } catch (error) {
      // Name the flag the value came from ("sizes[0].width" is --size, "threads" --threads).
      if (error instanceof InvalidOptionError) {
        const flag = /^sizes\b/.test(error.option) ? "size" : error.option;
        if (!error.message.startsWith("--")) throw new InvalidOptionError(error.option, `--${flag}: ${error.message}`);
      }
      throw error;
    }
    const json = JSON.stringify(report, null, 2);
    if (argv.out) {
      const staged = new StagedFiles();
      try {
        await staged.stage(argv.out, Buffer.from(`${json}\n`), "--out");
        await staged.commit();
      } catch (error) {
        await staged.discard();
        throw error;
      }
    }
    process.stdout.write(`${argv.json ? json : formatBenchReport(report)}\n`);
  },
};

export default command;
