/**
 * Every end-to-end case of test/fixtures/goldens/tiny_sd_reference.json (diffusers'
 * StableDiffusionPipeline / StableDiffusionImg2ImgPipeline on the tiny ONNX models) reproduced by
 * `Pipeline.generate` on the CPU backend: the initial latents, the latents after the first two
 * model evaluations and the final latents within 1e-4 · max(1, max|x|), and the uint8 image
 * within the tolerance the reference's own ONNX re-run needed (see `expectImageClose`).
 */
import { afterAll, beforeAll, describe, expect, test } from "@jest/globals";
import { Pipeline, type GenerateOptions } from "../../lib/pipeline/pipeline.js";
import type { CpuBackend } from "../../lib/backends/cpu/backend.js";
import { loadReference, referenceCases, optionsForCase, gradientInitImage, type ReferenceCase } from "../fixtures/tiny-sd-cases/reference.js";
import { expectFloat32Exact, expectImageClose, expectLatentsClose, withoutModelHash } from "../fixtures/tiny-sd-cases/compare.js";

const reference = loadReference();

let pipe: Pipeline;
beforeAll(async () => {
  pipe = await Pipeline.load(undefined, { backend: "cpu" });
});
afterAll(async () => {
  await pipe?.dispose();
});

async function run(c: ReferenceCase) {
  const seen = new Map<number, Float32Array>();
  const options: GenerateOptions = {
    ...optionsForCase(reference, c),
    returnLatents: true,
    onLatents: (evaluations, latents) => {
      if (evaluations <= 2) seen.set(evaluations, latents.slice());
    },
  };
  const backend = pipe.backend as CpuBackend;
  const before = backend.runtimeStats;
  const result = await pipe.generate(options);
  const after = backend.runtimeStats;
  const calls = (m: "textEncoder" | "unet" | "vaeEncoder") => ({
    calls: after[m].calls - before[m].calls,
    rows: after[m].rows - before[m].rows,
  });
  return { result, seen, unet: calls("unet"), textEncoder: calls("textEncoder"), vaeEncoder: calls("vaeEncoder") };
}

describe("Pipeline.generate reproduces diffusers on the tiny model", () => {
  test("the reference has the 31 cases this suite expects", () => {
    expect(referenceCases(reference)).toHaveLength(31);
  });

  test.each(referenceCases(reference).map((c) => [c.id, c] as const))("%s", async (_id, c) => {
    const { result, seen, unet, textEncoder, vaeEncoder } = await run(c);
    const label = c.id;

    expect(result.scheduler).toBe(c.scheduler);
    expect(result.evaluations).toBe(c.unet_calls);
    expect(unet.calls).toBe(c.unet_calls);
    expect(unet.rows / unet.calls).toBe(c.unet_batch); // CFG doubles the batch; guidance 1 does not
    expect(textEncoder.calls).toBe(c.do_classifier_free_guidance ? 2 : 1);
    expect(vaeEncoder.calls).toBe(c.pipeline === "StableDiffusionImg2ImgPipeline" ? 1 : 0);

    if (c.pipeline === "StableDiffusionPipeline") {
      // randn · init_noise_sigma involves no model: bit for bit.
      expectFloat32Exact(seen.get(0), c.initial_latents, `${label} initial latents`);
    } else {
      expectLatentsClose(seen.get(0)!, c.initial_latents, `${label} initial latents`);
    }
    expectLatentsClose(seen.get(1)!, c.latents_after_step["0"], `${label} latents after evaluation 0`);
    expectLatentsClose(seen.get(2)!, c.latents_after_step["1"], `${label} latents after evaluation 1`);
    expectLatentsClose(result.latents!, c.final_latents, `${label} final latents`);

    const pixels = new Uint8Array(result.images.length * 64 * 64 * 3);
    result.images.forEach((image, i) => {
      expect([image.width, image.height]).toEqual([64, 64]);
      pixels.set(image.rgb, i * 64 * 64 * 3);
    });
    expectImageClose(pixels, c.image_uint8_hwc, label);

    expect(result.seeds).toEqual(c.generator_seeds.map(BigInt));
    expect(result.images.map((image) => withoutModelHash(image.infotext))).toEqual(c.infotext);
    expect(result.images[0]!.infotext).toMatch(/, Model hash: [0-9a-f]{10},/);
  });
});

describe("Pipeline.generate, other behaviour on the tiny model", () => {
  test("the init image may come as encoded bytes as well as raw pixels", async () => {
    const c = referenceCases(reference).find((x) => x.id === "g_img2img_s0.6")!;
    const sharp = (await import("sharp")).default;
    const png = await sharp(gradientInitImage(), { raw: { width: 64, height: 64, channels: 3 } }).png().toBuffer();
    const result = await pipe.generate({ ...optionsForCase(reference, c), initImage: new Uint8Array(png), returnLatents: true });
    expectLatentsClose(result.latents!, c.final_latents, "img2img from PNG bytes");
  });
});
