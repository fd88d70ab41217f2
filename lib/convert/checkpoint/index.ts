/**
 * What people download, read into diffusers terms (a CheckpointSource, lib/convert/types.ts): a
 * diffusers folder or a single-file `.safetensors` checkpoint. Pickles are refused, never opened.
 */
import { stat } from "node:fs/promises";
import { ModelFileError } from "../../errors.js";
import { refusePickle } from "../../model/pickle.js";
import type { CheckpointSource } from "../types.js";
import { readDiffusersFolder } from "./diffusers-folder.js";
import { readSingleFile, type SingleFileOptions } from "./single-file.js";

export { detectFamily, type CheckpointOverrides, type SingleFileOptions } from "./single-file.js";

export type ReadCheckpointOptions = SingleFileOptions;

/**
 * Reads a checkpoint: a folder is read as a diffusers folder (`configFolder` does not apply), a
 * file as a single-file `.safetensors`.
 * @throws ModelFileError naming the file and what is wrong (missing, a pickle, malformed, unknown architecture).
 */
export async function readCheckpoint(path: string, options: ReadCheckpointOptions = {}): Promise<CheckpointSource> {
  const info = await stat(path).catch((error: unknown) => {
    throw new ModelFileError(path, `checkpoint ${path} does not exist or cannot be read (${(error as Error).message})`, { cause: error });
  });
  if (info.isDirectory()) return readDiffusersFolder(path, options);
  await refusePickle(path);
  return readSingleFile(path, options);
}
