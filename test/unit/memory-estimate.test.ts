/** The CPU backend's memory estimate (lib/backends/cpu/memory.ts) from diffusers UNet configs. */
import { describe, expect, test } from "@jest/globals";
import { estimateCpuMemory, unetAttention } from "../../lib/backends/cpu/memory.js";
import { OutOfMemoryError } from "../../lib/errors.js";
import { toHttpError } from "../../lib/server/server.js";

const SD15_UNET = {
  block_out_channels: [320, 640, 1280, 1280],
  down_block_types: ["CrossAttnDownBlock2D", "CrossAttnDownBlock2D", "CrossAttnDownBlock2D", "DownBlock2D"],
  attention_head_dim: 8,
};
const SD21_UNET = { ...SD15_UNET, attention_head_dim: [5, 10, 20, 20] };

describe("CPU memory estimate", () => {
  test("SD 1.5: 8 heads at full latent resolution; SD 2.x: heads = channels / head size; no config: the worst case", () => {
    expect(unetAttention(SD15_UNET)).toEqual({ level: 0, heads: 8 });
    expect(unetAttention(SD21_UNET)).toEqual({ level: 0, heads: 64 });
    expect(unetAttention({ ...SD15_UNET, down_block_types: ["DownBlock2D", "CrossAttnDownBlock2D"] })).toEqual({ level: 1, heads: 8 });
    expect(unetAttention(undefined)).toEqual({ level: 0, heads: 8 });
  });

  test("the UNet attention term is batch · 2 (CFG) · heads · (h·w)² floats", () => {
    // 512×512: 64×64 latents, 4096 tokens; 2 · 8 · 4096² · 4 bytes = 1 GiB.
    expect(estimateCpuMemory({ unet: SD15_UNET }, { batch: 1, width: 512, height: 512, guidance: true }).bytes).toBe(2 ** 30);
    expect(estimateCpuMemory({ unet: SD15_UNET }, { batch: 1, width: 512, height: 512, guidance: false }).bytes).toBe(2 ** 29);
    expect(estimateCpuMemory({ unet: SD15_UNET }, { batch: 4, width: 1024, height: 1024, guidance: true }).bytes).toBe(4 * 2 * 8 * 16384 ** 2 * 4);
  });

  test("an allocation failure that still happens is a typed error the server answers 507", () => {
    const http = toHttpError(new OutOfMemoryError("out of memory: unet/model.onnx …"));
    expect({ status: http.status, error: http.error }).toEqual({ status: 507, error: "OutOfMemory" });
  });
});
