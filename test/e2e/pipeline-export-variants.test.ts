/**
 * The pipeline on other export conventions of the same tiny graphs: int64 `input_ids` (current
 * optimum) and a VAE encoder returning `latent_parameters` (mean and log-variance), where the
 * img2img posterior draw is used rather than discarded.
 */
import { afterAll, beforeAll, describe, expect, test } from "@jest/globals";
import { mkdtemp, rm } from "node:fs/promises";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { Pipeline } from "../../lib/pipeline/pipeline.js";
import { OrtHost } from "../../lib/backends/cpu/ort-host.js";
import { describeTextEncoder, describeVaeEncoder } from "../../lib/model/graph-io.js";
import { TorchGenerator } from "../../lib/rng/index.js";
import { a1111Img2imgStartIndex, createScheduler, strengthToStartStep } from "../../lib/schedulers/index.js";
import { rgbToPixels } from "../../lib/image/pixels.js";
import { ONNX_INT64, TINY_MODEL_DIR, copyTinyModel, setGraphInputType, toLatentParametersEncoder } from "../fixtures/tiny-sd-cases/model-variants.js";
import { gradientInitImage } from "../fixtures/tiny-sd-cases/reference.js";
import { latentError } from "../fixtures/tiny-sd-cases/compare.js";

let scratch: string;
let host: OrtHost;
beforeAll(async () => {
  scratch = await mkdtemp(join(tmpdir(), "sd-trt-export-variants-"));
  host = new OrtHost();
});
afterAll(async () => {
  await host.dispose();
  await rm(scratch, { recursive: true, force: true });
});

const request = { prompt: "a bowl of ramen", width: 64, height: 64, steps: 6, seed: 77, returnLatents: true } as const;

test("a text encoder taking int64 input_ids gives the same images as the int32 export", async () => {
  const dir = await copyTinyModel(join(scratch, "int64"));
  const path = join(dir, "text_encoder", "model.onnx");
  await setGraphInputType(path, "input_ids", ONNX_INT64);
  expect(describeTextEncoder((await host.load(path)).signature, path).idsType).toBe("int64");

  const original = await Pipeline.load(TINY_MODEL_DIR, { backend: "cpu" });
  const variant = await Pipeline.load(dir, { backend: "cpu" });
  try {
    const [a, b] = [await original.generate(request), await variant.generate(request)];
    expect(Array.from(b.latents!)).toEqual(Array.from(a.latents!));
  } finally {
    await original.dispose();
    await variant.dispose();
  }
});

describe("img2img with a latent_parameters VAE encoder", () => {
  test("the posterior draw is used: x₀ = add_noise(0.18215 · (mean + std · eps), noise), eps drawn first", async () => {
    const dir = await copyTinyModel(join(scratch, "parameters"));
    const path = join(dir, "vae_encoder", "model.onnx");
    const logvar = -2; // std = e⁻¹
    await toLatentParametersEncoder(path, logvar);
    expect(describeVaeEncoder((await host.load(path)).signature, path).outputKind).toBe("parameters");

    // The mean, from the unmodified encoder.
    const image = gradientInitImage();
    const { handle } = await host.load(join(TINY_MODEL_DIR, "vae_encoder", "model.onnx"));
    const encoded = await host.run(handle, "vae_encoder", { sample: { type: "float32", dims: [1, 3, 64, 64], data: rgbToPixels(image, 64, 64) } }, ["latent_sample"]);
    const mean = encoded.outputs["latent_sample"]!.data as Float32Array;

    // The draws in diffusers' order from one generator, and the scheduler's add_noise scales.
    const generator = new TorchGenerator(5);
    const eps = generator.randn([1, 4, 8, 8]);
    const noise = generator.randn([1, 4, 8, 8]);
    const scheduler = createScheduler("pndm");
    const program = scheduler.compile(20, { startIndex: strengthToStartStep(20, 0.5) * scheduler.order });
    const { signal, noise: sigma } = program.addNoise!;
    const std = Math.fround(Math.exp(0.5 * logvar));
    const expected = mean.map((m, i) => {
      const sample = Math.fround(m + Math.fround(std * eps[i]!));
      const latent = Math.fround(Math.fround(0.18215) * sample);
      return Math.fround(Math.fround(signal) * latent) + Math.fround(Math.fround(sigma) * noise[i]!);
    });

    const pipe = await Pipeline.load(dir, { backend: "cpu" });
    try {
      let x0: Float32Array | undefined;
      await pipe.generate({ prompt: "p", steps: 20, seed: 5, strength: 0.5, initImage: { data: image, width: 64, height: 64, channels: 3 }, onLatents: (n, x) => {
        if (n === 0) x0 = x.slice();
      },
    });
      expect(latentError(x0!, expected)).toBeLessThan(1e-6);
      // Without the std term (the draw discarded) x₀ would be far off: the check can fail.
      const withoutStd = mean.map((m, i) => Math.fround(signal) * Math.fround(0.18215 * m) + Math.fround(sigma) * noise[i]!);
      expect(latentError(x0!, withoutStd)).toBeGreaterThan(1e-3);
    } finally {
      await pipe.dispose();
    }
  });

  test("with an A1111 sampler the eps comes after every draw A1111 makes: x₀ = 0.18215 · (mean + std · eps) + σ_start · noise", async () => {
    const dir = await copyTinyModel(join(scratch, "parameters-a1111"));
    const logvar = -2;
    await toLatentParametersEncoder(join(dir, "vae_encoder", "model.onnx"), logvar);
    const image = gradientInitImage();
    const { handle } = await host.load(join(TINY_MODEL_DIR, "vae_encoder", "model.onnx"));
    const encoded = await host.run(handle, "vae_encoder", { sample: { type: "float32", dims: [1, 3, 64, 64], data: rgbToPixels(image, 64, 64) } }, ["latent_sample"]);
    const mean = encoded.outputs["latent_sample"]!.data as Float32Array;

    // A1111's ImageRNG order: the noise first, then Euler a's one draw per step; the eps after them.
    const steps = 8;
    const strength = 0.5;
    const program = createScheduler("k_euler_a").compile(steps, { startIndex: a1111Img2imgStartIndex(steps, strength) });
    const generator = new TorchGenerator(5);
    const noise = generator.randn([1, 4, 8, 8]);
    for (const e of program.evals) if (e.drawsNoise) generator.randn([1, 4, 8, 8]);
    const eps = generator.randn([1, 4, 8, 8]);
    const sigma = program.addNoise!.noise;
    const std = Math.fround(Math.exp(0.5 * logvar));
    const expected = mean.map((m, i) => Math.fround(0.18215) * Math.fround(m + Math.fround(std * eps[i]!)) + Math.fround(Math.fround(sigma) * noise[i]!));

    const pipe = await Pipeline.load(dir, { backend: "cpu" });
    try {
      let x0: Float32Array | undefined;
      const options = { prompt: "p", steps, seeds: [5], strength, scheduler: "k_euler_a", initImage: { data: image, width: 64, height: 64, channels: 3 as const } };
      await pipe.generate({ ...options, onLatents: (n, x) => {
        if (n === 0) x0 = x.slice();
      } });
      expect(latentError(x0!, expected)).toBeLessThan(1e-6);
      // Drawn first (diffusers' order) the eps would be A1111's noise, and x₀ far off: the check can fail.
      const epsFirst = mean.map((m, i) => Math.fround(0.18215) * Math.fround(m + Math.fround(std * noise[i]!)) + Math.fround(Math.fround(sigma) * eps[i]!));
      expect(latentError(x0!, epsFirst)).toBeGreaterThan(1e-3);
    } finally {
      await pipe.dispose();
    }
  });
});
