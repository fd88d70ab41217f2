/**
 * The built-vocabulary cache (lib/tokenizer/vocabulary-cache.ts): a vocabulary built from its
 * files is written to the cache folder once, atomically; a later load takes the table from there
 * (keyed by the files' bytes); a missing, truncated, altered or foreign cache file is ignored and
 * written again; an unwritable folder is no error. The cached form tokenizes exactly as the
 * tables built from the files.
 */
import { mkdtemp, readdir, readFile, rm, stat, writeFile, mkdir } from "node:fs/promises";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { afterAll, beforeAll, describe, expect, test } from "@jest/globals";
import { BYTE_ENCODER, bytePairEncode } from "../../lib/tokenizer/bpe.js";
import { ClipTokenizer, DEFAULT_VOCABULARY_DIR } from "../../lib/tokenizer/index.js";
import { defaultVocabularyCacheDir, vocabularyCacheFile, writeCachedVocabulary } from "../../lib/tokenizer/vocabulary-cache.js";
import { VOCABULARY_FORMAT_VERSION, VocabularyTable } from "../../lib/tokenizer/vocabulary-table.js";
import { readVocabulary, vocabularyKey } from "../../lib/tokenizer/vocabulary.js";

let root: string;
let count = 0;

beforeAll(async () => {
  root = await mkdtemp(join(tmpdir(), "sd-trt-tokenizer-cache-"));
});
afterAll(async () => {
  await rm(root, { recursive: true, force: true });
});

async function freshDir(name: string): Promise<string> {
  const dir = join(root, `${name}-${count++}`);
  await mkdir(dir);
  return dir;
}

/**
 * A byte-level vocabulary folder with `merges`; `salt` adds one token so that every test has
 * files of its own (the process also remembers vocabularies it built, by the same key).
 */
async function tokenizerFolder(merges: Array<[string, string]>, salt: string): Promise<{ dir: string; key: Uint8Array }> {
  const tokens = [...BYTE_ENCODER, ...BYTE_ENCODER.map((t) => t + "</w>"), ...merges.map(([a, b]) => a + b), "<|startoftext|>", "<|endoftext|>", `<salt-${salt}>`];
  const vocab = JSON.stringify(Object.fromEntries(tokens.map((token, id) => [token, id])));
  const mergesTxt = `#version: 0.2\n${merges.map((m) => m.join(" ")).join("\n")}\n`;
  const dir = await freshDir("model");
  await writeFile(join(dir, "vocab.json"), vocab);
  await writeFile(join(dir, "merges.txt"), mergesTxt);
  return { dir, key: vocabularyKey(Buffer.from(vocab), Buffer.from(mergesTxt)) };
}

const HELLO: Array<[string, string]> = [
  ["h", "e"],
  ["l", "l"],
  ["he", "ll"],
  ["hell", "o</w>"],
];

describe("the vocabulary cache", () => {
  test("a vocabulary built from its files is written once to the cache folder, atomically", async () => {
    const { dir, key } = await tokenizerFolder(HELLO, "miss");
    const cacheDir = join(await freshDir("cache"), "nested", "tokenizer"); // made on demand
    const tokenizer = await ClipTokenizer.fromDirectory(dir, { cacheDir });
    expect(tokenizer.tokenize("hello help").tokens).toEqual(["hello</w>", "he", "l", "p</w>"]);
    const file = vocabularyCacheFile(cacheDir, key);
    expect(await readdir(cacheDir)).toEqual([file.slice(cacheDir.length + 1)]); // no temporary file left
    // Named by the files' key and the format, so two versions sharing the folder keep a file each.
    expect(file.slice(cacheDir.length + 1)).toBe(`${Buffer.from(key).toString("hex")}.v${VOCABULARY_FORMAT_VERSION}.vocab`);
    expect(VocabularyTable.deserialize(await readFile(file), key)).toBeInstanceOf(VocabularyTable);
  });

  test("a table in the cache folder is taken instead of building one from the files", async () => {
    const { dir, key } = await tokenizerFolder(HELLO, "hit");
    const cacheDir = await freshDir("cache");
    // Under this folder's key, a table with other merges: only a load that reads the cache
    // tokenizes "hello" with them.
    const other = VocabularyTable.fromEntries(
      new Map([...BYTE_ENCODER, ...BYTE_ENCODER.map((t) => t + "</w>"), "lo</w>", "<|startoftext|>", "<|endoftext|>"].map((t, id) => [t, id])),
      [["l", "o</w>"]],
    );
    await writeCachedVocabulary(cacheDir, key, other);
    const before = await stat(vocabularyCacheFile(cacheDir, key));
    const tokenizer = await ClipTokenizer.fromDirectory(dir, { cacheDir });
    expect(tokenizer.tokenize("hello").tokens).toEqual(["h", "e", "l", "lo</w>"]);
    const after = await stat(vocabularyCacheFile(cacheDir, key));
    expect([after.ino, after.mtimeMs]).toEqual([before.ino, before.mtimeMs]); // read, not written again
  });

  test.each([
    ["truncated", (bytes: Buffer) => bytes.subarray(0, bytes.length - 7)],
    ["with one byte changed", (bytes: Buffer) => Buffer.concat([bytes.subarray(0, 100), Buffer.from([bytes[100]! ^ 1]), bytes.subarray(101)])],
    ["of another format version", (bytes: Buffer) => Buffer.concat([bytes.subarray(0, 8), Buffer.from([9, 0, 0, 0]), bytes.subarray(12)])],
    ["not a table at all", () => Buffer.from("not a vocabulary table")],
    ["empty", () => Buffer.alloc(0)],
    // Whole and checksummed, but not a table the files could have made.
    ["without the byte symbols", (_bytes: Buffer, key: Uint8Array) => Buffer.from(VocabularyTable.fromEntries(new Map([["<|startoftext|>", 0], ["<|endoftext|>", 1]]), []).serialize(key))],
    ["without the start and end tokens", (_bytes: Buffer, key: Uint8Array) => Buffer.from(VocabularyTable.fromEntries(new Map([...BYTE_ENCODER, ...BYTE_ENCODER.map((t) => t + "</w>")].map((t, id) => [t, id])), []).serialize(key))],
  ])("a cache file %s is ignored and written again", async (_what, spoil: (bytes: Buffer, key: Uint8Array) => Buffer) => {
    const { dir, key } = await tokenizerFolder(HELLO, `spoiled-${count}`);
    const cacheDir = await freshDir("cache");
    const file = vocabularyCacheFile(cacheDir, key);
    const good = VocabularyTable.fromEntries(
      new Map([...BYTE_ENCODER, ...BYTE_ENCODER.map((t) => t + "</w>"), "lo</w>", "<|startoftext|>", "<|endoftext|>"].map((t, id) => [t, id])),
      [["l", "o</w>"]],
    ).serialize(key);
    await writeFile(file, spoil(Buffer.from(good), key));
    const tokenizer = await ClipTokenizer.fromDirectory(dir, { cacheDir });
    expect(tokenizer.tokenize("hello").tokens).toEqual(["hello</w>"]); // built from the files
    const rewritten = VocabularyTable.deserialize(await readFile(file), key);
    expect(rewritten).toBeInstanceOf(VocabularyTable);
    expect(rewritten!.idOf("hello</w>")).toBe(tokenizer.tokenId("hello</w>"));
  });

  test("a table is only valid under the key it was written for", async () => {
    const { key } = await tokenizerFolder(HELLO, "key");
    const table = VocabularyTable.fromEntries(new Map([...BYTE_ENCODER, ...BYTE_ENCODER.map((t) => t + "</w>")].map((t, id) => [t, id])), []);
    const bytes = table.serialize(key);
    expect(VocabularyTable.deserialize(bytes, key)).toBeInstanceOf(VocabularyTable);
    const otherKey = Uint8Array.from(key, (b, i) => (i === 0 ? b ^ 0xff : b));
    expect(VocabularyTable.deserialize(bytes, otherKey)).toBeUndefined();
  });

  test("a cache folder that cannot be written is no error, and cacheDir null writes nothing", async () => {
    const { dir } = await tokenizerFolder(HELLO, "unwritable");
    const blocker = join(await freshDir("cache"), "a-file");
    await writeFile(blocker, "not a folder");
    const tokenizer = await ClipTokenizer.fromDirectory(dir, { cacheDir: join(blocker, "tokenizer") });
    expect(tokenizer.tokenize("hello").tokens).toEqual(["hello</w>"]);

    const { dir: dir2 } = await tokenizerFolder(HELLO, "off");
    const untouched = await freshDir("cache");
    const previous = process.env["SDTRT_TOKENIZER_CACHE_DIR"];
    process.env["SDTRT_TOKENIZER_CACHE_DIR"] = untouched;
    try {
      await ClipTokenizer.fromDirectory(dir2, { cacheDir: null });
    } finally {
      if (previous === undefined) delete process.env["SDTRT_TOKENIZER_CACHE_DIR"];
      else process.env["SDTRT_TOKENIZER_CACHE_DIR"] = previous;
    }
    expect(await readdir(untouched)).toEqual([]);
    await expect(ClipTokenizer.fromDirectory(dir2, { cacheDir: 3 as unknown as string })).rejects.toThrow("cacheDir must be a string, got 3 (number)");
  });

  test("the default folder is $SDTRT_TOKENIZER_CACHE_DIR, else sd-trt/tokenizer in the user's cache", () => {
    expect(defaultVocabularyCacheDir({ SDTRT_TOKENIZER_CACHE_DIR: "/x/tok" })).toBe("/x/tok");
    expect(defaultVocabularyCacheDir({ XDG_CACHE_HOME: "/c" })).toBe(join("/c", "sd-trt", "tokenizer"));
  });

  test("CLIP's vocabulary read back from the cache is the one built from its files", async () => {
    const cacheDir = await freshDir("cache");
    const vocabPath = join(DEFAULT_VOCABULARY_DIR, "vocab.json");
    const mergesPath = join(DEFAULT_VOCABULARY_DIR, "merges.txt");
    const built = await readVocabulary(vocabPath, mergesPath, { cacheDir });
    const key = vocabularyKey(await readFile(vocabPath), await readFile(mergesPath));
    const cached = VocabularyTable.deserialize(await readFile(vocabularyCacheFile(cacheDir, key)), key)!;
    expect(cached.size).toBe(49408);
    const vocab = JSON.parse(await readFile(vocabPath, "utf8")) as Record<string, number>;
    for (const [token, id] of Object.entries(vocab)) {
      if (cached.idOf(token) !== id || cached.tokenOf(id) !== token) throw new Error(`${JSON.stringify(token)} ↔ ${id} differs in the cached table`);
    }
    const words = "a photo of an astronaut riding a horse on mars, masterpiece, 8k uhd, trending on artstation 🐱 ünïcödé".split(" ");
    for (const word of words) expect(bytePairEncode(word, cached).map((e) => cached.tokenAt(e))).toEqual(bytePairEncode(word, built).map((e) => built.tokenAt(e)));
  });
});
