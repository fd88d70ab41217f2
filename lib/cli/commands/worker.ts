/**
 * `sd-trt worker --redis URL`: one machine of a fleet. Loads the model on each of `--devices`
 * (one PipelineService, as `serve --devices` does) and runs generation jobs from the BullMQ
 * queue that `sd-trt serve --redis` front ends fill (lib/fleet, docs/scale-out.md).
 *
 * SIGINT/SIGTERM: take no new jobs, let running ones finish for `--drain-timeout` seconds, then
 * hand them back to the queue (another worker runs them); a second signal hands them back at
 * once and exits with code 130.
 */
import type { ArgumentsCamelCase, Argv, CommandModule } from "yargs";
import { InvalidOptionError } from "../../errors.js";
import { BACKEND_CHOICES, type BackendChoice } from "../../backends/select.js";
import { defaultModelDir } from "../../package-info.js";
import { openPipelineService, parseDevices } from "../shared/devices.js";
import { untilShutdown } from "../shared/shutdown.js";

interface WorkerArgs {
  redis: string;
  queue: string;
  model: string;
  backend: BackendChoice;
  engines?: string;
  "embeddings-dir"?: string;
  devices: string;
  concurrency?: number;
  "max-batch"?: number;
  "batch-window-ms": number;
  "stall-timeout": number;
  "drain-timeout": number;
  quiet: boolean;
}

const command: CommandModule<object, WorkerArgs> = {
  command: "worker",
  describe: "Run generation jobs from a Redis (BullMQ) queue filled by `sd-trt serve --redis` front ends",
  builder: (yargs: Argv) =>
    yargs
      .option("redis", { type: "string", demandOption: true, describe: "Redis URL (redis://host:port[/db])" })
      .option("queue", { type: "string", default: "sd-trt", describe: "BullMQ queue name (one queue per model)" })
      .option("model", { type: "string", default: defaultModelDir, defaultDescription: "the tiny test model in models/tiny-sd", describe: "Model folder (diffusers/optimum ONNX layout)" })
      .option("backend", { choices: BACKEND_CHOICES, default: "auto" as const, describe: "Inference backend" })
      .option("engines", { type: "string", describe: "TensorRT engine folder (tensorrt backend)" })
      .option("embeddings-dir", { type: "string", describe: "A folder of A1111 textual-inversion embeddings (.safetensors) for the jobs' prompts (cpu backend); give every worker of a queue the same folder" })
      .option("devices", { type: "string", default: "0", describe: "Devices to run on, one pipeline each (CUDA indices; on the CPU backend, that many worker pipelines), e.g. 0,1" })
      .option("concurrency", { type: "number", describe: "Jobs taken at once (default: 2 per device, so each device has its next job ready)" })
      .option("max-batch", { type: "number", describe: "Most images per merged batch (default: the backend's maximum)" })
      .option("batch-window-ms", { type: "number", default: 5, describe: "How long an idle device waits to merge compatible jobs (ms)" })
      .option("stall-timeout", { type: "number", default: 30, describe: "Seconds after which the job of a worker that died is retried by another" })
      .option("drain-timeout", { type: "number", default: 30, describe: "Seconds running jobs get to finish on shutdown before they are handed back" })
      .option("quiet", { type: "boolean", default: false, describe: "Do not log jobs" })
      .check((argv) => {
        const checks: Array<[string, number | undefined, number, number, boolean]> = [
          ["concurrency", argv.concurrency, 1, 1024, true],
          ["max-batch", argv["max-batch"], 1, 1024, true],
          ["batch-window-ms", argv["batch-window-ms"], 0, 60_000, false],
          ["stall-timeout", argv["stall-timeout"], 1, 600, false],
          ["drain-timeout", argv["drain-timeout"], 0, 3600, false],
        ];
        for (const [name, value, min, max, integer] of checks) {
          if (value === undefined) continue;
          if (!Number.isFinite(value) || value < min || value > max || (integer && !Number.isInteger(value))) {
            throw new InvalidOptionError(name, `--${name} must be ${integer ? "an integer" : "a number"} from ${min} to ${max}, got ${value}`);
          }
        }
        return true;
      }) as unknown as Argv<WorkerArgs>,
  handler: async (argv: ArgumentsCamelCase<WorkerArgs>) => {
    const log = argv.quiet ? () => {} : (line: string) => console.error(`[${new Date().toISOString()}] ${line}`);
    const devices = parseDevices(argv.devices);
    // Imported on demand, like serve --redis: BullMQ loads only for the fleet.
    const { checkRedisUrl, checkQueueName } = await import("../../fleet/redis.js");
    checkRedisUrl(argv.redis, "--redis");
    checkQueueName(argv.queue, "--queue");
    const service = await openPipelineService({
      model: argv.model,
      backend: argv.backend,
      ...(argv.engines ? { engines: argv.engines } : {}),
      ...(argv["embeddings-dir"] !== undefined ? { embeddingsDir: argv["embeddings-dir"] } : {}),
      devices,
      maxQueue: 100_000,
      batchWindowMs: argv["batch-window-ms"],
      ...(argv["max-batch"] !== undefined ? { maxBatch: argv["max-batch"] } : {}),
    });
    const { createWorker } = await import("../../fleet/worker.js");
    const worker = await createWorker({
      redis: argv.redis,
      queue: argv.queue,
      service,
      ...(argv.concurrency !== undefined ? { concurrency: argv.concurrency } : {}),
      stallTimeoutMs: Math.round(argv["stall-timeout"] * 1000),
      log,
    }).catch(async (error: unknown) => {
      await service.dispose();
      throw error;
    });
    // Tests and scripts read this line to know the worker takes jobs.
    process.stdout.write(`sd-trt worker: ready ${worker.id} (queue ${worker.queue}, model ${service.modelName}, backend ${service.backendName}, devices ${devices.join(",")})\n`);

    await untilShutdown({
      log,
      drainMessage: `no new jobs; running ones get ${argv["drain-timeout"]} s, then are handed back`,
      drain: () => worker.close(argv["drain-timeout"] * 1000),
      // Handing the jobs back stops the runs between steps, and close() then ends.
      hurryMessage: "handing the running jobs back now",
      hurry: () => worker.handBack(),
    });
    log("stopped");
  },
};

export default command;
