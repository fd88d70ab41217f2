/**
 * All-or-nothing output files. Each file is first written to a temporary name in its own folder
 * (so the final rename stays on one file system and is atomic), and only renamed into place once
 * every output of the run is written. A failed or interrupted run removes its temporary files,
 * so it never leaves a partial image, and a run that fails before `commit` leaves no output.
 */
import { constants, unlinkSync } from "node:fs";
import { access, rename, unlink, writeFile, stat } from "node:fs/promises";
import { basename, dirname, join, resolve } from "node:path";
import { randomBytes } from "node:crypto";
import { OutputFileError } from "../../errors.js";

/** "ENOENT: no such file or directory": the error without the path (ours may be a temporary name). */
function reason(error: unknown): string {
  const e = error as NodeJS.ErrnoException;
  if (!e?.code) return String(e?.message ?? e);
  const text = String(e.message).replace(/, \w+ '[^']*'(?: -> '[^']*')?$/, "");
  return text.startsWith(`${e.code}:`) ? text : `${e.code}: ${text}`;
}

/**
 * Checks, before any work is done, that `path` can be created: its folder exists, is a folder
 * and is writable, and `path` itself is not a folder.
 * @param option the option that named the path, for the message (e.g. "--out").
 */
export async function checkWritable(path: string, option: string): Promise<void> {
  const full = resolve(path);
  const dir = dirname(full);
  try {
    const info = await stat(dir);
    if (!info.isDirectory()) throw new OutputFileError(full, `cannot write ${option} ${full}: ${dir} is not a folder`);
    await access(dir, constants.W_OK);
  } catch (error) {
    if (error instanceof OutputFileError) throw error;
    throw new OutputFileError(full, `cannot write ${option} ${full}: ${reason(error)}`, { cause: error });
  }
  try {
    if ((await stat(full)).isDirectory()) throw new OutputFileError(full, `cannot write ${option} ${full}: it is a folder`);
  } catch (error) {
    if (error instanceof OutputFileError) throw error; // a missing file is the normal case
  }
  // Permission bits do not tell everything (/proc, a read-only mount, a full disk, root): create
  // and remove a file of our own beside it.
  const probe = join(dir, `.${basename(full)}.${process.pid}.${randomBytes(4).toString("hex")}.probe`);
  try {
    await writeFile(probe, "", { flag: "wx" });
  } catch (error) {
    throw new OutputFileError(full, `cannot write ${option} ${full}: ${reason(error)}`, { cause: error });
  }
  await unlink(probe).catch(() => undefined);
}

export class StagedFiles {
  #staged: { temp: string; final: string }[] = [];

  /** Writes `data` to a temporary file beside `path`; nothing appears at `path` until `commit`. */
  async stage(path: string, data: Uint8Array, option: string): Promise<void> {
    const final = resolve(path);
    const temp = join(dirname(final), `.${basename(final)}.${process.pid}.${randomBytes(4).toString("hex")}.tmp`);
    this.#staged.push({ temp, final });
    try {
      await writeFile(temp, data, { flag: "wx" });
    } catch (error) {
      throw new OutputFileError(final, `cannot write ${option} ${final}: ${reason(error)}`, { cause: error });
    }
  }

  /** Paths of the staged temporary files. */
  get temporaryFiles(): string[] {
    return this.#staged.map((s) => s.temp);
  }

  /** Renames every staged file into place. */
  async commit(): Promise<string[]> {
    const done: string[] = [];
    try {
      for (const { temp, final } of this.#staged) {
        try {
          await rename(temp, final);
        } catch (error) {
          throw new OutputFileError(final, `cannot write ${final}: ${reason(error)}`, { cause: error });
        }
        done.push(final);
      }
      this.#staged = [];
      return done;
    } finally {
      if (this.#staged.length > 0) {
        this.#staged = this.#staged.filter((s) => !done.includes(s.final));
        await this.discard();
      }
    }
  }

  /** Removes every staged file that was not committed. */
  async discard(): Promise<void> {
    const staged = this.#staged;
    this.#staged = [];
    await Promise.all(staged.map(({ temp }) => unlink(temp).catch(() => undefined)));
  }

  /** `discard` for exit paths where nothing asynchronous may run. */
  discardSync(): void {
    for (const { temp } of this.#staged) {
      try {
        unlinkSync(temp);
      } catch {
        // already gone
      }
    }
    this.#staged = [];
  }
}
