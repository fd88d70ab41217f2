#!/usr/bin/env node
/**
 * The fleet's own cost, measured: requests/s and latency p50/p99 with 1, 2 and 3 workers over
 * Redis, against the same workers without Redis, and the RSS of every process over a long run.
 *
 *   node scripts/bench-fleet.mjs                       # defaults: 300 requests per run, then 2000 jobs for RSS
 *   node scripts/bench-fleet.mjs --requests 100 --rss-jobs 500 --json
 *
 * Needs redis-server (Debian package) and a built dist/ (`npm run build:ts`). Everything runs on
 * 127.0.0.1: a redis-server of its own (temporary directory, no persistence), the processes of
 * the built CLI, and a load generator keeping `--concurrency-per-worker` × N requests in flight.
 *
 * - "direct": N `sd-trt serve` processes (one CPU pipeline each); the load generator spreads the
 *   requests over them round-robin. The same worker processes' compute, no queue.
 * - "redis":  N `sd-trt worker` processes and one `sd-trt serve --redis` front end; every request
 *   goes through BullMQ. Each worker takes `--concurrency-per-worker` jobs at once, so it can
 *   batch as many requests as a direct server sees in flight.
 * The ratio direct/redis of requests/s is the queue's overhead on this machine and model (the
 * tiny model at 64×64 makes a job short, so the overhead shows more than with a real model).
 *
 * Then `--rss-jobs` requests through the fleet (3 workers), sampling each process's RSS
 * (/proc/<pid>/status) every `--rss-every` jobs, and the same through 3 direct servers, so that
 * growth of the workers can be told apart from what any serving process does over that run.
 */
import { spawn, spawnSync } from "node:child_process";
import { mkdtempSync, readFileSync, rmSync } from "node:fs";
import { createServer } from "node:net";
import { tmpdir } from "node:os";
import { dirname, join } from "node:path";
import { fileURLToPath } from "node:url";
import { parseArgs } from "node:util";

const root = join(dirname(fileURLToPath(import.meta.url)), "..");
const cli = join(root, "dist", "cli", "main.js");

const { values: args } = parseArgs({
  options: {
    requests: { type: "string", default: "300" },
    warmup: { type: "string", default: "30" },
    "concurrency-per-worker": { type: "string", default: "4" },
    workers: { type: "string", default: "1,2,3" },
    steps: { type: "string", default: "4" },
    size: { type: "string", default: "64" },
    "rss-jobs": { type: "string", default: "2000" },
    "rss-every": { type: "string", default: "250" },
    json: { type: "boolean", default: false },
  },
});
const requests = Number(args.requests);
const warmup = Number(args.warmup);
const perWorker = Number(args["concurrency-per-worker"]);
const workerCounts = args.workers.split(",").map(Number);
const body = (i) => ({ prompt: `bench ${i % 7}`, seed: 10_000 + i, steps: Number(args.steps), width: Number(args.size), height: Number(args.size), sampler_name: "Euler", cfg_scale: 7 });

if (spawnSync("sh", ["-c", "command -v redis-server"]).status !== 0) {
  console.error("bench-fleet: redis-server is not installed (apt-get install redis-server)");
  process.exit(1);
}

function freePort() {
  return new Promise((resolve) => {
    const server = createServer().listen(0, "127.0.0.1", () => {
      const { port } = server.address();
      server.close(() => resolve(port));
    });
  });
}

/** Starts a process and resolves once a line matches `ready`. */
function start(command, argv, ready) {
  const child = spawn(command, argv, { stdio: ["ignore", "pipe", "pipe"], env: { ...process.env, NODE_NO_WARNINGS: "1" } });
  let output = "";
  return new Promise((resolve, reject) => {
    const check = (chunk) => {
      output += chunk.toString();
      const match = ready.exec(output);
      if (match) {
        child.stdout.off("data", check);
        resolve({ child, match });
      }
    };
    child.stdout.on("data", check);
    child.stderr.on("data", () => {});
    child.once("exit", (code) => reject(new Error(`${argv.join(" ")} exited (${code}) before it was ready:\n${output}`)));
  });
}

function stop(child) {
  if (child.exitCode !== null) return Promise.resolve();
  return new Promise((resolve) => {
    child.once("exit", resolve);
    child.kill("SIGTERM");
  });
}

function rssMiB(pid) {
  try {
    const kb = Number(/VmRSS:\s+(\d+)/.exec(readFileSync(`/proc/${pid}/status`, "utf8"))?.[1]);
    return Math.round(kb / 1024);
  } catch {
    return null;
  }
}

async function post(url, payload) {
  const started = performance.now();
  const response = await fetch(`${url}/sdapi/v1/txt2img`, { method: "POST", body: JSON.stringify(payload) });
  await response.arrayBuffer();
  return { status: response.status, ms: performance.now() - started };
}

/** `count` requests with `concurrency` in flight, spread round-robin over `urls`. */
async function load(urls, count, concurrency, offset = 0, onDone = () => {}) {
  const latencies = [];
  const errors = {};
  let next = 0;
  const started = performance.now();
  await Promise.all(
    Array.from({ length: concurrency }, async () => {
      while (next < count) {
        const i = next++;
        const { status, ms } = await post(urls[i % urls.length], body(offset + i));
        if (status === 200) latencies.push(ms);
        else errors[status] = (errors[status] ?? 0) + 1;
        onDone(i + 1);
      }
    }),
  );
  const seconds = (performance.now() - started) / 1000;
  latencies.sort((a, b) => a - b);
  const pct = (p) => latencies[Math.min(latencies.length - 1, Math.floor((p / 100) * latencies.length))] ?? NaN;
  return { requests: count, ok: latencies.length, errors, seconds, rps: latencies.length / seconds, p50: pct(50), p99: pct(99) };
}

const dir = mkdtempSync(join(tmpdir(), "sd-trt-bench-fleet-"));
const redisPort = await freePort();
const redis = (await start("redis-server", ["--port", String(redisPort), "--bind", "127.0.0.1", "--save", "", "--appendonly", "no", "--dir", dir], /Ready to accept connections/)).child;
const redisUrl = `redis://127.0.0.1:${redisPort}`;

async function direct(n) {
  const servers = await Promise.all(Array.from({ length: n }, () => start(process.execPath, [cli, "serve", "--backend", "cpu", "--port", "0", "--quiet", "--max-queue", "1000", "--batch-window-ms", "0"], /listening on (http:\/\/\S+)/)));
  const urls = servers.map((s) => s.match[1]);
  try {
    await load(urls, warmup, perWorker * n, 1_000_000);
    return await load(urls, requests, perWorker * n);
  } finally {
    await Promise.all(servers.map((s) => stop(s.child)));
  }
}

async function fleet(n, queue, run) {
  const workers = await Promise.all(Array.from({ length: n }, () => start(process.execPath, [cli, "worker", "--redis", redisUrl, "--queue", queue, "--backend", "cpu", "--quiet", "--batch-window-ms", "0", "--concurrency", String(perWorker)], /sd-trt worker: ready/)));
  const front = await start(process.execPath, [cli, "serve", "--redis", redisUrl, "--queue", queue, "--port", "0", "--quiet", "--max-queue", "1000"], /listening on (http:\/\/\S+)/);
  const url = front.match[1];
  try {
    // The front end learns the workers from their heartbeats.
    for (;;) {
      const health = await (await fetch(`${url}/health`)).json();
      if (health.fleet.workers.length === n) break;
      await new Promise((resolve) => setTimeout(resolve, 100));
    }
    return await run(url, front.child, workers.map((w) => w.child));
  } finally {
    await stop(front.child);
    await Promise.all(workers.map((w) => stop(w.child)));
  }
}

const results = [];
try {
  for (const n of workerCounts) {
    const withoutRedis = await direct(n);
    const withRedis = await fleet(n, `bench-${n}`, async (url) => {
      await load([url], warmup, perWorker * n, 1_000_000);
      return load([url], requests, perWorker * n);
    });
    results.push({ workers: n, direct: withoutRedis, redis: withRedis, overhead: withoutRedis.rps / withRedis.rps });
    if (!args.json) {
      const line = (name, r) => `${name.padEnd(6)} ${r.rps.toFixed(1).padStart(6)} req/s  p50 ${r.p50.toFixed(0).padStart(5)} ms  p99 ${r.p99.toFixed(0).padStart(5)} ms  errors ${JSON.stringify(r.errors)}`;
      console.log(`${n} worker(s), ${perWorker * n} in flight, ${requests} requests:`);
      console.log(`  ${line("direct", withoutRedis)}`);
      console.log(`  ${line("redis", withRedis)}`);
      console.log(`  queue overhead: direct/redis throughput = ${(withoutRedis.rps / withRedis.rps).toFixed(2)}`);
    }
  }

  const jobs = Number(args["rss-jobs"]);
  const every = Number(args["rss-every"]);
  const rss = await fleet(3, "bench-rss", async (url, front, workers) => {
    const pids = { front: front.pid, workers: workers.map((w) => w.pid), redis: redis.pid };
    const sample = (done) => ({ done, front: rssMiB(pids.front), workers: pids.workers.map(rssMiB), redis: rssMiB(pids.redis) });
    const samples = [sample(0)];
    const run = await load([url], jobs, perWorker * 3, 2_000_000, (done) => {
      if (done % every === 0) samples.push(sample(done));
    });
    return { run, samples };
  });
  const servers = await Promise.all(Array.from({ length: 3 }, () => start(process.execPath, [cli, "serve", "--backend", "cpu", "--port", "0", "--quiet", "--max-queue", "1000", "--batch-window-ms", "0"], /listening on (http:\/\/\S+)/)));
  let directRss;
  try {
    const pids = servers.map((s) => s.child.pid);
    const samples = [{ done: 0, servers: pids.map(rssMiB) }];
    const run = await load(servers.map((s) => s.match[1]), jobs, perWorker * 3, 2_000_000, (done) => {
      if (done % every === 0) samples.push({ done, servers: pids.map(rssMiB) });
    });
    directRss = { run, samples };
  } finally {
    await Promise.all(servers.map((s) => stop(s.child)));
  }
  results.push({ rss, directRss });
  if (args.json) console.log(JSON.stringify(results, null, 2));
  else {
    console.log(`\nRSS (MiB) over ${jobs} jobs through the fleet (3 workers), ${rss.run.rps.toFixed(1)} req/s, errors ${JSON.stringify(rss.run.errors)}:`);
    console.log("  jobs   front  worker1 worker2 worker3  redis");
    for (const s of rss.samples) console.log(`  ${String(s.done).padStart(5)}  ${String(s.front).padStart(5)}  ${s.workers.map((w) => String(w).padStart(7)).join(" ")}  ${String(s.redis).padStart(5)}`);
    console.log(`\nRSS (MiB) over ${jobs} jobs through 3 direct servers (no Redis), ${directRss.run.rps.toFixed(1)} req/s, errors ${JSON.stringify(directRss.run.errors)}:`);
    console.log("  jobs  serve1  serve2  serve3");
    for (const s of directRss.samples) console.log(`  ${String(s.done).padStart(5)}  ${s.servers.map((w) => String(w).padStart(6)).join("  ")}`);
  }
} finally {
  await stop(redis);
  rmSync(dir, { recursive: true, force: true });
}
