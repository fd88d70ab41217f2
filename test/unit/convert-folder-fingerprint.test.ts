/**
 * The model cache names a converted diffusers folder by its files' paths, sizes and times. A folder
 * of symbolic links (a Hugging Face snapshot: links into its blob store) must change identity when a
 * linked file changes, and a link cycle must not hang the walk.
 */
import { mkdir, mkdtemp, rm, symlink, utimes, writeFile } from "node:fs/promises";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { afterEach, beforeEach, describe, expect, test } from "@jest/globals";
import { folderFingerprint } from "../../lib/convert/cache.js";

let root: string;
beforeEach(async () => {
  root = await mkdtemp(join(tmpdir(), "sd-trt-fingerprint-"));
});
afterEach(async () => {
  await rm(root, { recursive: true, force: true });
});

/** A snapshot-like folder: `snapshot/unet/model.safetensors` → `blobs/a`, `snapshot/vae` → `blobs/vae`. */
async function snapshot(): Promise<{ folder: string; blob: string; vaeBlob: string }> {
  const blobs = join(root, "blobs");
  await mkdir(join(blobs, "vae"), { recursive: true });
  const blob = join(blobs, "a");
  const vaeBlob = join(blobs, "vae", "model.safetensors");
  await writeFile(blob, "unet weights");
  await writeFile(vaeBlob, "vae weights");
  const folder = join(root, "snapshot");
  await mkdir(join(folder, "unet"), { recursive: true });
  await symlink(blob, join(folder, "unet", "model.safetensors"));
  await symlink(join(blobs, "vae"), join(folder, "vae"));
  return { folder, blob, vaeBlob };
}

describe("folderFingerprint", () => {
  test("a linked file that changes changes the folder's identity", async () => {
    const { folder, blob } = await snapshot();
    const before = await folderFingerprint(folder);
    expect(await folderFingerprint(folder)).toBe(before);
    await writeFile(blob, "other unet weights");
    expect(await folderFingerprint(folder)).not.toBe(before);
  });

  test("files inside a linked folder count", async () => {
    const { folder, vaeBlob } = await snapshot();
    const before = await folderFingerprint(folder);
    const later = new Date(Date.now() + 60_000);
    await utimes(vaeBlob, later, later);
    expect(await folderFingerprint(folder)).not.toBe(before);
  });

  test("a link back to a parent folder is not followed forever", async () => {
    const { folder } = await snapshot();
    await symlink(folder, join(folder, "unet", "loop"));
    await symlink(join(root, "missing"), join(folder, "dangling"));
    await expect(folderFingerprint(folder)).resolves.toMatch(/^[0-9a-f]{64}$/);
  });
});
