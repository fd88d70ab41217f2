/**
 * The fleet end to end on a real redis-server (loopback, temporary, no persistence): an HTTP
 * front end over a RedisQueueClient and three `sd-trt worker` processes of the built CLI (CPU
 * backend, tiny model, 64×64). One worker is SIGKILLed mid-job and the requests still complete
 * exactly once with the images `sd-trt generate` makes; a job for an unknown model fails with
 * its reason; a full queue is a 503; interrupt and progress go through the queue; Redis
 * restarts between jobs and the workers carry on; SIGTERM hands a running job back.
 * The processes are started once for the file and reused by its tests.
 */
import { afterAll, beforeAll, expect, test } from "@jest/globals";
import { mkdtemp, readFile, rm } from "node:fs/promises";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { fileURLToPath } from "node:url";
import { Queue } from "bullmq";
import generate from "../../lib/cli/commands/generate.js";
import { ModelMismatchError } from "../../lib/errors.js";
import { RedisQueueClient } from "../../lib/fleet/client.js";
import { encodeImage } from "../../lib/image/encode.js";
import { Pipeline } from "../../lib/pipeline/pipeline.js";
import { SdServer } from "../../lib/server/server.js";
import { copyTe05Model } from "../fixtures/tiny-sd-cases/model-variants.js";
import { runCommand } from "../support/run-cli.js";
import { CliProcess, describeWith, REDIS, RedisServer } from "../support/system-tools.js";

// biome-ignore lint/suspicious/noExplicitAny: success and error bodies alike; the assertions check the fields.
type Json = any;

async function post(url: string, body: unknown): Promise<{ status: number; json: Json }> {
  const response = await fetch(url, { method: "POST", headers: { "Content-Type": "application/json" }, body: JSON.stringify(body) });
  return { status: response.status, json: await response.json() };
}

async function until(predicate: () => Promise<boolean> | boolean, what: string, timeoutMs = 30_000): Promise<void> {
  const end = Date.now() + timeoutMs;
  while (!(await predicate())) {
    if (Date.now() > end) throw new Error(`timed out waiting for ${what}`);
    await new Promise((resolve) => setTimeout(resolve, 20));
  }
}

/** Job ids a worker's log says it started / finished / handed back. */
function jobIds(log: string, what: "started" | "done" | "handed back"): string[] {
  return [...log.matchAll(new RegExp(`job (\\S+) ${what}`, "g"))].map((m) => m[1]!);
}

const EMBEDDINGS = fileURLToPath(new URL("../fixtures/a1111/clip-ti/embeddings-32", import.meta.url));

const small = { width: 64, height: 64, steps: 6, sampler_name: "Euler", cfg_scale: 7 } as const;

describeWith([REDIS], "a fleet of sd-trt workers on Redis", () => {
  let redis: RedisServer;
  const workers: CliProcess[] = [];
  let client: RedisQueueClient;
  let server: SdServer;
  let url: string;
  let pipe: Pipeline;
  let scratch: string;

  /** The PNG `sd-trt generate` writes for one A1111 image (same encoder, same infotext). */
  async function expectedPng(prompt: string, seed: number, steps: number = small.steps, size = 64): Promise<Buffer> {
    const alone = await pipe.generate({ prompt, width: size, height: size, steps, guidance: 7, scheduler: "k_euler", seeds: [seed], rng: "nv" });
    const image = alone.images[0]!;
    return encodeImage(image.rgb, image.width, image.height, { format: "png", parameters: image.infotext });
  }

  function startWorker(): CliProcess {
    // A stall timeout short enough to keep the test brief, long enough that a worker starved of CPU
    // on a busy machine still renews its locks in time.
    const worker = new CliProcess(["worker", "--redis", redis.url, "--backend", "cpu", "--stall-timeout", "4", "--drain-timeout", "1", "--batch-window-ms", "0"]);
    workers.push(worker);
    return worker;
  }

  beforeAll(async () => {
    redis = await RedisServer.start();
    scratch = await mkdtemp(join(tmpdir(), "sd-trt-fleet-"));
    const started = [startWorker(), startWorker(), startWorker()];
    pipe = await Pipeline.load(undefined, { backend: "cpu" });
    await Promise.all(started.map((w) => w.waitFor(/sd-trt worker: ready/)));
    client = await RedisQueueClient.connect({ redis: redis.url, maxQueue: 100 });
    await until(() => client.workers.length === 3, "three registered workers");
    server = new SdServer({ service: client });
    ({ url } = await server.listen({ host: "127.0.0.1", port: 0 }));
  }, 120_000);

  afterAll(async () => {
    await server?.close(0);
    await Promise.all(workers.map((w) => w.stop("SIGKILL")));
    await pipe?.dispose();
    await redis?.stop();
    await rm(scratch, { recursive: true, force: true });
  });

  test("60 requests complete exactly once with the images of sd-trt generate, though a worker is SIGKILLed mid-job", async () => {
    const prompts = ["a red barn", "a lighthouse at dusk", "a cat on a sofa", "snowy pines"];
    const bodies = Array.from({ length: 60 }, (_, i) => ({ ...small, prompt: prompts[i % prompts.length]!, seed: 2000 + i }));
    const victim = workers[0]!;
    const responses = Promise.all(bodies.map((body) => post(`${url}/sdapi/v1/txt2img`, body)));
    await victim.waitFor(/job \S+ started/);
    await victim.stop("SIGKILL");
    const answered = await responses;
    expect(answered.map((r) => r.status)).toEqual(Array(60).fill(200));

    // The jobs the victim had started and not finished were run again by the others.
    const lost = jobIds(victim.stderr, "started").filter((id) => !jobIds(victim.stderr, "done").includes(id));
    expect(lost.length).toBeGreaterThan(0);
    const survivorsDone = workers.slice(1).flatMap((w) => jobIds(w.stderr, "done"));
    for (const id of lost) expect(survivorsDone).toContain(id);
    // Exactly once for the callers: 60 jobs ran to the end (no more, no fewer), each request got
    // one answer, and the front end counted 60 done.
    expect(new Set(workers.flatMap((w) => jobIds(w.stderr, "done"))).size).toBe(60);
    expect(client.counters()).toMatchObject({ done: 60, failed: 0, queued: 0, running: 0 });

    for (const [i, body] of bodies.entries()) {
      const png = Buffer.from(answered[i]!.json.images[0] as string, "base64");
      expect(png.equals(await expectedPng(body.prompt, body.seed))).toBe(true);
    }
    // And one of them against the file the CLI itself writes.
    const out = join(scratch, "cli.png");
    const run = await runCommand(generate, ["generate", "--backend", "cpu", "--prompt", bodies[5]!.prompt, "--seeds", String(bodies[5]!.seed), "--width", "64", "--height", "64", "--steps", "6", "--guidance", "7", "--scheduler", "k_euler", "--rng", "nv", "--out", out, "--quiet"]);
    expect(run.code).toBe(0);
    expect((await readFile(out)).equals(Buffer.from(answered[5]!.json.images[0] as string, "base64"))).toBe(true);
    // The front end's /health lists the live workers; the killed one drops out when its heartbeat expires.
    await until(() => client.workers.length === 2, "the killed worker's registration to expire");
  });

  test("a job for a model no worker has fails with its reason and is listed among the failed jobs", async () => {
    const other = await RedisQueueClient.connect({ redis: redis.url, model: { name: "sd-other", hash: "0123456789" } });
    try {
      const [result] = other.generateAll([{ prompt: "x", seeds: [1], width: 64, height: 64, steps: 2 }]);
      const error = await result!.catch((e: unknown) => e);
      expect(error).toBeInstanceOf(ModelMismatchError);
      expect((error as Error).message).toMatch(/asks for model sd-other \(hash 0123456789\); worker \S+ runs tiny-sd \(hash [0-9a-f]{10}\)/);
      const failed = await other.failedJobs(10);
      expect(failed[0]).toMatchObject({ code: "ERR_MODEL_MISMATCH", attemptsMade: 1, model: { name: "sd-other", hash: "0123456789" } });
      expect(failed[0]!.reason).toMatch(/asks for model sd-other/);
    } finally {
      await other.dispose();
    }
  });

  test("a full queue answers 503 Busy at the front end", async () => {
    const small2 = await RedisQueueClient.connect({ redis: redis.url, maxQueue: 2 });
    const front = new SdServer({ service: small2 });
    const { url: frontUrl } = await front.listen({ host: "127.0.0.1", port: 0 });
    const queue = new Queue(client.queueName, { connection: { host: "127.0.0.1", port: redis.port } });
    try {
      await until(() => small2.workers.length > 0, "the registry");
      // Paused, the workers take nothing: the queue fills.
      await queue.pause();
      const waiting = [post(`${frontUrl}/sdapi/v1/txt2img`, { ...small, prompt: "one", seed: 1 }), post(`${frontUrl}/sdapi/v1/txt2img`, { ...small, prompt: "two", seed: 2 })];
      await until(async () => (await queue.count()) === 2, "two waiting jobs");
      const refused = await post(`${frontUrl}/sdapi/v1/txt2img`, { ...small, prompt: "three", seed: 3 });
      expect(refused.status).toBe(503);
      expect(refused.json).toMatchObject({ error: "Busy" });
      expect(refused.json.detail).toMatch(/2 request\(s\) are already waiting and the queue holds at most 2/);
      await queue.resume();
      expect((await Promise.all(waiting)).map((r) => r.status)).toEqual([200, 200]);
    } finally {
      await queue.resume();
      await queue.close();
      await front.close(0);
    }
  });

  test("progress and interrupt work through the queue: a long job reports steps, then stops and is answered 409", async () => {
    // Seconds of work: 1000 steps at 256×256 on the tiny model.
    const long = post(`${url}/sdapi/v1/txt2img`, { ...small, steps: 1000, width: 256, height: 256, prompt: "a very long job", seed: 9 });
    await until(async () => ((await (await fetch(`${url}/sdapi/v1/progress`)).json()) as { progress: number }).progress > 0, "progress from the worker");
    expect((await post(`${url}/sdapi/v1/interrupt`, {})).status).toBe(200);
    const response = await long;
    expect(response.status).toBe(409);
    expect(response.json).toMatchObject({ error: "Interrupted" });
    // The worker stopped it too: it is among the failed jobs as interrupted, and no worker is still busy with it.
    await until(async () => (await client.failedJobs(5)).some((job) => job.code === "ABORT_ERR"), "the interrupted job to be failed by its worker");
  });

  test("after Redis restarts between jobs, the workers reconnect and carry on", async () => {
    await redis.restart();
    // The registry was lost with Redis; the workers' heartbeats fill it again.
    await until(() => client.workers.length === 2, "the workers to register again", 60_000);
    const response = await post(`${url}/sdapi/v1/txt2img`, { ...small, prompt: "after the restart", seed: 77 });
    expect(response.status).toBe(200);
    expect(Buffer.from(response.json.images[0] as string, "base64").equals(await expectedPng("after the restart", 77))).toBe(true);
  }, 90_000);

  test("SIGTERM hands a running job back after the drain timeout; another worker finishes it", async () => {
    // Seconds of work (1000 steps at 256×256 on the tiny model), far longer than the 1 s drain.
    const steps = 1000;
    const live = workers.filter((w) => w.child.exitCode === null && w.child.signalCode === null);
    const marks = live.map((w) => w.output.length);
    const request = post(`${url}/sdapi/v1/txt2img`, { ...small, steps, width: 256, height: 256, prompt: "handed back", seed: 5 });
    const startedOn = () => live.find((w, i) => /job \S+ started/.test(w.output.slice(marks[i])));
    await until(() => startedOn() !== undefined, "a worker to start the job").catch(async (error: Error) => {
      // Say what the front end and the workers were doing.
      const tail = live.map((w, i) => `worker ${i}:\n${w.output.slice(marks[i]).slice(-2000)}`).join("\n");
      const answer = await Promise.race([request.then((r) => JSON.stringify(r.json).slice(0, 500)), new Promise((resolve) => setTimeout(() => resolve("(no answer yet)"), 100))]);
      throw new Error(`${error.message}; the request: ${answer}; health: ${JSON.stringify(client.status())} ${JSON.stringify(client.counters())}\n${tail}`);
    });
    const runner = startedOn()!;
    const stopped = runner.stop("SIGTERM");
    const response = await request;
    expect(response.status).toBe(200);
    expect(await stopped).toBe(0);
    expect(jobIds(runner.stderr, "handed back")).toHaveLength(1);
    expect(Buffer.from(response.json.images[0] as string, "base64").equals(await expectedPng("handed back", 5, steps, 256))).toBe(true);
  }, 120_000);
  test("the front end's GET /sdapi/v1/embeddings lists the embeddings its workers load (--embeddings-dir)", async () => {
    // A queue of its own: one worker on the width-32 text encoder with A1111 embeddings of that width.
    const model = await copyTe05Model(join(scratch, "te05"));
    const tiWorker = new CliProcess(["worker", "--redis", redis.url, "--queue", "sd-trt-ti", "--backend", "cpu", "--model", model, "--embeddings-dir", EMBEDDINGS]);
    workers.push(tiWorker);
    await tiWorker.waitFor(/sd-trt worker: ready/);
    const tiClient = await RedisQueueClient.connect({ redis: redis.url, queue: "sd-trt-ti" });
    const tiServer = new SdServer({ service: tiClient });
    try {
      await until(() => tiClient.workers.length === 1, "the worker to register");
      const local = await Pipeline.load(model, { backend: "cpu", embeddingsDir: EMBEDDINGS });
      const expected = local.embeddings.map(({ name, count }) => [name, count]);
      await local.dispose();
      expect(expected.length).toBeGreaterThan(0);
      const { url: tiUrl } = await tiServer.listen({ host: "127.0.0.1", port: 0 });
      const listed = (await (await fetch(`${tiUrl}/sdapi/v1/embeddings`)).json()) as Json;
      expect(Object.entries(listed.loaded).map(([name, e]) => [name, (e as Json).vectors])).toEqual(expected);
      expect(Object.values(listed.loaded).every((e) => (e as Json).shape === 32)).toBe(true);
    } finally {
      await tiServer.close(0);
      await tiClient.dispose();
      await tiWorker.stop("SIGKILL");
    }
  }, 90_000);
});
