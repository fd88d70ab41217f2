/**
 * TensorRT engines built from the converter's graphs (lib/convert/graphs) of the tiny reference
 * checkpoints, against the CPU backend on the same converted folder, on a machine with an NVIDIA GPU
 * and TensorRT (skipped elsewhere, with the reason). It checks that TensorRT's ONNX parser takes every
 * operator the graph builder writes (GroupNorm as Reshape/InstanceNormalization, LayerNormalization,
 * the causal mask, GatherND pooling, Resize, Split) and that the engines compute what ONNX Runtime does:
 * - sd1 converted in fp16: the builder's own fp16 graphs, used by `buildEngines` as they are;
 * - sd2 converted in fp32: `buildEngines` converts them to fp16 itself, with the attention scores in
 *   fp32 (`upcast_attention`);
 * - sd2 converted in fp16: the builder's fp16 graphs keep the scores fp32 themselves and record it
 *   (`sd-trt.attention_scores` in metadata_props), so the build takes them as they are.
 */
import { afterAll, beforeAll, expect, test } from "@jest/globals";
import { mkdtemp, rm } from "node:fs/promises";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { buildEngines } from "../../lib/backends/tensorrt/build.js";
import { parseShapeOptions } from "../../lib/backends/tensorrt/profiles.js";
import { writeConvertedModel } from "../../lib/convert/graphs/folder.js";
import { Pipeline } from "../../lib/pipeline/pipeline.js";
import { relativeError, tinyCheckpoint } from "../support/checkpoint-fixtures.js";
import { describeTensorRt } from "./support.js";

describeTensorRt("TensorRT engines of converted checkpoints", () => {
  let root: string;
  beforeAll(async () => {
    root = await mkdtemp(join(tmpdir(), "sd-trt-convert-trt-"));
  });
  afterAll(async () => {
    await rm(root, { recursive: true, force: true });
  });

  test.each([
    ["sd1", "fp16"],
    ["sd2", "fp32"],
    ["sd2", "fp16"],
  ] as const)("%s converted in %s: engines build and match the CPU backend (txt2img and img2img)", async (family, dtype) => {
    const model = join(root, `${family}-${dtype}`);
    const engines = join(root, `${family}-${dtype}-engines`);
    await writeConvertedModel(await tinyCheckpoint(family), model, { dtype });
    await buildEngines({ model, out: engines, shapes: parseShapeOptions({ batch: "1-2", size: "64x64" }) });
    const cpu = await Pipeline.load(model, { backend: "cpu" });
    const trt = await Pipeline.load(model, { backend: "tensorrt", engines });
    try {
      const request = { prompt: "a lighthouse at dusk", width: 64, height: 64, steps: 4, seed: 1, returnLatents: true } as const;
      const a = await cpu.generate(request);
      const b = await trt.generate(request);
      expect(relativeError(b.latents!, a.latents!)).toBeLessThan(3e-2);
      const init = { data: a.images[0]!.rgb, width: 64, height: 64, channels: 3 as const };
      const c = await cpu.generate({ ...request, initImage: init, strength: 0.5 });
      const d = await trt.generate({ ...request, initImage: init, strength: 0.5 });
      expect(relativeError(d.latents!, c.latents!)).toBeLessThan(3e-2);
    } finally {
      await trt.dispose();
      await cpu.dispose();
    }
  }, 600_000);
});
