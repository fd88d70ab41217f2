/**
 * `sd-trt serve` as a real process (the built dist/): what only a real process shows — signals
 * delivered by the kernel while the ONNX Runtime worker is inside a model evaluation. Listens on
 * port 0 of 127.0.0.1.
 */
import { beforeAll, describe, expect, test } from "@jest/globals";
import { spawn } from "node:child_process";
import { createRequire } from "node:module";
import { join } from "node:path";
import { fileURLToPath } from "node:url";

const require = createRequire(import.meta.url);
const { ensureDistBuilt } = require("../support/global-setup.cjs") as { ensureDistBuilt: () => string };
const root = fileURLToPath(new URL("../../", import.meta.url));

beforeAll(() => {
  ensureDistBuilt();
}, 180_000);

/** Resolves when `text()` matches `pattern`, checking on each chunk of output. */
function waitFor(stream: NodeJS.ReadableStream, text: () => string, pattern: RegExp): Promise<RegExpExecArray> {
  return new Promise((resolve) => {
    const check = () => {
      const match = pattern.exec(text());
      if (!match) return;
      stream.off("data", check);
      resolve(match);
    };
    stream.on("data", check);
    check();
  });
}

/** `sd-trt serve --backend cpu --port 0` from dist/, its output collected as it comes. */
function spawnServe() {
  const child = spawn(process.execPath, [join(root, "dist", "cli", "main.js"), "serve", "--backend", "cpu", "--port", "0"], {
    cwd: root,
    stdio: ["ignore", "pipe", "pipe"],
  });
  let stdout = "";
  let stderr = "";
  child.stdout.on("data", (chunk: Buffer) => (stdout += chunk.toString()));
  child.stderr.on("data", (chunk: Buffer) => (stderr += chunk.toString()));
  const exited = new Promise<{ code: number | null; signal: NodeJS.Signals | null }>((resolve) => child.on("exit", (code, signal) => resolve({ code, signal })));
  return {
    child,
    exited,
    /** Everything it wrote to stderr so far. */
    stderr: () => stderr,
    /** The URL of its "listening on" line, once printed. */
    url: async () => (await waitFor(child.stdout, () => stdout, /listening on (http:\/\/\S+)/))[1]!,
  };
}

describe("sd-trt serve in a child process", () => {
  test("a second SIGTERM during a generation answers the client 503 and exits 130 cleanly (no abort, no core)", async () => {
    const server = spawnServe();
    const { child, exited } = server;
    const url = await server.url();

    // Long enough that it is still inside the denoise loop when both signals arrive.
    const response = fetch(`${url}/sdapi/v1/txt2img`, { method: "POST", body: JSON.stringify({ prompt: "x", steps: 1000, width: 512, height: 512 }) });
    for (;;) {
      const health = (await (await fetch(`${url}/health`)).json()) as { counters: { running: number } };
      if (health.counters.running === 1) break;
      await new Promise((resolve) => setTimeout(resolve, 10));
    }
    child.kill("SIGTERM");
    await waitFor(child.stderr, server.stderr, /SIGTERM: shutting down/);
    child.kill("SIGTERM");

    const answer = await response;
    expect({ status: answer.status, body: await answer.json() }).toEqual({ status: 503, body: { error: "ShuttingDown", detail: expect.stringMatching(/shutting down/) } });
    expect(await exited).toEqual({ code: 130, signal: null });
    expect(server.stderr()).not.toMatch(/terminate called|Napi::Error|Aborted/);
    expect(server.stderr()).toMatch(/SIGTERM again: cancelling in-flight requests and exiting/);
  }, 120_000);

  test("many concurrent requests leave no warning on stderr (nothing per request on a long-lived emitter)", async () => {
    const server = spawnServe();
    const { child, exited } = server;
    try {
      const url = await server.url();
      const responses = await Promise.all(
        Array.from({ length: 16 }, (_, i) => fetch(`${url}/sdapi/v1/txt2img`, { method: "POST", body: JSON.stringify({ prompt: `a lighthouse ${i}`, steps: 2, width: 64, height: 64, seed: i }) })),
      );
      expect(responses.map((r) => r.status)).toEqual(Array(16).fill(200));
    } finally {
      child.kill("SIGTERM");
    }
    expect((await exited).code).toBe(0);
    // Node prints MaxListenersExceededWarning (and any other process warning) as "(node:PID) …Warning".
    expect(server.stderr()).not.toMatch(/Warning/);
  }, 120_000);
});
