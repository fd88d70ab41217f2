/**
 * Loading vocabularies: a small hand-made byte-level vocabulary (so BPE runs on other merges
 * than CLIP's), a model's tokenizer folder with its pad token, and every way the files can be
 * missing or wrong, each with a ModelFileError that names the file and the problem.
 */
import { mkdtemp, mkdir, rm, writeFile } from "node:fs/promises";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { afterAll, beforeAll, describe, expect, test } from "@jest/globals";
import { InvalidOptionError, ModelFileError } from "../../lib/errors.js";
import { BYTE_ENCODER } from "../../lib/tokenizer/bpe.js";
import { ClipTokenizer, DEFAULT_VOCABULARY_DIR } from "../../lib/tokenizer/index.js";

const MERGES: Array<[string, string]> = [
  ["h", "e"],
  ["l", "l"],
  ["he", "ll"],
  ["hell", "o</w>"],
];

/**
 * Byte tokens, byte tokens + "</w>", one entry per merge, then the two special tokens; the byte
 * tokens in CLIP's order (by stand-in character, so "!" is 0).
 */
function tinyVocab(): Record<string, number> {
  const bytes = [...BYTE_ENCODER].sort();
  const tokens = [...bytes, ...bytes.map((t) => t + "</w>"), ...MERGES.map(([a, b]) => a + b)];
  tokens.push("<|startoftext|>", "<|endoftext|>");
  return Object.fromEntries(tokens.map((token, id) => [token, id]));
}
const TINY_MERGES = "#version: 0.2\n" + MERGES.map((m) => m.join(" ")).join("\n") + "\n";

let root: string;
let count = 0;

/** Writes a tokenizer folder with the given files (strings are written as they are). */
async function folder(files: Record<string, string | object>): Promise<string> {
  const dir = join(root, `case-${count++}`);
  await mkdir(dir);
  for (const [name, content] of Object.entries(files)) {
    await writeFile(join(dir, name), typeof content === "string" ? content : JSON.stringify(content));
  }
  return dir;
}

beforeAll(async () => {
  root = await mkdtemp(join(tmpdir(), "sd-trt-tokenizer-"));
});
afterAll(async () => {
  await rm(root, { recursive: true, force: true });
});

/** Expects a ModelFileError about `file` whose message matches `message`. */
async function expectModelFileError(promise: Promise<unknown>, file: string, message: RegExp) {
  const error = await promise.then(
    () => undefined,
    (e: unknown) => e,
  );
  expect(error).toBeInstanceOf(ModelFileError);
  expect((error as ModelFileError).file).toBe(file);
  expect((error as ModelFileError).code).toBe("ERR_MODEL_FILE");
  expect((error as Error).message).toMatch(message);
}

describe("a custom vocabulary", () => {
  test("encodes with its own merges and special ids", async () => {
    const dir = await folder({ "vocab.json": tinyVocab(), "merges.txt": TINY_MERGES });
    const tokenizer = await ClipTokenizer.fromFiles(join(dir, "vocab.json"), join(dir, "merges.txt"));
    const vocab = tinyVocab();
    expect(tokenizer.vocabSize).toBe(518);
    expect(tokenizer.bosTokenId).toBe(516);
    expect(tokenizer.eosTokenId).toBe(517);
    expect(tokenizer.padTokenId).toBe(517);
    const result = tokenizer.tokenize("Hello, HELP");
    expect(result.tokens).toEqual(["hello</w>", ",</w>", "he", "l", "p</w>"]);
    expect(result.ids).toEqual([516, ...result.tokens.map((t) => vocab[t]), 517]);
    expect(Array.from(tokenizer.encodeForModel("hello", 5))).toEqual([516, vocab["hello</w>"], 517, 517, 517]);
  });

  test("reads the pad token of a model's tokenizer folder (SD 2.x uses \"!\")", async () => {
    const plain = await folder({
      "vocab.json": tinyVocab(),
      "merges.txt": TINY_MERGES,
      "special_tokens_map.json": { pad_token: "!", eos_token: "<|endoftext|>" },
    });
    expect((await ClipTokenizer.fromDirectory(plain)).padTokenId).toBe(0);
    const addedToken = await folder({
      "vocab.json": tinyVocab(),
      "merges.txt": TINY_MERGES,
      "tokenizer_config.json": { pad_token: { content: "\"", lstrip: false }, model_max_length: 77 },
    });
    const tokenizer = await ClipTokenizer.fromDirectory(addedToken);
    expect(tokenizer.padTokenId).toBe(1);
    expect(Array.from(tokenizer.encodeForModel("hello", 4))).toEqual([516, tinyVocab()["hello</w>"], 517, 1]);
  });

  test("the padToken option wins over the folder", async () => {
    const dir = await folder({
      "vocab.json": tinyVocab(),
      "merges.txt": TINY_MERGES,
      "special_tokens_map.json": { pad_token: "!" },
    });
    expect((await ClipTokenizer.fromDirectory(dir, { padToken: "<|endoftext|>" })).padTokenId).toBe(517);
    expect((await ClipTokenizer.fromFiles(join(dir, "vocab.json"), join(dir, "merges.txt"), { padToken: "#" })).padTokenId).toBe(2);
  });

  test("a padToken that is not in the vocabulary is an invalid option", async () => {
    const dir = await folder({ "vocab.json": tinyVocab(), "merges.txt": TINY_MERGES });
    const load = ClipTokenizer.fromDirectory(dir, { padToken: "<pad>" });
    await expect(load).rejects.toThrow(InvalidOptionError);
    await expect(ClipTokenizer.fromDirectory(dir, { padToken: "<pad>" })).rejects.toThrow(
      /^padToken must be a token of .*vocab\.json, got "<pad>" \(string\)$/,
    );
    await expect(ClipTokenizer.fromDirectory(dir, { padToken: 7 as unknown as string })).rejects.toThrow(
      "padToken must be a string, got 7 (number)",
    );
  });

  test("fromDirectory of the packaged vocabulary equals the default", async () => {
    const fromDir = await ClipTokenizer.fromDirectory(DEFAULT_VOCABULARY_DIR);
    const text = "a photo of an astronaut riding a horse on mars";
    expect(fromDir.encode(text)).toEqual((await ClipTokenizer.default()).encode(text));
  });
});

describe("missing or corrupt files are ModelFileErrors naming the file", () => {
  test("missing vocab.json", async () => {
    const dir = await folder({ "merges.txt": TINY_MERGES });
    const file = join(dir, "vocab.json");
    await expectModelFileError(ClipTokenizer.fromFiles(file, join(dir, "merges.txt")), file, /vocab\.json does not exist$/);
  });

  test("missing merges.txt", async () => {
    const dir = await folder({ "vocab.json": tinyVocab() });
    const file = join(dir, "merges.txt");
    await expectModelFileError(ClipTokenizer.fromDirectory(dir), file, /^CLIP merges file .*merges\.txt does not exist$/);
  });

  test("missing folder", async () => {
    const dir = join(root, "no-such-folder");
    await expectModelFileError(ClipTokenizer.fromDirectory(dir), dir, /^tokenizer folder .*no-such-folder does not exist/);
  });

  test("a folder where a file should be", async () => {
    const dir = await folder({ "merges.txt": TINY_MERGES });
    await expectModelFileError(ClipTokenizer.fromFiles(dir, join(dir, "merges.txt")), dir, /is a directory, not a file$/);
  });

  test.each([
    ["not JSON", "{not json", /vocab\.json is not valid JSON \(/],
    ["an array", "[1, 2]", /vocab\.json must be a JSON object mapping tokens to ids, got an array$/],
    ["a string", '"vocab"', /must be a JSON object mapping tokens to ids, got "vocab" \(string\)$/],
    ["an id that is not an integer", JSON.stringify({ ...tinyVocab(), a: 1.5 }), /the id of "a" must be an integer from 0 to 2147483647, got 1\.5 \(number\)$/],
    ["a negative id", JSON.stringify({ ...tinyVocab(), a: -1 }), /the id of "a" must be an integer/],
    ["an id as a string", JSON.stringify({ ...tinyVocab(), a: "65" }), /the id of "a" must be an integer from 0 to 2147483647, got "65" \(string\)$/],
    ["two tokens with one id", JSON.stringify({ ...tinyVocab(), "<extra>": 0 }), /gives the same id 0 to "!" and "<extra>"$/],
  ])("vocab.json is %s", async (_what, content, message) => {
    const dir = await folder({ "vocab.json": content, "merges.txt": TINY_MERGES });
    await expectModelFileError(ClipTokenizer.fromDirectory(dir), join(dir, "vocab.json"), message);
  });

  test.each([
    ["<|startoftext|>", /has no "<\|startoftext\|>" entry \(the start-of-text token\)$/],
    ["<|endoftext|>", /has no "<\|endoftext\|>" entry \(the end-of-text token\)$/],
    ["q</w>", /is not a byte-level CLIP vocabulary: it has no entry for "q<\/w>"$/],
    ["Ā", /is not a byte-level CLIP vocabulary: it has no entry for "Ā"$/],
  ])("vocab.json lacks %j", async (token, message) => {
    const vocab = tinyVocab();
    delete vocab[token];
    const dir = await folder({ "vocab.json": vocab, "merges.txt": TINY_MERGES });
    await expectModelFileError(ClipTokenizer.fromDirectory(dir), join(dir, "vocab.json"), message);
  });

  test.each([
    ["has no header", "h e\nl l\n", /must start with a "#version: 0\.2" header line \(the Hugging Face merges\.txt format\), got first line "h e"$/],
    ["is empty", "", /must start with a "#version: 0\.2" header line .*, got an empty file$/],
    ["has only the header", "#version: 0.2\n", /merges\.txt has a header but no merges$/],
    ["has a line with one token", "#version: 0.2\nh e\nll\n", /merges\.txt line 3 must be two tokens separated by one space, got "ll"$/],
    ["has a line with three tokens", "#version: 0.2\nh e l\n", /line 2 must be two tokens separated by one space/],
    ["makes a token vocab.json lacks", "#version: 0.2\nh e\nx y\n", /merges\.txt line 3: merging "x" and "y" gives "xy", which .*vocab\.json does not have \(the files do not belong together\)$/],
  ])("merges.txt %s", async (_what, content, message) => {
    const dir = await folder({ "vocab.json": tinyVocab(), "merges.txt": content });
    await expectModelFileError(ClipTokenizer.fromDirectory(dir), join(dir, "merges.txt"), message);
  });

  test("a file that is not UTF-8", async () => {
    const dir = await folder({ "vocab.json": tinyVocab() });
    await writeFile(join(dir, "merges.txt"), Buffer.from([0x23, 0xff, 0xfe, 0x0a]));
    await expectModelFileError(ClipTokenizer.fromDirectory(dir), join(dir, "merges.txt"), /merges\.txt is not UTF-8 text$/);
  });

  test("the CLIP merges with another vocabulary do not belong together", async () => {
    const dir = await folder({ "vocab.json": tinyVocab() });
    await expectModelFileError(
      ClipTokenizer.fromFiles(join(dir, "vocab.json"), join(DEFAULT_VOCABULARY_DIR, "merges.txt")),
      join(DEFAULT_VOCABULARY_DIR, "merges.txt"),
      /line 2: merging "i" and "n" gives "in", which .* does not have/,
    );
  });

  test.each([
    ["not JSON", "{", /special_tokens_map\.json is not valid JSON/],
    ["not an object", "[]", /special_tokens_map\.json must be a JSON object$/],
    ["a pad_token of the wrong type", JSON.stringify({ pad_token: 5 }), /pad_token must be a string or \{"content": string\}, got 5$/],
    ["a pad token the vocabulary lacks", JSON.stringify({ pad_token: "<pad>" }), /the pad token "<pad>" named in .*special_tokens_map\.json is not in .*vocab\.json$/],
  ])("special_tokens_map.json is %s", async (_what, content, message) => {
    const dir = await folder({ "vocab.json": tinyVocab(), "merges.txt": TINY_MERGES, "special_tokens_map.json": content });
    await expectModelFileError(ClipTokenizer.fromDirectory(dir), join(dir, "special_tokens_map.json"), message);
  });

  test("paths must be strings", async () => {
    await expect(ClipTokenizer.fromFiles(1 as unknown as string, "m")).rejects.toThrow("vocabPath must be a string, got 1 (number)");
    await expect(ClipTokenizer.fromDirectory(undefined as unknown as string)).rejects.toThrow(InvalidOptionError);
  });
});
