/**
 * Real system components for the fleet and browser tests: a redis-server the test starts on a
 * free loopback port with a temporary directory (no persistence) and stops, and Debian's
 * chromium for playwright-core. CI installs both (.ci/run); run by hand on a machine without
 * them, the tests are skipped with a message that says what to install.
 */
import { describe, test } from "@jest/globals";
import { type ChildProcess, spawn, spawnSync } from "node:child_process";
import { mkdtemp, rm } from "node:fs/promises";
import { createServer } from "node:net";
import { tmpdir } from "node:os";
import { join } from "node:path";

function which(command: string): string | undefined {
  const found = spawnSync("sh", ["-c", `command -v ${command}`], { encoding: "utf8" });
  const path = found.stdout.trim();
  return found.status === 0 && path ? path : undefined;
}

/** `describe` when every named program is installed; else one skipped test whose name says what is missing. */
export function describeWith(programs: Array<{ command: string; apt: string }>, name: string, body: () => void): void {
  const missing = programs.filter((p) => !which(p.command));
  if (missing.length === 0) {
    describe(name, body);
    return;
  }
  const reason = `${missing.map((m) => m.command).join(" and ")} not installed (apt-get install ${missing.map((m) => m.apt).join(" ")}; CI installs them)`;
  console.info(`${name}: skipped — ${reason}`);
  test.skip(`${name} — skipped: ${reason}`, () => undefined);
}

export const REDIS = { command: "redis-server", apt: "redis-server" };
export const CHROMIUM = { command: "chromium", apt: "chromium" };

/** Chromium's path (Debian's package; playwright-core drives it, it never downloads a browser). */
export function chromiumPath(): string {
  const path = which("chromium");
  if (!path) throw new Error("chromium is not installed");
  return path;
}

/** A free TCP port on 127.0.0.1. */
export function freePort(): Promise<number> {
  return new Promise((resolve, reject) => {
    const server = createServer();
    server.once("error", reject);
    server.listen(0, "127.0.0.1", () => {
      const address = server.address();
      const port = typeof address === "object" && address ? address.port : 0;
      server.close(() => resolve(port));
    });
  });
}

export class RedisServer {
  readonly port: number;
  readonly #dir: string;
  #process: ChildProcess | null = null;

  private constructor(port: number, dir: string) {
    this.port = port;
    this.#dir = dir;
  }

  get url(): string {
    return `redis://127.0.0.1:${this.port}`;
  }

  static async start(): Promise<RedisServer> {
    const server = new RedisServer(await freePort(), await mkdtemp(join(tmpdir(), "sd-trt-redis-")));
    await server.#spawn();
    return server;
  }

  async #spawn(): Promise<void> {
    const child = spawn("redis-server", ["--port", String(this.port), "--bind", "127.0.0.1", "--save", "", "--appendonly", "no", "--dir", this.#dir], { stdio: ["ignore", "pipe", "pipe"] });
    this.#process = child;
    let output = "";
    await new Promise<void>((resolve, reject) => {
      const timer = setTimeout(() => reject(new Error(`redis-server did not start within 10 s:\n${output}`)), 10_000);
      child.stdout!.on("data", (chunk: Buffer) => {
        output += chunk.toString();
        if (output.includes("Ready to accept connections")) {
          clearTimeout(timer);
          resolve();
        }
      });
      child.once("exit", (code) => {
        clearTimeout(timer);
        reject(new Error(`redis-server exited with ${code}:\n${output}`));
      });
    });
    child.removeAllListeners("exit");
  }

  /** Stops the server (its data is gone: no persistence), then starts it again on the same port. */
  async restart(): Promise<void> {
    await this.#kill();
    await this.#spawn();
  }

  async #kill(): Promise<void> {
    const child = this.#process;
    this.#process = null;
    if (!child || child.exitCode !== null) return;
    await new Promise<void>((resolve) => {
      child.once("exit", () => resolve());
      child.kill("SIGTERM");
    });
  }

  async stop(): Promise<void> {
    await this.#kill();
    await rm(this.#dir, { recursive: true, force: true });
  }
}

/** A child process of the built CLI whose output the test reads line by line. */
export class CliProcess {
  readonly child: ChildProcess;
  stdout = "";
  stderr = "";
  /** stdout and stderr interleaved as they arrived. */
  output = "";

  constructor(args: string[]) {
    this.child = spawn(process.execPath, [join(process.cwd(), "dist", "cli", "main.js"), ...args], { stdio: ["ignore", "pipe", "pipe"], env: { ...process.env, NODE_NO_WARNINGS: "1" } });
    this.child.stdout!.on("data", (chunk: Buffer) => {
      this.stdout += chunk.toString();
      this.output += chunk.toString();
    });
    this.child.stderr!.on("data", (chunk: Buffer) => {
      this.stderr += chunk.toString();
      this.output += chunk.toString();
    });
  }

  /**
   * Resolves with the first match of `pattern` in the output after position `since` (default: from
   * the start; pass `output.length` to wait for something new); rejects if the process exits first.
   */
  waitFor(pattern: RegExp, timeoutMs = 60_000, since = 0): Promise<RegExpExecArray> {
    return new Promise((resolve, reject) => {
      const check = () => {
        const match = pattern.exec(this.output.slice(since));
        if (match) {
          cleanup();
          resolve(match);
        }
      };
      const onExit = (code: number | null) => {
        cleanup();
        reject(new Error(`process exited (${code}) before ${pattern}:\n${this.stdout}${this.stderr}`));
      };
      const timer = setTimeout(() => {
        cleanup();
        reject(new Error(`timed out waiting for ${pattern}:\n${this.stdout}${this.stderr}`));
      }, timeoutMs);
      const cleanup = () => {
        clearTimeout(timer);
        this.child.stdout!.off("data", check);
        this.child.stderr!.off("data", check);
        this.child.off("exit", onExit);
      };
      this.child.stdout!.on("data", check);
      this.child.stderr!.on("data", check);
      this.child.once("exit", onExit);
      check();
    });
  }

  /** Sends a signal and waits for the exit; resolves with the exit code (null when killed by the signal). */
  stop(signal: NodeJS.Signals = "SIGTERM"): Promise<number | null> {
    if (this.child.exitCode !== null || this.child.signalCode !== null) return Promise.resolve(this.child.exitCode);
    return new Promise((resolve) => {
      this.child.once("exit", (code) => resolve(code));
      this.child.kill(signal);
    });
  }
}
