/**
 * The text cleaning against reference outputs of ftfy 6.3.1, Python's html.unescape and the
 * openai/CLIP tokenizer for inputs the goldens barely touch: mojibake in many code pages,
 * lossy and partial mojibake, HTML entities of every kind, control characters, Unicode case and
 * normalisation edge cases, random text (test/fixtures/tokenizer/reference_cases.json, made by
 * scripts/reference/make_reference_cases.py).
 */
import { readFileSync } from "node:fs";
import { describe, expect, test } from "@jest/globals";
import { ClipTokenizer } from "../../lib/tokenizer/index.js";
import { badness } from "../../lib/tokenizer/ftfy/badness.js";
import { ftfyHtmlEntities, widthMap } from "../../lib/tokenizer/ftfy/chardata.js";
import { fixText } from "../../lib/tokenizer/ftfy/fix-text.js";
import { htmlUnescape } from "../../lib/tokenizer/html-unescape.js";

interface ReferenceCase {
  text: string;
  fixed: string;
  unescaped: string;
  badness: number;
  normalized: string;
  ids: number[];
}

const reference = JSON.parse(
  readFileSync(new URL("../fixtures/tokenizer/reference_cases.json", import.meta.url), "utf8"),
) as {
  ftfy_width_map: Record<string, string>;
  ftfy_upper_html_entities: Record<string, string>;
  count: number;
  cases: ReferenceCase[];
};

/** Collects every case where `actual(c)` differs from `expected(c)`, so one failure shows them all. */
function mismatches<T>(actual: (c: ReferenceCase) => T, expected: (c: ReferenceCase) => T) {
  const out: Array<{ text: string; expected: T; actual: T }> = [];
  for (const c of reference.cases) {
    const a = actual(c);
    const e = expected(c);
    if (JSON.stringify(a) !== JSON.stringify(e)) out.push({ text: c.text, expected: e, actual: a });
  }
  return out;
}

describe("text cleaning matches the Python reference", () => {
  test("the fixture holds its cases", () => {
    expect(reference.cases).toHaveLength(reference.count);
    expect(reference.count).toBeGreaterThan(1000);
  });

  test("ftfy's width map is derived the same way", () => {
    expect(Object.fromEntries(widthMap())).toEqual(reference.ftfy_width_map);
  });

  test("ftfy's all-caps HTML entities are derived the same way", () => {
    const upper = Object.fromEntries([...ftfyHtmlEntities()].filter(([name]) => name in reference.ftfy_upper_html_entities));
    expect(upper).toEqual(reference.ftfy_upper_html_entities);
    const baseCount = [...ftfyHtmlEntities().keys()].filter((name) => !(name in reference.ftfy_upper_html_entities)).length;
    expect(ftfyHtmlEntities().size).toBe(baseCount + Object.keys(reference.ftfy_upper_html_entities).length);
  });

  test("ftfy's badness heuristic counts the same sequences", () => {
    expect(mismatches((c) => badness(c.text), (c) => c.badness)).toEqual([]);
  });

  test("Python's html.unescape", () => {
    expect(mismatches((c) => htmlUnescape(c.text), (c) => c.unescaped)).toEqual([]);
  });

  test("ftfy.fix_text", () => {
    expect(mismatches((c) => fixText(c.text), (c) => c.fixed)).toEqual([]);
  });

  test("the CLIP cleaned text and ids", async () => {
    const tokenizer = await ClipTokenizer.default();
    expect(mismatches((c) => tokenizer.normalize(c.text), (c) => c.normalized)).toEqual([]);
    expect(mismatches((c) => tokenizer.encode(c.text), (c) => c.ids)).toEqual([]);
  });
});
