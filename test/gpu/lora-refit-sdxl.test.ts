/**
 * SDXL LoRAs on the TensorRT backend (on a machine with an NVIDIA GPU and TensorRT; skipped elsewhere,
 * with the reason): the tiny SDXL base (test/fixtures/checkpoints/sdxl/diffusers) converted in fp16,
 * built --refittable (text_encoder, text_encoder_2 and unet refittable), the kohya + PEFT SDXL set of
 * scripts/reference/gen_tiny_sdxl_loras.py applied by refitting the three engines, compared with the
 * CPU backend's merged graphs on the same folder; then a LoRA with text_encoder_2 layers only (the
 * kohya file's `lora_te2_` layers), which only a refit of the second encoder's engine can apply; then
 * back to the base, which must give the base engines' output bit for bit.
 */
import { afterAll, beforeAll, expect, test } from "@jest/globals";
import { mkdtemp, readdir, readFile, rm } from "node:fs/promises";
import { tmpdir } from "node:os";
import { join } from "node:path";
import type { TensorRtBackend } from "../../lib/backends/tensorrt/backend.js";
import { buildEngines } from "../../lib/backends/tensorrt/build.js";
import { parseShapeOptions } from "../../lib/backends/tensorrt/profiles.js";
import { readCheckpoint } from "../../lib/convert/checkpoint/index.js";
import { writeConvertedModel } from "../../lib/convert/graphs/folder.js";
import type { LoraSpec } from "../../lib/convert/lora/set.js";
import { readSafetensors } from "../../lib/model/safetensors.js";
import { Pipeline } from "../../lib/pipeline/pipeline.js";
import { relativeError, writeF32Safetensors } from "../support/checkpoint-fixtures.js";
import { describeTensorRt } from "./support.js";

const dir = join(process.cwd(), "test", "fixtures", "loras", "sdxl");
const SET: LoraSpec[] = [
  { path: join(dir, "kohya_sdxl.safetensors"), scale: 0.8 },
  { path: join(dir, "peft_sdxl.safetensors"), scale: 0.5 },
];

/** The kohya SDXL file's `lora_te2_` layers alone, at float32 (changes text_encoder_2 and nothing else). */
async function secondEncoderOnlyLora(path: string): Promise<string> {
  const kohya = await readSafetensors(join(dir, "kohya_sdxl.safetensors"));
  const tensors: Record<string, { shape: number[]; values: number[] }> = {};
  for (const [key, tensor] of kohya.tensors) if (key.startsWith("lora_te2_")) tensors[key] = { shape: [...tensor.shape], values: [...tensor.toFloat32()] };
  return writeF32Safetensors(path, tensors);
}

describeTensorRt("SDXL LoRA sets refitted into TensorRT engines", () => {
  let root: string;
  beforeAll(async () => {
    root = await mkdtemp(join(tmpdir(), "sd-trt-lora-sdxl-trt-"));
  });
  afterAll(async () => {
    await rm(root, { recursive: true, force: true });
  });

  test("refit text_encoder, text_encoder_2 and unet; compare with the CPU backend's merged graphs; refit back to the base exactly", async () => {
    const model = join(root, "sdxl-fp16");
    const engines = join(root, "engines");
    await writeConvertedModel(await readCheckpoint(join(process.cwd(), "test", "fixtures", "checkpoints", "sdxl", "diffusers")), model, { dtype: "fp16" });
    await buildEngines({ model, out: engines, shapes: parseShapeOptions({ batch: "1", size: "64x64" }), refittable: true });
    const manifests = (await readdir(engines, { recursive: true })).filter((f) => String(f).endsWith("manifest.json"));
    const manifest = JSON.parse(await readFile(join(engines, String(manifests[0])), "utf8")) as { options: { refittable?: boolean } };
    expect(manifest.options.refittable).toBe(true);
    const te2Only: LoraSpec[] = [{ path: await secondEncoderOnlyLora(join(root, "te2-only.safetensors")), scale: 4 }];

    const request = { prompt: "a lighthouse at dusk", negativePrompt: "blurry", width: 64, height: 64, steps: 4, seed: 1, returnLatents: true } as const;
    const cache = join(root, "cache");
    const trt = await Pipeline.load(model, { backend: "tensorrt", engines });
    const cpu = await Pipeline.load(model, { backend: "cpu" });
    const cpuSet = await Pipeline.load(model, { backend: "cpu", loras: SET, loraCacheDir: cache });
    const cpuTe2 = await Pipeline.load(model, { backend: "cpu", loras: te2Only, loraCacheDir: cache });
    try {
      const backend = trt.backend as TensorRtBackend;
      const base = await trt.generate(request); // captures the denoiser's CUDA graphs on the base weights
      expect(relativeError(base.latents!, (await cpu.generate(request)).latents!)).toBeLessThan(3e-2);

      await backend.setLoras(SET);
      const withSet = await trt.generate(request);
      expect(relativeError(withSet.latents!, (await cpuSet.generate(request)).latents!)).toBeLessThan(3e-2);
      expect(relativeError(withSet.latents!, base.latents!)).toBeGreaterThan(1e-1);

      // Only the second encoder changes. Its effect on the tiny model's latents is small (about 1.6e-2 at
      // scale 4 on the CPU backend, near the fp16 tolerance), so the refit is shown by the engines'
      // output moving at all (they are deterministic: the base comes back bit for bit below) and
      // staying within the fp16 tolerance of the CPU's merged text_encoder_2.
      await backend.setLoras(te2Only);
      const withTe2 = await trt.generate(request);
      expect(Buffer.from(withTe2.latents!.buffer).equals(Buffer.from(base.latents!.buffer))).toBe(false);
      expect(relativeError(withTe2.latents!, (await cpuTe2.generate(request)).latents!)).toBeLessThan(3e-2);

      await backend.setLoras([]);
      const again = await trt.generate(request);
      expect(Buffer.from(again.latents!.buffer).equals(Buffer.from(base.latents!.buffer))).toBe(true);
      expect(Buffer.from(again.images[0]!.rgb).equals(Buffer.from(base.images[0]!.rgb))).toBe(true);
    } finally {
      await cpuTe2.dispose();
      await cpuSet.dispose();
      await cpu.dispose();
      await trt.dispose();
    }
  }, 600_000);
});
