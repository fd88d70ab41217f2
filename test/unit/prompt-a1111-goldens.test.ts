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

describe("parse_prompt_attention on the examples of A1111's own docstring and the goldens' notes", () => {
  // The doctests of modules/prompt_parser.py (A1111 runs them as its own test of this function).
  test.each([
    ["normal text", [["normal text", 1.0]]],
    ["an (important) word", [["an ", 1.0], ["important", 1.1], [" word", 1.0]]],
    ["(unbalanced", [["unbalanced", 1.1]]],
    ["\\(literal\\]", [["(literal]", 1.0]]],
    ["(unnecessary)(parens)", [["unnecessaryparens", 1.1]]],
  ] as const)("%j", (text, expected) => {
    expect(parsePromptAttention(text)).toEqual(expected);
  });

  test("a weight may have spaces around its number; (x:1e2) is text; a lone backslash is dropped", () => {
    expect(parsePromptAttention("a (x: 1.2 ) b")).toEqual([["a ", 1], ["x", 1.2], [" b", 1]]);
    expect(parsePromptAttention("(x:.5)")).toEqual([["x", 0.5]]);
    expect(parsePromptAttention("(x:-1)")).toEqual([["x", -1]]);
    expect(parsePromptAttention("(x:1e2)")).toEqual([["x:1e2", 1.1]]);
    expect(parsePromptAttention("C:\\path")).toEqual([["C:path", 1]]);
  });

  test("BREAK inside brackets is weighted and so no longer a BREAK", () => {
    expect(parsePromptAttention("(a BREAK b)")).toEqual([["a", 1.1], ["BREAK", -1.1], ["b", 1.1]]);
  });
});
