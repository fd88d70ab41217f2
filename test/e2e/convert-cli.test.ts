/**
 * `sd-trt convert` and the model cache behind `--model <checkpoint>`: the folder written with its
 * source record, nothing written on bad input or an interrupt (neither at --out nor in the cache),
 * each refusal naming the file and what is wrong.
 */
import { spawnSync } from "node:child_process";
import { createHash } from "node:crypto";
import { mkdirSync, readFileSync, writeFileSync } from "node:fs";
import { mkdtemp, readdir, readFile, rm } from "node:fs/promises";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { afterAll, beforeAll, describe, expect, test } from "@jest/globals";
import bench from "../../lib/cli/commands/bench.js";
import convert from "../../lib/cli/commands/convert.js";
import generate from "../../lib/cli/commands/generate.js";
import { cachedConversion } from "../../lib/convert/cache.js";
import { convertCheckpoint } from "../../lib/convert/index.js";
import { AbortError } from "../../lib/errors.js";
import { locateModelFolder } from "../../lib/model/folder.js";
import { Pipeline } from "../../lib/pipeline/pipeline.js";
import { PipelineService } from "../../lib/service/pipeline-service.js";
import { runCommand } from "../support/run-cli.js";
import { startServe } from "../support/serve-in-process.js";

const fixtures = new URL("../fixtures/checkpoints/", import.meta.url).pathname;
const sd1File = join(fixtures, "sd1", "single_file.fp16.safetensors");
const sd1Config = join(fixtures, "sd1", "diffusers");
let scratch: string;
beforeAll(async () => {
  scratch = await mkdtemp(join(tmpdir(), "sd-trt-convert-cli-"));
});
afterAll(async () => {
  await rm(scratch, { recursive: true, force: true });
});
let counter = 0;
const fresh = (name: string) => join(scratch, `${name}-${counter++}`);

/** What a cache folder holds besides the remembered hashes: entries and temporaries. */
async function cacheEntries(cacheDir: string): Promise<string[]> {
  return (await readdir(cacheDir).catch(() => [] as string[])).filter((e) => e !== "hashes.json");
}

describe("sd-trt convert", () => {
  test("writes the model folder with the checkpoint it came from; the folder loads", async () => {
    const out = fresh("converted");
    const run = await runCommand(convert, ["convert", sd1File, "--out", out, "--dtype", "fp16", "--model-config", sd1Config, "--json"]);
    expect({ code: run.code, stderr: run.stderr }).toEqual({ code: 0, stderr: expect.stringContaining("converting: unet (2/4)") });
    const sha256 = createHash("sha256").update(readFileSync(sd1File)).digest("hex");
    const report = JSON.parse(run.stdout) as { dir: string; source: { name: string; sha256: string } };
    expect(report.dir).toBe(out);
    expect(report.source).toEqual({ name: "single_file.fp16", sha256 });
    const folder = await locateModelFolder(out);
    expect(folder.sourceCheckpoint).toEqual({ name: "single_file.fp16", sha256 });
    expect((await readdir(out)).sort()).toEqual(["model_index.json", "scheduler", "source_checkpoint.json", "text_encoder", "tokenizer", "unet", "vae_decoder", "vae_encoder"]);
    // The server names it as A1111 names the checkpoint (sd_model_name, /sdapi/v1/sd-models), with its hash.
    const service = await PipelineService.create(await Pipeline.load(out, { backend: "cpu" }), { ownPipeline: true });
    try {
      expect([service.modelName, service.modelHash]).toEqual(["single_file.fp16", sha256.slice(0, 10)]);
    } finally {
      await service.dispose();
    }
  });

  test("an existing --out is refused and left as it was", async () => {
    const out = fresh("existing");
    mkdirSync(out);
    writeFileSync(join(out, "keep.txt"), "mine");
    const run = await runCommand(convert, ["convert", sd1File, "--out", out, "--model-config", sd1Config, "--quiet"]);
    expect(run.code).toBe(1);
    expect(run.stderr).toContain(`${out} already exists; choose a new folder for the converted model or remove it first`);
    expect(await readdir(out)).toEqual(["keep.txt"]);
  });

  test("an interrupted conversion leaves nothing at --out or beside it", async () => {
    const parent = fresh("interrupted");
    mkdirSync(parent);
    const controller = new AbortController();
    const conversion = convertCheckpoint(sd1File, join(parent, "model"), {
      dtype: "fp32",
      configFolder: sd1Config,
      signal: controller.signal,
      onProgress: (event) => {
        if (event.stage === "graph" && event.graph === "unet") controller.abort(new AbortError("interrupted by SIGINT"));
      },
    });
    await expect(conversion).rejects.toThrow(AbortError);
    expect(await readdir(parent)).toEqual([]);
  });
});

describe("--model <checkpoint>: bad input is refused, naming the file, and nothing enters the cache", () => {
  const header = (value: unknown) => {
    const json = Buffer.from(JSON.stringify(value));
    const length = Buffer.alloc(8);
    length.writeBigUInt64LE(BigInt(json.length));
    return Buffer.concat([length, json]);
  };
  const bytes = readFileSync(sd1File);
  const cases: [string, string, () => Buffer, RegExp][] = [
    ["a truncated file", "truncated.safetensors", () => bytes.subarray(0, bytes.length - 4096), /truncated\.safetensors is not a valid \.safetensors file: tensor ".+" has data_offsets \[\d+, \d+\] outside the \d+ bytes of data \(the file ends before it: truncated\?\)/],
    ["a header pointing outside the file", "outside.safetensors", () => Buffer.concat([header({ "model.diffusion_model.x": { dtype: "F32", shape: [1024], data_offsets: [0, 4096] } }), Buffer.alloc(16)]), /outside\.safetensors is not a valid \.safetensors file: tensor "model\.diffusion_model\.x" has data_offsets \[0, 4096\] outside the 16 bytes of data/],
    ["a header length past the end", "header.safetensors", () => { const b = Buffer.from(bytes.subarray(0, 64)); b.writeBigUInt64LE(1000n); return b; }, /header\.safetensors is not a valid \.safetensors file: its header length 1000 runs past the end of the file \(64 bytes\)/],
    ["an unknown architecture", "llm.safetensors", () => Buffer.concat([header({ "model.layers.0.self_attn.q_proj.weight": { dtype: "F32", shape: [1], data_offsets: [0, 4] }, "lm_head.weight": { dtype: "F32", shape: [1], data_offsets: [4, 8] } }), Buffer.alloc(8)]), /llm\.safetensors is not a Stable Diffusion checkpoint sd-trt knows: .* Its 2 tensors begin "model\.layers\.0\.self_attn\.q_proj\.weight", "lm_head\.weight"/],
    ["a pickle checkpoint", "model.ckpt", () => Buffer.from([0x80, 0x02, 0x7d, 0x71, 0x00, 0x2e]), /model\.ckpt is a PyTorch pickle \(\.ckpt\): loading it would run the code it contains, so sd-trt does not open it\. Convert it to \.safetensors first/],
    ["a torch zip archive named .safetensors", "zipped.safetensors", () => Buffer.concat([Buffer.from("PK\x03\x04"), Buffer.alloc(60)]), /zipped\.safetensors is a zip archive, the layout torch\.save writes pickles in/],
  ];
  test.each(cases)("%s", async (_what, name, content, message) => {
    const dir = fresh("bad");
    mkdirSync(dir);
    const file = join(dir, name);
    writeFileSync(file, content());
    const cacheDir = join(dir, "cache");
    const run = await runCommand(generate, ["generate", "a fox", "--backend", "cpu", "--steps", "1", "--model", file, "--cache-dir", cacheDir, "--out", join(dir, "out.png"), "--quiet"]);
    expect(run.code).toBe(1);
    expect(run.stderr).toMatch(message);
    expect(await cacheEntries(cacheDir)).toEqual([]);
    expect((await readdir(dir)).sort()).toEqual(["cache", name].sort());
  });
});

test("bench --model <checkpoint> converts it into the cache and benchmarks the converted model", async () => {
  const cacheDir = fresh("bench-cache");
  const run = await runCommand(bench, ["bench", "--backend", "cpu", "--json", "--size", "64x64", "--steps", "2", "--warmup", "0", "--runs", "1", "--model", sd1File, "--model-config", sd1Config, "--cache-dir", cacheDir]);
  expect({ code: run.code, stderr: run.code === 0 ? "" : run.stderr }).toEqual({ code: 0, stderr: "" });
  const entries = await cacheEntries(cacheDir);
  expect(entries).toHaveLength(1);
  expect((JSON.parse(run.stdout) as { model: string }).model).toBe(join(cacheDir, entries[0]!));
});

test("serve --model <checkpoint> serves the converted model under the checkpoint's A1111 name and hash", async () => {
  const cacheDir = fresh("serve-cache");
  const server = startServe({ model: sd1File, "model-config": sd1Config, "cache-dir": cacheDir });
  try {
    const url = await server.url;
    const sha10 = createHash("sha256").update(readFileSync(sd1File)).digest("hex").slice(0, 10);
    const models = (await (await fetch(`${url}/sdapi/v1/sd-models`)).json()) as { title: string; hash: string }[];
    expect(models.map((m) => [m.title, m.hash])).toEqual([["single_file.fp16", sha10]]);
    const response = await fetch(`${url}/sdapi/v1/txt2img`, { method: "POST", body: JSON.stringify({ prompt: "a fox", seed: 1, steps: 2, width: 64, height: 64 }) });
    expect(response.status).toBe(200);
    expect(JSON.parse(((await response.json()) as { info: string }).info).infotexts[0]).toContain(`Model hash: ${sha10}, Model: single_file.fp16,`);
    process.emit("SIGINT");
    await server.done;
  } finally {
    server.restore();
  }
  expect(await cacheEntries(cacheDir)).toHaveLength(1);
});

test("--model naming another kind of file is left to the model-folder reader: no conversion, no cache", async () => {
  const dir = fresh("onnx-file");
  mkdirSync(dir);
  writeFileSync(join(dir, "unet.onnx"), "not a folder");
  const run = await runCommand(generate, ["generate", "a fox", "--backend", "cpu", "--model", join(dir, "unet.onnx"), "--cache-dir", join(dir, "cache"), "--out", join(dir, "out.png")]);
  expect(run.code).toBe(1);
  expect(run.stderr).toContain(`model folder ${join(dir, "unet.onnx")} is not a directory`);
  expect(await readdir(dir)).toEqual(["unet.onnx"]);
});

describe("the model cache", () => {
  test("an interrupted conversion leaves no entry; the next run converts it whole", async () => {
    const cacheDir = fresh("cache");
    const controller = new AbortController();
    const interrupted = cachedConversion(sd1File, cacheDir, {
      dtype: "fp32",
      configFolder: sd1Config,
      signal: controller.signal,
      onProgress: (event) => {
        if (event.stage === "graph" && event.index === 1) controller.abort(new AbortError("interrupted by SIGINT"));
      },
    });
    await expect(interrupted).rejects.toThrow(AbortError);
    expect(await cacheEntries(cacheDir)).toEqual([]);
    const first = await cachedConversion(sd1File, cacheDir, { dtype: "fp32", configFolder: sd1Config });
    expect(first.converted).toBe(true);
    const again = await cachedConversion(sd1File, cacheDir, { dtype: "fp32", configFolder: sd1Config });
    expect(again).toEqual({ dir: first.dir, converted: false });
    // Another dtype or override is another entry.
    const other = await cachedConversion(sd1File, cacheDir, { dtype: "fp32", configFolder: sd1Config, predictionType: "v_prediction" });
    expect(other.dir).not.toBe(first.dir);
    expect((await cacheEntries(cacheDir)).length).toBe(2);
    expect(JSON.parse(await readFile(join(other.dir, "scheduler", "scheduler_config.json"), "utf8")).prediction_type).toBe("v_prediction");
  });

  test("temporary folders of processes that died are removed, those of this process are kept", async () => {
    const cacheDir = fresh("orphans");
    const dead = spawnSync(process.execPath, ["-e", ""]).pid;
    const orphan = join(cacheDir, `.model.tmp-${dead}-0123abcd`);
    const own = join(cacheDir, `.model.tmp-${process.pid}-89abcdef`);
    mkdirSync(orphan, { recursive: true });
    mkdirSync(own, { recursive: true });
    await cachedConversion(sd1File, cacheDir, { dtype: "fp32", configFolder: sd1Config });
    const names = await readdir(cacheDir);
    expect(names).not.toContain(`.model.tmp-${dead}-0123abcd`);
    expect(names).toContain(`.model.tmp-${process.pid}-89abcdef`);
  });
});
