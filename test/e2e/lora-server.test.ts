/**
 * The A1111 server with a LoRA folder: `GET /sdapi/v1/loras` lists it in A1111's shape,
 * `<lora:NAME:SCALE>` tags in txt2img prompts apply the LoRA (the image differs from the untagged
 * one, the infotext has A1111's Lora hashes), and an unknown name is a 422 naming the tag.
 */
import { afterAll, beforeAll, describe, expect, test } from "@jest/globals";
import { copyFile, mkdir, mkdtemp, readFile, rm } from "node:fs/promises";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { writeConvertedModel } from "../../lib/convert/graphs/folder.js";
import { LoraLibrary } from "../../lib/convert/lora/library.js";
import { Pipeline } from "../../lib/pipeline/pipeline.js";
import { SdServer } from "../../lib/server/server.js";
import { PipelineService } from "../../lib/service/pipeline-service.js";
import { tinyCheckpoint } from "../support/checkpoint-fixtures.js";

const fixtures = join(process.cwd(), "test", "fixtures", "loras");
const reference = JSON.parse(await readFile(join(fixtures, "reference.json"), "utf8")) as { addnet_hash: Record<string, string> };
let work: string;
let server: SdServer;
let url: string;
let loraDir: string;

beforeAll(async () => {
  work = await mkdtemp(join(tmpdir(), "sd-trt-lora-server-"));
  const model = join(work, "sd1");
  await writeConvertedModel(await tinyCheckpoint("sd1"), model, { dtype: "fp32" });
  loraDir = join(work, "loras");
  await mkdir(loraDir);
  await copyFile(join(fixtures, "kohya_sd1.safetensors"), join(loraDir, "kohya_sd1.safetensors"));
  const pipe = await Pipeline.load(model, { backend: "cpu", loraDir, loraCacheDir: join(work, "cache") });
  const service = await PipelineService.create(pipe, { maxQueue: 8, batchWindowMs: 5 });
  server = new SdServer({ service, loras: (await LoraLibrary.scan(loraDir)).entries });
  url = (await server.listen({ host: "127.0.0.1", port: 0 })).url;
});
afterAll(async () => {
  await server?.close();
  await rm(work, { recursive: true, force: true });
});

// biome-ignore lint/suspicious/noExplicitAny: success and error bodies are read alike; the assertions check them.
async function txt2img(prompt: string): Promise<{ status: number; json: any }> {
  const body = { prompt, steps: 2, width: 64, height: 64, seed: 5, sampler_name: "Euler" };
  const response = await fetch(`${url}/sdapi/v1/txt2img`, { method: "POST", headers: { "Content-Type": "application/json" }, body: JSON.stringify(body) });
  return { status: response.status, json: await response.json() };
}

describe("LoRAs through the A1111 API", () => {
  test("GET /sdapi/v1/loras lists the folder as A1111 does", async () => {
    const list = (await (await fetch(`${url}/sdapi/v1/loras`)).json()) as { name: string; alias: string; path: string; metadata: Record<string, unknown> }[];
    expect(list).toEqual([{ name: "kohya_sd1", alias: "kohya_sd1", path: join(loraDir, "kohya_sd1.safetensors"), metadata: expect.objectContaining({ ss_base_model_version: "sd_v1" }) }]);
  });

  test("a <lora:…> tag applies the LoRA; the infotext carries its hash; without the tag the image is the base one", async () => {
    const plain = await txt2img("a red boat");
    const tagged = await txt2img("a red boat <lora:kohya_sd1:0.8>");
    const plainAgain = await txt2img("a red boat");
    expect([plain.status, tagged.status, plainAgain.status]).toEqual([200, 200, 200]);
    expect(tagged.json.images[0]).not.toBe(plain.json.images[0]);
    expect(plainAgain.json.images[0]).toBe(plain.json.images[0]);
    const info = JSON.parse(tagged.json.info) as { infotexts: string[] };
    expect(info.infotexts[0]).toContain(`Lora hashes: "kohya_sd1: ${reference.addnet_hash["kohya_sd1.safetensors"]!.slice(0, 12)}"`);
  });

  test("an unknown LoRA name is a 422 naming the tag", async () => {
    const response = await txt2img("a red boat <lora:nope:1>");
    expect(response.status).toBe(422);
    expect(response.json).toMatchObject({ field: "prompt", detail: expect.stringContaining('has no LoRA named "nope"') });
  });
});
