/**
 * Targeted behaviour of the CLIP tokenizer: the cleaning steps one by one (HTML entities,
 * mojibake, ftfy's repairs, whitespace, case), word splitting, BPE, SD's 77-token input,
 * decoding and argument validation. Expected values come from the Python reference (ftfy 6.3.1,
 * html.unescape, openai/CLIP) where they are not obvious.
 */
import { beforeAll, describe, expect, test } from "@jest/globals";
import { InvalidOptionError } from "../../lib/errors.js";
import { BYTE_ENCODER, BoundedCache, bytePairEncode } from "../../lib/tokenizer/bpe.js";
import { VocabularyTable } from "../../lib/tokenizer/vocabulary-table.js";
import { fixText, htmlUnescape, normalizeClipText, ClipTokenizer } from "../../lib/tokenizer/index.js";
import { splitWords } from "../../lib/tokenizer/pretokenize.js";

let tokenizer: ClipTokenizer;
beforeAll(async () => {
  tokenizer = await ClipTokenizer.default();
});

describe("html.unescape (Python semantics)", () => {
  test.each([
    ["&amp;", "&"],
    ["&amp", "&"], // legacy name without ";"
    ["&lt", "<"],
    ["&ltb", "<b"], // legacy name as a prefix
    ["&ampxyz", "&xyz"],
    ["&notit;", "¬it;"], // longest legacy prefix
    ["&notin;", "∉"],
    ["&copy", "©"],
    ["&nbsp", "\u00a0"],
    ["&unknown;", "&unknown;"],
    ["&Amp;", "&Amp;"], // names are case-sensitive
    ["&#39;", "'"],
    ["&#39", "'"], // numeric without ";"
    ["&#x27;", "'"],
    ["&#X27", "'"],
    ["&#0000000065;", "A"],
    ["&#128;", "€"], // C1 numbers mean Windows-1252
    ["&#x9f;", "Ÿ"],
    ["&#129;", "\x81"],
    ["&#0;", "\ufffd"],
    ["&#13;", "\r"],
    ["&#xD800;", "\ufffd"], // surrogate
    ["&#x110000;", "\ufffd"], // above U+10FFFF
    ["&#99999999999999999999;", "\ufffd"],
    ["&#1;", ""], // invalid code points vanish
    ["&#x7f;", ""],
    ["&#65534;", ""],
    ["&#xFDD0;", ""],
    ["&#x1FFFF;", ""],
    ["&#;", "&#;"],
    ["&#x;", "&#x;"],
    ["a & b", "a & b"],
    ["&amp;amp;", "&amp;"], // one pass only
    ["&NewLine;", "\n"],
    ["&fjlig;", "fj"],
  ])("%j → %j", (input, expected) => {
    expect(htmlUnescape(input)).toBe(expected);
  });

  test("a name longer than 32 characters is not a reference", () => {
    const name = "a".repeat(33);
    expect(htmlUnescape(`&${name};`)).toBe(`&${name};`);
  });
});

describe("ftfy.fix_text", () => {
  test.each([
    ["cafÃ©", "café"], // UTF-8 read as Latin-1 / Windows-1252
    ["schÃ¶n", "schön"],
    ["âœ” No problems", "✔ No problems"],
    ["doesnâ€™t", "doesn't"], // Windows-1252 mojibake of a curly quote, then uncurled
    ["cafÃƒÂ©", "café"], // twice garbled
    ["ÐŸÑ€Ð¸Ð²ÐµÑ‚", "Привет"], // Cyrillic
    ["voilÃ le travail", "voilà le travail"], // the 0xA0 byte became a space
    ["â€œ like this â€\ufffd", "\" like this \ufffd"], // a byte lost to U+FFFD
    ["This is cafÃ© and also café", "This is café and also café"], // mixed
    ["\x93quoted\x94", '"quoted"'], // C1 controls as Windows-1252
    ["ﬂuﬃeﬆ", "fluffiest"],
    ["ＬＯＵＤ　ＮＯＩＳＥＳ", "LOUD NOISES"],
    ["Ｕﾀｰﾝ", "Uターン"],
    ["“smart” ‘quotes’", "\"smart\" 'quotes'"],
    ["a\r\nb\rc\u2028d", "a\nb\nc\nd"],
    ["\x1b[36;44mblue\x1b[0m", "blue"],
    ["a\x00b\x07c\ufeffd", "abcd"],
    ["e\u0301", "é"], // NFC
    ["lone \ud800 surrogate", "lone \ufffd surrogate"],
    ["&eacute; P&EACUTE;REZ &SZLIG;", "é PÉREZ SS"],
    ["&#x2019;s", "'s"],
    ["this&not that", "this&not that"], // bare legacy names are left to html.unescape
    ["<b>&amp;</b>", "<b>&amp;</b>"], // looks like HTML: entities stay
    ["first <\nthen &amp;", "first <\nthen &amp;"], // and stay in later lines too
    ["&amp;\n<", "&\n<"], // but earlier lines are decoded
  ])("%j → %j", (input, expected) => {
    expect(fixText(input)).toBe(expected);
  });

  test.each([
    "naïve façade, Ångström, São Paulo, Zürich",
    "Москва, красная площадь",
    "日本語のテキスト",
    "résumé — “not” mojibake…",
    "Ã", // a lone capital A with tilde is fine
  ])("leaves correct text alone: %j", (text) => {
    expect(fixText(text)).toBe(text.replace(/[“”]/g, '"'));
  });

  test("fixes a line in pieces of at most 1,000,000 code points, as ftfy does", () => {
    // The piece boundary falls between "Ã" and "©", so neither half is mojibake.
    expect(fixText("a".repeat(999_999) + "Ã©").slice(-3)).toBe("aÃ©");
    expect(fixText("a".repeat(999_998) + "Ã©").slice(-3)).toBe("aaé");
    // Counted in code points: 499,999 emoji are 999,998 UTF-16 units but fewer code points.
    expect(fixText("😀".repeat(499_999) + "xÃ©").slice(-4)).toBe("😀xé");
  });
});

describe("CLIP cleaning", () => {
  test.each([
    ["<b>&amp;</b>", "<b>&</b>"], // html.unescape decodes what ftfy kept
    ["&amp;lt;", "<"], // html.unescape twice
    ["  a \t\n b\u00a0\u3000c  ", "a b c"],
    ["İSTANBUL", "i\u0307stanbul"], // Python's str.lower
    ["ΣΑΣ", "σας"], // final sigma
    ["CafÃ©", "café"],
    ["\x1c a \x1c", "a"], // str.strip() also strips U+001C..U+001F
  ])("%j → %j", (input, expected) => {
    expect(normalizeClipText(input)).toBe(expected);
  });

  test("mojibake gives the same tokens as the intended text", () => {
    expect(tokenizer.encode("a cafÃ© in ZÃ¼rich")).toEqual(tokenizer.encode("a café in Zürich"));
  });
});

describe("word splitting", () => {
  test.each([
    ["it's a dog's life", ["it", "'s", "a", "dog", "'s", "life"]],
    ["'single'", ["'s", "ingle", "'"]], // a contraction matches anywhere after an apostrophe
    ["it'ſ", ["it", "'ſ"]], // ſ matches "s" case-insensitively, as in the reference
    ["1234", ["1", "2", "3", "4"]],
    ["a<|endoftext|>b", ["a", "<|endoftext|>", "b"]],
    ["!!! ???", ["!!!", "???"]],
    ["a\u0345b", ["a", "b"]], // the reference's pattern matches U+0345 nowhere
  ])("%j → %j", (text, words) => {
    expect(splitWords(text)).toEqual(words);
  });
});

describe("byte-pair encoding", () => {
  const MERGES: Array<[string, string]> = [
    ["h", "e"],
    ["l", "l"],
    ["he", "ll"],
    ["a", "a"],
  ];

  /** The tokens of `word` with a byte-level vocabulary holding `merges`' results. */
  function bpe(word: string, merges: ReadonlyArray<[string, string]> = MERGES): string[] {
    const tokens = [...BYTE_ENCODER, ...BYTE_ENCODER.map((t) => t + "</w>"), ...merges.map(([a, b]) => a + b)];
    const table = VocabularyTable.fromEntries(new Map(tokens.map((token, id) => [token, id])), merges);
    return bytePairEncode(word, table).map((entry) => table.tokenAt(entry));
  }

  test("merges the lowest-ranked pair first until none has a rank", () => {
    expect(bpe("hello")).toEqual(["hell", "o</w>"]);
  });

  test("merges every occurrence left to right without overlap", () => {
    expect(bpe("aaa")).toEqual(["aa", "a</w>"]);
    expect(bpe("aaaa")).toEqual(["aa", "a", "a</w>"]);
  });

  test("a one-character word is that character with </w>", () => {
    expect(bpe("x")).toEqual(["x</w>"]);
  });

  test("a repeated merge line takes its later rank", () => {
    expect(bpe("helo", [["e", "l"], ["h", "e"]])).toEqual(["h", "el", "o</w>"]);
    expect(bpe("helo", [["e", "l"], ["h", "e"], ["e", "l"]])).toEqual(["he", "l", "o</w>"]);
  });

  test("words are UTF-8 bytes written with GPT-2's stand-in characters", () => {
    expect(bpe("a b", [])).toEqual(["a", "Ġ", "b</w>"]);
    expect(bpe("é", [])).toEqual(["Ã", "©</w>"]);
    expect(bpe("🐱", [])).toEqual(["ð", "Ł", "Ĳ", "±</w>"]);
  });

  test("special tokens written in the prompt are the special ids", () => {
    expect(tokenizer.encode("a <|startoftext|> b")).toEqual([49406, 320, 49406, 321, 49407]);
    expect(tokenizer.tokenize("<|ENDOFTEXT|>").tokens).toEqual(["<|endoftext|>"]);
  });
});

describe("SD's 77-token input", () => {
  // "a" is one token, so n times "a" is n tokens between start and end.
  const promptOf = (n: number) => Array(n).fill("a").join(" ");

  test("75 prompt tokens (77 ids) fit exactly", () => {
    const result = tokenizer.tokenize(promptOf(75));
    expect(result.ids).toHaveLength(77);
    expect(result.truncated).toBe(false);
    expect(result.droppedTokens).toBe(0);
    expect(result.inputIds77).toEqual(result.ids);
  });

  test("76 prompt tokens (78 ids) lose the last prompt token", () => {
    const result = tokenizer.tokenize(promptOf(76));
    expect(result.ids).toHaveLength(78);
    expect(result.truncated).toBe(true);
    expect(result.droppedTokens).toBe(1);
    expect(result.inputIds77).toEqual([...result.ids.slice(0, 76), 49407]);
  });

  test("short prompts are padded with the end token", () => {
    const input = tokenizer.encodeForModel("a cat");
    expect(input).toBeInstanceOf(Int32Array);
    expect(Array.from(input)).toEqual([49406, 320, 2368, 49407, ...Array(73).fill(49407)]);
  });

  test("encode is never truncated", () => {
    expect(tokenizer.encode(promptOf(200))).toHaveLength(202);
  });

  test("encodeForModel takes another length", () => {
    expect(Array.from(tokenizer.encodeForModel("a cat sat", 4))).toEqual([49406, 320, 2368, 49407]);
    expect(Array.from(tokenizer.encodeForModel("a cat sat", 2))).toEqual([49406, 49407]);
    expect(Array.from(tokenizer.encodeForModel("", 3))).toEqual([49406, 49407, 49407]);
  });

  test("encodeBatchForModel lays the rows one after another", () => {
    const batch = tokenizer.encodeBatchForModel(["a cat", "", promptOf(100)]);
    expect(batch).toHaveLength(3 * 77);
    expect(Array.from(batch.subarray(0, 77))).toEqual(Array.from(tokenizer.encodeForModel("a cat")));
    expect(Array.from(batch.subarray(77, 154))).toEqual(Array.from(tokenizer.encodeForModel("")));
    expect(Array.from(batch.subarray(154))).toEqual(Array.from(tokenizer.encodeForModel(promptOf(100))));
  });
});

describe("decode", () => {
  test("joins tokens and turns </w> into spaces, as the reference does", () => {
    expect(tokenizer.decode(tokenizer.encode("A photo of a cat, 🐱!"))).toBe(
      "<|startoftext|>a photo of a cat , 🐱! <|endoftext|>",
    );
  });

  test("a partial UTF-8 sequence decodes to U+FFFD", () => {
    const ids = tokenizer.encode("猫").slice(1, -1); // three byte-level tokens
    expect(ids).toHaveLength(3);
    expect(tokenizer.decode(ids.slice(0, 1))).toBe("\ufffd");
    expect(tokenizer.decode(ids)).toBe("猫 ");
  });

  test("rejects ids outside the vocabulary, naming the position", () => {
    expect(() => tokenizer.decode([320, 49408])).toThrow(new InvalidOptionError("ids[1]", "ids[1] must be a token id of this vocabulary, got 49408"));
  });
});

describe("argument validation", () => {
  test.each([[5], [null], [undefined], [["a"]], [{ text: "a" }]])("text %j is rejected", (text) => {
    for (const call of [
      () => tokenizer.encode(text as unknown as string),
      () => tokenizer.encodeForModel(text as unknown as string),
      () => tokenizer.tokenize(text as unknown as string),
      () => tokenizer.normalize(text as unknown as string),
    ]) {
      expect(call).toThrow(InvalidOptionError);
      expect(call).toThrow(/^text must be a string, got /);
    }
  });

  test.each([[1], [0], [76.5], [Number.NaN], ["77"], [2 ** 21]])("maxLength %j is rejected", (maxLength) => {
    expect(() => tokenizer.encodeForModel("a", maxLength as number)).toThrow(
      /^maxLength must be an integer from 2 to 1048576, got /,
    );
  });

  test("encodeBatchForModel names the bad entry", () => {
    expect(() => tokenizer.encodeBatchForModel(["a", 3 as unknown as string])).toThrow(
      "texts[1] must be a string, got 3 (number)",
    );
    expect(() => tokenizer.encodeBatchForModel("a" as unknown as string[])).toThrow(/^texts must be an array of strings/);
  });
});

describe("word cache", () => {
  test("forgets the least recently used entry beyond its capacity", () => {
    const cache = new BoundedCache<string, number>(2);
    cache.set("a", 1);
    cache.set("b", 2);
    expect(cache.get("a")).toBe(1); // "b" is now the oldest
    cache.set("c", 3);
    expect(cache.size).toBe(2);
    expect(cache.get("b")).toBeUndefined();
    expect(cache.get("a")).toBe(1);
    expect(cache.get("c")).toBe(3);
  });

  test("repeated encoding gives the same result", () => {
    const text = "a breathtaking panoramic view of an ancient elven city";
    expect(tokenizer.encode(text)).toEqual(tokenizer.encode(text));
  });

  test("the default tokenizer is loaded once", async () => {
    expect(await ClipTokenizer.default()).toBe(tokenizer);
  });
});
