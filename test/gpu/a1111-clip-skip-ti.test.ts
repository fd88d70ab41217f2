/**
 * Clip skip and textual inversion on TensorRT engines (tiny-sd-te05 and the width-32 embeddings of
 * test/fixtures/a1111/clip-ti), against the CPU backend, on a machine with an NVIDIA GPU and
 * TensorRT (skipped elsewhere, with the reason). `sd-trt build` builds the text encoder from the
 * edited graph (clip_skip, extra_token_vectors); the backend feeds both inputs. Each check also
 * shows the input is used: the TensorRT result is far closer to the CPU run with the same clip
 * skip / embeddings than to the CPU run without.
 */
import { afterAll, beforeAll, expect, test } from "@jest/globals";
import { mkdtemp, rm } from "node:fs/promises";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { fileURLToPath } from "node:url";
import { Pipeline, type GenerateOptions } from "../../lib/pipeline/pipeline.js";
import { buildEngines } from "../../lib/backends/tensorrt/build.js";
import { parseShapeOptions } from "../../lib/backends/tensorrt/profiles.js";
import { copyTe05Model } from "../fixtures/tiny-sd-cases/model-variants.js";
import { describeTensorRt } from "./support.js";

const EMBEDDINGS = fileURLToPath(new URL("../fixtures/a1111/clip-ti/embeddings-32", import.meta.url));

function relativeError(a: Float32Array, b: Float32Array): number {
  let num = 0;
  let den = 0;
  for (let i = 0; i < a.length; i++) {
    num += (a[i]! - b[i]!) ** 2;
    den += a[i]! ** 2;
  }
  return Math.sqrt(num / den);
}

describeTensorRt("clip skip and textual inversion on TensorRT vs the CPU backend (tiny-sd-te05)", () => {
  let root: string;
  let model: string;
  let trt: Pipeline;
  let cpu: Pipeline;
  beforeAll(async () => {
    root = await mkdtemp(join(tmpdir(), "sd-trt-gpu-ti-"));
    model = await copyTe05Model(join(root, "model"));
    const engines = join(root, "engines");
    await buildEngines({ model, out: engines, shapes: parseShapeOptions({ batch: "1", size: "64x64" }) });
    trt = await Pipeline.load(model, { backend: "tensorrt", engines, embeddingsDir: EMBEDDINGS });
    cpu = await Pipeline.load(model, { backend: "cpu", embeddingsDir: EMBEDDINGS });
  }, 600_000);
  afterAll(async () => {
    await trt?.dispose();
    await cpu?.dispose();
    await rm(root, { recursive: true, force: true });
  });

  const base: GenerateOptions = { prompt: "a castle on a hill", width: 64, height: 64, steps: 4, seed: 7, scheduler: "euler", returnLatents: true };
  const latents = async (pipe: Pipeline, options: Partial<GenerateOptions>) => (await pipe.generate({ ...base, ...options })).latents!;

  test("the engines take clip skip up to the encoder's 2 layers and embedding vectors", () => {
    expect(trt.limits.maxClipSkip).toBe(2);
    expect(trt.limits.tokenVectorWidth).toBe(32);
  });

  test("clip skip 2 matches the CPU backend's clip skip 2, not its clip skip 1", async () => {
    const onTrt = await latents(trt, { clipSkip: 2 });
    const same = relativeError(await latents(cpu, { clipSkip: 2 }), onTrt);
    const other = relativeError(await latents(cpu, { clipSkip: 1 }), onTrt);
    expect(same).toBeLessThan(3e-2);
    expect(other).toBeGreaterThan(5 * same);
  });

  test("embeddings in prompt and negative prompt match the CPU backend, and the infotext's TI hashes are the same", async () => {
    const options = { prompt: "a photo of lowpoly", negativePrompt: "neg-style, blurry" };
    const onTrt = await trt.generate({ ...base, ...options });
    const onCpu = await cpu.generate({ ...base, ...options });
    const same = relativeError(onCpu.latents!, onTrt.latents!);
    expect(same).toBeLessThan(3e-2);
    expect(onTrt.images[0]!.infotext).toBe(onCpu.images[0]!.infotext);
    // The same words as plain text (other names): far from the embeddings' result.
    const plainWords = await latents(cpu, { prompt: "a photo of low poly", negativePrompt: "neg style, blurry" });
    expect(relativeError(plainWords, onTrt.latents!)).toBeGreaterThan(5 * same);
  });
});
