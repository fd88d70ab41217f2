/**
 * The `sd-trt serve` command module in-process: flag checks, the "listening on" line, and
 * graceful shutdown on SIGTERM / SIGINT (the signal is delivered as a process event, so only the
 * command's own listeners see it).
 */
import { afterEach, describe, expect, test } from "@jest/globals";
import serve from "../../lib/cli/commands/serve.js";
import { runCommand } from "../support/run-cli.js";

/** Runs the serve handler, capturing stdout, and resolves with the URL it prints. */
function startServe(extra: string[] = []): { url: Promise<string>; done: Promise<void>; restore: () => void } {
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
  const argv = { _: ["serve"], $0: "sd-trt", host: "127.0.0.1", port: 0, model: undefined, backend: "cpu", "max-queue": 8, "batch-window-ms": 0, "max-body": 1 << 20, "drain-timeout": 30, quiet: true, ...Object.fromEntries(extra.map((e) => e.split("="))) };
  if (argv.model === undefined) delete (argv as Record<string, unknown>).model;
  const done = Promise.resolve(serve.handler(argv as never)) as Promise<void>;
  return { url, done, restore: () => (process.stdout.write = write) };
}

let restore: (() => void) | undefined;
afterEach(() => restore?.());

describe("sd-trt serve", () => {
  test("SIGTERM lets the in-flight request finish, then the command returns and the port is closed", async () => {
    const run = startServe();
    restore = run.restore;
    const url = await run.url;
    const inFlight = fetch(`${url}/sdapi/v1/txt2img`, { method: "POST", body: JSON.stringify({ prompt: "finish me", seed: 1, steps: 30, width: 64, height: 64, sampler_name: "Euler" }) });
    // Wait until the request is running, then signal.
    for (;;) {
      const health = (await (await fetch(`${url}/health`)).json()) as { counters: { running: number } };
      if (health.counters.running === 1) break;
      await new Promise((resolve) => setTimeout(resolve, 5));
    }
    process.emit("SIGTERM");
    const response = await inFlight;
    expect(response.status).toBe(200);
    expect(((await response.json()) as { images: string[] }).images).toHaveLength(1);
    await run.done;
    await expect(fetch(`${url}/health`)).rejects.toThrow();
    expect(process.listenerCount("SIGTERM")).toBe(0);
  });

  test("SIGINT with nothing running stops at once", async () => {
    const run = startServe();
    restore = run.restore;
    const url = await run.url;
    expect((await fetch(`${url}/internal/ping`)).status).toBe(200);
    process.emit("SIGINT");
    await run.done;
    await expect(fetch(`${url}/internal/ping`)).rejects.toThrow();
  });

  test("bad flags are refused with a message naming them", async () => {
    for (const [flags, message] of [
      [["--port", "70000"], /--port must be an integer from 0 to 65535/],
      [["--max-queue", "0"], /--max-queue must be an integer from 1/],
      [["--batch-window-ms", "-1"], /--batch-window-ms must be a number from 0/],
      [["--token", ""], /--token must not be empty/],
      [["--backend", "gpu"], /Invalid values:[\s\S]*backend/],
    ] as const) {
      const run = await runCommand(serve, ["serve", ...flags]);
      expect(run.code).toBe(2);
      expect(run.stderr).toMatch(message);
    }
  });
});
