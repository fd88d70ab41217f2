/**
 * `sd-trt serve`: the A1111-compatible HTTP API over a PipelineService (lib/server).
 *
 * Binds 127.0.0.1 by default; pass `--host 0.0.0.0` (and preferably `--token`) to expose it.
 * SIGINT/SIGTERM shut it down gracefully: no new connections, in-flight work gets
 * `--drain-timeout` seconds to finish, then it is cancelled. A second signal cancels in-flight work
 * at once (clients get 503) and exits with code 130.
 */
import type { ArgumentsCamelCase, Argv, CommandModule } from "yargs";
import { InvalidOptionError } from "../../errors.js";
import { Pipeline } from "../../pipeline.js";
import { defaultModelDir } from "../../package-info.js";
import { PipelineService } from "../../service/pipeline-service.js";
import { DEFAULT_MAX_BODY_BYTES, SdServer } from "../../server/server.js";

interface ServeArgs {
  host: string;
  port: number;
  model: string;
  backend: "cpu" | "tensorrt" | "auto";
  engines?: string;
  token?: string;
  "max-queue": number;
  "batch-window-ms": number;
  "max-batch"?: number;
  "max-body": number;
  "drain-timeout": number;
  quiet: boolean;
}

const command: CommandModule<object, ServeArgs> = {
  command: "serve",
  describe: "Serve the A1111 HTTP API (txt2img, img2img, samplers, progress, interrupt) on 127.0.0.1",
  builder: (yargs: Argv) =>
    yargs
      .option("host", { type: "string", default: "127.0.0.1", describe: "Interface to bind (127.0.0.1 = this machine only)" })
      .option("port", { type: "number", default: 7860, describe: "Port to listen on (0 picks a free one)" })
      .option("model", { type: "string", default: defaultModelDir, defaultDescription: "the tiny test model in models/tiny-sd", describe: "Model folder (diffusers/optimum ONNX layout)" })
      .option("backend", { choices: ["cpu", "tensorrt", "auto"] as const, default: "auto" as const, describe: "Inference backend" })
      .option("engines", { type: "string", describe: "TensorRT engine folder (tensorrt backend)" })
      .option("token", { type: "string", describe: "Require Authorization: Bearer <token> on /sdapi/ endpoints" })
      .option("max-queue", { type: "number", default: 64, describe: "Most requests waiting; more get 503 busy" })
      .option("batch-window-ms", { type: "number", default: 5, describe: "How long an idle pipeline waits to merge compatible requests (ms)" })
      .option("max-batch", { type: "number", describe: "Most images per merged batch (default: the backend's maximum)" })
      .option("max-body", { type: "number", default: DEFAULT_MAX_BODY_BYTES, describe: "Largest request body in bytes; larger gets 413" })
      .option("drain-timeout", { type: "number", default: 30, describe: "Seconds in-flight requests get to finish on shutdown" })
      .option("quiet", { type: "boolean", default: false, describe: "Do not log requests" })
      .check((argv) => {
        const checks: Array<[string, number, number, number]> = [
          ["port", argv.port, 0, 65535],
          ["max-queue", argv["max-queue"], 1, 100_000],
          ["batch-window-ms", argv["batch-window-ms"], 0, 60_000],
          ["max-body", argv["max-body"], 1024, 2 ** 31],
          ["drain-timeout", argv["drain-timeout"], 0, 3600],
        ];
        if (argv["max-batch"] !== undefined) checks.push(["max-batch", argv["max-batch"], 1, 1024]);
        for (const [name, value, min, max] of checks) {
          if (!Number.isFinite(value) || value < min || value > max || (name !== "batch-window-ms" && !Number.isInteger(value))) {
            throw new InvalidOptionError(name, `--${name} must be ${name === "batch-window-ms" ? "a number" : "an integer"} from ${min} to ${max}, got ${value}`);
          }
        }
        if (argv.token !== undefined && argv.token.length === 0) throw new InvalidOptionError("token", "--token must not be empty");
        return true;
      }) as unknown as Argv<ServeArgs>,
  handler: async (argv: ArgumentsCamelCase<ServeArgs>) => {
    const log = argv.quiet ? () => {} : (line: string) => console.error(`[${new Date().toISOString()}] ${line}`);
    const pipeline = await Pipeline.load(argv.model, { backend: argv.backend, ...(argv.engines ? { engines: argv.engines } : {}) });
    const service = await PipelineService.create(pipeline, {
      maxQueue: argv["max-queue"],
      batchWindowMs: argv["batch-window-ms"],
      ...(argv["max-batch"] !== undefined ? { maxBatch: argv["max-batch"] } : {}),
      ownPipeline: true,
    });
    const server = new SdServer({ service, token: argv.token, maxBodyBytes: argv["max-body"], log });
    const address = await server.listen({ host: argv.host, port: argv.port });
    // The load-test script and other tools read this line to find the port.
    process.stdout.write(`sd-trt serve: listening on ${address.url} (model ${service.modelName}, backend ${service.backendName}${argv.token ? ", token required" : ""})\n`);

    await new Promise<void>((resolve) => {
      let stopping = false;
      const stop = (signal: NodeJS.Signals) => {
        if (stopping) {
          // Not process.exit(): that terminates the ONNX Runtime worker wherever it is, and a
          // worker terminated inside a native run aborts the process (SIGABRT) with the clients
          // unanswered. Cancel everything instead: the loop stops after its current evaluation.
          log(`${signal} again: cancelling in-flight requests and exiting`);
          process.exitCode = 130;
          void server.closeNow();
          return;
        }
        stopping = true;
        log(`${signal}: shutting down (in-flight requests get ${argv["drain-timeout"]} s)`);
        server
          .close(argv["drain-timeout"] * 1000)
          .catch((error: unknown) => log(`shutdown failed: ${String(error)}`))
          .finally(() => {
            process.off("SIGINT", stop);
            process.off("SIGTERM", stop);
            resolve();
          });
      };
      process.on("SIGINT", stop);
      process.on("SIGTERM", stop);
    });
    log("stopped");
  },
};

export default command;
