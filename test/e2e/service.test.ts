/**
 * PipelineService on the tiny model (CPU backend): merged batches give every caller exactly its
 * own images, cancellation of queued / running / merged requests, the busy error, failure
 * isolation, interrupt and shutdown.
 */
import { afterAll, beforeAll, describe, expect, test } from "@jest/globals";
import { InvalidOptionError, AbortError, BusyError, ServiceClosedError } from "../../lib/errors.js";
import { Pipeline, type GenerateOptions, type GenerateResult, type ProgressEvent } from "../../lib/pipeline/pipeline.js";
import { PipelineService } from "../../lib/service/pipeline-service.js";

let pipe: Pipeline;
beforeAll(async () => {
  pipe = await Pipeline.load(undefined, { backend: "cpu" });
});
afterAll(async () => {
  await pipe?.dispose();
});

const base = { width: 64, height: 64, steps: 6, scheduler: "euler" } as const;

function sameImages(a: GenerateResult, b: GenerateResult): void {
  expect(a.images).toHaveLength(b.images.length);
  a.images.forEach((image, i) => {
    expect(image.seed).toBe(b.images[i]!.seed);
    expect(image.infotext).toBe(b.images[i]!.infotext);
    // Pixel for pixel: batching must change nothing.
    expect(Buffer.compare(Buffer.from(image.rgb), Buffer.from(b.images[i]!.rgb))).toBe(0);
  });
}

/** Runs `requests` through a service that merges them (a long window, submitted together). */
async function viaMergedService(requests: GenerateOptions[]): Promise<{ results: GenerateResult[]; service: PipelineService }> {
  const service = await PipelineService.create(pipe, { batchWindowMs: 10_000, maxBatch: requests.reduce((n, r) => n + (r.batch ?? r.seeds?.length ?? 1), 0) });
  const results = await Promise.all(requests.map((r) => service.generate(r)));
  await service.dispose();
  return { results, service };
}

describe("dynamic batching", () => {
  test("compatible requests run as one batch, and each caller gets the images it gets alone", async () => {
    const requests: GenerateOptions[] = [
      { ...base, prompt: "a red barn in the snow", seeds: [11, 12] },
      { ...base, prompt: "a lighthouse at dusk", negativePrompt: "fog", seed: 5, batch: 2, guidance: 4 },
      { ...base, prompt: ["a cat", "a dog"], seeds: [3, 4], rng: "nv", guidance: 9 },
    ];
    const { results, service } = await viaMergedService(requests);
    expect(service.counters()).toMatchObject({ batches: 1, batchedRequests: 3, done: 3, images: 6, failed: 0 });
    for (let i = 0; i < requests.length; i++) sameImages(results[i]!, await pipe.generate(requests[i]!));
  });

  test("ancestral noise and returned latents stay per request in a merged batch", async () => {
    const requests: GenerateOptions[] = [
      { ...base, scheduler: "euler_a", prompt: "a forest", seed: 21, batch: 2, returnLatents: true },
      { ...base, scheduler: "euler_a", prompt: "a river", seeds: [8], returnLatents: true },
    ];
    const { results, service } = await viaMergedService(requests);
    expect(service.counters().batchedRequests).toBe(2);
    for (let i = 0; i < requests.length; i++) {
      const alone = await pipe.generate(requests[i]!);
      sameImages(results[i]!, alone);
      expect(Buffer.compare(Buffer.from(results[i]!.latents!.buffer, results[i]!.latents!.byteOffset, results[i]!.latents!.byteLength), Buffer.from(alone.latents!.buffer))).toBe(0);
    }
  });

  test("img2img requests with the same strength merge, each with its own init image", async () => {
    const image = (shift: number) => {
      const rgb = new Uint8Array(64 * 64 * 3);
      for (let i = 0; i < rgb.length; i++) rgb[i] = (i * 7 + shift) % 256;
      return { data: rgb, width: 64, height: 64, channels: 3 as const };
    };
    const requests: GenerateOptions[] = [
      { ...base, scheduler: "pndm", steps: 10, prompt: "a painting", seeds: [1], initImage: image(0), strength: 0.6 },
      { ...base, scheduler: "pndm", steps: 10, prompt: "a photo", seed: 2, batch: 2, initImage: image(99), strength: 0.6 },
    ];
    const { results, service } = await viaMergedService(requests);
    expect(service.counters()).toMatchObject({ batches: 1, batchedRequests: 2 });
    for (let i = 0; i < requests.length; i++) sameImages(results[i]!, await pipe.generate(requests[i]!));
  });

  test("an idle service holds a request for company within the window; a full batch starts at once", async () => {
    // A 60 s window, past this test's 30 s timeout: it can only pass if the full batch does not wait it out.
    const windowed = await PipelineService.create(pipe, { batchWindowMs: 60_000, maxBatch: 2 });
    const first = windowed.generate({ ...base, prompt: "early", seed: 1 });
    await new Promise((resolve) => setTimeout(resolve, 20));
    expect(windowed.counters()).toMatchObject({ queued: 1, running: 0 }); // held, not started
    const second = windowed.generate({ ...base, prompt: "late", seed: 2 });
    await Promise.all([first, second]);
    expect(windowed.counters()).toMatchObject({ batches: 1, batchedRequests: 2 });
    await windowed.dispose();
  }, 30_000);

  test("incompatible requests (size, steps, guidance on/off) run in separate batches", async () => {
    const service = await PipelineService.create(pipe, { batchWindowMs: 50 });
    await Promise.all([
      service.generate({ ...base, prompt: "a", seed: 1 }),
      service.generate({ ...base, prompt: "b", seed: 1, width: 80 }), // latent sizes must be even for the tiny UNet
      service.generate({ ...base, prompt: "c", seed: 1, steps: 5 }),
      service.generate({ ...base, prompt: "d", seed: 1, guidance: 1 }),
      service.generate({ ...base, prompt: "e", seed: 2 }),
    ]);
    // "a" and "e" merge; the other three run alone.
    expect(service.counters()).toMatchObject({ batches: 4, batchedRequests: 2, done: 5 });
    await service.dispose();
  });

  test("a merged batch never exceeds maxBatch images", async () => {
    // No two requests fit together; each waits the window for company, then runs alone.
    const service = await PipelineService.create(pipe, { batchWindowMs: 20, maxBatch: 3 });
    await Promise.all([1, 2, 3, 4].map((seed) => service.generate({ ...base, prompt: "x", seeds: [seed, seed + 10] })));
    expect(service.counters()).toMatchObject({ batches: 4, batchedRequests: 0, images: 8 });
    await service.dispose();
  });

  test("a request that fails inside a merged batch fails alone; the others get their images", async () => {
    const service = await PipelineService.create(pipe, { batchWindowMs: 10_000, maxBatch: 2 });
    const good = { ...base, prompt: "a painting", seeds: [1], initImage: { data: new Uint8Array(64 * 64 * 3).fill(128), width: 64, height: 64, channels: 3 as const }, strength: 0.5 };
    const bad = { ...good, initImage: new Uint8Array([1, 2, 3, 4]) }; // not an image: fails when read
    const [okResult, badResult] = await Promise.allSettled([service.generate(good), service.generate(bad)]);
    expect(okResult.status).toBe("fulfilled");
    expect(badResult.status).toBe("rejected");
    expect((badResult as PromiseRejectedResult).reason).toBeInstanceOf(InvalidOptionError);
    expect(service.counters()).toMatchObject({ done: 1, failed: 1 });
    sameImages((okResult as PromiseFulfilledResult<GenerateResult>).value, await pipe.generate(good));
    await service.dispose();
  });
});

describe("validation, backpressure and cancellation", () => {
  test("invalid options are refused before queueing, naming the option", async () => {
    const service = await PipelineService.create(pipe);
    await expect(service.generate({ ...base, prompt: "x", steps: 0 })).rejects.toThrow(/steps must be an integer from 1 to 1000/);
    await expect(service.generate({ ...base, prompt: "x", width: 65 })).rejects.toMatchObject({ option: "width" });
    expect(service.counters()).toMatchObject({ queued: 0, batches: 0, failed: 0 });
    await service.dispose();
  });

  test("a full queue refuses with a typed busy error (ERR_BUSY) instead of growing", async () => {
    const service = await PipelineService.create(pipe, { maxQueue: 2, batchWindowMs: 0 });
    const running = service.generate({ ...base, prompt: "running", seed: 1 }); // starts at once
    const queued = [service.generate({ ...base, prompt: "q1", seed: 2, width: 80 }), service.generate({ ...base, prompt: "q2", seed: 3, width: 96 })];
    const refused = service.generate({ ...base, prompt: "refused", seed: 4 });
    await expect(refused).rejects.toBeInstanceOf(BusyError);
    await expect(refused).rejects.toMatchObject({ code: "ERR_BUSY", maxQueue: 2, queued: 2 });
    // All-or-nothing admission of a group.
    const group = service.generateAll([{ ...base, prompt: "g", seed: 5 }, { ...base, prompt: "g", seed: 6 }]);
    await expect(Promise.all(group)).rejects.toBeInstanceOf(BusyError);
    await Promise.all([running, ...queued]);
    expect(service.counters()).toMatchObject({ done: 3, rejected: 3, queued: 0 });
    await service.dispose();
  });

  test("a queued request that is cancelled is removed; the others are unaffected", async () => {
    const service = await PipelineService.create(pipe, { batchWindowMs: 0 });
    const first = service.generate({ ...base, prompt: "first", seed: 1 });
    const controller = new AbortController();
    const cancelled = service.generate({ ...base, prompt: "second", seed: 2, width: 80, signal: controller.signal });
    expect(service.counters().queued).toBe(1);
    controller.abort(new AbortError("changed my mind"));
    await expect(cancelled).rejects.toThrow("changed my mind");
    expect(service.counters()).toMatchObject({ queued: 0, cancelled: 1 });
    await first;
    expect(service.counters()).toMatchObject({ done: 1, cancelled: 1, batches: 1 });
    await service.dispose();
  });

  test("a running request that is cancelled stops between steps", async () => {
    const service = await PipelineService.create(pipe);
    const controller = new AbortController();
    const events: ProgressEvent[] = [];
    const steps = 40;
    const running = service.generate({
      ...base,
      steps,
      prompt: "long",
      seed: 1,
      signal: controller.signal,
      onProgress: (event) => {
        events.push(event);
        if (event.stage === "denoise" && event.step === 3) controller.abort();
      },
    });
    await expect(running).rejects.toMatchObject({ name: "AbortError" });
    await service.close(10_000); // the run itself has stopped once the service is idle
    const denoised = events.filter((e) => e.stage === "denoise").length;
    expect(denoised).toBeGreaterThanOrEqual(3);
    expect(denoised).toBeLessThan(steps);
    expect(events.some((e) => e.stage === "decode")).toBe(false);
    expect(service.counters()).toMatchObject({ cancelled: 1, done: 0, failed: 0, running: 0 });
    await service.dispose();
  });

  test("cancelling one request of a merged batch does not fail the others", async () => {
    const service = await PipelineService.create(pipe, { batchWindowMs: 10_000, maxBatch: 2 });
    const controller = new AbortController();
    const keep = { ...base, prompt: "keep me", seeds: [31] };
    let batchRunning!: () => void;
    const started = new Promise<void>((resolve) => (batchRunning = resolve));
    const kept = service.generate({ ...keep, onProgress: (e) => e.stage === "denoise" && e.step === 2 && batchRunning() });
    const dropped = service.generate({ ...base, prompt: "drop me", seeds: [32], signal: controller.signal });
    await started;
    controller.abort();
    await expect(dropped).rejects.toMatchObject({ name: "AbortError" });
    sameImages(await kept, await pipe.generate(keep));
    expect(service.counters()).toMatchObject({ batchedRequests: 2, done: 1, cancelled: 1 });
    await service.dispose();
  });

  test("interrupt cancels the running batch and leaves the queue running", async () => {
    const service = await PipelineService.create(pipe, { batchWindowMs: 0 });
    let interrupted = 0;
    const first = service.generate({ ...base, steps: 40, prompt: "first", seed: 1, onProgress: (e) => {
        if (e.stage === "denoise" && e.step === 2) interrupted = service.interrupt();
      },
    });
    const second = service.generate({ ...base, prompt: "second", seed: 2, width: 80 });
    await expect(first).rejects.toMatchObject({ name: "AbortError" });
    expect(interrupted).toBe(1);
    expect((await second).images).toHaveLength(1);
    await service.dispose();
  });

  test("close drains what is queued, then refuses new work", async () => {
    const service = await PipelineService.create(pipe, { batchWindowMs: 0 });
    const pending = [service.generate({ ...base, prompt: "a", seed: 1 }), service.generate({ ...base, prompt: "b", seed: 2, width: 96 })];
    await service.close(30_000);
    expect((await Promise.all(pending)).map((r) => r.images.length)).toEqual([1, 1]);
    await expect(service.generate({ ...base, prompt: "late", seed: 3 })).rejects.toBeInstanceOf(ServiceClosedError);
    await service.dispose();
  });

  test("close with no drain time cancels what is queued and running", async () => {
    const service = await PipelineService.create(pipe, { batchWindowMs: 0 });
    const pending = [service.generate({ ...base, steps: 40, prompt: "a", seed: 1 }), service.generate({ ...base, prompt: "b", seed: 2, width: 96 })];
    await service.close(0);
    const settled = await Promise.allSettled(pending);
    expect(settled.map((s) => s.status)).toEqual(["rejected", "rejected"]);
    expect(service.counters()).toMatchObject({ cancelled: 2, running: 0, queued: 0 });
    await service.dispose();
  });
});
