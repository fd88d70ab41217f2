/**
 * A prompt and negative prompt of different lengths on TensorRT engines of tiny-sd, unpadded, as
 * A1111 runs them by default (pad_cond_uncond off): uncond and cond are two UNet calls per
 * evaluation, on two execution contexts of one engine, both inside the captured step. Checked
 * against the CPU backend's two-call path (same tolerances as the other engine tests), for both
 * call layouts: batch 1 on static `--batch 1-2` engines takes each call at the guidance batch
 * (rows computed twice), batch 2 at its own batch; with prompt editing too (the embeddings bank
 * in two blocks, one per text length). On a machine with an NVIDIA GPU and TensorRT;
 * skipped elsewhere, with the reason.
 */
import { expect, test } from "@jest/globals";
import { Pipeline, type GenerateOptions } from "../../lib/pipeline/pipeline.js";
import type { TensorRtBackend } from "../../lib/backends/tensorrt/backend.js";
import { cpuAndTensorRtPipelines, describeTensorRt, latentsOver, l2RelativeError as relativeError } from "./support.js";

// 95 tokens: two chunks of 77 (the engines take up to three).
const LONG = Array.from({ length: 16 }, (_, i) => `a red barn ${i % 2 ? "at dusk" : "in snow"}`).join(", ");

describeTensorRt("prompt and negative prompt of different lengths on TensorRT vs the CPU backend (tiny-sd)", () => {
  const pipes = cpuAndTensorRtPipelines({ scratchPrefix: "sd-trt-gpu-unequal-", shapes: { batch: "1-2", size: "64x64" } });

  const base: GenerateOptions = { prompt: LONG, negativePrompt: "", width: 64, height: 64, steps: 6, seed: 11, scheduler: "euler", returnLatents: true };
  const latents = latentsOver(base);

  test("a long prompt and an empty negative prompt, unpadded: the CPU backend's two-call latents, graph captured then replayed", async () => {
    const onCpu = await latents(pipes.cpu, {});
    const graphs: string[] = [];
    for (let run = 0; run < 2; run++) {
      expect(relativeError(await latents(pipes.trt, {}), onCpu)).toBeLessThan(3e-2);
      graphs.push(String((pipes.trt.backend as TensorRtBackend).lastDenoise?.graph));
    }
    expect(graphs).toEqual(["captured", "replayed"]);
  });

  test("padCondUncond on and off differ, and each follows the CPU backend", async () => {
    const options = { negativePrompt: "blurry, low quality" };
    const unpadded = await latents(pipes.trt, options);
    const padded = await latents(pipes.trt, { ...options, padCondUncond: true });
    const unpaddedError = relativeError(await latents(pipes.cpu, options), unpadded);
    const paddedError = relativeError(await latents(pipes.cpu, { ...options, padCondUncond: true }), padded);
    expect(unpaddedError).toBeLessThan(3e-2);
    expect(paddedError).toBeLessThan(3e-2);
    expect(relativeError(padded, unpadded)).toBeGreaterThan(5 * Math.max(unpaddedError, paddedError));
  });

  test("two images with their own prompts (each call at the batch of 2) follow the CPU backend", async () => {
    const options: Partial<GenerateOptions> = { prompt: [LONG, "a lighthouse"], negativePrompt: ["", "fog"], scheduler: "euler_a" };
    expect(relativeError(await latents(pipes.cpu, options), await latents(pipes.trt, options))).toBeLessThan(3e-2);
  });

  test("prompt editing of a long prompt with a short negative prompt: the switch follows the CPU backend in both call layouts", async () => {
    for (const batch of [1, 2]) {
      // The cond texts have 2 and 1 chunks (the bank holds both at 2), the negative texts 1.
      const options = { batch, prompt: `[${LONG}:a lighthouse at night:2]`, negativePrompt: "[fog:blurry:2]" };
      const onTrt = await latents(pipes.trt, options);
      const same = relativeError(await latents(pipes.cpu, options), onTrt);
      const unedited = relativeError(await latents(pipes.cpu, { batch, prompt: LONG, negativePrompt: "fog" }), onTrt);
      expect(same).toBeLessThan(3e-2);
      expect(unedited).toBeGreaterThan(5 * same);
    }
  });

  test("the replayed graph runs both calls exactly as plain launches do: the same latents, bit for bit", async () => {
    const noGraphs = await Pipeline.load(pipes.model, { backend: "tensorrt", engines: pipes.engines, useGraphs: false });
    try {
      for (const batch of [1, 2]) {
        await latents(pipes.trt, { batch }); // captures this layout's graph
        const replayed = await latents(pipes.trt, { batch });
        expect((pipes.trt.backend as TensorRtBackend).lastDenoise?.graph).toBe("replayed");
        const plain = await latents(noGraphs, { batch });
        expect((noGraphs.backend as TensorRtBackend).lastDenoise?.graph).toBe("disabled");
        expect(Array.from(replayed)).toEqual(Array.from(plain));
      }
    } finally {
      await noGraphs.dispose();
    }
  });
});
