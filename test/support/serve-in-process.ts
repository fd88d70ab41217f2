/**
 * The `sd-trt serve` command's handler run in this process, as the CLI would run it: the flags'
 * defaults, stdout captured to find the "listening on" line.
 */
import serve from "../../lib/cli/commands/serve.js";

export interface ServeInProcess {
  /** The URL the server prints once it listens. */
  readonly url: Promise<string>;
  /** Settles when the handler returns (after a shutdown signal). */
  readonly done: Promise<void>;
  /** Gives stdout back; call it in a finally block or afterEach. */
  restore(): void;
}

/** `flags`: serve's flags by their CLI names (`model`, `cache-dir`, …), over the defaults. */
export function startServe(flags: Record<string, unknown> = {}): ServeInProcess {
  const write = process.stdout.write.bind(process.stdout);
  let output = "";
  let found: (url: string) => void;
  const url = new Promise<string>((resolve) => (found = resolve));
  process.stdout.write = ((chunk: string | Uint8Array) => {
    output += typeof chunk === "string" ? chunk : Buffer.from(chunk).toString("utf8");
    const match = /listening on (http:\/\/\S+)/.exec(output);
    if (match) found(match[1]!);
    return true;
  }) as typeof process.stdout.write;
  const argv = { _: ["serve"], $0: "sd-trt", host: "127.0.0.1", port: 0, backend: "cpu", "max-queue": 8, "batch-window-ms": 0, "max-body": 1 << 20, "drain-timeout": 30, "headers-timeout": 10, "request-timeout": 60, "keep-alive-timeout": 5, "max-connections": 1024, "insecure-no-token": false, quiet: true, ...flags };
  const done = Promise.resolve(serve.handler(argv as never)) as Promise<void>;
  return { url, done, restore: () => (process.stdout.write = write) };
}
