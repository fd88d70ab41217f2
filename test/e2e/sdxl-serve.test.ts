/**
 * `sd-trt serve` (the A1111 API over HTTP) on the tiny SDXL, CPU backend: a txt2img request as a
 * client sends it for SDXL (the same prompt for both encoders, the time ids from width and height,
 * an empty negative prompt) gives diffusers' StableDiffusionXLPipeline image for
 * `negative_prompt=None` — A1111 zeroes an empty negative prompt's text conditioning
 * (`force_zero_negative_prompt`, sd_models_xl.py) as diffusers' force_zeros_for_empty_prompt does.
 * And PipelineService merging two SDXL requests into one batch, each still its own diffusers result.
 */
import { createHash } from "node:crypto";
import { afterAll, beforeAll, describe, expect, test } from "@jest/globals";
import sharp from "sharp";
import { Pipeline } from "../../lib/pipeline/pipeline.js";
import { PipelineService } from "../../lib/service/pipeline-service.js";
import { SdServer } from "../../lib/server/server.js";
import { imageDiff, latentError, LATENT_TOLERANCE } from "../fixtures/tiny-sd-cases/compare.js";
import { expectedPixels, loadSdxlReference, optionsForCase, TINY_SDXL_DIR } from "../fixtures/sdxl/reference.js";

const reference = loadSdxlReference();
let pipe: Pipeline;
let server: SdServer;
let url: string;

beforeAll(async () => {
  pipe = await Pipeline.load(TINY_SDXL_DIR, { backend: "cpu" });
  const service = await PipelineService.create(pipe, { maxQueue: 8, batchWindowMs: 0 });
  server = new SdServer({ ownService: true, service });
  url = (await server.listen({ host: "127.0.0.1", port: 0 })).url;
});
afterAll(async () => {
  await server?.close(0);
  await pipe?.dispose();
});

describe("serve on an SDXL model", () => {
  test("txt2img with an empty negative prompt gives diffusers' zero-uncond image", async () => {
    const c = reference.cases.find((x) => x.id === "euler_zeros_negative")!;
    const body = {
      prompt: c.prompt,
      negative_prompt: "",
      seed: c.seed,
      steps: c.num_inference_steps,
      cfg_scale: c.guidance_scale,
      width: 64,
      height: 64,
      // Our exact name "euler" is diffusers' EulerDiscrete (A1111's "Euler" is k-diffusion's).
      sampler_name: "euler",
      override_settings: { randn_source: "CPU" },
    };
    const response = await fetch(`${url}/sdapi/v1/txt2img`, { method: "POST", headers: { "Content-Type": "application/json" }, body: JSON.stringify(body) });
    const json = (await response.json()) as { images: string[]; info: string };
    expect(response.status).toBe(200);
    expect(json.images).toHaveLength(1);
    const { data, info } = await sharp(Buffer.from(json.images[0]!, "base64")).raw().toBuffer({ resolveWithObject: true });
    expect([info.width, info.height, info.channels]).toEqual([64, 64, 3]);
    const diff = imageDiff(data, expectedPixels(c));
    expect({ maxDiff: diff.maxDiff, atMostOne: diff.maxDiff <= 1 }).toEqual({ maxDiff: diff.maxDiff, atMostOne: true });
    // A1111 writes no SDXL-specific fields: the same infotext as for SD 1.x.
    expect(JSON.parse(json.info).infotexts[0]).toMatch(/^a lighthouse on a cliff at dusk\nSteps: 3, Sampler: Euler, CFG scale: 5, Seed: 7, Size: 64x64, Model hash: [0-9a-f]{10}, RNG: CPU$/);
  });
});

describe("the service on an SDXL model", () => {
  test("two requests merged into one batch each give their own diffusers result (per-row prompts and time ids)", async () => {
    const service = await PipelineService.create(pipe, { maxQueue: 8, batchWindowMs: 200 });
    try {
      const cases = ["euler_zeros_negative", "euler_default_size"].map((id) => reference.cases.find((c) => c.id === id)!);
      const before = service.counters();
      const results = await Promise.all(cases.map((c) => service.generate({ ...optionsForCase(reference, c), width: 64, height: 64, returnLatents: true })));
      const after = service.counters();
      expect(after.batches - before.batches).toBe(1);
      results.forEach((result, i) => {
        const err = latentError(result.latents!, cases[i]!.final_latents);
        expect({ case: cases[i]!.id, ok: err <= LATENT_TOLERANCE, err }).toEqual({ case: cases[i]!.id, ok: true, err });
      });
    } finally {
      await service.close();
    }
  });
});

describe("clip skip through the A1111 API on SDXL", () => {
  const txt2img = async (override: Record<string, unknown>) => {
    const body = { prompt: "a castle BREAK dramatic sky", seed: 3, steps: 2, cfg_scale: 5, width: 64, height: 64, sampler_name: "euler", override_settings: { randn_source: "CPU", ...override } };
    const response = await fetch(`${url}/sdapi/v1/txt2img`, { method: "POST", headers: { "Content-Type": "application/json" }, body: JSON.stringify(body) });
    const json = (await response.json()) as { images: string[]; info: string };
    expect(response.status).toBe(200);
    // The pixels (the PNG's text chunk holds the infotext, which differs by the clip skip field).
    const pixels = await sharp(Buffer.from(json.images[0]!, "base64")).raw().toBuffer();
    return { image: createHash("sha256").update(pixels).digest("hex"), infotext: (JSON.parse(json.info) as { infotexts: string[] }).infotexts[0]! };
  };

  test("CLIP_stop_at_last_layers alone changes nothing on SDXL (A1111 ignores it without sdxl_clip_l_skip) but is in the infotext", async () => {
    const plain = await txt2img({});
    const skipped = await txt2img({ CLIP_stop_at_last_layers: 3 });
    expect(skipped.image).toBe(plain.image);
    expect(skipped.infotext).toContain("Clip skip: 3");
  });

  test("with sdxl_clip_l_skip it reaches CLIP-L: clip skip 2 is SDXL's default layer, 1 and 3 are others", async () => {
    const plain = await txt2img({});
    expect((await txt2img({ sdxl_clip_l_skip: true, CLIP_stop_at_last_layers: 2 })).image).toBe(plain.image);
    expect((await txt2img({ sdxl_clip_l_skip: true, CLIP_stop_at_last_layers: 1 })).image).not.toBe(plain.image);
    expect((await txt2img({ sdxl_clip_l_skip: true, CLIP_stop_at_last_layers: 3 })).image).not.toBe(plain.image);
  });
});
