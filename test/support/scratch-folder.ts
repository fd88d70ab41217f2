/**
 * A test file's scratch folder, with throwaway copies of fixture folders for tests that edit one
 * (a config changed, a component removed) to see it refused.
 */
import { cp, mkdtemp, rm } from "node:fs/promises";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { afterAll, beforeAll } from "@jest/globals";

export interface ScratchFolder {
  /** Its path (set once the file's tests start). */
  readonly dir: string;
  /** A fresh copy of `source` in it, symlinks followed so that an edit never reaches the fixture. */
  copy(source: string): Promise<string>;
}

/** Call at the top of a test file: a folder under the system temp folder named after `prefix`, removed after the file's tests. */
export function scratchFolder(prefix: string): ScratchFolder {
  let dir: string | undefined;
  let counter = 0;
  beforeAll(async () => {
    dir = await mkdtemp(join(tmpdir(), prefix));
  });
  afterAll(async () => {
    if (dir !== undefined) await rm(dir, { recursive: true, force: true });
  });
  const scratch: ScratchFolder = {
    get dir() {
      if (dir === undefined) throw new Error("the scratch folder exists only while the file's tests run");
      return dir;
    },
    async copy(source) {
      const copy = join(scratch.dir, `copy-${counter++}`);
      await cp(source, copy, { recursive: true, dereference: true });
      return copy;
    },
  };
  return scratch;
}
