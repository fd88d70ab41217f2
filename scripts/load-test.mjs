#!/usr/bin/env node
/**
 * Bounded load generator for `sd-trt serve` (loopback only).
 *
 *   node scripts/load-test.mjs --requests 1000 --concurrency 8            # starts its own server
 *   node scripts/load-test.mjs --url http://127.0.0.1:7860 --requests 200 # uses a running one
 *
 * After `--warmup` unmeasured requests (default 500), sends `--requests` A1111 txt2img requests
 * with at most `--concurrency` in flight, and reports
 * requests/s, latency percentiles, errors by status, and the server's RSS over time (read from
 * /proc/<pid>/status when it started the server itself, else from GET /health). Started on its
 * own, the server is a child process running the `serve` command of dist/ (`--port 0`; run
 * `npm run build:ts` first) and is stopped with SIGTERM at the end, which also exercises
 * graceful shutdown.
 *
 * Exit status: 0 when every request succeeded, 1 otherwise.
 */
import { spawn } from "node:child_process";
import { existsSync, mkdtempSync, readFileSync, rmSync, writeFileSync } from "node:fs";
import { tmpdir } from "node:os";
import { dirname, join } from "node:path";
import { fileURLToPath, pathToFileURL } from "node:url";
import { parseArgs } from "node:util";

const root = join(dirname(fileURLToPath(import.meta.url)), "..");

const { values: args } = parseArgs({
  options: {
    url: { type: "string" },
    requests: { type: "string", default: "1000" },
    warmup: { type: "string", default: "500" },
    concurrency: { type: "string", default: "8" },
    width: { type: "string", default: "64" },
    height: { type: "string", default: "64" },
    steps: { type: "string", default: "4" },
    "batch-size": { type: "string", default: "1" },
    sampler: { type: "string", default: "Euler" },
    "cfg-scale": { type: "string", default: "7" },
    token: { type: "string" },
    model: { type: "string" },
    backend: { type: "string", default: "cpu" },
    "max-queue": { type: "string", default: "256" },
    "batch-window-ms": { type: "string", default: "5" },
    "rss-interval-ms": { type: "string", default: "250" },
    "timeout-ms": { type: "string", default: "120000" },
    json: { type: "boolean", default: false },
    help: { type: "boolean", default: false },
  },
});

if (args.help) {
  const source = readFileSync(fileURLToPath(import.meta.url), "utf8");
  const doc = source.slice(source.indexOf("/**") + 3, source.indexOf("*/"));
  console.log(doc.split("\n").map((line) => line.replace(/^ \* ?/, "")).join("\n").trim());
  console.log("\nFlags: --url --requests --warmup --concurrency --width --height --steps --batch-size --sampler --cfg-scale --token --model --backend --max-queue --batch-window-ms --rss-interval-ms --timeout-ms --json");
  process.exit(0);
}

function positiveInt(name) {
  const value = Number(args[name]);
  if (!Number.isInteger(value) || value < 1) {
    console.error(`load-test: --${name} must be a positive integer, got ${JSON.stringify(args[name])}`);
    process.exit(2);
  }
  return value;
}

const totalRequests = positiveInt("requests");
const warmupRequests = args.warmup === "0" ? 0 : positiveInt("warmup");
const concurrency = positiveInt("concurrency");
const rssIntervalMs = positiveInt("rss-interval-ms");
const timeoutMs = positiveInt("timeout-ms");

const LOOPBACK = new Set(["127.0.0.1", "localhost", "[::1]", "::1"]);

function percentile(sorted, q) {
  if (sorted.length === 0) return NaN;
  const rank = (q / 100) * (sorted.length - 1);
  const low = Math.floor(rank);
  const high = Math.ceil(rank);
  return sorted[low] + (sorted[high] - sorted[low]) * (rank - low);
}

/**
 * Starts `sd-trt serve --port 0` as a child (the serve command module from dist/, under yargs as
 * the CLI runs it) and waits for its "listening on" line.
 */
async function startServer() {
  const serveModule = join(root, "dist", "cli", "commands", "serve.js");
  if (!existsSync(serveModule)) {
    console.error(`load-test: ${serveModule} is missing; run "npm run build:ts" first, or pass --url of a running server`);
    process.exit(2);
  }
  const runner = [
    `import yargs from ${JSON.stringify(import.meta.resolve("yargs"))};`,
    `import serve from ${JSON.stringify(pathToFileURL(serveModule).href)};`,
    `await yargs(process.argv.slice(2)).scriptName("sd-trt").strict().command(serve).demandCommand(1).parseAsync();`,
  ].join("\n");
  const serveArgs = ["serve", "--host", "127.0.0.1", "--port", "0", "--backend", args.backend, "--max-queue", args["max-queue"], "--batch-window-ms", args["batch-window-ms"], "--quiet"];
  if (args.model) serveArgs.push("--model", args.model);
  if (args.token) serveArgs.push("--token", args.token);
  // A file, not `node --input-type=module -e`: that flag would reach the ONNX Runtime worker
  // thread (workers inherit execArgv) and make its CommonJS source fail to load.
  const runnerDir = mkdtempSync(join(tmpdir(), "sd-trt-load-test-"));
  const runnerFile = join(runnerDir, "serve.mjs");
  writeFileSync(runnerFile, runner);
  const child = spawn(process.execPath, [runnerFile, ...serveArgs], { cwd: root, stdio: ["ignore", "pipe", "pipe"] });
  child.once("exit", () => rmSync(runnerDir, { recursive: true, force: true }));
  let stderr = "";
  child.stderr.on("data", (chunk) => (stderr += chunk));
  const url = await new Promise((resolve, reject) => {
    let out = "";
    const onData = (chunk) => {
      out += chunk;
      const match = /listening on (http:\/\/\S+)/.exec(out);
      if (match) {
        child.stdout.off("data", onData);
        child.stdout.resume();
        child.off("exit", onExit);
        resolve(match[1]);
      }
    };
    const onExit = (code) => reject(new Error(`the server exited with status ${code} before listening:\n${stderr}`));
    child.stdout.on("data", onData);
    child.once("exit", onExit);
  });
  return { child, url };
}

function readProcRss(pid) {
  try {
    const status = readFileSync(`/proc/${pid}/status`, "utf8");
    const match = /VmRSS:\s+(\d+)\s+kB/.exec(status);
    return match ? Number(match[1]) * 1024 : null;
  } catch {
    return null;
  }
}

async function main() {
  let child = null;
  let baseUrl = args.url;
  if (baseUrl) {
    const host = new URL(baseUrl).hostname;
    if (!LOOPBACK.has(host)) {
      console.error(`load-test: --url must point at this machine (127.0.0.1, ::1 or localhost), got ${host}`);
      process.exit(2);
    }
  } else {
    ({ child, url: baseUrl } = await startServer());
  }
  const headers = { "Content-Type": "application/json" };
  if (args.token) headers.Authorization = `Bearer ${args.token}`;

  const rss = [];
  const t0 = performance.now();
  // RSS from /proc when the server is our child (independent of the server), else from /health;
  // /health also gives the JS heap and array buffers, which tell a leak from allocator growth.
  const sampleRss = async () => {
    let memory = null;
    try {
      memory = (await (await fetch(`${baseUrl}/health`, { headers })).json()).memory ?? null;
    } catch {
      memory = null;
    }
    const value = (child ? readProcRss(child.pid) : null) ?? memory?.rss ?? null;
    if (value !== null) {
      rss.push({ seconds: (performance.now() - t0) / 1000, bytes: value, heapUsedBytes: memory?.heapUsed ?? null, arrayBuffersBytes: memory?.arrayBuffers ?? null });
    }
  };
  await sampleRss();
  const rssTimer = setInterval(sampleRss, rssIntervalMs);

  const body = (i) =>
    JSON.stringify({
      prompt: `load test request ${i % 17}`,
      negative_prompt: "",
      seed: i,
      steps: Number(args.steps),
      cfg_scale: Number(args["cfg-scale"]),
      width: Number(args.width),
      height: Number(args.height),
      batch_size: Number(args["batch-size"]),
      sampler_name: args.sampler,
    });

  const latencies = [];
  const errors = new Map();
  let images = 0;
  /** Sends `count` requests with at most `concurrency` in flight; records them unless warming up. */
  async function runPhase(count, record) {
    let next = 0;
    async function worker() {
      while (next < count) {
        const i = next++;
        const began = performance.now();
        try {
          const response = await fetch(`${baseUrl}/sdapi/v1/txt2img`, { method: "POST", headers, body: body(record ? i : totalRequests + i), signal: AbortSignal.timeout(timeoutMs) });
          const payload = await response.json();
          if (!record) continue;
          if (response.status !== 200) {
            const key = `${response.status} ${payload.error ?? ""}`.trim();
            errors.set(key, (errors.get(key) ?? 0) + 1);
          } else {
            images += payload.images.length;
            latencies.push(performance.now() - began);
          }
        } catch (error) {
          if (!record) continue;
          const key = error.name === "TimeoutError" ? "timeout" : `network: ${error.message}`;
          errors.set(key, (errors.get(key) ?? 0) + 1);
        }
      }
    }
    await Promise.all(Array.from({ length: Math.min(concurrency, count) }, worker));
  }

  // Warm-up: the allocator, V8's heap and ONNX Runtime's arenas grow to their working size first.
  if (warmupRequests > 0) await runPhase(warmupRequests, false);
  await sampleRss();
  const measuredFrom = rss.length - 1;
  const start = performance.now();
  await runPhase(totalRequests, true);
  const seconds = (performance.now() - start) / 1000;
  clearInterval(rssTimer);
  await sampleRss();

  let health = null;
  try {
    health = await (await fetch(`${baseUrl}/health`)).json();
  } catch {
    health = null;
  }
  if (child) {
    child.kill("SIGTERM");
    await new Promise((resolve) => child.once("exit", resolve));
  }

  const sorted = [...latencies].sort((a, b) => a - b);
  const errorCount = [...errors.values()].reduce((a, b) => a + b, 0);
  // RSS at the end of the warm-up against the end of the measured run: a leak shows as growth.
  const measured = rss.slice(measuredFrom);
  const rssWarm = measured[0]?.bytes ?? NaN;
  const rssEnd = measured[measured.length - 1]?.bytes ?? NaN;
  const rssMax = Math.max(...measured.map((s) => s.bytes));
  const report = {
    requests: totalRequests,
    concurrency,
    succeeded: latencies.length,
    errors: errorCount,
    errorsByKind: Object.fromEntries(errors),
    images,
    seconds,
    requestsPerSecond: latencies.length / seconds,
    imagesPerSecond: images / seconds,
    latencyMs: { p50: percentile(sorted, 50), p90: percentile(sorted, 90), p99: percentile(sorted, 99), max: sorted[sorted.length - 1] ?? NaN },
    warmupRequests,
    rss: { samples: rss.length, startBytes: rss[0]?.bytes ?? NaN, afterWarmupBytes: rssWarm, endBytes: rssEnd, maxAfterWarmupBytes: rssMax, growthAfterWarmupBytes: rssEnd - rssWarm },
    rssOverTime: rss,
    serverCounters: health?.counters ?? null,
    request: { width: Number(args.width), height: Number(args.height), steps: Number(args.steps), batch_size: Number(args["batch-size"]), sampler_name: args.sampler },
  };

  if (args.json) {
    console.log(JSON.stringify(report, null, 2));
  } else {
    const mb = (b) => `${(b / 1048576).toFixed(1)} MiB`;
    console.log(`requests      ${report.succeeded}/${totalRequests} succeeded, ${errorCount} errors${errorCount ? " " + JSON.stringify(report.errorsByKind) : ""}`);
    console.log(`throughput    ${report.requestsPerSecond.toFixed(2)} req/s, ${report.imagesPerSecond.toFixed(2)} images/s over ${seconds.toFixed(1)} s (concurrency ${concurrency})`);
    console.log(`latency       p50 ${report.latencyMs.p50.toFixed(1)} ms, p90 ${report.latencyMs.p90.toFixed(1)} ms, p99 ${report.latencyMs.p99.toFixed(1)} ms, max ${report.latencyMs.max.toFixed(1)} ms`);
    console.log(`server RSS    before warm-up (${warmupRequests} requests) ${mb(report.rss.startBytes)}, after ${mb(rssWarm)}, end ${mb(rssEnd)}, max ${mb(rssMax)} (growth after warm-up ${mb(rssEnd - rssWarm)})`);
    const step = Math.max(1, Math.floor(rss.length / 10));
    console.log(`RSS over time ${rss.filter((_, i) => i % step === 0 || i === rss.length - 1).map((s) => `${s.seconds.toFixed(0)}s:${mb(s.bytes)}`).join("  ")}`);
    if (health?.counters) console.log(`server        ${JSON.stringify(health.counters)}`);
  }
  process.exitCode = errorCount === 0 ? 0 : 1;
}

main().catch((error) => {
  console.error(`load-test: ${error.stack ?? error}`);
  process.exitCode = 1;
});
