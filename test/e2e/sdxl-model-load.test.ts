/**
 * SDXL model folders whose graphs do not belong together, refused by the CPU backend at load with
 * the reason (a refiner-style time-id layout against a base config, an SDXL UNet without its second
 * text encoder). Copies of the tiny SDXL folder, edited.
 */
import { describe, expect, test } from "@jest/globals";
import { readFile, rm, writeFile } from "node:fs/promises";
import { join } from "node:path";
import { CpuBackend } from "../../lib/backends/cpu/backend.js";
import { TINY_SDXL_DIR } from "../fixtures/sdxl/reference.js";
import { scratchFolder } from "../support/scratch-folder.js";

const scratch = scratchFolder("sd-trt-sdxl-load-");
const copySdxl = () => scratch.copy(TINY_SDXL_DIR);

describe("SDXL folders that do not fit together", () => {
  test("a UNet whose time ids do not fit model_index's requires_aesthetics_score is refused with the reason", async () => {
    const dir = await copySdxl();
    const index = JSON.parse(await readFile(join(dir, "model_index.json"), "utf8"));
    await writeFile(join(dir, "model_index.json"), JSON.stringify({ ...index, requires_aesthetics_score: true }));
    await expect(CpuBackend.load(dir)).rejects.toThrow(/takes 6 time ids, but .*model_index\.json says requires_aesthetics_score: true, which makes 5; the UNet and the pipeline config do not belong together/);
  });

  test("an SDXL UNet in a folder without text_encoder_2 is refused, naming both", async () => {
    const dir = await copySdxl();
    await rm(join(dir, "text_encoder_2"), { recursive: true });
    await expect(CpuBackend.load(dir)).rejects.toThrow(/takes text_embeds and time_ids \(an SDXL UNet\), but model folder .* has no text_encoder_2\/model\.onnx/);
  });
});
