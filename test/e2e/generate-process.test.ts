/**
 * `sd-trt generate` as a real process (the built dist/): a reference case through
 * --latents-out, and Ctrl-C in the middle of a run — exit code 130, no output file, no
 * temporary file left behind.
 */
import { afterAll, beforeAll, describe, expect, test } from "@jest/globals";
import { spawn, spawnSync } from "node:child_process";
import { mkdir, mkdtemp, readdir, readFile, rm } from "node:fs/promises";
import { createRequire } from "node:module";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { fileURLToPath } from "node:url";
import { decodeNpyFloat32 } from "../../lib/cli/shared/npy.js";
import { loadReference, referenceCases } from "../fixtures/tiny-sd-cases/reference.js";
import { expectLatentsClose } from "../fixtures/tiny-sd-cases/compare.js";

const require = createRequire(import.meta.url);
const { ensureDistBuilt } = require("../support/global-setup.cjs") as { ensureDistBuilt: () => string };
const root = fileURLToPath(new URL("../..", import.meta.url));

/** The built CLI, as a user runs it. */
let entry: string[];
let scratch: string;
beforeAll(async () => {
  ensureDistBuilt();
  entry = [join(root, "dist", "cli", "main.js")];
  scratch = await mkdtemp(join(tmpdir(), "sd-trt-generate-process-"));
}, 180_000);
afterAll(async () => {
  await rm(scratch, { recursive: true, force: true });
});

describe("sd-trt generate in a child process", () => {
  test("--latents-out writes the reference case's final latents", async () => {
    const c = referenceCases(loadReference()).find((x) => x.id === "grid_lms70_p0_s2024")!;
    const dir = join(scratch, "golden");
    await mkdir(dir);
    const result = spawnSync(
      process.execPath,
      [...entry, "generate", "--backend", "cpu", "--prompt", "a cozy wooden cabin in a snowy pine forest", "--steps", "70", "--scheduler", "lms", "--seed", "2024", "--out", join(dir, "cabin.png"), "--latents-out", join(dir, "cabin.npy"), "--quiet"],
      { cwd: root, encoding: "utf8", timeout: 60_000 },
    );
    expect({ status: result.status, stderr: result.stderr }).toEqual({ status: 0, stderr: "" });
    const npy = decodeNpyFloat32(await readFile(join(dir, "cabin.npy")));
    expect(npy.shape).toEqual([1, 4, 8, 8]);
    expectLatentsClose(npy.data, c.final_latents, "child process --latents-out");
    expect((await readdir(dir)).sort()).toEqual(["cabin.npy", "cabin.png"]);
  });

  test("Ctrl-C stops the run: exit code 130, no output file and no temporary file", async () => {
    const dir = join(scratch, "interrupted");
    await mkdir(dir);
    const child = spawn(
      process.execPath,
      [...entry, "generate", "a long run", "--backend", "cpu", "--scheduler", "euler", "--steps", "1000", "--width", "256", "--height", "256", "--seed", "1", "--out", join(dir, "never.png"), "--latents-out", join(dir, "never.npy")],
      { cwd: root, stdio: ["ignore", "pipe", "pipe"] },
    );
    let stderr = "";
    let signalled = false;
    child.stderr.on("data", (chunk: Buffer) => {
      stderr += chunk.toString();
      // The progress bar's first line means the denoising loop is running.
      if (!signalled && /denoise \[/.test(stderr)) {
        signalled = true;
        child.kill("SIGINT");
      }
    });
    const code = await new Promise<number | null>((resolve) => child.on("exit", (c) => resolve(c)));
    expect(signalled).toBe(true);
    expect({ code, stderr }).toEqual({ code: 130, stderr: expect.stringContaining("sd-trt: interrupted by SIGINT") });
    expect(stderr).not.toMatch(/1000\/1000/);
    expect(await readdir(dir)).toEqual([]);
  }, 120_000);

  test("a second Ctrl-C during a model evaluation exits 130 at once, cleanly (no abort, no core) and leaves no file", async () => {
    const dir = join(scratch, "interrupted-twice");
    await mkdir(dir);
    const child = spawn(
      process.execPath,
      [...entry, "generate", "a long run", "--backend", "cpu", "--scheduler", "euler", "--steps", "1000", "--width", "512", "--height", "512", "--seed", "1", "--out", join(dir, "never.png")],
      { cwd: root, stdio: ["ignore", "pipe", "pipe"] },
    );
    let stderr = "";
    let signals = 0;
    child.stderr.on("data", (chunk: Buffer) => {
      stderr += chunk.toString();
      if (signals === 0 && /denoise \[/.test(stderr)) {
        signals = 1;
        child.kill("SIGINT");
      } else if (signals === 1 && /SIGINT: stopping after the current step/.test(stderr)) {
        // One 512×512 evaluation takes far longer than this round trip: the worker is still
        // inside ONNX Runtime when the second signal arrives.
        signals = 2;
        child.kill("SIGINT");
      }
    });
    const exit = await new Promise<{ code: number | null; signal: NodeJS.Signals | null }>((resolve) => child.on("exit", (code, signal) => resolve({ code, signal })));
    expect(signals).toBe(2);
    expect(exit).toEqual({ code: 130, signal: null });
    expect(stderr).not.toMatch(/terminate called|Napi::Error/);
    expect(await readdir(dir)).toEqual([]);
  }, 120_000);
});
