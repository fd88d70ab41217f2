/**
 * `sd-trt serve`: the A1111-compatible HTTP API over a PipelineService (lib/server).
 *
 * Binds 127.0.0.1 by default. Another `--host` (0.0.0.0: every interface) needs `--token`, or
 * `--insecure-no-token` to serve without one (with a warning on stderr).
 * SIGINT/SIGTERM shut it down gracefully: no new connections, in-flight work gets
 * `--drain-timeout` seconds to finish, then it is cancelled. A second signal cancels in-flight work
 * at once (clients get 503) and exits with code 130.
 *
 * `--devices 0,1,…` runs one pipeline per device behind the one queue; `--redis URL` makes the
 * server a front end of a fleet of `sd-trt worker`s instead (no model loaded here; see
 * docs/scale-out.md and cli/shared/serve-service.ts).
 */
import { LoraLibrary } from "../../convert/lora/library.js";
import type { ArgumentsCamelCase, Argv, CommandModule } from "yargs";
import { InvalidOptionError } from "../../errors.js";
import { defaultModelDir } from "../../package-info.js";
import { memoryLimitBytes } from "./generate.js";
import { createServer } from "node:net";
import {
  DEFAULT_HEADERS_TIMEOUT_MS,
  DEFAULT_KEEP_ALIVE_TIMEOUT_MS,
  DEFAULT_MAX_BODY_BYTES,
  DEFAULT_MAX_CONNECTIONS,
  DEFAULT_REQUEST_TIMEOUT_MS,
  isLoopbackHost,
  listenError,
  SdServer,
} from "../../server/server.js";
import { addServeServiceOptions, openServeService, type ServeServiceArgs } from "../shared/serve-service.js";
import { untilShutdown } from "../shared/shutdown.js";
import { preloadSharp } from "../../image/sharp.js";
import { type CheckpointArgs, checkpointOptions, resolveModelArgument } from "../shared/model-source.js";

interface ServeArgs extends ServeServiceArgs, CheckpointArgs {
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
  "headers-timeout": number;
  "request-timeout": number;
  "keep-alive-timeout": number;
  "max-connections": number;
  "insecure-no-token": boolean;
  "memory-limit"?: number;
  "embeddings-dir"?: string;
  quiet: boolean;
}

/**
 * What binding `host` without a token means: an error (exposed to the network with no token and
 * no explicit opt-in), a warning (opted in with --insecure-no-token), or nothing (loopback, or a
 * token is required).
 */
export function exposureCheck(host: string, token: string | undefined, insecureNoToken: boolean): { error?: string; warning?: string } {
  if (isLoopbackHost(host) || token) return {};
  const what = `--host ${host} serves anyone who can reach this machine, and without --token anyone can generate (and use all its CPU/GPU)`;
  if (!insecureNoToken) return { error: `${what}; give --token SECRET, or --insecure-no-token if the network is trusted` };
  return { warning: `WARNING: ${what} (--insecure-no-token)` };
}

/** Binds and releases `host:port` so a busy port or a bad host is reported before the model loads. */
function probeListen(host: string, port: number): Promise<void> {
  return new Promise((resolve, reject) => {
    const probe = createServer();
    probe.once("error", (error) => reject(listenError(error, host, port)));
    probe.listen({ host, port, exclusive: true }, () => probe.close(() => resolve()));
  });
}

const command: CommandModule<object, ServeArgs> = {
  command: "serve",
  describe: "Serve the A1111 HTTP API (txt2img, img2img, samplers, progress, interrupt) on 127.0.0.1",
  builder: (yargs: Argv) =>
    yargs
      .option("host", { type: "string", default: "127.0.0.1", describe: "Interface to bind (127.0.0.1 = this machine only)" })
      .option("port", { type: "number", default: 7860, describe: "Port to listen on (0 picks a free one)" })
      .option("model", { type: "string", default: defaultModelDir, defaultDescription: "the tiny test model in models/tiny-sd", describe: "Model folder (optimum ONNX layout), or a checkpoint to convert once (.safetensors file, diffusers folder)" })
      .options(checkpointOptions())
      .option("backend", { choices: ["cpu", "tensorrt", "auto"] as const, default: "auto" as const, describe: "Inference backend" })
      .option("engines", { type: "string", describe: "TensorRT engine folder (tensorrt backend)" })
      .option("token", { type: "string", describe: "Require Authorization: Bearer <token> on /sdapi/ endpoints" })
      .option("max-queue", { type: "number", default: 64, describe: "Most requests waiting; more get 503 busy" })
      .option("batch-window-ms", { type: "number", default: 5, describe: "How long an idle pipeline waits to merge compatible requests (ms)" })
      .option("max-batch", { type: "number", describe: "Most images per merged batch (default: the backend's maximum)" })
      .option("max-body", { type: "number", default: DEFAULT_MAX_BODY_BYTES, describe: "Largest request body in bytes; larger gets 413" })
      .option("drain-timeout", { type: "number", default: 30, describe: "Seconds in-flight requests get to finish on shutdown" })
      .option("embeddings-dir", { type: "string", describe: "A folder of A1111 textual-inversion embeddings (.safetensors): a prompt word equal to a file's name uses its vectors (cpu backend)" })
      .option("memory-limit", { type: "number", describe: "Most memory (GiB) one generation may need on the cpu backend; larger requests get 422 (default: this machine's memory)" })
      .option("insecure-no-token", { type: "boolean", default: false, describe: "Allow a --host other than loopback without --token (anyone on the network can generate)" })
      .option("headers-timeout", { type: "number", default: DEFAULT_HEADERS_TIMEOUT_MS / 1000, describe: "Seconds a client gets to send the request headers (then 408, closed)" })
      .option("request-timeout", { type: "number", default: DEFAULT_REQUEST_TIMEOUT_MS / 1000, describe: "Seconds a client gets to send the whole request (not the time to answer it)" })
      .option("keep-alive-timeout", { type: "number", default: DEFAULT_KEEP_ALIVE_TIMEOUT_MS / 1000, describe: "Seconds an idle keep-alive connection stays open" })
      .option("max-connections", { type: "number", default: DEFAULT_MAX_CONNECTIONS, describe: "Most open connections; more are closed at once" })
      .option("quiet", { type: "boolean", default: false, describe: "Do not log requests" })
      .check((argv) => {
        const checks: Array<[string, number, number, number]> = [
          ["port", argv.port, 0, 65535],
          ["max-queue", argv["max-queue"], 1, 100_000],
          ["batch-window-ms", argv["batch-window-ms"], 0, 60_000],
          ["max-body", argv["max-body"], 1024, 2 ** 31],
          ["drain-timeout", argv["drain-timeout"], 0, 3600],
          ["headers-timeout", argv["headers-timeout"], 0.1, 3600],
          ["request-timeout", argv["request-timeout"], 0.1, 86_400],
          ["keep-alive-timeout", argv["keep-alive-timeout"], 0.1, 3600],
          ["max-connections", argv["max-connections"], 1, 1_000_000],
        ];
        const fractional = new Set(["batch-window-ms", "headers-timeout", "request-timeout", "keep-alive-timeout"]);
        if (argv["max-batch"] !== undefined) checks.push(["max-batch", argv["max-batch"], 1, 1024]);
        for (const [name, value, min, max] of checks) {
          if (!Number.isFinite(value) || value < min || value > max || (!fractional.has(name) && !Number.isInteger(value))) {
            throw new InvalidOptionError(name, `--${name} must be ${fractional.has(name) ? "a number" : "an integer"} from ${min} to ${max}, got ${value}`);
          }
        }
        if (argv.token !== undefined && argv.token.length === 0) throw new InvalidOptionError("token", "--token must not be empty");
        const exposure = exposureCheck(argv.host, argv.token, argv["insecure-no-token"]);
        if (exposure.error) throw new InvalidOptionError("host", exposure.error);
        return true;
      })
      .options(addServeServiceOptions()) as unknown as Argv<ServeArgs>,
  handler: async (argv: ArgumentsCamelCase<ServeArgs>) => {
    const log = argv.quiet ? () => {} : (line: string) => console.error(`[${new Date().toISOString()}] ${line}`);
    const { warning } = exposureCheck(argv.host, argv.token, argv["insecure-no-token"]);
    // Even with --quiet: this is the one line an operator must see.
    if (warning) console.error(`sd-trt serve: ${warning}`);
    // A busy port or a bad --host is reported now, not after the model has loaded.
    if (argv.port !== 0) await probeListen(argv.host, argv.port);
    // A checkpoint is converted once into the model cache (with --redis the front end runs no model).
    if (argv.redis === undefined) argv.model = await resolveModelArgument(argv.model, { ...argv, quiet: false }, "fp32", process.stderr, "base");
    const memoryLimit = argv["memory-limit"] !== undefined ? memoryLimitBytes(argv["memory-limit"]) : undefined;
    const service = await openServeService({ ...argv, ...(memoryLimit !== undefined ? { memoryLimit } : {}) }, log);
    preloadSharp(); // the image encoder, loaded on first use, is ready for the first request
    const loraDir = argv["lora-dir"];
    const server = new SdServer({
      service,
      ...(loraDir !== undefined ? { loras: (await LoraLibrary.scan(loraDir)).entries } : {}),
      token: argv.token,
      maxBodyBytes: argv["max-body"],
      log,
      headersTimeoutMs: argv["headers-timeout"] * 1000,
      requestTimeoutMs: argv["request-timeout"] * 1000,
      keepAliveTimeoutMs: argv["keep-alive-timeout"] * 1000,
      maxConnections: argv["max-connections"],
    });
    let address: Awaited<ReturnType<SdServer["listen"]>>;
    try {
      address = await server.listen({ host: argv.host, port: argv.port });
    } catch (error) {
      await service.dispose();
      throw error;
    }
    // The load-test script and other tools read this line to find the port.
    process.stdout.write(`sd-trt serve: listening on ${address.url} (model ${service.modelName}, backend ${service.backendName}${argv.token ? ", token required" : ""})\n`);

    await untilShutdown({
      log,
      drainMessage: `shutting down (in-flight requests get ${argv["drain-timeout"]} s)`,
      drain: () => server.close(argv["drain-timeout"] * 1000),
      // The loops stop after their current evaluation; the clients get their answer.
      hurryMessage: "cancelling in-flight requests and exiting",
      hurry: () => void server.closeNow(),
    });
    log("stopped");
  },
};

export default command;
