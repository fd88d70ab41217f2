/**
 * `sd-trt convert` on SDXL: the tiny SDXL base's single file becomes the optimum SDXL folder (five graphs,
 * both tokenizers) with its source record; the progress names each graph. What the graphs compute is
 * convert-sdxl-folder.test.ts's.
 */
import { mkdtemp, readdir, rm } from "node:fs/promises";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { afterAll, beforeAll, expect, test } from "@jest/globals";
import convert from "../../lib/cli/commands/convert.js";
import { runCommand } from "../support/run-cli.js";
import { CHECKPOINTS } from "../support/checkpoint-fixtures.js";

let scratch: string;
beforeAll(async () => {
  scratch = await mkdtemp(join(tmpdir(), "sd-trt-convert-sdxl-cli-"));
});
afterAll(async () => {
  await rm(scratch, { recursive: true, force: true });
});

test("sd-trt convert writes an SDXL single file as the optimum SDXL folder, reporting each of its five graphs", async () => {
  const out = join(scratch, "sdxl");
  const file = join(CHECKPOINTS, "sdxl", "single_file.fp16.safetensors");
  const run = await runCommand(convert, ["convert", file, "--out", out, "--dtype", "fp16", "--model-config", join(CHECKPOINTS, "sdxl", "diffusers"), "--json"]);
  expect(run.code).toBe(0);
  for (const [i, graph] of ["text_encoder", "text_encoder_2", "unet", "vae_decoder", "vae_encoder"].entries()) expect(run.stderr).toContain(`converting: ${graph} (${i + 1}/5)`);
  expect((JSON.parse(run.stdout) as { source: { name: string } }).source.name).toBe("single_file.fp16");
  expect((await readdir(out)).sort()).toEqual(
    ["model_index.json", "scheduler", "source_checkpoint.json", "text_encoder", "text_encoder_2", "tokenizer", "tokenizer_2", "unet", "vae_decoder", "vae_encoder"].sort(),
  );
});
