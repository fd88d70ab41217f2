/**
 * Textual inversion through every surface on the tiny-sd-te05 model (CPU backend), with the
 * width-32 embeddings of test/fixtures/a1111/clip-ti/embeddings-32 and what A1111's own code made
 * of them (te05_clip_skip.json: hashes, chunks with the embeddings' positions). The conditioning
 * is checked against the text encoder's edited graph run directly on A1111's chunks (the graph
 * edit and chunking are checked against A1111's conditioning in
 * test/unit/onnx-text-encoder-edit.test.ts and prompt-textual-inversion.test.ts).
 */
import { copyFile, mkdir, mkdtemp, rm } from "node:fs/promises";
import { readFileSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { fileURLToPath } from "node:url";
import { afterAll, beforeAll, describe, expect, test } from "@jest/globals";
import ort from "onnxruntime-node";
import { InvalidOptionError, ModelFileError } from "../../lib/errors.js";
import { Pipeline } from "../../lib/pipeline/pipeline.js";
import { runTokenize } from "../../lib/cli/commands/tokenize.js";
import { PipelineService } from "../../lib/service/pipeline-service.js";
import { SdServer } from "../../lib/server/server.js";
import { OnnxModel } from "../../lib/onnx/model.js";
import { CLIP_SKIP_INPUT, EXTRA_VECTORS_INPUT, editTextEncoder } from "../../lib/onnx/text-encoder-edit.js";
import { applyEmphasis } from "../../lib/prompt/emphasis.js";
import { copyTe05Model } from "../fixtures/tiny-sd-cases/model-variants.js";
import { postA1111 } from "../support/a1111-goldens.js";

const FIXTURE = fileURLToPath(new URL("../fixtures/a1111/clip-ti/", import.meta.url));
const EMBEDDINGS = `${FIXTURE}embeddings-32`;
interface Te05Golden {
  embeddings: Record<string, { vectors: number; hash: string; shorthash: string; values: number[] }>;
  ti_cases: { text: string; token_count: number; chunks: { tokens: number[]; multipliers: number[]; fixes: [number, string][] }[] }[];
}
const golden = JSON.parse(readFileSync(`${FIXTURE}te05_clip_skip.json`, "utf8")) as Te05Golden;

let dir: string;
let model: string;
let pipe: Pipeline;
let plain: Pipeline;
beforeAll(async () => {
  dir = await mkdtemp(join(tmpdir(), "sd-trt-ti-"));
  model = await copyTe05Model(join(dir, "model"));
  pipe = await Pipeline.load(model, { backend: "cpu", embeddingsDir: EMBEDDINGS });
  plain = await Pipeline.load(model, { backend: "cpu" });
});
afterAll(async () => {
  await pipe?.dispose();
  await plain?.dispose();
  await rm(dir, { recursive: true, force: true });
});

/** The edited te05 encoder run on A1111's chunks (its embedding positions filled with the vectors' rows) with clip skip 1, emphasis "original". */
async function a1111ChunksThroughTheGraph(chunks: Te05Golden["ti_cases"][number]["chunks"]): Promise<Float32Array> {
  const graph = await OnnxModel.read(join(model, "text_encoder/model.onnx"));
  editTextEncoder(graph, { idsName: "input_ids", hiddenName: "last_hidden_state", vocabSize: 49408 });
  const session = await ort.InferenceSession.create(graph.encode());
  const names = Object.keys(golden.embeddings).sort();
  const vectors = names.flatMap((n) => golden.embeddings[n]!.values);
  const firstRow = new Map(names.map((n, i) => [n, names.slice(0, i).reduce((r, m) => r + golden.embeddings[m]!.vectors, 0)]));
  const ids = new Int32Array(chunks.length * 77);
  const multipliers = new Float32Array(ids.length);
  chunks.forEach((chunk, k) => {
    const tokens = [...chunk.tokens];
    for (const [offset, name] of chunk.fixes) for (let v = 0; v < golden.embeddings[name]!.vectors; v++) tokens[offset + 1 + v] = 49408 + firstRow.get(name)! + v;
    ids.set(tokens, k * 77);
    multipliers.set(chunk.multipliers, k * 77);
  });
  const out = await session.run({
    input_ids: new ort.Tensor("int32", ids, [chunks.length, 77]),
    [CLIP_SKIP_INPUT]: new ort.Tensor("int32", Int32Array.of(1), [1]),
    [EXTRA_VECTORS_INPUT]: new ort.Tensor("float32", Float32Array.from(vectors), [vectors.length / 32, 32]),
  });
  const z = out.last_hidden_state!.data as Float32Array;
  for (let k = 0; k < chunks.length; k++) applyEmphasis("original", z.subarray(k * 77 * 32, (k + 1) * 77 * 32), multipliers.subarray(k * 77, (k + 1) * 77), 32);
  return z;
}

describe("textual inversion through the library, the CLI and the server", () => {
  test("Pipeline.load({ embeddingsDir }) lists A1111's embeddings with A1111's hashes", () => {
    expect(pipe.embeddings.map((e) => [e.name, e.count, e.shorthash])).toEqual(Object.entries(golden.embeddings).map(([name, e]) => [name, e.vectors, e.shorthash]));
    expect(plain.embeddings).toEqual([]);
  });

  test("a prompt word that names an embedding is replaced by its vectors: the conditioning of A1111's chunks, and not the plain word's", async () => {
    for (const c of golden.ti_cases) {
      const { values } = await pipe.promptConditioning(c.text);
      const expected = await a1111ChunksThroughTheGraph(c.chunks);
      // The same graph, feeds and emphasis: equal to the bit.
      expect([c.text, Array.from(values)]).toEqual([c.text, Array.from(expected)]);
      const withoutEmbeddings = await plain.promptConditioning(c.text);
      expect(withoutEmbeddings.values.some((v, i) => Math.abs(v - values[i]!) > 1e-3)).toBe(true);
    }
  });

  test("generate writes A1111's TI hashes (the prompt's, then the negative prompt's) and the embedding changes the image", async () => {
    const base = { width: 64, height: 64, steps: 2, seed: 4, scheduler: "euler" } as const;
    const result = await pipe.generate({ ...base, prompt: "a photo of lowpoly", negativePrompt: "neg-style, blurry" });
    const e = golden.embeddings;
    expect(result.images[0]!.infotext).toMatch(new RegExp(`, RNG: CPU, TI hashes: "lowpoly: ${e.lowpoly!.shorthash}, neg-style: ${e["neg-style"]!.shorthash}"$`));
    const without = await plain.generate({ ...base, prompt: "a photo of lowpoly", negativePrompt: "neg-style, blurry" });
    expect(without.images[0]!.infotext).not.toContain("TI hashes");
    expect(Buffer.from(result.images[0]!.rgb).equals(Buffer.from(without.images[0]!.rgb))).toBe(false);
  });

  test("sd-trt tokenize --json --model DIR --embeddings-dir E --embeddings: A1111's chunks and the pipeline's conditioning", async () => {
    const c = golden.ti_cases[1]!;
    const out = JSON.parse(await runTokenize({ words: [c.text], json: true, model, embeddings: true, embeddingsDir: EMBEDDINGS })) as {
      chunks: { tokens: number[]; embeddings?: string[] }[];
      tokenCount: number;
      cond: { values: number[] };
    };
    expect(out.tokenCount).toBe(c.token_count);
    expect(out.chunks[0]!.tokens.slice(1, 4)).toEqual([49409, 49410, 49411]); // neg-style's three vectors (rows 1-3, after lowpoly's)
    expect(out.chunks[0]!.embeddings).toEqual(["neg-style"]);
    expect(out.cond.values).toEqual(Array.from((await pipe.promptConditioning(c.text)).values));
    await expect(runTokenize({ words: [c.text], json: true, embeddingsDir: EMBEDDINGS })).rejects.toThrow(/--embeddings-dir needs --model DIR --embeddings/);
    const listing = await runTokenize({ words: [c.text], model, embeddings: true, embeddingsDir: EMBEDDINGS });
    expect(listing).toContain("   1  49409  <neg-style vector 1/3>  × 1.2");
  });

  test("GET /sdapi/v1/embeddings answers A1111's shape, and a txt2img prompt uses the embeddings", async () => {
    const service = await PipelineService.create(pipe, { maxQueue: 4, batchWindowMs: 0 });
    const server = new SdServer({ service });
    const { url } = await server.listen({ host: "127.0.0.1", port: 0 });
    try {
      const listed = await (await fetch(`${url}/sdapi/v1/embeddings`)).json();
      expect(listed).toEqual({
        loaded: {
          lowpoly: { step: null, sd_checkpoint: null, sd_checkpoint_name: null, shape: 32, vectors: 1 },
          "neg-style": { step: null, sd_checkpoint: null, sd_checkpoint_name: null, shape: 32, vectors: 3 },
        },
        skipped: {},
      });
      const response = await postA1111(url, "txt2img", { prompt: "a photo of lowpoly", width: 64, height: 64, steps: 1 });
      expect(response.status).toBe(200);
      const info = JSON.parse(((await response.json()) as { info: string }).info) as { infotexts: string[] };
      expect(info.infotexts[0]).toContain(`TI hashes: "lowpoly: ${golden.embeddings.lowpoly!.shorthash}"`);
    } finally {
      await server.close();
      await service.dispose();
    }
  });
});

describe("bad embeddings fail the load, naming the file", () => {
  async function folderWith(name: string, file: string): Promise<string> {
    const d = join(dir, name);
    await mkdir(d, { recursive: true });
    await copyFile(file, join(d, file.split("/").pop()!));
    return d;
  }

  test("a pickle (.pt) is refused with how to convert it; a wrong width names the shape the model takes", async () => {
    const pickles = await folderWith("pickles", `${FIXTURE}pickled.pt`);
    await expect(Pipeline.load(model, { backend: "cpu", embeddingsDir: pickles })).rejects.toThrow(ModelFileError);
    await expect(Pipeline.load(model, { backend: "cpu", embeddingsDir: pickles })).rejects.toThrow(/pickled\.pt is a PyTorch pickle.*Convert it to \.safetensors/);
    const eightWide = await folderWith("eight", `${FIXTURE}embeddings/lowpoly.safetensors`);
    await expect(Pipeline.load(model, { backend: "cpu", embeddingsDir: eightWide })).rejects.toThrow(/lowpoly\.safetensors: the embedding emb_params has shape \[1, 8\], expected \[vectors, 32\]/);
    await expect(Pipeline.load(model, { backend: "cpu", embeddingsDir: "" })).rejects.toThrow(InvalidOptionError);
  });
});
