/**
 * LoRAs on the TensorRT backend (on a machine with an NVIDIA GPU and TensorRT; skipped elsewhere,
 * with the reason): the tiny SD 1.x checkpoint converted in fp16, built --refittable, a LoRA set
 * applied by refitting the text encoder and UNet engines (never a rebuild), compared with the CPU
 * backend's merged weights on the same folder; then refitted back to the base, which must give the
 * base engines' output exactly (the same weights as before the first refit). A generation runs
 * before the first refit so that the denoiser's CUDA graphs were captured on the base weights: a
 * refit that stale graphs ignored would fail the comparison.
 */
import { afterAll, beforeAll, expect, test } from "@jest/globals";
import { mkdtemp, readdir, readFile, rm } from "node:fs/promises";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { buildEngines } from "../../lib/backends/tensorrt/build.js";
import type { TensorRtBackend } from "../../lib/backends/tensorrt/backend.js";
import { parseShapeOptions } from "../../lib/backends/tensorrt/profiles.js";
import { writeConvertedModel } from "../../lib/convert/graphs/folder.js";
import type { LoraSpec } from "../../lib/convert/lora/set.js";
import { Pipeline } from "../../lib/pipeline/pipeline.js";
import { relativeError, tinyCheckpoint } from "../support/checkpoint-fixtures.js";
import { describeTensorRt } from "./support.js";

const loras = join(process.cwd(), "test", "fixtures", "loras");
const SET: LoraSpec[] = [
  { path: join(loras, "kohya_sd1.safetensors"), scale: 0.8 },
  { path: join(loras, "peft_sd1.safetensors"), scale: 0.5 },
];

describeTensorRt("LoRA sets refitted into TensorRT engines", () => {
  let root: string;
  beforeAll(async () => {
    root = await mkdtemp(join(tmpdir(), "sd-trt-lora-trt-"));
  });
  afterAll(async () => {
    await rm(root, { recursive: true, force: true });
  });

  test("refit a LoRA set, compare with the CPU backend's merged weights, refit back to the base exactly", async () => {
    const model = join(root, "sd1-fp16");
    const engines = join(root, "engines");
    await writeConvertedModel(await tinyCheckpoint("sd1"), model, { dtype: "fp16" });
    await buildEngines({ model, out: engines, shapes: parseShapeOptions({ batch: "1", size: "64x64" }), refittable: true });
    const manifests = (await readdir(engines, { recursive: true })).filter((f) => String(f).endsWith("manifest.json"));
    const manifest = JSON.parse(await readFile(join(engines, String(manifests[0])), "utf8")) as { options: { refittable?: boolean } };
    expect(manifest.options.refittable).toBe(true);

    const request = { prompt: "a lighthouse at dusk", width: 64, height: 64, steps: 4, seed: 1, returnLatents: true } as const;
    const trt = await Pipeline.load(model, { backend: "tensorrt", engines });
    const cpuBase = await Pipeline.load(model, { backend: "cpu" });
    const cpuLora = await Pipeline.load(model, { backend: "cpu", loras: SET, loraCacheDir: join(root, "cache") });
    try {
      const backend = trt.backend as TensorRtBackend;
      const base = await trt.generate(request);
      expect(relativeError(base.latents!, (await cpuBase.generate(request)).latents!)).toBeLessThan(3e-2);

      await backend.setLoras(SET);
      const withLora = await trt.generate(request);
      const cpu = await cpuLora.generate(request);
      expect(relativeError(withLora.latents!, cpu.latents!)).toBeLessThan(3e-2);
      // The LoRA changed the engines' output by much more than the fp16 tolerance above.
      expect(relativeError(withLora.latents!, base.latents!)).toBeGreaterThan(1e-1);

      await backend.setLoras([]);
      const again = await trt.generate(request);
      expect(Buffer.from(again.latents!.buffer).equals(Buffer.from(base.latents!.buffer))).toBe(true);
      expect(Buffer.from(again.images[0]!.rgb).equals(Buffer.from(base.images[0]!.rgb))).toBe(true);
    } finally {
      await cpuLora.dispose();
      await cpuBase.dispose();
      await trt.dispose();
    }
  }, 600_000);

  test("engines built without --refittable refuse LoRAs with the rebuild command", async () => {
    const model = join(root, "sd1-plain");
    const engines = join(root, "engines-plain");
    await writeConvertedModel(await tinyCheckpoint("sd1"), model, { dtype: "fp16" });
    await buildEngines({ model, out: engines, shapes: parseShapeOptions({ batch: "1", size: "64x64" }) });
    await expect(Pipeline.load(model, { backend: "tensorrt", engines, loras: SET })).rejects.toThrow("--refittable --force");
  }, 600_000);
});
