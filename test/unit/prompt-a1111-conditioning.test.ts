/**
 * The text conditioning A1111 builds (chunks encoded one by one, emphasis per chunk, chunks joined
 * along the sequence) through the CPU backend, against the `cond*` fields of
 * test/fixtures/goldens/a1111_prompts.json: A1111's own sd_hijack_clip.py / sd_emphasis.py on the
 * stand-in encoder (the tiny encoder + 0.5, which test/fixtures/tiny-sd-te05 has built in).
 * Tolerance from the golden's .md: |a − b| ≤ 1e-5 · max(1, |m|), m the token's multiplier
 * (another ONNX Runtime build, and the two means summed in float64 rather than torch's float32).
 */
import { mkdtemp, rm } from "node:fs/promises";
import { readFileSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { afterAll, beforeAll, describe, expect, test } from "@jest/globals";
import { CpuBackend } from "../../lib/backends/cpu/backend.js";
import { ClipTokenizer } from "../../lib/tokenizer/index.js";
import { buildPromptBatch, type Emphasis, type PromptChunk } from "../../lib/prompt/index.js";
import { copyTe05Model } from "../fixtures/tiny-sd-cases/model-variants.js";

interface Tensor {
  shape: [number, number];
  values: number[];
}
interface Golden {
  id: string;
  text: string;
  note: string;
  chunks: PromptChunk[];
  cond: Tensor;
  cond_no_norm?: Tensor;
  cond_ignore?: Tensor;
  chunks_none?: PromptChunk[];
  cond_none?: Tensor;
}

const goldens = (JSON.parse(readFileSync(new URL("../fixtures/goldens/a1111_prompts.json", import.meta.url), "utf8")) as { cases: Golden[] }).cases;

describe("A1111 conditioning through the CPU backend equals A1111's on its goldens", () => {
  let dir: string;
  let backend: CpuBackend;
  let tokenizer: ClipTokenizer;
  beforeAll(async () => {
    dir = await mkdtemp(join(tmpdir(), "sd-trt-te05-"));
    backend = await CpuBackend.load(await copyTe05Model(join(dir, "model")));
    tokenizer = await ClipTokenizer.default();
  });
  afterAll(async () => {
    await backend?.dispose();
    await rm(dir, { recursive: true, force: true });
  });

  /** The worst |a − b| / max(1, |m|) over the tensor, and the shape. */
  async function compare(text: string, emphasis: Emphasis, golden: Tensor, chunks: PromptChunk[]): Promise<{ shape: number[]; worst: number }> {
    const { batch } = buildPromptBatch(tokenizer, [text], { syntax: "a1111", emphasis, commaPaddingBacktrack: 20 }, "prompt");
    const { shape, values } = await backend.encodePrompts(batch, emphasis);
    const hidden = golden.shape[1];
    const multipliers = chunks.flatMap((c) => c.multipliers);
    let worst = 0;
    golden.values.forEach((v, i) => {
      const m = multipliers[Math.floor(i / hidden)]!;
      worst = Math.max(worst, Math.abs(values[i]! - v) / Math.max(1, Math.abs(m)));
    });
    return { shape: shape.slice(1), worst };
  }

  test.each(goldens.map((c) => [`${c.id} ${c.note}`, c] as const))("%s: emphasis Original", async (_name, golden) => {
    const { shape, worst } = await compare(golden.text, "original", golden.cond, golden.chunks);
    expect(shape).toEqual(golden.cond.shape);
    expect(worst).toBeLessThanOrEqual(1e-5);
  });

  const subset = goldens.filter((c) => c.cond_no_norm);
  test.each(subset.map((c) => [`${c.id} ${c.note}`, c] as const))("%s: emphasis No norm, Ignore and None", async (_name, golden) => {
    for (const [emphasis, tensor, chunks] of [
      ["no-norm", golden.cond_no_norm!, golden.chunks],
      ["ignore", golden.cond_ignore!, golden.chunks],
      ["none", golden.cond_none!, golden.chunks_none!],
    ] as const) {
      const { shape, worst } = await compare(golden.text, emphasis, tensor, chunks);
      expect({ emphasis, shape }).toEqual({ emphasis, shape: tensor.shape });
      expect({ emphasis, worst: worst <= 1e-5 }).toEqual({ emphasis, worst: true });
    }
  });
});
