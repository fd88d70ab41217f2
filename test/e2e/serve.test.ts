/**
 * `sd-trt serve` end to end over HTTP (CPU backend, tiny model): the A1111 API, images equal to
 * what `sd-trt generate` and `Pipeline.generate` give, batching, cancellation, backpressure,
 * validation errors, body limits, the token, and graceful shutdown. Every server listens on
 * port 0 of 127.0.0.1 and is closed in afterAll.
 */
import { afterAll, beforeAll, describe, expect, test } from "@jest/globals";
import { mkdtemp, readFile, rm } from "node:fs/promises";
import { tmpdir } from "node:os";
import { join } from "node:path";
import sharp from "sharp";
import generate from "../../lib/cli/commands/generate.js";
import { readPngText } from "../../lib/image/png-text.js";
import { Pipeline } from "../../lib/pipeline/pipeline.js";
import { PipelineService } from "../../lib/service/pipeline-service.js";
import { SdServer, type SdServerOptions } from "../../lib/server/server.js";
import { connect, type Socket } from "node:net";
import { runCommand } from "../support/run-cli.js";

let pipe: Pipeline;
const servers: SdServer[] = [];
let scratch: string;

beforeAll(async () => {
  pipe = await Pipeline.load(undefined, { backend: "cpu" });
  scratch = await mkdtemp(join(tmpdir(), "sd-trt-serve-"));
});
afterAll(async () => {
  for (const server of servers) await server.close(0);
  await pipe?.dispose();
  await rm(scratch, { recursive: true, force: true });
});

interface Started {
  server: SdServer;
  service: PipelineService;
  url: string;
}

type StartOptions = { token?: string; maxQueue?: number; batchWindowMs?: number } & Omit<SdServerOptions, "service" | "token">;

async function start(options: StartOptions = {}): Promise<Started> {
  const { maxQueue, batchWindowMs, ...rest } = options;
  const service = await PipelineService.create(pipe, { maxQueue: maxQueue ?? 64, batchWindowMs: batchWindowMs ?? 20 });
  const server = new SdServer({ ownService: true, ...rest, service });
  servers.push(server);
  const { url } = await server.listen({ host: "127.0.0.1", port: 0 });
  return { server, service, url };
}

interface A1111Response {
  images: string[];
  parameters: Record<string, unknown>;
  info: string;
}

// biome-ignore lint/suspicious/noExplicitAny: the tests read fields of success and error bodies alike; their assertions check them.
async function post(url: string, body: unknown, init: RequestInit = {}): Promise<{ status: number; json: any; headers: Headers }> {
  const response = await fetch(url, { method: "POST", headers: { "Content-Type": "application/json", ...(init.headers ?? {}) }, body: typeof body === "string" ? body : JSON.stringify(body), signal: init.signal });
  return { status: response.status, json: await response.json(), headers: response.headers };
}

async function rawPixels(base64Png: string): Promise<Buffer> {
  return sharp(Buffer.from(base64Png, "base64")).raw().toBuffer();
}

async function until(predicate: () => Promise<boolean> | boolean, what: string, timeoutMs = 20_000): Promise<void> {
  const end = Date.now() + timeoutMs;
  while (!(await predicate())) {
    if (Date.now() > end) throw new Error(`timed out waiting for ${what}`);
    await new Promise((resolve) => setTimeout(resolve, 5));
  }
}

const small = { width: 64, height: 64, steps: 4, sampler_name: "Euler" } as const;

describe("A1111 generation", () => {
  let s: Started;
  beforeAll(async () => {
    s = await start();
  });

  test("50 concurrent requests all succeed, batched, each image equal to Pipeline.generate with the same parameters", async () => {
    const prompts = ["a red barn", "a lighthouse at dusk", "a cat on a sofa", "snowy pines", "a bowl of fruit"];
    const bodies = Array.from({ length: 50 }, (_, i) => ({
      ...small,
      prompt: prompts[i % prompts.length],
      negative_prompt: i % 7 === 0 ? "blurry" : "",
      seed: 1000 + i,
      cfg_scale: i % 3 === 0 ? 4 : 7.5,
      batch_size: i % 10 === 0 ? 2 : 1,
    }));
    const responses = await Promise.all(bodies.map((body) => post(`${s.url}/sdapi/v1/txt2img`, body)));
    expect(responses.map((r) => r.status)).toEqual(Array(50).fill(200));

    const health = (await (await fetch(`${s.url}/health`)).json()) as { counters: Record<string, number> };
    expect(health.counters).toMatchObject({ done: 50, failed: 0, cancelled: 0 });
    // Batching happened (fewer batches than requests) ...
    expect(health.counters.batchedRequests).toBeGreaterThan(0);
    expect(health.counters.batches).toBeLessThan(50);

    // ... and changed no pixel.
    for (let i = 0; i < bodies.length; i++) {
      const body = bodies[i]!;
      const response = responses[i]!.json as A1111Response;
      const info = JSON.parse(response.info) as { all_seeds: number[]; infotexts: string[]; sampler_name: string };
      const seeds = Array.from({ length: body.batch_size }, (_, k) => body.seed + k);
      expect(info.all_seeds).toEqual(seeds);
      expect(info.sampler_name).toBe("Euler");
      const alone = await pipe.generate({ prompt: body.prompt!, negativePrompt: body.negative_prompt, width: 64, height: 64, steps: 4, guidance: body.cfg_scale, scheduler: "k_euler", seeds, rng: "nv" });
      expect(response.images).toHaveLength(body.batch_size);
      for (let k = 0; k < body.batch_size; k++) {
        expect(Buffer.compare(await rawPixels(response.images[k]!), Buffer.from(alone.images[k]!.rgb))).toBe(0);
        const texts = await readPngText(Buffer.from(response.images[k]!, "base64"));
        expect(texts.find((t) => t.keyword === "parameters")?.text).toBe(alone.images[k]!.infotext);
        expect(info.infotexts[k]).toBe(alone.images[k]!.infotext);
      }
    }
  });

  test("an image equals the file `sd-trt generate` writes for the same parameters and seed", async () => {
    const body = { ...small, prompt: "a cozy wooden cabin", negative_prompt: "fog", seed: 42, cfg_scale: 6, batch_size: 2, sampler_name: "DPM++ 2M Karras", override_settings: { randn_source: "CPU" } };
    const response = await post(`${s.url}/sdapi/v1/txt2img`, body);
    expect(response.status).toBe(200);
    const out = join(scratch, "cli-{i}.png");
    const run = await runCommand(generate, ["generate", "--backend", "cpu", "--prompt", body.prompt, "--negative-prompt", body.negative_prompt, "--seeds", "42,43", "--width", "64", "--height", "64", "--steps", "4", "--guidance", "6", "--scheduler", "DPM++ 2M Karras", "--rng", "cpu", "--out", out, "--quiet"]);
    expect(run.code).toBe(0);
    for (let k = 0; k < 2; k++) {
      const file = await readFile(out.replace("{i}", String(k)));
      const served = Buffer.from((response.json as A1111Response).images[k]!, "base64");
      expect(Buffer.compare(await sharp(served).raw().toBuffer(), await sharp(file).raw().toBuffer())).toBe(0);
      const text = async (png: Buffer) => (await readPngText(png)).find((t) => t.keyword === "parameters")?.text;
      expect(await text(served)).toBe(await text(file));
    }
  });

  test("variation seeds, seed resize and ENSD: A1111's seed spreading, equal to Pipeline.generate and the CLI, written in the infotext", async () => {
    const body = {
      ...small,
      prompt: "a lighthouse",
      seed: 5,
      subseed: 70,
      subseed_strength: 0.4,
      seed_resize_from_w: 48,
      seed_resize_from_h: 80,
      batch_size: 2,
      sampler_name: "Euler a",
      scheduler: "Exponential",
      override_settings: { eta_noise_seed_delta: 31337, randn_source: "CPU" },
    };
    const response = await post(`${s.url}/sdapi/v1/txt2img`, body);
    expect(response.status).toBe(200);
    const info = JSON.parse(response.json.info);
    // With a variation strength A1111 keeps the seed for every image and steps the subseed.
    expect(info).toMatchObject({ all_seeds: [5, 5], subseed: 70, all_subseeds: [70, 71], subseed_strength: 0.4, seed_resize_from_w: 48, seed_resize_from_h: 80, sampler_name: "Euler a" });
    const alone = await pipe.generate({
      prompt: "a lighthouse", width: 64, height: 64, steps: 4, guidance: 7, scheduler: "k_euler_a", sigmaSchedule: "exponential", seeds: [5, 5], rng: "cpu",
      subseeds: [70, 71], subseedStrength: 0.4, seedResizeFrom: { width: 48, height: 80 }, ensd: 31337,
    });
    for (let k = 0; k < 2; k++) expect(Buffer.compare(await rawPixels(response.json.images[k]), Buffer.from(alone.images[k]!.rgb))).toBe(0);
    expect(info.infotexts[1]).toBe(alone.images[1]!.infotext);
    expect(info.infotexts[1]).toMatch(/Sampler: Euler a, Schedule type: Exponential, CFG scale: 7, Seed: 5, Size: 64x64, .*Variation seed: 71, Variation seed strength: 0\.4, Seed resize from: 48x80, ENSD: 31337, RNG: CPU/);
    const out = join(scratch, "variation-{i}.png");
    const run = await runCommand(generate, ["generate", "--backend", "cpu", "--prompt", "a lighthouse", "--seeds", "5,5", "--width", "64", "--height", "64", "--steps", "4", "--guidance", "7", "--scheduler", "Euler a", "--schedule", "exponential", "--subseed", "70", "--subseed-strength", "0.4", "--seed-resize-from", "48x80", "--ensd", "31337", "--rng", "cpu", "--out", out, "--quiet"]);
    expect(run.code).toBe(0);
    const file = await readFile(out.replace("{i}", "1"));
    expect(Buffer.compare(await sharp(file).raw().toBuffer(), Buffer.from(alone.images[1]!.rgb))).toBe(0);
  });

  test("hires fix: the second pass at hr_scale with a latent upscaler, equal to Pipeline.generate, in A1111's info and infotext", async () => {
    const body = { ...small, prompt: "a castle", seed: 31, sampler_name: "Euler a", enable_hr: true, hr_scale: 2, hr_upscaler: "Latent (bicubic antialiased)", hr_second_pass_steps: 3, denoising_strength: 0.55, override_settings: { randn_source: "CPU" } };
    const response = await post(`${s.url}/sdapi/v1/txt2img`, body);
    expect(response.status).toBe(200);
    const info = JSON.parse(response.json.info);
    expect(info).toMatchObject({ width: 64, height: 64, denoising_strength: 0.55 });
    expect(await sharp(Buffer.from(response.json.images[0], "base64")).metadata()).toMatchObject({ width: 128, height: 128 });
    const alone = await pipe.generate({ prompt: "a castle", width: 64, height: 64, steps: 4, guidance: 7, scheduler: "k_euler_a", seeds: [31], rng: "cpu", hires: { scale: 2, upscaler: "Latent (bicubic antialiased)", steps: 3, strength: 0.55 } });
    expect(Buffer.compare(await rawPixels(response.json.images[0]), Buffer.from(alone.images[0]!.rgb))).toBe(0);
    expect(info.infotexts[0]).toMatch(/Size: 64x64, .*Denoising strength: 0\.55, RNG: CPU, Hires upscale: 2, Hires steps: 3, Hires upscaler: Latent \(bicubic antialiased\)$/);
  });

  test("eta reaches A1111's ancestral samplers and is written as A1111 writes it", async () => {
    const response = await post(`${s.url}/sdapi/v1/txt2img`, { ...small, prompt: "a boat", seed: 12, sampler_name: "DPM2 a", eta: 0.5, override_settings: { eta_noise_seed_delta: 9 } });
    expect(response.status).toBe(200);
    const alone = await pipe.generate({ prompt: "a boat", width: 64, height: 64, steps: 4, guidance: 7, scheduler: "k_dpm_2_a", eta: 0.5, ensd: 9, seeds: [12], rng: "nv" });
    expect(Buffer.compare(await rawPixels(response.json.images[0]), Buffer.from(alone.images[0]!.rgb))).toBe(0);
    expect(JSON.parse(response.json.info).infotexts[0]).toMatch(/Sampler: DPM2 a, Schedule type: Karras, .*ENSD: 9, RNG: NV, Eta: 0\.5$/);
  });

  test("n_iter runs batch_size × n_iter images with A1111's seeds seed + i", async () => {
    const response = await post(`${s.url}/sdapi/v1/txt2img`, { ...small, prompt: "a kite", seed: 7, batch_size: 2, n_iter: 3 });
    expect(response.status).toBe(200);
    const info = JSON.parse(response.json.info);
    expect(info.all_seeds).toEqual([7, 8, 9, 10, 11, 12]);
    expect(response.json.images).toHaveLength(6);
    const alone = await pipe.generate({ prompt: "a kite", width: 64, height: 64, steps: 4, guidance: 7, scheduler: "k_euler", seeds: [11], rng: "nv" });
    expect(Buffer.compare(await rawPixels(response.json.images[4]), Buffer.from(alone.images[0]!.rgb))).toBe(0);
  });

  test("seed -1 picks a random seed and reports it", async () => {
    const response = await post(`${s.url}/sdapi/v1/txt2img`, { ...small, prompt: "random", seed: -1 });
    const info = JSON.parse(response.json.info);
    expect(info.seed).toBe(info.all_seeds[0]);
    expect(info.seed).toBeGreaterThanOrEqual(0);
  });

  test("the txt2img example body of A1111's /docs is accepted unchanged", async () => {
    const body = JSON.parse(await readFile(join(process.cwd(), "test/fixtures/a1111/txt2img-docs-body.json"), "utf8"));
    const response = await post(`${s.url}/sdapi/v1/txt2img`, body);
    expect(response.status).toBe(200);
    expect(response.json.images).toHaveLength(1);
    expect(await sharp(Buffer.from(response.json.images[0], "base64")).metadata()).toMatchObject({ width: 512, height: 512 });
    const info = JSON.parse(response.json.info);
    expect(info).toMatchObject({ steps: 50, cfg_scale: 7, width: 512, height: 512, sampler_name: "DPM++ 2M", sd_trt_ignored: ["restore_faces", "tiling"] });
    expect(response.headers.get("x-sd-trt-ignored")).toBe("restore_faces, tiling");
    expect(response.json.parameters).toMatchObject(body);
  }, 60_000);

  test("img2img takes a base64 init image and equals Pipeline.generate on the same pixels", async () => {
    const rgb = Buffer.alloc(64 * 64 * 3);
    for (let i = 0; i < rgb.length; i++) rgb[i] = (i * 5) % 251;
    const png = await sharp(rgb, { raw: { width: 64, height: 64, channels: 3 } }).png().toBuffer();
    const body = { ...small, sampler_name: "PLMS", steps: 10, prompt: "a painting", seed: 3, denoising_strength: 0.6, init_images: [`data:image/png;base64,${png.toString("base64")}`] };
    const response = await post(`${s.url}/sdapi/v1/img2img`, body);
    expect(response.status).toBe(200);
    expect(response.json.parameters.init_images).toBeNull();
    const alone = await pipe.generate({ prompt: "a painting", width: 64, height: 64, steps: 10, guidance: 7, scheduler: "a1111_plms", seeds: [3], rng: "nv", initImage: png, strength: 0.6 });
    expect(Buffer.compare(await rawPixels(response.json.images[0]), Buffer.from(alone.images[0]!.rgb))).toBe(0);
    expect(JSON.parse(response.json.info).denoising_strength).toBe(0.6);
  });

  test("send_images false returns no images but the info", async () => {
    const response = await post(`${s.url}/sdapi/v1/txt2img`, { ...small, prompt: "x", seed: 1, send_images: false });
    expect(response.status).toBe(200);
    expect(response.json.images).toEqual([]);
    expect(JSON.parse(response.json.info).all_seeds).toEqual([1]);
  });

  test("samplers, schedulers, progress, health and ping answer in A1111's shapes", async () => {
    const samplers = (await (await fetch(`${s.url}/sdapi/v1/samplers`)).json()) as Array<{ name: string; aliases: string[] }>;
    expect(samplers.map((x) => x.name)).toEqual(expect.arrayContaining(["Euler a", "Euler", "LMS", "Heun", "DPM2", "DPM2 a", "DPM++ 2S a", "DPM++ 2M", "DPM++ SDE", "DPM++ 2M SDE", "DPM++ 2M SDE Heun", "DPM++ 3M SDE", "DPM fast", "Restart", "LCM", "DDIM", "PLMS", "UniPC", "euler_a", "dpmpp_2m_karras", "ddpm"]));
    expect(samplers.map((x) => x.name)).not.toContain("DPM adaptive");
    const schedulers = (await (await fetch(`${s.url}/sdapi/v1/schedulers`)).json()) as Array<{ label: string }>;
    expect(schedulers.map((x) => x.label)).toEqual(["Automatic", "Uniform", "Karras", "Exponential", "Polyexponential", "SGM Uniform", "KL Optimal", "Align Your Steps", "Simple", "Normal", "DDIM"]);
    const progress = await (await fetch(`${s.url}/sdapi/v1/progress`)).json();
    expect(progress).toMatchObject({ progress: 0, eta_relative: 0, state: { sampling_step: 0, sampling_steps: 0 }, current_image: null });
    const health = await (await fetch(`${s.url}/health`)).json();
    expect(health).toMatchObject({ status: "ok", backend: "cpu", model: "tiny-sd" });
    expect((await fetch(`${s.url}/internal/ping`)).status).toBe(200);
  });

  test("A1111 prompts: weights and BREAK are read as A1111 reads them, override_settings.emphasis reaches the image and its infotext", async () => {
    const body = { ...small, prompt: "a (cabin:1.3) BREAK snowy forest", negative_prompt: "[fog]", seed: 9 };
    const original = (await post(`${s.url}/sdapi/v1/txt2img`, body)).json as A1111Response;
    const noNorm = (await post(`${s.url}/sdapi/v1/txt2img`, { ...body, override_settings: { emphasis: "No norm" } })).json as A1111Response;
    const expected = await pipe.generate({ prompt: body.prompt, negativePrompt: body.negative_prompt, width: 64, height: 64, steps: 4, scheduler: "k_euler", seeds: [9], rng: "nv", guidance: 7 });
    expect((await rawPixels(original.images[0]!)).equals(Buffer.from(expected.images[0]!.rgb))).toBe(true);
    expect((await rawPixels(noNorm.images[0]!)).equals(Buffer.from(expected.images[0]!.rgb))).toBe(false);
    expect(JSON.parse(original.info).infotexts[0]).not.toContain("Emphasis");
    expect(JSON.parse(noNorm.info).infotexts[0]).toMatch(/, RNG: NV, Emphasis: No norm$/);
  });

  test("GET/POST /sdapi/v1/options read and change the server's settings; embeddings and sd-models answer", async () => {
    const own = await start();
    const options = await (await fetch(`${own.url}/sdapi/v1/options`)).json();
    expect(options).toMatchObject({ emphasis: "Original", comma_padding_backtrack: 20, pad_cond_uncond: false, CLIP_stop_at_last_layers: 1, sd_model_checkpoint: "tiny-sd" });
    expect((await post(`${own.url}/sdapi/v1/options`, { emphasis: "Ignore", comma_padding_backtrack: 10 })).status).toBe(200);
    expect(await (await fetch(`${own.url}/sdapi/v1/options`)).json()).toMatchObject({ emphasis: "Ignore", comma_padding_backtrack: 10 });
    const rejected = await post(`${own.url}/sdapi/v1/options`, { emphasis: "Original", CLIP_stop_at_last_layers: 13 });
    expect(rejected.status).toBe(422);
    expect(rejected.json).toMatchObject({ field: "CLIP_stop_at_last_layers" });
    expect(await (await fetch(`${own.url}/sdapi/v1/options`)).json()).toMatchObject({ emphasis: "Ignore" }); // all or nothing
    const image = (await post(`${own.url}/sdapi/v1/txt2img`, { ...small, prompt: "a (cabin:1.3)", seed: 3 })).json as A1111Response;
    expect(JSON.parse(image.info).infotexts[0]).toMatch(/Emphasis: Ignore$/);
    expect(await (await fetch(`${own.url}/sdapi/v1/embeddings`)).json()).toEqual({ loaded: {}, skipped: {} });
    expect(await (await fetch(`${own.url}/sdapi/v1/sd-models`)).json()).toEqual([expect.objectContaining({ model_name: "tiny-sd" })]);
  });

  test("progress reports the running batch's step", async () => {
    const running = post(`${s.url}/sdapi/v1/txt2img`, { ...small, steps: 60, prompt: "slow", seed: 1 });
    type Progress = { progress: number; state: { sampling_step: number; sampling_steps: number } };
    let seen: Progress | undefined;
    await until(async () => {
      seen = (await (await fetch(`${s.url}/sdapi/v1/progress`)).json()) as Progress;
      return seen.state.sampling_step > 0;
    }, "a progress report");
    expect(seen?.state.sampling_steps).toBe(60);
    expect(seen?.progress).toBeGreaterThan(0);
    expect(seen?.progress).toBeLessThanOrEqual(1);
    expect((await running).status).toBe(200);
  });
});

describe("errors name the field", () => {
  let s: Started;
  beforeAll(async () => {
    s = await start({ maxBodyBytes: 4096 });
  });

  test("malformed JSON is a 400", async () => {
    const response = await post(`${s.url}/sdapi/v1/txt2img`, '{"prompt": "a cat",');
    expect(response.status).toBe(400);
    expect(response.json).toMatchObject({ error: "MalformedJson", detail: expect.stringMatching(/not valid JSON/) });
    expect((await post(`${s.url}/sdapi/v1/txt2img`, "[1, 2]")).json.detail).toMatch(/must be a JSON object, got an array/);
    expect((await post(`${s.url}/sdapi/v1/txt2img`, "")).status).toBe(400);
  });

  test.each([
    [{ prompt: "x", steps: "20" }, "steps"],
    [{ prompt: "x", cfg_scale: [7] }, "cfg_scale"],
    [{ prompt: 5 }, "prompt"],
    [{ prompt: "x", steps: 0 }, "steps"],
    [{ prompt: "x", steps: 1001 }, "steps"],
    [{ prompt: "x", width: 63 }, "width"],
    [{ prompt: "x", height: 4096 }, "height"],
    [{ prompt: "x", batch_size: 0 }, "batch_size"],
    [{ prompt: "x", seed: 1.5 }, "seed"],
    [{ prompt: "x", sampler_name: "DPM adaptive" }, "sampler_name"],
    [{ ...small, prompt: "x", enable_hr: true, hr_scale: 1 }, "hr_scale"],
    [{ ...small, prompt: "x", enable_hr: true, hr_upscaler: "R-ESRGAN 4x+" }, "hr_upscaler"],
    [{ ...small, prompt: "x", enable_hr: true, hr_sampler_name: "DPM adaptive" }, "hr_sampler_name"],
    [{ ...small, prompt: "x", enable_hr: true, sampler_name: "ddpm" }, "enable_hr"], // hires runs A1111's own samplers only (not diffusers' DDPM)
    [{ ...small, prompt: "x", subseed_strength: 1.5 }, "subseed_strength"],
    [{ prompt: "x", sampler_name: "Euler", scheduler: "Beta" }, "scheduler"],
    [{ prompt: "x", cfg_scale: 1000 }, "cfg_scale"],
    [{ prompt: "a cat <lora:detail:0.8>" }, "prompt"],
    [{ prompt: "x", negative_prompt: "<hypernet:anime:1>" }, "negative_prompt"],
    [{ prompt: "a (cat:1.2.3)" }, "prompt"],
  ])("%j is a 422 naming %s", async (body, field) => {
    const response = await post(`${s.url}/sdapi/v1/txt2img`, body);
    expect(response.status).toBe(422);
    expect(response.json).toMatchObject({ error: "InvalidField", field, detail: expect.stringContaining(field) });
  });

  test("img2img without an init image, or with one that is not an image, is a 422", async () => {
    expect((await post(`${s.url}/sdapi/v1/img2img`, { prompt: "x" })).json.field).toBe("init_images");
    const response = await post(`${s.url}/sdapi/v1/img2img`, { ...small, prompt: "x", init_images: [Buffer.from("definitely not an image").toString("base64")] });
    expect(response.status).toBe(422);
    expect(response.json.field).toBe("init_images[0]");
  });

  test("a body over the limit is a 413, with or without Content-Length", async () => {
    const big = JSON.stringify({ prompt: "x".repeat(5000) });
    const declared = await post(`${s.url}/sdapi/v1/txt2img`, big);
    expect(declared.status).toBe(413);
    expect(declared.json).toMatchObject({ error: "PayloadTooLarge", detail: expect.stringMatching(/at most 4096 bytes/) });
    const chunks = [big.slice(0, 3000), big.slice(3000)];
    const stream = new ReadableStream({
      pull(controller) {
        const next = chunks.shift();
        if (next === undefined) controller.close();
        else controller.enqueue(new TextEncoder().encode(next));
      },
    });
    const chunked = await fetch(`${s.url}/sdapi/v1/txt2img`, { method: "POST", body: stream, duplex: "half" } as RequestInit);
    expect(chunked.status).toBe(413);
  });

  test("unknown paths are 404 and wrong methods 405", async () => {
    expect((await fetch(`${s.url}/sdapi/v1/nope`)).status).toBe(404);
    const wrong = await fetch(`${s.url}/sdapi/v1/txt2img`);
    expect(wrong.status).toBe(405);
    expect(wrong.headers.get("allow")).toBe("POST");
  });
});

describe("token, backpressure, cancellation and shutdown", () => {
  test("with --token, /sdapi/ needs the bearer token; /health does not", async () => {
    const s = await start({ token: "s3cret" });
    const none = await post(`${s.url}/sdapi/v1/txt2img`, { ...small, prompt: "x", seed: 1 });
    expect(none.status).toBe(401);
    expect(none.json).toMatchObject({ error: "Unauthorized", field: "Authorization" });
    expect(none.headers.get("www-authenticate")).toMatch(/^Bearer/);
    expect((await post(`${s.url}/sdapi/v1/txt2img`, { prompt: "x" }, { headers: { Authorization: "Bearer wrong" } })).status).toBe(401);
    expect((await fetch(`${s.url}/sdapi/v1/samplers`)).status).toBe(401);
    const ok = await post(`${s.url}/sdapi/v1/txt2img`, { ...small, prompt: "x", seed: 1 }, { headers: { Authorization: "Bearer s3cret" } });
    expect(ok.status).toBe(200);
    expect((await fetch(`${s.url}/health`)).status).toBe(200);
  });

  test("a full queue answers 503 Busy with Retry-After", async () => {
    const s = await start({ maxQueue: 1, batchWindowMs: 0 });
    const running = post(`${s.url}/sdapi/v1/txt2img`, { ...small, steps: 60, prompt: "running", seed: 1 });
    await until(() => s.service.counters().running === 1, "the first request to run");
    const queued = post(`${s.url}/sdapi/v1/txt2img`, { ...small, width: 80, prompt: "queued", seed: 2 });
    await until(() => s.service.counters().queued === 1, "the second request to queue");
    const refused = await post(`${s.url}/sdapi/v1/txt2img`, { ...small, prompt: "refused", seed: 3 });
    expect(refused.status).toBe(503);
    expect(refused.json).toMatchObject({ error: "Busy", detail: expect.stringMatching(/busy/) });
    expect(refused.headers.get("retry-after")).toBe("1");
    expect((await running).status).toBe(200);
    expect((await queued).status).toBe(200);
    expect(s.service.counters()).toMatchObject({ rejected: 1, done: 2 });
  });

  test("a client that disconnects cancels its request, queued or running", async () => {
    const s = await start({ batchWindowMs: 0 });
    const runningClient = new AbortController();
    const running = post(`${s.url}/sdapi/v1/txt2img`, { ...small, steps: 200, prompt: "running", seed: 1 }, { signal: runningClient.signal });
    await until(() => s.service.counters().running === 1, "the first request to run");
    const queuedClient = new AbortController();
    const queued = post(`${s.url}/sdapi/v1/txt2img`, { ...small, width: 80, prompt: "queued", seed: 2 }, { signal: queuedClient.signal });
    await until(() => s.service.counters().queued === 1, "the second request to queue");

    queuedClient.abort();
    await expect(queued).rejects.toThrow();
    await until(() => s.service.counters().cancelled === 1, "the queued request to be cancelled");
    expect(s.service.counters()).toMatchObject({ queued: 0, running: 1 });

    runningClient.abort();
    await expect(running).rejects.toThrow();
    await until(() => s.service.counters().cancelled === 2 && s.service.running() === null, "the running request to stop");
    // It stopped between steps, long before its 200 steps were done.
    expect(s.service.counters()).toMatchObject({ done: 0, failed: 0 });
  });

  test("POST /sdapi/v1/interrupt stops the running request, which is answered 409", async () => {
    const s = await start();
    const running = post(`${s.url}/sdapi/v1/txt2img`, { ...small, steps: 200, prompt: "running", seed: 1 });
    await until(() => s.service.counters().running === 1, "the request to run");
    expect((await post(`${s.url}/sdapi/v1/interrupt`, {})).status).toBe(200);
    const response = await running;
    expect(response.status).toBe(409);
    expect(response.json.error).toBe("Interrupted");
  });

  test("close() lets in-flight requests finish, then refuses connections", async () => {
    const s = await start();
    const inFlight = post(`${s.url}/sdapi/v1/txt2img`, { ...small, steps: 30, prompt: "finish me", seed: 1 });
    await until(() => s.service.counters().running === 1, "the request to run");
    await s.server.close(30_000);
    expect((await inFlight).status).toBe(200);
    await expect(fetch(`${s.url}/health`)).rejects.toThrow();
  });

  test("close() with a short drain cancels what is still running: its client gets 503 ShuttingDown", async () => {
    const s = await start();
    const inFlight = post(`${s.url}/sdapi/v1/txt2img`, { ...small, steps: 1000, prompt: "too slow", seed: 1 });
    await until(() => s.service.counters().running === 1, "the request to run");
    await s.server.close(50);
    const response = await inFlight;
    expect({ status: response.status, error: response.json.error }).toEqual({ status: 503, error: "ShuttingDown" });
    expect(s.service.counters()).toMatchObject({ running: 0, cancelled: 1, done: 0 });
  });

  test("a request whose client went away is logged 499, not 200", async () => {
    const lines: string[] = [];
    const s = await start({ log: (line) => lines.push(line) });
    const controller = new AbortController();
    const gone = post(`${s.url}/sdapi/v1/txt2img`, { ...small, steps: 1000, prompt: "left", seed: 1 }, { signal: controller.signal }).catch(() => "aborted");
    await until(() => s.service.counters().running === 1, "the request to run");
    controller.abort();
    expect(await gone).toBe("aborted");
    await until(() => lines.some((line) => line.startsWith("POST /sdapi/v1/txt2img ")), "the access log line");
    expect(lines.find((line) => line.startsWith("POST /sdapi/v1/txt2img "))).toMatch(/^POST \/sdapi\/v1\/txt2img 499 \(client closed the connection\) /);
  });
});

describe("hostile clients: slow and idle connections", () => {
  /** A connection to `url`'s port that sends `text` and then nothing; resolves what it received when the server closes it. */
  function slowClient(url: string, text: string): { socket: Socket; closed: Promise<string> } {
    const socket = connect(Number(new URL(url).port), "127.0.0.1");
    let received = "";
    socket.on("data", (chunk) => (received += chunk.toString()));
    socket.on("error", () => {}); // a reset is one way of being closed
    socket.write(text);
    return { socket, closed: new Promise((resolve) => socket.on("close", () => resolve(received))) };
  }

  test("hundreds of partial requests are closed by the header/request timeouts while the server keeps answering", async () => {
    const s = await start({ headersTimeoutMs: 400, requestTimeoutMs: 800 });
    const partialHeaders = Array.from({ length: 250 }, () => slowClient(s.url, "POST /sdapi/v1/txt2img HTTP/1.1\r\nHost: 127.0.0.1\r\n"));
    const partialBodies = Array.from({ length: 50 }, () =>
      slowClient(s.url, 'POST /sdapi/v1/txt2img HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Type: application/json\r\nContent-Length: 1000\r\n\r\n{"prompt":'),
    );
    // Still answering while they hang.
    expect((await fetch(`${s.url}/health`)).status).toBe(200);
    const answers = await Promise.all([...partialHeaders, ...partialBodies].map((c) => c.closed));
    // Closed by the server, each with a 408 or nothing at all, never served.
    for (const answer of answers) expect(answer === "" || answer.startsWith("HTTP/1.1 408")).toBe(true);
    const health = await fetch(`${s.url}/health`);
    expect(health.status).toBe(200);
    expect(((await health.json()) as { counters: { done: number } }).counters.done).toBe(0);
  }, 60_000);

  test("connections past maxConnections are closed at once; the server answers again when they go", async () => {
    const s = await start({ maxConnections: 20 });
    const held = Array.from({ length: 20 }, () => slowClient(s.url, ""));
    await Promise.all(held.map((c) => new Promise((resolve) => c.socket.once("connect", resolve))));
    await until(() => new Promise<boolean>((resolve) => s.server.http.getConnections((_e, n) => resolve(n === 20))), "20 open connections");
    const extra = slowClient(s.url, "GET /health HTTP/1.1\r\nHost: 127.0.0.1\r\n\r\n");
    expect(await extra.closed).toBe("");
    for (const c of held) c.socket.destroy();
    await until(() => new Promise<boolean>((resolve) => s.server.http.getConnections((_e, n) => resolve(n === 0))), "the connections to close");
    expect((await fetch(`${s.url}/health`)).status).toBe(200);
  });
});
