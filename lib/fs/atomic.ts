/**
 * Atomic file writes: data goes to a temporary file in the same folder, is flushed to disk,
 * and is renamed over the target, so a reader (or a crash, or Ctrl-C) never sees a partial
 * plan, manifest or timing cache.
 */
import { randomBytes } from "node:crypto";
import { mkdir, open, rename, rm, type FileHandle } from "node:fs/promises";
import { basename, dirname, join } from "node:path";

/** A temporary name next to `path`, unique per process and call. */
export function temporaryPathFor(path: string): string {
  return join(dirname(path), `.${basename(path)}.tmp-${process.pid}-${randomBytes(4).toString("hex")}`);
}

/** Writes `data` (or the chunks an async iterable yields) to `path` atomically. */
export async function writeFileAtomic(path: string, data: Uint8Array | string | AsyncIterable<Uint8Array>): Promise<void> {
  await mkdir(dirname(path), { recursive: true });
  await withAtomicFile(path, async (fh) => {
    if (typeof data === "string" || data instanceof Uint8Array) {
      await fh.writeFile(data);
    } else {
      for await (const chunk of data) await fh.write(chunk);
    }
  });
}

/**
 * Runs `write` on a new temporary file next to `path` (whose folder must exist), then flushes it
 * and renames it over `path`. On any failure the temporary file is removed and the error rethrown.
 */
export async function withAtomicFile(path: string, write: (file: FileHandle) => Promise<void>): Promise<void> {
  const tmp = temporaryPathFor(path);
  const fh = await open(tmp, "wx", 0o644);
  try {
    await write(fh);
    await fh.sync();
    await fh.close();
    await rename(tmp, path);
  } catch (error) {
    await fh.close().catch(() => undefined);
    await rm(tmp, { force: true });
    throw error;
  }
}
