/**
 * Textual-inversion embeddings against A1111's own code (test/fixtures/a1111/clip-ti, made by
 * scripts/reference/a1111_clip_skip_ti.py): the files read as A1111's EmbeddingDatabase reads them
 * (vectors, hashes), prompt words matched and chunked as A1111's tokenize_line does (multi-vector
 * embeddings that move to the next chunk, multi-token names, near misses), the TI-hashes order,
 * and the bad files refused naming the file.
 */
import { copyFile, mkdir, mkdtemp, rm, writeFile } from "node:fs/promises";
import { readFileSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { fileURLToPath } from "node:url";
import { afterAll, beforeAll, describe, expect, test } from "@jest/globals";
import { ModelFileError } from "../../lib/errors.js";
import { loadTextualInversions, type TextualInversion } from "../../lib/model/textual-inversion.js";
import { EmbeddingVocabulary, tokenizePrompt, buildPromptBatch } from "../../lib/prompt/index.js";
import { ClipTokenizer } from "../../lib/tokenizer/index.js";

const FIXTURE = fileURLToPath(new URL("../fixtures/a1111/clip-ti/", import.meta.url));
interface Golden {
  expected_shape: number;
  embeddings: Record<string, { file: string; vectors: number; shape: number; hash: string; shorthash: string; values: number[] }>;
  cases: { id: string; text: string; token_count: number; ti_hashes?: string | null; chunks: { tokens: number[]; multipliers: number[]; fixes: [number, string][] }[] }[];
}
const golden = JSON.parse(readFileSync(`${FIXTURE}goldens.json`, "utf8")) as Golden;

let tokenizer: ClipTokenizer;
let loaded: TextualInversion[];
let vocabulary: EmbeddingVocabulary;
let scratch: string;
beforeAll(async () => {
  tokenizer = await ClipTokenizer.default();
  loaded = await loadTextualInversions(`${FIXTURE}embeddings`, golden.expected_shape);
  vocabulary = new EmbeddingVocabulary(tokenizer, loaded);
  scratch = await mkdtemp(join(tmpdir(), "sd-trt-ti-"));
});
afterAll(async () => {
  await rm(scratch, { recursive: true, force: true });
});

describe("embedding files, read as A1111 reads them", () => {
  test("names, vector counts, values and SHA-256 hashes of emb_params, string_to_param.* and 1-D files", () => {
    expect(loaded.map((e) => e.name)).toEqual(["dot", "lowpoly", "neg-style", "Sketchy Art"]);
    for (const e of loaded) {
      const g = golden.embeddings[e.name]!;
      expect([e.name, e.count, e.hash, e.shorthash]).toEqual([e.name, g.vectors, g.hash, g.shorthash]);
      expect(Array.from(e.vectors)).toEqual(g.values);
    }
  });

  test("a pickle is refused unopened, with how to convert it", async () => {
    const dir = join(scratch, "pickle");
    await mkdir(dir);
    await copyFile(`${FIXTURE}pickled.pt`, join(dir, "pickled.pt"));
    await expect(loadTextualInversions(dir, 8)).rejects.toThrow(ModelFileError);
    await expect(loadTextualInversions(dir, 8)).rejects.toThrow(/pickled\.pt is a PyTorch pickle \(\.pt\): loading it would run the code it contains.*Convert it to \.safetensors/);
  });

  test("a wrong width names the file and the shape expected", async () => {
    const dir = join(scratch, "wide");
    await mkdir(dir);
    await copyFile(`${FIXTURE}wrong-width.safetensors`, join(dir, "wrong-width.safetensors"));
    await expect(loadTextualInversions(dir, 8)).rejects.toThrow(/wrong-width\.safetensors: the embedding emb_params has shape \[2, 12\], expected \[vectors, 8\] \(or \[8\] for one vector\)/);
  });

  test("a corrupt file, a missing folder and two files of one name are refused naming them; empty files and other files are skipped", async () => {
    const dir = join(scratch, "bad");
    await mkdir(join(dir, "sub"), { recursive: true });
    await writeFile(join(dir, "broken.safetensors"), Buffer.from([200, 0, 0, 0, 0, 0, 0, 0, 123]));
    await expect(loadTextualInversions(dir, 8)).rejects.toThrow(/broken\.safetensors/);
    await rm(join(dir, "broken.safetensors"));
    await writeFile(join(dir, "empty.safetensors"), "");
    await writeFile(join(dir, "notes.txt"), "not an embedding");
    expect(await loadTextualInversions(dir, 8)).toEqual([]);
    await copyFile(`${FIXTURE}embeddings/dot.safetensors`, join(dir, "dot.safetensors"));
    await copyFile(`${FIXTURE}embeddings/dot.safetensors`, join(dir, "sub", "dot.safetensors"));
    await expect(loadTextualInversions(dir, 8)).rejects.toThrow(/are both embeddings named "dot"/);
    await expect(loadTextualInversions(join(scratch, "missing"), 8)).rejects.toThrow(/the embeddings folder .*missing cannot be read/);
  });
});

describe("embedding words in prompts, chunked as A1111's tokenize_line chunks them", () => {
  test("every golden case: tokens (embedding vectors as ids ≥ 49408), multipliers, token count and which embeddings each chunk holds", () => {
    const firstId = new Map(loaded.map((e, i) => [e.name, 49408 + loaded.slice(0, i).reduce((n, x) => n + x.count, 0)]));
    for (const c of golden.cases) {
      const tokenized = tokenizePrompt(tokenizer, c.text, { embeddings: vocabulary });
      const expected = c.chunks.map((chunk) => {
        const tokens = [...chunk.tokens];
        for (const [offset, name] of chunk.fixes) for (let v = 0; v < golden.embeddings[name]!.vectors; v++) tokens[offset + 1 + v] = firstId.get(name)! + v;
        return { tokens, multipliers: chunk.multipliers, ...(chunk.fixes.length > 0 ? { embeddings: chunk.fixes.map(([, name]) => name) } : {}) };
      });
      expect([c.id, tokenized.chunks]).toEqual([c.id, expected]);
      expect([c.id, tokenized.tokenCount]).toEqual([c.id, c.token_count]);
    }
  });

  test("the embeddings a prompt uses, in A1111's order, for its TI hashes", () => {
    for (const c of golden.cases.filter((x) => x.ti_hashes)) {
      const built = buildPromptBatch(tokenizer, [c.text], { syntax: "a1111", emphasis: "original", commaPaddingBacktrack: 20 }, "prompt", 20, vocabulary);
      const hashes = built.embeddingsUsed[0]!.map((name) => `${name}: ${golden.embeddings[name]!.shorthash}`).join(", ");
      expect([c.id, hashes]).toEqual([c.id, c.ti_hashes]);
    }
  });
});
