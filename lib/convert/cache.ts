/**
 * The model cache: a checkpoint given as `--model` (a `.safetensors` file or a diffusers folder) is
 * converted once into `<cacheDir>/<name>-<hash>-<dtype>-<options>/` and read from there afterwards.
 *
 * - A file is keyed by its SHA-256 (what A1111 shows as the model hash), so a renamed or moved file
 *   is found again and a changed one is converted anew. Hashing a 2 GB file takes seconds, so the
 *   hashes are remembered in `<cacheDir>/hashes.json` by path, size and modification time (as A1111
 *   caches its own in `cache.json`).
 * - A diffusers folder is keyed by the path, size and modification time of each of its files.
 * - The options that change the graphs (dtype, overrides, config folder) and sd-trt's version are
 *   part of the key: another version may write other graphs.
 * - An entry appears by one rename once complete (lib/convert `convertCheckpoint`), so a failed or
 *   interrupted conversion leaves no entry; temporary folders of processes that died are removed.
 */
import { createHash } from "node:crypto";
import { mkdir, readdir, readFile, realpath, rm, stat } from "node:fs/promises";
import { join, relative, resolve, sep } from "node:path";
import { OutputFileError } from "../errors.js";
import { writeFileAtomic } from "../fs/atomic.js";
import { packageVersion } from "../package-info.js";
import { checkpointName, type ConvertOptions, convertCheckpoint, sha256OfFile } from "./index.js";

export const HASH_CACHE_FILE = "hashes.json";

export interface CachedModel {
  /** The converted model folder. */
  readonly dir: string;
  /** True when this call converted it, false when the cache had it. */
  readonly converted: boolean;
}

interface HashEntry {
  size: number;
  mtimeMs: number;
  sha256: string;
}

async function readHashCache(cacheDir: string): Promise<Record<string, HashEntry>> {
  try {
    const value = JSON.parse(await readFile(join(cacheDir, HASH_CACHE_FILE), "utf8")) as unknown;
    return value !== null && typeof value === "object" && !Array.isArray(value) ? (value as Record<string, HashEntry>) : {};
  } catch {
    return {}; // absent or unreadable: hashes are computed again
  }
}

/** A file's SHA-256, from the hash cache when its size and modification time are unchanged. */
async function cachedSha256(path: string, cacheDir: string, options: Pick<ConvertOptions, "signal" | "onProgress">): Promise<string> {
  const info = await stat(path);
  const hashes = await readHashCache(cacheDir);
  const known = hashes[path];
  if (known && known.size === info.size && known.mtimeMs === info.mtimeMs && /^[0-9a-f]{64}$/.test(known.sha256)) return known.sha256;
  const sha256 = await sha256OfFile(path, { ...(options.signal ? { signal: options.signal } : {}), onBytes: (bytes, total) => options.onProgress?.({ stage: "hash", bytes, total }) });
  // Re-read just before writing so that another process's entries are kept.
  const latest = await readHashCache(cacheDir);
  latest[path] = { size: info.size, mtimeMs: info.mtimeMs, sha256 };
  await writeFileAtomic(join(cacheDir, HASH_CACHE_FILE), `${JSON.stringify(latest, null, 1)}\n`);
  return sha256;
}

/**
 * A diffusers folder's identity: every file's relative path, size and modification time. Symbolic
 * links are followed (a Hugging Face snapshot folder is made of links into its blob store, so the
 * links' own entries would never change); a link back into a folder already on the path is skipped.
 */
export async function folderFingerprint(dir: string): Promise<string> {
  const hash = createHash("sha256");
  const walk = async (at: string, ancestors: readonly string[]): Promise<void> => {
    for (const entry of (await readdir(at, { withFileTypes: true })).sort((a, b) => (a.name < b.name ? -1 : 1))) {
      const path = join(at, entry.name);
      const info = entry.isSymbolicLink() ? await stat(path).catch(() => undefined) : entry;
      if (info?.isDirectory()) {
        const real = await realpath(path);
        if (!ancestors.includes(real)) await walk(path, [...ancestors, real]);
      } else if (info?.isFile()) {
        const { size, mtimeMs } = await stat(path);
        hash.update(`${relative(dir, path).split(sep).join("/")}\0${size}\0${mtimeMs}\n`);
      }
    }
  };
  await walk(dir, [await realpath(dir)]);
  return hash.digest("hex");
}

/** Removes temporary folders left in the cache by processes that no longer run (killed mid-conversion). */
async function removeOrphanedTemporaries(cacheDir: string): Promise<void> {
  for (const name of await readdir(cacheDir).catch(() => [] as string[])) {
    const pid = /^\..+\.tmp-(\d+)-[0-9a-f]{8}$/.exec(name)?.[1];
    if (pid === undefined || Number(pid) === process.pid) continue;
    let alive = true;
    try {
      process.kill(Number(pid), 0);
    } catch (error) {
      alive = (error as NodeJS.ErrnoException).code === "EPERM";
    }
    if (!alive) await rm(join(cacheDir, name), { recursive: true, force: true });
  }
}

/**
 * The converted model folder for `input`, converting it into `cacheDir` when the cache does not
 * have it yet.
 * @throws ModelFileError naming the checkpoint and what is wrong (nothing is added to the cache);
 *   OutputFileError when `cacheDir` cannot be written; AbortError when `signal` fired.
 */
export async function cachedConversion(input: string, cacheDir: string, options: ConvertOptions): Promise<CachedModel> {
  const checkpoint = resolve(input);
  const dir = resolve(cacheDir);
  try {
    await mkdir(dir, { recursive: true });
  } catch (error) {
    throw new OutputFileError(dir, `cannot create the model cache ${dir}: ${(error as Error).message}`, { cause: error });
  }
  await removeOrphanedTemporaries(dir);
  const info = await stat(checkpoint).catch(() => undefined);
  // A missing path is reported by the conversion, with the checkpoint's own message.
  const sha256 = info?.isFile() ? await cachedSha256(checkpoint, dir, options) : undefined;
  const identity = sha256 ?? (info?.isDirectory() ? await folderFingerprint(checkpoint) : "missing");
  const optionsKey = createHash("sha256")
    .update(JSON.stringify({ sdTrt: packageVersion(), dtype: options.dtype, predictionType: options.predictionType ?? null, upcastAttention: options.upcastAttention ?? null, configFolder: options.configFolder === undefined ? null : await folderFingerprint(resolve(options.configFolder)) }))
    .digest("hex")
    .slice(0, 8);
  const entry = join(dir, `${checkpointName(checkpoint).replace(/[^\w.-]+/g, "_")}-${identity.slice(0, 10)}-${options.dtype}-${optionsKey}`);
  if (await stat(join(entry, "model_index.json")).then(() => true, () => false)) return { dir: entry, converted: false };
  try {
    await convertCheckpoint(checkpoint, entry, { ...options, ...(sha256 !== undefined ? { sha256 } : {}) });
  } catch (error) {
    // Another process may have finished the same entry first: use it.
    if (error instanceof OutputFileError && (await stat(join(entry, "model_index.json")).then(() => true, () => false))) return { dir: entry, converted: false };
    throw error;
  }
  return { dir: entry, converted: true };
}
