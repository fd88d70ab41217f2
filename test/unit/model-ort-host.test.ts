import { afterAll, beforeAll, describe, expect, test } from "@jest/globals";
import { mkdtemp, rm } from "node:fs/promises";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { DisposedError, ModelFileError, SdTrtError } from "../../lib/errors.js";
import { OrtHost } from "../../lib/model/ort-host.js";
import { TINY_MODEL_DIR, copyTinyModel, moveWeightsToExternalData } from "../fixtures/tiny-sd-cases/model-variants.js";

/** A deterministic pseudo-random latent, so outputs are non-trivial. */
function latent(count: number): Float32Array {
  const out = new Float32Array(count);
  for (let i = 0; i < count; i++) out[i] = Math.sin(i * 12.9898) * 2;
  return out;
}

describe("OrtHost: ONNX Runtime on a worker thread", () => {
  let host: OrtHost;
  let scratch: string;
  beforeAll(async () => {
    host = new OrtHost();
    scratch = await mkdtemp(join(tmpdir(), "sd-trt-ort-host-"));
  });
  afterAll(async () => {
    await host.dispose();
    await rm(scratch, { recursive: true, force: true });
  });

  test("keeps the event loop running while a model computes", async () => {
    // One VAE decode at 1024×1024 takes well over 50 ms here; a timer firing every 5 ms must keep
    // ticking during that single call. With onnxruntime-node's own run() on the main thread
    // (synchronous inside a setImmediate), no tick could happen until the call returned.
    const { handle } = await host.load(join(TINY_MODEL_DIR, "vae_decoder/model.onnx"), { intraOpThreads: 1 });
    const feeds = { latent_sample: { type: "float32" as const, dims: [1, 4, 128, 128], data: latent(4 * 128 * 128) } };
    let ticks = 0;
    const timer = setInterval(() => ticks++, 5);
    try {
      const ticksBefore = ticks;
      const { ms } = await host.run(handle, "vae_decoder", feeds, ["sample"]);
      expect(ms).toBeGreaterThan(50);
      expect(ticks - ticksBefore).toBeGreaterThanOrEqual(3);
    } finally {
      clearInterval(timer);
    }
  });

  test("a model whose weights live in an external-data file gives the same output as the original", async () => {
    const dir = await copyTinyModel(join(scratch, "external"));
    const path = join(dir, "unet", "model.onnx");
    expect(await moveWeightsToExternalData(path, "model.onnx_data")).toBeGreaterThan(5);
    const original = await host.load(join(TINY_MODEL_DIR, "unet/model.onnx"));
    const external = await host.load(path);
    const feeds = () => ({
      sample: { type: "float32" as const, dims: [2, 4, 8, 8], data: latent(2 * 256) },
      timestep: { type: "float32" as const, dims: [1], data: new Float32Array([601]) },
      encoder_hidden_states: { type: "float32" as const, dims: [2, 77, 32], data: latent(2 * 77 * 32) },
    });
    const a = (await host.run(original.handle, "unet", feeds(), ["out_sample"])).outputs["out_sample"]!;
    const b = (await host.run(external.handle, "unet (external data)", feeds(), ["out_sample"])).outputs["out_sample"]!;
    expect(a.dims).toEqual([2, 4, 8, 8]);
    expect(Array.from(b.data as Float32Array)).toEqual(Array.from(a.data as Float32Array));
  });

  test("a failed run names the model and the input shapes", async () => {
    const { handle } = await host.load(join(TINY_MODEL_DIR, "unet/model.onnx"));
    const bad = { sample: { type: "float32" as const, dims: [1, 4, 8, 8], data: latent(256) } };
    await expect(host.run(handle, "unet/model.onnx", bad, ["out_sample"])).rejects.toThrow(/unet\/model\.onnx failed in ONNX Runtime with inputs sample float32 \[1, 4, 8, 8\]/);
    await expect(host.run(handle, "unet/model.onnx", bad, ["out_sample"])).rejects.toBeInstanceOf(SdTrtError);
  });

  test("a file ONNX Runtime cannot load is a ModelFileError naming it", async () => {
    const path = join(TINY_MODEL_DIR, "README.md");
    const error = await host.load(path).catch((e: unknown) => e);
    expect(error).toBeInstanceOf(ModelFileError);
    expect((error as ModelFileError).file).toBe(path);
    expect((error as Error).message).toContain(`ONNX Runtime cannot load ${path}`);
  });

  test("calls after dispose are refused", async () => {
    const other = new OrtHost();
    await other.dispose();
    await other.dispose(); // idempotent
    await expect(other.load(join(TINY_MODEL_DIR, "unet/model.onnx"))).rejects.toBeInstanceOf(DisposedError);
  });
});
