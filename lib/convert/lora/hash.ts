/**
 * A LoRA's hash as A1111 writes it into infotext (`Lora hashes: "name: 0123456789ab"`): for a
 * `.safetensors` file, the sha256 of the bytes after the header — kohya's and the
 * additional-networks extension's "addnet" hash, `modules/hashes.addnet_hash_safetensors` —
 * so editing a LoRA's metadata does not change it; A1111 shows its first 12 hex digits
 * (`NetworkOnDisk.shorthash`).
 */
import { createHash } from "node:crypto";
import { open } from "node:fs/promises";
import { ModelFileError } from "../../errors.js";

const CHUNK = 1 << 20;

/** The full addnet sha256 (hex) of a `.safetensors` file, read in 1 MiB chunks. */
export async function addnetHash(path: string): Promise<string> {
  const fh = await open(path, "r").catch((error: Error) => {
    throw new ModelFileError(path, `${path} cannot be read (${error.message})`, { cause: error });
  });
  try {
    const head = Buffer.alloc(8);
    const { bytesRead } = await fh.read(head, 0, 8, 0);
    if (bytesRead < 8) throw new ModelFileError(path, `${path} is not a valid .safetensors file: it has fewer than the 8-byte header length`);
    let position = 8 + Number(head.readBigUInt64LE(0));
    const hash = createHash("sha256");
    const buffer = Buffer.alloc(CHUNK);
    for (;;) {
      const { bytesRead: n } = await fh.read(buffer, 0, CHUNK, position);
      if (n === 0) break;
      hash.update(buffer.subarray(0, n));
      position += n;
    }
    return hash.digest("hex");
  } finally {
    await fh.close();
  }
}

/** A1111's short form: the first 12 hex digits. */
export function shortHash(hash: string): string {
  return hash.slice(0, 12);
}

/**
 * The infotext value of `Lora hashes` for the LoRAs a prompt names, in prompt order: "name: hash"
 * joined by ", ", each name without ":" and "," (A1111's `remove_symbols`); a name mentioned twice
 * is written once (A1111 keeps them in a dict). Undefined when there are none.
 */
export function loraHashesInfotext(entries: readonly { name: string; hash: string }[]): string | undefined {
  const byName = new Map<string, string>();
  for (const { name, hash } of entries) byName.set(name.replace(/[:,]/g, ""), shortHash(hash));
  if (byName.size === 0) return undefined;
  return [...byName].map(([name, hash]) => `${name}: ${hash}`).join(", ");
}
