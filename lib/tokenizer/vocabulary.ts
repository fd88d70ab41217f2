/**
 * Reading and checking a CLIP BPE vocabulary in the Hugging Face layout: `vocab.json` (token →
 * id) and `merges.txt` ("#version" header line, then one "first second" merge per line in rank
 * order). Problems are reported as ModelFileError naming the file and what is wrong with it, at
 * load time, so encoding can never meet a token the vocabulary lacks.
 */
import { createHash } from "node:crypto";
import { readFile } from "node:fs/promises";
import { ModelFileError } from "../errors.js";
import { BYTE_ENCODER, END_OF_WORD } from "./bpe.js";
import { readCachedVocabulary, writeCachedVocabulary } from "./vocabulary-cache.js";
import { VocabularyTable } from "./vocabulary-table.js";

export const BOS_TOKEN = "<|startoftext|>";
export const EOS_TOKEN = "<|endoftext|>";

/**
 * CLIP reads at most this many merges (49152 − 256 − 2: its vocabulary has room for 256 bytes,
 * 256 bytes + "</w>", the merges and two special tokens); OpenAI's and Hugging Face's tokenizers
 * both ignore any further lines.
 */
export const MAX_MERGES = 49152 - 256 - 2;

/** A loaded, checked vocabulary. */
export type ClipVocabulary = VocabularyTable;

const MAX_ID = 0x7fffffff; // ids go to the model as int32

function describeJson(value: unknown): string {
  if (value === null) return "null";
  if (Array.isArray(value)) return "an array";
  if (typeof value === "object") return "an object";
  return `${JSON.stringify(value)} (${typeof value})`;
}

/** `JSON.parse` of a tokenizer file's text; a syntax error is a ModelFileError naming the file. */
export function parseJsonFile(text: string, file: string): unknown {
  try {
    return JSON.parse(text);
  } catch (error) {
    throw new ModelFileError(file, `${file} is not valid JSON (${(error as Error).message})`, { cause: error });
  }
}

/** Parses `vocab.json` text into token → id. */
export function parseVocabJson(text: string, file: string): Map<string, number> {
  const parsed = parseJsonFile(text, file);
  if (parsed === null || typeof parsed !== "object" || Array.isArray(parsed)) {
    throw new ModelFileError(file, `${file} must be a JSON object mapping tokens to ids, got ${describeJson(parsed)}`);
  }
  const encoder = new Map<string, number>();
  const tokenOfId = new Map<number, string>();
  for (const [token, id] of Object.entries(parsed)) {
    if (typeof id !== "number" || !Number.isInteger(id) || id < 0 || id > MAX_ID) {
      throw new ModelFileError(
        file,
        `${file}: the id of ${JSON.stringify(token)} must be an integer from 0 to ${MAX_ID}, got ${describeJson(id)}`,
      );
    }
    const other = tokenOfId.get(id);
    if (other !== undefined) {
      throw new ModelFileError(file, `${file} gives the same id ${id} to ${JSON.stringify(other)} and ${JSON.stringify(token)}`);
    }
    tokenOfId.set(id, token);
    encoder.set(token, id);
  }
  return encoder;
}

/** Parses `merges.txt` text into merge pairs in rank order. */
export function parseMergesTxt(text: string, file: string): Array<[string, string]> {
  // Like the reference readers: strip the whole file, split into lines, skip the header line.
  const lines = text.replace(/^\ufeff/, "").trim().split("\n");
  const header = lines[0] ?? "";
  if (!header.startsWith("#version")) {
    const first = header === "" ? "an empty file" : `first line ${JSON.stringify(header.slice(0, 40))}`;
    throw new ModelFileError(
      file,
      `${file} must start with a "#version: 0.2" header line (the Hugging Face merges.txt format), got ${first}`,
    );
  }
  const merges: Array<[string, string]> = [];
  const body = lines.slice(1, 1 + MAX_MERGES);
  for (const [i, line] of body.entries()) {
    const parts = line.replace(/\r$/, "").split(" ");
    const [left, right] = parts;
    if (parts.length !== 2 || !left || !right) {
      throw new ModelFileError(
        file,
        `${file} line ${i + 2} must be two tokens separated by one space, got ${JSON.stringify(line.slice(0, 40))}`,
      );
    }
    merges.push([left, right]);
  }
  if (merges.length === 0) throw new ModelFileError(file, `${file} has a header but no merges`);
  return merges;
}

/** Checks that the vocabulary and merges fit together and builds the lookup tables. */
export function buildVocabulary(
  encoder: Map<string, number>,
  merges: ReadonlyArray<readonly [string, string]>,
  files: { vocab: string; merges: string },
): ClipVocabulary {
  for (const [token, role] of [
    [BOS_TOKEN, "start-of-text"],
    [EOS_TOKEN, "end-of-text"],
  ] as const) {
    if (!encoder.has(token)) {
      throw new ModelFileError(files.vocab, `${files.vocab} has no ${JSON.stringify(token)} entry (the ${role} token)`);
    }
  }
  // Every byte must be encodable on its own, inside a word and at its end.
  for (const symbol of BYTE_ENCODER) {
    for (const token of [symbol, symbol + END_OF_WORD]) {
      if (!encoder.has(token)) {
        throw new ModelFileError(
          files.vocab,
          `${files.vocab} is not a byte-level CLIP vocabulary: it has no entry for ${JSON.stringify(token)}`,
        );
      }
    }
  }
  merges.forEach(([first, second], rank) => {
    if (!encoder.has(first + second)) {
      throw new ModelFileError(
        files.merges,
        `${files.merges} line ${rank + 2}: merging ${JSON.stringify(first)} and ${JSON.stringify(second)} gives ` +
          `${JSON.stringify(first + second)}, which ${files.vocab} does not have (the files do not belong together)`,
      );
    }
  });
  return VocabularyTable.fromEntries(encoder, merges);
}

const utf8 = new TextDecoder("utf-8", { fatal: true });

/** Reads a tokenizer file, turning failures into ModelFileError. */
async function readModelFile(file: string, what: string): Promise<Buffer> {
  try {
    return await readFile(file);
  } catch (error) {
    const code = (error as NodeJS.ErrnoException).code;
    const reason =
      code === "ENOENT"
        ? "does not exist"
        : code === "EISDIR"
          ? "is a directory, not a file"
          : `cannot be read (${(error as Error).message})`;
    throw new ModelFileError(file, `${what} ${file} ${reason}`, { cause: error });
  }
}

function utf8Text(bytes: Uint8Array, file: string, what: string): string {
  try {
    return utf8.decode(bytes);
  } catch (error) {
    throw new ModelFileError(file, `${what} ${file} is not UTF-8 text`, { cause: error });
  }
}

/**
 * Vocabularies built in this process, by `vocabularyKey`, the latest few: SDXL's two tokenizers
 * and a refiner's ship the same files in other folders. A vocabulary is immutable, so the
 * tokenizers share it.
 */
const builtVocabularies = new Map<string, ClipVocabulary>();
const BUILT_VOCABULARIES_KEPT = 4;

/** SHA-256 of both files (the first one's length first, so no two pairs of files share it). */
export function vocabularyKey(vocab: Uint8Array, merges: Uint8Array): Uint8Array {
  const length = Buffer.alloc(8);
  length.writeBigUInt64LE(BigInt(vocab.length));
  return createHash("sha256").update(length).update(vocab).update(merges).digest();
}

/** Where and whether built vocabularies are kept on disk. */
export interface VocabularyCacheOptions {
  /**
   * A folder of built vocabulary tables (vocabulary-cache.ts), so that the next process reads one
   * in milliseconds instead of parsing and checking the files (~0.3 s); null: none.
   */
  cacheDir: string | null;
}

/**
 * Reads and checks `vocab.json` and `merges.txt`, or takes the table built from the same bytes
 * before: in this process, or in the cache folder (where a table built here is then written).
 */
export async function readVocabulary(vocabPath: string, mergesPath: string, { cacheDir }: VocabularyCacheOptions): Promise<ClipVocabulary> {
  const [vocabBytes, mergesBytes] = await Promise.all([
    readModelFile(vocabPath, "CLIP vocabulary"),
    readModelFile(mergesPath, "CLIP merges file"),
  ]);
  const key = vocabularyKey(vocabBytes, mergesBytes);
  const name = Buffer.from(key).toString("hex");
  const remember = (vocabulary: ClipVocabulary) => {
    builtVocabularies.set(name, vocabulary);
    if (builtVocabularies.size > BUILT_VOCABULARIES_KEPT) builtVocabularies.delete(builtVocabularies.keys().next().value!);
    return vocabulary;
  };
  const built = builtVocabularies.get(name);
  if (built) return built;
  const cached = cacheDir === null ? undefined : await readCachedVocabulary(cacheDir, key);
  if (cached && cached.idOf(BOS_TOKEN) !== undefined && cached.idOf(EOS_TOKEN) !== undefined) return remember(cached);
  const vocabText = utf8Text(vocabBytes, vocabPath, "CLIP vocabulary");
  const mergesText = utf8Text(mergesBytes, mergesPath, "CLIP merges file");
  const vocabulary = buildVocabulary(parseVocabJson(vocabText, vocabPath), parseMergesTxt(mergesText, mergesPath), {
    vocab: vocabPath,
    merges: mergesPath,
  });
  if (cacheDir !== null) await writeCachedVocabulary(cacheDir, key, vocabulary);
  return remember(vocabulary);
}
