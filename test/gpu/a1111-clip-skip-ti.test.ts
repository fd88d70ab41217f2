/**
 * Clip skip and textual inversion on TensorRT engines (tiny-sd-te05 and the width-32 embeddings of
 * test/fixtures/a1111/clip-ti), against the CPU backend, on a machine with an NVIDIA GPU and
 * TensorRT (skipped elsewhere, with the reason). `sd-trt build` builds the text encoder from the
 * edited graph (clip_skip, extra_token_vectors); the backend feeds both inputs. Each check also
 * shows the input is used: the TensorRT result is far closer to the CPU run with the same clip
 * skip / embeddings than to the CPU run without.
 */
import { expect, test } from "@jest/globals";
import { join } from "node:path";
import { fileURLToPath } from "node:url";
import type { GenerateOptions } from "../../lib/pipeline/pipeline.js";
import { copyTe05Model } from "../fixtures/tiny-sd-cases/model-variants.js";
import { cpuAndTensorRtPipelines, describeTensorRt, latentsOver, l2RelativeError as relativeError } from "./support.js";

const EMBEDDINGS = fileURLToPath(new URL("../fixtures/a1111/clip-ti/embeddings-32", import.meta.url));

describeTensorRt("clip skip and textual inversion on TensorRT vs the CPU backend (tiny-sd-te05)", () => {
  const pipes = cpuAndTensorRtPipelines({
    scratchPrefix: "sd-trt-gpu-ti-",
    shapes: { batch: "1", size: "64x64" },
    prepareModel: (root) => copyTe05Model(join(root, "model")),
    load: { embeddingsDir: EMBEDDINGS },
  });

  const base: GenerateOptions = { prompt: "a castle on a hill", width: 64, height: 64, steps: 4, seed: 7, scheduler: "euler", returnLatents: true };
  const latents = latentsOver(base);

  test("the engines take clip skip up to the encoder's 2 layers and embedding vectors", () => {
    expect(pipes.trt.limits.maxClipSkip).toBe(2);
    expect(pipes.trt.limits.tokenVectorWidth).toBe(32);
  });

  test("clip skip 2 matches the CPU backend's clip skip 2, not its clip skip 1", async () => {
    const onTrt = await latents(pipes.trt, { clipSkip: 2 });
    const same = relativeError(await latents(pipes.cpu, { clipSkip: 2 }), onTrt);
    const other = relativeError(await latents(pipes.cpu, { clipSkip: 1 }), onTrt);
    expect(same).toBeLessThan(3e-2);
    expect(other).toBeGreaterThan(5 * same);
  });

  test("embeddings in prompt and negative prompt match the CPU backend, and the infotext's TI hashes are the same", async () => {
    const options = { prompt: "a photo of lowpoly", negativePrompt: "neg-style, blurry" };
    const onTrt = await pipes.trt.generate({ ...base, ...options });
    const onCpu = await pipes.cpu.generate({ ...base, ...options });
    const same = relativeError(onCpu.latents!, onTrt.latents!);
    expect(same).toBeLessThan(3e-2);
    expect(onTrt.images[0]!.infotext).toBe(onCpu.images[0]!.infotext);
    // The same words as plain text (other names): far from the embeddings' result.
    const plainWords = await latents(pipes.cpu, { prompt: "a photo of low poly", negativePrompt: "neg style, blurry" });
    expect(relativeError(plainWords, onTrt.latents!)).toBeGreaterThan(5 * same);
  });
});
