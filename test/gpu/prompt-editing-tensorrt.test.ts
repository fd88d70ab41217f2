/**
 * Prompt editing and alternation on TensorRT engines of tiny-sd, against the CPU backend, on a
 * machine with an NVIDIA GPU and TensorRT (skipped elsewhere, with the reason). The backend encodes
 * every text of the schedules once and the native loop switches embeddings rows on the device
 * (embeddingRows): the TensorRT trajectory must follow the CPU backend's edited run, evaluation by
 * evaluation, and be far from the unedited one once the prompt has switched — under a replayed CUDA
 * graph too (the switch is inside the captured step, not a host rebind), bit for bit as plain launches.
 */
import { expect, test } from "@jest/globals";
import { Pipeline, type GenerateOptions } from "../../lib/pipeline/pipeline.js";
import type { TensorRtBackend } from "../../lib/backends/tensorrt/backend.js";
import { cpuAndTensorRtPipelines, describeTensorRt, latentsOver, l2RelativeError as relativeError } from "./support.js";

describeTensorRt("prompt editing on TensorRT vs the CPU backend (tiny-sd)", () => {
  const pipes = cpuAndTensorRtPipelines({ scratchPrefix: "sd-trt-gpu-editing-", shapes: { batch: "1-2", size: "64x64" } });

  const base: GenerateOptions = { prompt: "", width: 64, height: 64, steps: 6, seed: 3, scheduler: "euler", returnLatents: true };
  const latents = latentsOver(base);

  test("[a red barn:a lighthouse:3] and an edited negative prompt follow the CPU backend's switch, graph captured then replayed", async () => {
    const options = { prompt: "[a red barn:a lighthouse:3]", negativePrompt: "[blurry::2]" };
    const graphs: string[] = [];
    for (let run = 0; run < 2; run++) {
      const onTrt = await latents(pipes.trt, options);
      graphs.push(String((pipes.trt.backend as TensorRtBackend).lastDenoise?.graph));
      const same = relativeError(await latents(pipes.cpu, options), onTrt);
      const unedited = relativeError(await latents(pipes.cpu, { prompt: "a red barn", negativePrompt: "blurry" }), onTrt);
      expect(same).toBeLessThan(3e-2);
      expect(unedited).toBeGreaterThan(5 * same);
    }
    expect(graphs).toEqual(["captured", "replayed"]);
  });

  test("alternation [a red barn|a lighthouse] for two images with different prompts matches the CPU backend", async () => {
    const options: Partial<GenerateOptions> = { prompt: ["[a red barn|a lighthouse]", "a cat"] };
    const same = relativeError(await latents(pipes.cpu, options), await latents(pipes.trt, options));
    expect(same).toBeLessThan(3e-2);
  });

  test("weighted tokens in a schedule with emphasis \"original\": one mean over the schedule's texts, as the CPU backend and A1111 restore it", async () => {
    const options: Partial<GenerateOptions> = { prompt: "[(a red barn:1.4), (snow:0.7):a lighthouse:3]", negativePrompt: "(blurry:1.3)", emphasis: "original" };
    const onTrt = await latents(pipes.trt, options);
    const same = relativeError(await latents(pipes.cpu, options), onTrt);
    expect(same).toBeLessThan(3e-2);
    expect(relativeError(await latents(pipes.cpu, { ...options, emphasis: "ignore" }), onTrt)).toBeGreaterThan(2 * same);
  });

  test("the replayed graph switches exactly where plain launches do: the same latents, bit for bit", async () => {
    const noGraphs = await Pipeline.load(pipes.model, { backend: "tensorrt", engines: pipes.engines, useGraphs: false });
    try {
      const options = { prompt: "[a red barn:a lighthouse:0.5]", negativePrompt: "[fog|blurry]" };
      await latents(pipes.trt, options); // captures this layout's graph
      const replayed = await latents(pipes.trt, options);
      expect((pipes.trt.backend as TensorRtBackend).lastDenoise?.graph).toBe("replayed");
      const plain = await latents(noGraphs, options);
      expect((noGraphs.backend as TensorRtBackend).lastDenoise?.graph).toBe("disabled");
      expect(Array.from(replayed)).toEqual(Array.from(plain));
      expect(relativeError(await latents(pipes.cpu, options), plain)).toBeLessThan(3e-2);
    } finally {
      await noGraphs.dispose();
    }
  });
});
