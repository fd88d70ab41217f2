/**
 * A1111's prompt parser and chunker against test/fixtures/goldens/a1111_prompts.json (A1111's own
 * prompt_parser.py and sd_hijack_clip.py run on 40 prompts): the parsed spans, the chunks' token ids
 * and multipliers and the token count, compared exactly — with the attention syntax (emphasis
 * "Original") and without it (emphasis "None").
 */
import { readFileSync } from "node:fs";
import { describe, expect, test } from "@jest/globals";
import { ClipTokenizer } from "../../lib/tokenizer/index.js";
import { parsePromptAttention, tokenizePrompt, type PromptChunk } from "../../lib/prompt/index.js";

interface Golden {
  id: string;
  text: string;
  note: string;
  parsed: [string, number][];
  chunks: PromptChunk[];
  token_count: number;
  chunks_none?: PromptChunk[];
  token_count_none?: number;
}

const goldens = JSON.parse(readFileSync(new URL("../fixtures/goldens/a1111_prompts.json", import.meta.url), "utf8")) as { cases: Golden[] };
const cases = goldens.cases.map((c) => [`${c.id} ${c.note}`, c] as const);

describe("A1111 prompts are parsed and chunked exactly as A1111 does", () => {
  test("the fixture holds its 40 cases, 10 of them with emphasis None", () => {
    expect(goldens.cases).toHaveLength(40);
    expect(goldens.cases.filter((c) => c.chunks_none)).toHaveLength(10);
  });

  test.each(cases)("%s: parse_prompt_attention", (_name, golden) => {
    expect(parsePromptAttention(golden.text)).toEqual(golden.parsed);
  });

  test.each(cases)("%s: tokenize_line (emphasis Original)", async (_name, golden) => {
    const tokenized = tokenizePrompt(await ClipTokenizer.default(), golden.text);
    expect(tokenized.parsed).toEqual(golden.parsed);
    expect(tokenized.chunks).toEqual(golden.chunks);
    expect(tokenized.tokenCount).toBe(golden.token_count);
  });

  test.each(cases.filter(([, c]) => c.chunks_none))("%s: tokenize_line (emphasis None: no parsing)", async (_name, golden) => {
    const tokenized = tokenizePrompt(await ClipTokenizer.default(), golden.text, { emphasis: "none" });
    expect(tokenized.parsed).toEqual([[golden.text, 1]]);
    expect(tokenized.chunks).toEqual(golden.chunks_none);
    expect(tokenized.tokenCount).toBe(golden.token_count_none);
  });
});
