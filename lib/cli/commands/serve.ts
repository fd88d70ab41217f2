/**
 * `sd-trt serve`: the A1111-compatible HTTP API over a PipelineService (lib/server).
 *
 * Binds 127.0.0.1 by default; pass `--host 0.0.0.0` (and preferably `--token`) to expose it.
 * SIGINT/SIGTERM shut it down gracefully: no new connections, in-flight work gets
 * `--drain-timeout` seconds to finish, then it is cancelled. A second signal exits at once.
 *
 * `--devices 0,1,…` runs one pipeline per device behind the one queue; `--redis URL` makes the
 * server a front end of a fleet of `sd-trt worker`s instead (no model loaded here; see
 * docs/scale-out.md and cli/shared/serve-service.ts).
 */
import type { ArgumentsCamelCase, Argv, CommandModule } from "yargs";
import { InvalidOptionError } from "../../errors.js";
import { defaultModelDir } from "../../package-info.js";
import { DEFAULT_MAX_BODY_BYTES, SdServer } from "../../server/server.js";
import { addServeServiceOptions, openServeService, type ServeServiceArgs } from "../shared/serve-service.js";

interface ServeArgs extends ServeServiceArgs {
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
      })
      .options(addServeServiceOptions()) as unknown as Argv<ServeArgs>,
  handler: async (argv: ArgumentsCamelCase<ServeArgs>) => {
    const log = argv.quiet ? () => {} : (line: string) => console.error(`[${new Date().toISOString()}] ${line}`);
    const service = await openServeService(argv, log);
    const server = new SdServer({ service, token: argv.token, maxBodyBytes: argv["max-body"], log });
    const address = await server.listen({ host: argv.host, port: argv.port });
    // The load-test script and other tools read this line to find the port.
    process.stdout.write(`sd-trt serve: listening on ${address.url} (model ${service.modelName}, backend ${service.backendName}${argv.token ? ", token required" : ""})\n`);

    await new Promise<void>((resolve) => {
      let stopping = false;
      const stop = (signal: NodeJS.Signals) => {
        if (stopping) {
          log(`${signal} again: exiting now`);
          process.exit(130);
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
