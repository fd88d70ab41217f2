/**
 * The text-encoder graph edit (lib/onnx/text-encoder-edit.ts) against A1111's own conditioning:
 * test/fixtures/a1111/clip-ti holds a tiny transformers CLIPTextModel exported at opset 14 as
 * optimum does, and what A1111's FrozenCLIPEmbedderWithCustomWords.forward gives for clip skip
 * 1–4 and textual-inversion embeddings (scripts/reference/a1111_clip_skip_ti.py). Here the edited
 * export runs in ONNX Runtime on A1111's chunks (embedding positions as ids ≥ 49408 pointing into
 * the extra vectors) and the emphasis is ours (lib/prompt): within 1e-5 of A1111.
 */
import { readFileSync } from "node:fs";
import { fileURLToPath } from "node:url";
import { describe, expect, test } from "@jest/globals";
import ort from "onnxruntime-node";
import { OnnxModel } from "../../lib/onnx/model.js";
import { CLIP_SKIP_INPUT, EXTRA_VECTORS_INPUT, editTextEncoder, textEncoderLayout } from "../../lib/onnx/text-encoder-edit.js";
import { applyEmphasis } from "../../lib/prompt/emphasis.js";
import { ModelFileError } from "../../lib/errors.js";

const FIXTURE = fileURLToPath(new URL("../fixtures/a1111/clip-ti/", import.meta.url));
const TINY_SD = fileURLToPath(new URL("../../models/tiny-sd/", import.meta.url));
const VOCAB = 49408;

interface GoldenChunk {
  tokens: number[];
  multipliers: number[];
  fixes: [offset: number, name: string][];
}
interface GoldenCase {
  id: string;
  text: string;
  chunks: GoldenChunk[];
  conds: Record<string, { shape: [number, number]; values: number[] }>;
}
interface Golden {
  embeddings: Record<string, { vectors: number; values: number[] }>;
  cases: GoldenCase[];
}
const golden = JSON.parse(readFileSync(`${FIXTURE}goldens.json`, "utf8")) as Golden;

async function editedSession(path: string, vocabSize?: number): Promise<{ session: ort.InferenceSession; layers: number }> {
  const model = await OnnxModel.read(path);
  const edited = editTextEncoder(model, { idsName: "input_ids", hiddenName: "last_hidden_state", ...(vocabSize === undefined ? {} : { vocabSize }) });
  return { session: await ort.InferenceSession.create(model.encode()), layers: edited.layout.layers };
}

describe("the text-encoder edit on a transformers CLIPTextModel export", () => {
  test("finds the four layers of the export from its structure", async () => {
    const layout = textEncoderLayout(await OnnxModel.read(`${FIXTURE}text_encoder.onnx`), "last_hidden_state");
    expect(layout.layers).toBe(4);
    expect(layout.hiddenStates).toHaveLength(5);
  });

  test("gives A1111's conditioning for every clip skip and embedding case (1e-5)", async () => {
    const { session } = await editedSession(`${FIXTURE}text_encoder.onnx`, VOCAB);
    // Extra vectors: every embedding's rows, one after another, in name order.
    const names = Object.keys(golden.embeddings).sort();
    const firstRow = new Map<string, number>();
    const rows: number[] = [];
    for (const name of names) {
      firstRow.set(name, rows.length / 8);
      rows.push(...golden.embeddings[name]!.values);
    }
    let compared = 0;
    for (const c of golden.cases) {
      const ids = new Int32Array(c.chunks.length * 77);
      const multipliers = new Float32Array(ids.length);
      c.chunks.forEach((chunk, k) => {
        const tokens = [...chunk.tokens];
        for (const [offset, name] of chunk.fixes) {
          for (let v = 0; v < golden.embeddings[name]!.vectors; v++) tokens[offset + 1 + v] = VOCAB + firstRow.get(name)! + v;
        }
        ids.set(tokens, k * 77);
        multipliers.set(chunk.multipliers, k * 77);
      });
      for (const [skip, cond] of Object.entries(c.conds)) {
        const out = await session.run({
          input_ids: new ort.Tensor("int32", ids, [c.chunks.length, 77]),
          [CLIP_SKIP_INPUT]: new ort.Tensor("int32", Int32Array.of(Number(skip)), [1]),
          [EXTRA_VECTORS_INPUT]: new ort.Tensor("float32", Float32Array.from(rows), [rows.length / 8, 8]),
        });
        const z = out.last_hidden_state!.data as Float32Array;
        for (let k = 0; k < c.chunks.length; k++) applyEmphasis("original", z.subarray(k * 77 * 8, (k + 1) * 77 * 8), multipliers.subarray(k * 77, (k + 1) * 77), 8);
        expect([c.id, skip, z.length]).toEqual([c.id, skip, cond.values.length]);
        let worst = 0;
        cond.values.forEach((v, i) => {
          worst = Math.max(worst, Math.abs(z[i]! - v) / Math.max(1, Math.abs(v)));
        });
        expect([c.id, skip, worst < 1e-5]).toEqual([c.id, skip, true]);
        compared++;
      }
    }
    expect(compared).toBe(golden.cases.reduce((n, c) => n + Object.keys(c.conds).length, 0));
  });
});

describe("the text-encoder edit on the tiny-sd encoder (a CLIP-like module of its own)", () => {
  const ids = Int32Array.from({ length: 77 }, (_, i) => (i === 0 ? 49406 : i < 6 ? 320 + 11 * i : 49407));

  test("clip skip 1 with no embedding in the ids is the original graph bit for bit; clip skip 2 takes the first layer", async () => {
    const original = await ort.InferenceSession.create(`${TINY_SD}text_encoder/model.onnx`);
    const before = (await original.run({ input_ids: new ort.Tensor("int32", ids, [1, 77]) })).last_hidden_state!.data as Float32Array;
    const { session, layers } = await editedSession(`${TINY_SD}text_encoder/model.onnx`, VOCAB);
    expect(layers).toBe(2);
    const run = async (skip: number) =>
      (
        await session.run({
          input_ids: new ort.Tensor("int32", ids, [1, 77]),
          [CLIP_SKIP_INPUT]: new ort.Tensor("int32", Int32Array.of(skip), [1]),
          [EXTRA_VECTORS_INPUT]: new ort.Tensor("float32", new Float32Array(32), [1, 32]),
        })
      ).last_hidden_state!.data as Float32Array;
    expect(Buffer.from((await run(1)).buffer).equals(Buffer.from(before.buffer))).toBe(true);
    const skipped = await run(2);
    expect(skipped.some((v, i) => v !== before[i])).toBe(true);
  });

  test("a graph that does not end in a layer norm is refused, naming the file", async () => {
    const unet = await OnnxModel.read(`${TINY_SD}vae_decoder/model.onnx`);
    expect(() => textEncoderLayout(unet, "sample")).toThrow(ModelFileError);
    expect(() => textEncoderLayout(unet, "sample")).toThrow(/vae_decoder\/model\.onnx: cannot find the text encoder's layers/);
  });
});
