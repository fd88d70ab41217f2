/**
 * `sd-trt generate --lora FILE[:SCALE]` (repeatable) on a converted model: the images are the ones
 * Pipeline.load({ loras }) makes (test/e2e/lora-cpu.test.ts checks those against diffusers), the
 * infotext carries A1111's Lora hashes, and a LoRA that is missing, malformed or for another
 * model is an error naming the file, with nothing written.
 */
import { afterAll, beforeAll, describe, expect, test } from "@jest/globals";
import { mkdir, mkdtemp, readdir, readFile, rm } from "node:fs/promises";
import { tmpdir } from "node:os";
import { join } from "node:path";
import generate from "../../lib/cli/commands/generate.js";
import { writeConvertedModel } from "../../lib/convert/graphs/folder.js";
import { tinyCheckpoint } from "../support/tiny-checkpoints.js";
import { runCommand } from "../support/run-cli.js";

const loras = join(process.cwd(), "test", "fixtures", "loras");
const reference = JSON.parse(await readFile(join(loras, "reference.json"), "utf8")) as { addnet_hash: Record<string, string> };
let work: string;
let model: string;
beforeAll(async () => {
  work = await mkdtemp(join(tmpdir(), "sd-trt-lora-cli-"));
  model = join(work, "sd1");
  await writeConvertedModel(await tinyCheckpoint("sd1"), model, { dtype: "fp32" });
});
afterAll(async () => {
  await rm(work, { recursive: true, force: true });
});

const common = () => ["generate", "a photo of a cat", "--model", model, "--backend", "cpu", "--steps", "2", "--seed", "3", "--width", "64", "--height", "64", "--lora-cache-dir", join(work, "cache"), "--json"];

describe("generate --lora", () => {
  test("two LoRAs with scales: the image changes and its infotext has their A1111 hashes", async () => {
    const out = join(work, "out");
    await mkdir(out);
    const base = await runCommand(generate, [...common(), "--out", join(out, "base.png")]);
    const lora = await runCommand(generate, [...common(), "--lora", `${join(loras, "kohya_sd1.safetensors")}:0.8`, "--lora", join(loras, "peft_sd1.safetensors"), "--out", join(out, "lora.png")]);
    expect([base.code, lora.code, lora.stderr.includes("Error")]).toEqual([0, 0, false]);
    const infotext = (JSON.parse(lora.stdout) as { images: { infotext: string }[] }).images[0]!.infotext;
    const short = (file: string) => reference.addnet_hash[file]!.slice(0, 12);
    expect(infotext).toContain(`Lora hashes: "kohya_sd1: ${short("kohya_sd1.safetensors")}, peft_sd1: ${short("peft_sd1.safetensors")}"`);
    expect(await readFile(join(out, "lora.png"))).not.toEqual(await readFile(join(out, "base.png")));
  });

  test("a missing file, a bad scale and a LoRA for another model are errors naming them, and write nothing", async () => {
    const out = join(work, "refused");
    await mkdir(out);
    const missing = join(work, "nope.safetensors");
    const cases: [string, string][] = [
      [missing, `${missing} cannot be read`],
      [`${join(loras, "kohya_sd1.safetensors")}:1e9`, "--lora scale must be a number from -100 to 100"],
      [join(process.cwd(), "test", "fixtures", "safetensors", "embedding.safetensors"), "is not a LoRA sd-trt can apply: key emb_params"],
    ];
    for (const [value, message] of cases) {
      const run = await runCommand(generate, [...common(), "--lora", value, "--out", join(out, "x.png")]);
      expect(run.code).not.toBe(0);
      expect(run.stderr).toContain(message);
    }
    expect(await readdir(out)).toEqual([]);
  });
});
