/**
 * SDXL textual-inversion files (A1111's layout: clip_l for text_encoder, clip_g for text_encoder_2)
 * read for an SDXL model, and the files sd-trt refuses there, each naming the file and the problem.
 */
import { mkdtemp, mkdir, rm } from "node:fs/promises";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { afterAll, beforeAll, describe, expect, test } from "@jest/globals";
import { loadTextualInversions } from "../../lib/model/textual-inversion.js";
import { writeF32Safetensors } from "../support/checkpoint-fixtures.js";

const widths = { clipL: 4, clipG: 6 };
let scratch: string;
beforeAll(async () => {
  scratch = await mkdtemp(join(tmpdir(), "sd-trt-ti-sdxl-"));
});
afterAll(async () => {
  await rm(scratch, { recursive: true, force: true });
});

async function folderWith(name: string, tensors: Record<string, { shape: number[]; values?: number[] }>): Promise<string> {
  const dir = join(scratch, name);
  await mkdir(dir);
  writeF32Safetensors(join(dir, `${name}.safetensors`), tensors);
  return dir;
}

describe("SDXL textual-inversion files", () => {
  test("clip_l and clip_g give each encoder its vectors; the count is the rows", async () => {
    const values = (n: number, base: number) => Array.from({ length: n }, (_, i) => base + i);
    const dir = await folderWith("two-vectors", { clip_l: { shape: [2, 4], values: values(8, 0) }, clip_g: { shape: [2, 6], values: values(12, 100) } });
    const [e] = await loadTextualInversions(dir, widths);
    expect(e!.count).toBe(2);
    expect(Array.from(e!.vectors)).toEqual(values(8, 0));
    expect(Array.from(e!.vectorsClipG!)).toEqual(values(12, 100));
  });

  test("an SD 1.x embedding on an SDXL model is refused, naming the file", async () => {
    const dir = await folderWith("sd15", { emb_params: { shape: [1, 4] } });
    await expect(loadTextualInversions(dir, widths)).rejects.toThrow(/sd15\.safetensors is not an SDXL embedding \(it has emb_params\)/);
  });

  test("a clip_g of another width is refused, naming the tensor and the expected shape", async () => {
    const dir = await folderWith("wide", { clip_l: { shape: [1, 4] }, clip_g: { shape: [1, 8] } });
    await expect(loadTextualInversions(dir, widths)).rejects.toThrow(/wide\.safetensors: clip_g has shape \[1, 8\], expected \[vectors, 6\]/);
  });

  test("clip_l and clip_g with different vector counts are refused", async () => {
    const dir = await folderWith("uneven", { clip_l: { shape: [1, 4] }, clip_g: { shape: [2, 6] } });
    await expect(loadTextualInversions(dir, widths)).rejects.toThrow(/clip_l has 1 vectors and clip_g 2/);
  });

  test("an SDXL embedding on an SD model is still refused", async () => {
    const dir = await folderWith("xl-on-sd", { clip_l: { shape: [1, 4] }, clip_g: { shape: [1, 6] } });
    await expect(loadTextualInversions(dir, 4)).rejects.toThrow(/is an SDXL embedding \(clip_g and clip_l\)/);
  });
});
