/**
 * The `sd-trt serve` command module in-process: flag checks, the "listening on" line, and
 * graceful shutdown on SIGTERM / SIGINT (the signal is delivered as a process event, so only the
 * command's own listeners see it).
 */
import { afterEach, describe, expect, test } from "@jest/globals";
import { createServer } from "node:net";
import serve, { exposureCheck } from "../../lib/cli/commands/serve.js";
import { runCommand } from "../support/run-cli.js";
import { startServe } from "../support/serve-in-process.js";

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
      [["--headers-timeout", "0"], /--headers-timeout must be a number from 0\.1 to 3600, got 0/],
      [["--max-connections", "0"], /--max-connections must be an integer from 1 to 1000000, got 0/],
      [["--port"], /--port needs a value/],
    ] as const) {
      const run = await runCommand(serve, ["serve", ...flags]);
      expect(run.code).toBe(2);
      expect(run.stderr).toMatch(message);
    }
  });
});

describe("sd-trt serve: where it listens", () => {
  test("a host other than loopback without --token is refused before anything binds, naming both ways out", async () => {
    const run = await runCommand(serve, ["serve", "--host", "0.0.0.0", "--port", "0"]);
    expect({ code: run.code, stderr: run.stderr }).toEqual({
      code: 2,
      stderr: "sd-trt: --host 0.0.0.0 serves anyone who can reach this machine, and without --token anyone can generate (and use all its CPU/GPU); give --token SECRET, or --insecure-no-token if the network is trusted\n",
    });
  });

  test("exposure: loopback or a token is fine; --insecure-no-token turns the refusal into a warning", () => {
    for (const host of ["127.0.0.1", "localhost", "::1", "[::1]", "127.1.2.3"]) expect(exposureCheck(host, undefined, false)).toEqual({});
    expect(exposureCheck("0.0.0.0", "s3cret", false)).toEqual({});
    expect(exposureCheck("0.0.0.0", undefined, false).error).toMatch(/give --token SECRET, or --insecure-no-token/);
    expect(exposureCheck("192.168.1.5", undefined, true)).toEqual({ warning: expect.stringMatching(/^WARNING: --host 192\.168\.1\.5 serves anyone who can reach this machine/) });
  });

  test("a busy port and a host that does not resolve are one line each, before the model loads", async () => {
    const busy = createServer();
    await new Promise<void>((resolve) => busy.listen(0, "127.0.0.1", resolve));
    const port = (busy.address() as { port: number }).port;
    try {
      const run = await runCommand(serve, ["serve", "--port", String(port), "--model", "/nonexistent/model"]);
      expect({ code: run.code, stderr: run.stderr }).toEqual({ code: 1, stderr: `sd-trt: port ${port} on 127.0.0.1 is already in use (another server?); stop it, or pick another with --port (--port 0 picks a free one)\n` });
    } finally {
      busy.close();
    }
    const bad = await runCommand(serve, ["serve", "--host", "not.a.host.invalid", "--token", "t", "--port", "7861", "--model", "/nonexistent/model"]);
    expect({ code: bad.code, stderr: bad.stderr }).toEqual({ code: 2, stderr: expect.stringMatching(/^sd-trt: --host not\.a\.host\.invalid does not resolve to an address; [^\n]*\n$/) });
  });
});
