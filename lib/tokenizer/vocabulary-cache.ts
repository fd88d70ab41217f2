/**
 * Built vocabulary tables on disk, one file per pair of tokenizer files: `<sha256>.v<format>.vocab`
 * in the cache folder, named by `vocabularyKey` of the bytes of vocab.json and merges.txt (so a
 * changed file is a new name, never a stale table) and by the table's format version (so two
 * sd-trt versions sharing the folder do not overwrite each other's file at every start). Files are
 * written atomically (lib/fs/atomic.ts).
 *
 * The cache is only ever a shortcut: a file that is missing, unreadable, truncated, from another
 * format version or failing its checksum is ignored (the caller builds the table and writes it
 * again), and a folder that cannot be written to is not an error.
 */
import { readFile } from "node:fs/promises";
import { homedir } from "node:os";
import { join } from "node:path";
import { writeFileAtomic } from "../fs/atomic.js";
import { VOCABULARY_FORMAT_VERSION, VocabularyTable } from "./vocabulary-table.js";

/**
 * The default cache folder: `$SDTRT_TOKENIZER_CACHE_DIR`, else `$XDG_CACHE_HOME/sd-trt/tokenizer`
 * (`~/.cache/sd-trt/tokenizer`), next to the LoRA cache.
 */
export function defaultVocabularyCacheDir(env: NodeJS.ProcessEnv = process.env): string {
  return env["SDTRT_TOKENIZER_CACHE_DIR"] || join(env["XDG_CACHE_HOME"] || join(homedir(), ".cache"), "sd-trt", "tokenizer");
}

/** The file of the table built from the files with this key. */
export function vocabularyCacheFile(dir: string, key: Uint8Array): string {
  return join(dir, `${Buffer.from(key).toString("hex")}.v${VOCABULARY_FORMAT_VERSION}.vocab`);
}

/** The cached table for `key`, or undefined when there is no usable one. */
export async function readCachedVocabulary(dir: string, key: Uint8Array): Promise<VocabularyTable | undefined> {
  let bytes: Buffer;
  try {
    bytes = await readFile(vocabularyCacheFile(dir, key));
  } catch {
    return undefined;
  }
  return VocabularyTable.deserialize(bytes, key);
}

/** Writes the table for `key`; a failure (read-only folder, full disk) only means no cache. */
export async function writeCachedVocabulary(dir: string, key: Uint8Array, table: VocabularyTable): Promise<void> {
  try {
    await writeFileAtomic(vocabularyCacheFile(dir, key), table.serialize(key));
  } catch {
    // Nothing is left behind (writeFileAtomic removes its temporary file); the next load builds again.
  }
}
