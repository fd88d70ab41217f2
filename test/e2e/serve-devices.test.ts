/**
 * Every device of a machine: `sd-trt serve --devices 0,1,2` on the CPU backend (three worker
 * pipelines behind one queue). 60 concurrent requests all succeed, spread over the three (the
 * per-device counters in /health show it), each image equal to `sd-trt generate` for its
 * parameters; and what --devices and PipelineService refuse, with the option named.
 */
import { afterAll, beforeAll, describe, expect, test } from "@jest/globals";
import { mkdtemp, readFile, rm } from "node:fs/promises";
import { tmpdir } from "node:os";
import { join } from "node:path";
import generate from "../../lib/cli/commands/generate.js";
import { parseDevices } from "../../lib/cli/shared/devices.js";
import { openServeService } from "../../lib/cli/shared/serve-service.js";
import { InvalidOptionError } from "../../lib/errors.js";
import { encodeImage } from "../../lib/image/encode.js";
import { Pipeline } from "../../lib/pipeline/pipeline.js";
import type { PipelineService } from "../../lib/service/pipeline-service.js";
import { SdServer } from "../../lib/server/server.js";
import { copyTinyModel } from "../fixtures/tiny-sd-cases/model-variants.js";
import { runCommand } from "../support/run-cli.js";

// biome-ignore lint/suspicious/noExplicitAny: success and error bodies alike; the assertions check the fields.
type Json = any;

let server: SdServer;
let url: string;
let reference: Pipeline;
let scratch: string;

beforeAll(async () => {
  // What `serve --devices 0,1,2 --backend cpu --max-batch 4` runs (small batches, so the three share the work).
  const service = await openServeService({ model: join(process.cwd(), "models", "tiny-sd"), backend: "cpu", devices: "0,1,2", "max-queue": 100, "batch-window-ms": 0, "max-batch": 4 }, () => {});
  server = new SdServer({ service });
  ({ url } = await server.listen({ host: "127.0.0.1", port: 0 }));
  reference = await Pipeline.load(undefined, { backend: "cpu" });
  scratch = await mkdtemp(join(tmpdir(), "sd-trt-devices-"));
}, 60_000);

afterAll(async () => {
  await server?.close(0);
  await reference?.dispose();
  await rm(scratch, { recursive: true, force: true });
});

describe("serve --devices 0,1,2 (CPU: three worker pipelines, one queue)", () => {
  test("60 concurrent requests all succeed, spread over the three devices, each image equal to sd-trt generate", async () => {
    const prompts = ["a red barn", "a lighthouse at dusk", "a cat on a sofa", "snowy pines", "a bowl of fruit"];
    const bodies = Array.from({ length: 60 }, (_, i) => ({ prompt: prompts[i % prompts.length]!, seed: 500 + i, width: 64, height: 64, steps: 4, sampler_name: "Euler", cfg_scale: i % 2 ? 7 : 5 }));
    const responses = await Promise.all(
      bodies.map(async (body) => {
        const response = await fetch(`${url}/sdapi/v1/txt2img`, { method: "POST", body: JSON.stringify(body) });
        return { status: response.status, json: (await response.json()) as Json };
      }),
    );
    expect(responses.map((r) => r.status)).toEqual(Array(60).fill(200));

    const health = (await (await fetch(`${url}/health`)).json()) as Json;
    expect(health.counters).toMatchObject({ done: 60, failed: 0 });
    const devices = health.devices as Array<{ device: number; done: number; images: number; busy: boolean }>;
    expect(devices.map((d) => d.device)).toEqual([0, 1, 2]);
    for (const device of devices) expect(device.done).toBeGreaterThan(0);
    expect(devices.reduce((n, d) => n + d.done, 0)).toBe(60);

    for (const [i, body] of bodies.entries()) {
      const alone = await reference.generate({ prompt: body.prompt, seeds: [body.seed], width: 64, height: 64, steps: 4, guidance: body.cfg_scale, scheduler: "k_euler", rng: "nv" });
      const image = alone.images[0]!;
      const png = await encodeImage(image.rgb, 64, 64, { format: "png", parameters: image.infotext });
      expect(Buffer.from(responses[i]!.json.images[0] as string, "base64").equals(png)).toBe(true);
    }
    // One of them against the file the CLI writes, byte for byte.
    const out = join(scratch, "one.png");
    const run = await runCommand(generate, ["generate", "--backend", "cpu", "--prompt", bodies[7]!.prompt, "--seeds", String(bodies[7]!.seed), "--width", "64", "--height", "64", "--steps", "4", "--guidance", String(bodies[7]!.cfg_scale), "--scheduler", "k_euler", "--rng", "nv", "--out", out, "--quiet"]);
    expect(run.code).toBe(0);
    expect((await readFile(out)).equals(Buffer.from(responses[7]!.json.images[0] as string, "base64"))).toBe(true);
  });

  test("interrupt stops what runs on every device", async () => {
    const long = Array.from({ length: 3 }, (_, i) => fetch(`${url}/sdapi/v1/txt2img`, { method: "POST", body: JSON.stringify({ prompt: `long ${i}`, seed: i, width: 256, height: 256, steps: 1000 }) }));
    const service = server.service as PipelineService;
    for (let i = 0; i < 2000 && service.devices().filter((d) => d.busy).length < 3; i++) await new Promise((resolve) => setTimeout(resolve, 10));
    expect(service.devices().every((d) => d.busy)).toBe(true);
    expect((await fetch(`${url}/sdapi/v1/interrupt`, { method: "POST" })).status).toBe(200);
    expect((await Promise.all(long)).map((r) => r.status)).toEqual([409, 409, 409]);
  });
});

describe("what --devices refuses", () => {
  test("--devices takes distinct indices from 0 to 63", () => {
    expect(parseDevices("0,1, 2")).toEqual([0, 1, 2]);
    for (const bad of ["", "0,0", "-1", "1.5", "64", "a"]) {
      expect(() => parseDevices(bad)).toThrow(InvalidOptionError);
      expect(() => parseDevices(bad)).toThrow(/--devices must be a comma-separated list of distinct device indices from 0 to 63/);
    }
  });

  test("Pipeline.load names the device option when it is out of range", async () => {
    await expect(Pipeline.load(undefined, { backend: "cpu", device: -1 })).rejects.toThrow(/device must be an integer from 0 to 63, got -1/);
  });

  test("one service refuses two pipelines on the same device", async () => {
    const { PipelineService } = await import("../../lib/service/pipeline-service.js");
    await expect(PipelineService.create([reference, reference])).rejects.toThrow(/pipelines of one service must run on distinct devices; device 0 appears twice/);
    await expect(PipelineService.create([])).rejects.toThrow(/pipelines must hold at least one pipeline/);
  });

  test("one service refuses pipelines of different models, naming both", async () => {
    const { PipelineService } = await import("../../lib/service/pipeline-service.js");
    const other = await Pipeline.load(await copyTinyModel(join(scratch, "other-model")), { backend: "cpu", device: 1 });
    try {
      await expect(PipelineService.create([reference, other])).rejects.toThrow(/must load the same model on the same backend with the same limits .*device 0 has .*tiny-sd on cpu .*device 1 has .*other-model on cpu/);
    } finally {
      await other.dispose();
    }
  });

  test("--devices cannot be combined with --redis (the front end runs no model)", async () => {
    await expect(openServeService({ model: "x", backend: "cpu", devices: "0,1", redis: "redis://127.0.0.1:1", "max-queue": 4, "batch-window-ms": 0 }, () => {})).rejects.toThrow(/--devices cannot be used with --redis/);
  });
});
