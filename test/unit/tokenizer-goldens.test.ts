/**
 * Every prompt of the openai/CLIP reference goldens (test/fixtures/goldens/clip_tokenizer.json)
 * must give exactly the reference's cleaned text, tokens, ids and SD 1.x input ids.
 */
import { readFileSync } from "node:fs";
import { describe, expect, test } from "@jest/globals";
import { ClipTokenizer } from "../../lib/tokenizer/index.js";

interface GoldenCase {
  id: string;
  category: string;
  text: string;
  normalized: string;
  tokens: string[];
  ids: number[];
  input_ids_77: number[];
  truncated: boolean;
}

const goldens = JSON.parse(
  readFileSync(new URL("../fixtures/goldens/clip_tokenizer.json", import.meta.url), "utf8"),
) as { bos: number; eos: number; pad: number; max_length: number; count: number; cases: GoldenCase[] };

describe("CLIP tokenizer matches the openai/CLIP reference goldens", () => {
  test("the fixture holds all its cases", () => {
    expect(goldens.cases).toHaveLength(goldens.count);
    expect(goldens.count).toBeGreaterThanOrEqual(80);
  });

  test("special ids and the model length are SD 1.x's", async () => {
    const tokenizer = await ClipTokenizer.default();
    expect(tokenizer.bosTokenId).toBe(goldens.bos);
    expect(tokenizer.eosTokenId).toBe(goldens.eos);
    expect(tokenizer.padTokenId).toBe(goldens.pad);
    expect(tokenizer.vocabSize).toBe(49408);
  });

  test.each(goldens.cases.map((c) => [`${c.id} ${c.category}: ${JSON.stringify(c.text).slice(0, 60)}`, c] as const))(
    "%s",
    async (_name, golden) => {
      const tokenizer = await ClipTokenizer.default();
      const result = tokenizer.tokenize(golden.text);
      expect(result.normalized).toBe(golden.normalized);
      expect(result.tokens).toEqual(golden.tokens);
      expect(result.ids).toEqual(golden.ids);
      expect(result.inputIds77).toEqual(golden.input_ids_77);
      expect(result.truncated).toBe(golden.truncated);
      expect(tokenizer.encode(golden.text)).toEqual(golden.ids);
      expect(Array.from(tokenizer.encodeForModel(golden.text))).toEqual(golden.input_ids_77);
    },
  );
});
