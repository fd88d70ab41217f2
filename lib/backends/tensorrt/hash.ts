/** SHA-256 of model files, streamed (a UNet's weights are gigabytes). */
import { createHash } from "node:crypto";
import { createReadStream } from "node:fs";
import { stat } from "node:fs/promises";
import { relative, sep } from "node:path";
import { ModelFileError } from "../../errors.js";

export interface FileDigest {
  /** Path relative to the model folder, with "/" separators. */
  path: string;
  sha256: string;
  bytes: number;
}

export async function sha256File(path: string): Promise<string> {
  const hash = createHash("sha256");
  try {
    for await (const chunk of createReadStream(path, { highWaterMark: 4 << 20 })) hash.update(chunk as Buffer);
  } catch (cause) {
    throw new ModelFileError(path, `cannot read ${path}: ${(cause as Error).message}`, { cause });
  }
  return hash.digest("hex");
}

export function sha256Bytes(bytes: Uint8Array): string {
  return createHash("sha256").update(bytes).digest("hex");
}

/** Digests of `files` (absolute), named relative to `root`. */
export async function digestFiles(root: string, files: readonly string[]): Promise<FileDigest[]> {
  const out: FileDigest[] = [];
  for (const file of files) {
    const { size } = await stat(file);
    out.push({ path: relative(root, file).split(sep).join("/"), sha256: await sha256File(file), bytes: size });
  }
  return out;
}
