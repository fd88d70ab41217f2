/**
 * Textual-inversion embeddings from a folder, read the way A1111's `EmbeddingDatabase` reads them
 * (modules/textual_inversion/textual_inversion.py at 82a973c: `load_from_dir`, `load_from_file`,
 * `create_embedding_from_data`), for `.safetensors` files only:
 *
 * - every file under the folder, subfolders included; empty files are skipped, as A1111 skips them;
 * - the embedding's name is the file name without its extension (the word a prompt uses);
 * - the file holds one tensor, whatever its key (`emb_params` from kohya's scripts,
 *   `string_to_param.*` from A1111's own layout flattened): [vectors, width], or [width] for one
 *   vector; the width must be the text encoder's hidden size;
 * - `hash` is the file's SHA-256 and `shorthash` its first 12 characters (A1111's `TI hashes`).
 *
 * - SDXL (`widths` given for both encoders): the file holds `clip_l` [vectors, text_encoder's
 *   width] and `clip_g` [vectors, text_encoder_2's width] (A1111's SDXL layout; `vectors` is
 *   clip_g's row count there, and `EmbeddingsWithFixes` gives each encoder its own tensor).
 *
 * Where A1111 differs, sd-trt fails the load with a message naming the file rather than leaving an
 * embedding out (A1111 only prints it): a pickle (`.pt`, `.bin`, …, refused unopened,
 * lib/model/pickle.ts), several tensors, an SDXL embedding on an SD model or the reverse, a wrong
 * width, clip_l and clip_g with different vector counts, more than 75 vectors (more than a chunk),
 * two files with the same name. Embeddings hidden in
 * PNG/WebP images are not read (those files are left alone, like other non-embedding files).
 */
import { createHash } from "node:crypto";
import { readdir, readFile, stat } from "node:fs/promises";
import { basename, extname, join, relative } from "node:path";
import { ModelFileError } from "../errors.js";
import { PICKLE_EXTENSIONS, refusePickle } from "./pickle.js";
import { parseSafetensors } from "./safetensors.js";

/** Most vectors one embedding may have: A1111 puts an embedding's vectors in one 75-token chunk. */
export const MAX_EMBEDDING_VECTORS = 75;

export interface TextualInversion {
  /** The prompt word: the file name without its extension. */
  name: string;
  /** The file it came from. */
  file: string;
  /** Number of vectors (tokens it takes in a chunk). */
  count: number;
  /** The vectors, [count, width] row-major, float32 (SDXL: clip_l's, for text_encoder). */
  vectors: Float32Array;
  /** SDXL: clip_g's vectors [count, text_encoder_2's width], for text_encoder_2. */
  vectorsClipG?: Float32Array;
  /** SHA-256 of the file (hex); A1111's infotext writes its first 12 characters. */
  hash: string;
  shorthash: string;
}

/** The widths an SDXL model's two text encoders take (clip_l: text_encoder, clip_g: text_encoder_2). */
export interface SdxlEmbeddingWidths {
  clipL: number;
  clipG: number;
}

/**
 * Every textual-inversion embedding under `dir`, sorted by name as A1111 lists them (case-insensitively).
 * @param width the text encoder's hidden size (768 for SD 1.x), or an SDXL model's two widths.
 * @throws ModelFileError naming the folder or file and what is wrong with it.
 */
export async function loadTextualInversions(dir: string, width: number | SdxlEmbeddingWidths): Promise<TextualInversion[]> {
  const files = await listFiles(dir);
  const byName = new Map<string, TextualInversion>();
  for (const file of files) {
    const ext = extname(file).toLowerCase();
    if (PICKLE_EXTENSIONS.includes(ext)) await refusePickle(file);
    if (ext !== ".safetensors") continue;
    if ((await stat(file)).size === 0) continue;
    const embedding = await readEmbedding(file, width);
    const other = byName.get(embedding.name);
    if (other) throw new ModelFileError(file, `${file} and ${other.file} are both embeddings named "${embedding.name}": a prompt word can mean only one; rename or remove one`);
    byName.set(embedding.name, embedding);
  }
  return [...byName.values()].sort((a, b) => (a.name.toLowerCase() < b.name.toLowerCase() ? -1 : a.name.toLowerCase() > b.name.toLowerCase() ? 1 : 0));
}

async function listFiles(dir: string): Promise<string[]> {
  let entries: import("node:fs").Dirent[];
  try {
    entries = await readdir(dir, { withFileTypes: true, recursive: true });
  } catch (error) {
    throw new ModelFileError(dir, `the embeddings folder ${dir} cannot be read (${(error as Error).message})`, { cause: error });
  }
  const files: string[] = [];
  for (const e of entries) {
    const path = join(e.parentPath, e.name);
    if (e.isFile() || (e.isSymbolicLink() && (await stat(path).catch(() => null))?.isFile())) files.push(path);
  }
  return files.sort((a, b) => relative(dir, a).localeCompare(relative(dir, b)));
}

async function readEmbedding(file: string, width: number | SdxlEmbeddingWidths): Promise<TextualInversion> {
  const bytes = await readFile(file);
  const tensors = [...parseSafetensors(bytes, file).tensors.values()];
  const names = tensors.map((t) => t.name);
  const sdxlFile = names.includes("clip_g") && names.includes("clip_l");
  const hash = createHash("sha256").update(bytes).digest("hex");
  const identity = { name: basename(file, extname(file)), file, hash, shorthash: hash.slice(0, 12) };
  if (typeof width !== "number") {
    if (!sdxlFile) throw new ModelFileError(file, `${file} is not an SDXL embedding (it has ${names.join(", ")}); an SDXL model takes files with clip_l [vectors, ${width.clipL}] and clip_g [vectors, ${width.clipG}]`);
    const part = (key: "clip_l" | "clip_g", w: number) => {
      const t = tensors.find((x) => x.name === key)!;
      if (t.shape.length !== 2 || t.shape[1] !== w) throw new ModelFileError(file, `${file}: ${key} has shape [${t.shape.join(", ")}], expected [vectors, ${w}]: it was made for another model`);
      return t;
    };
    const clipL = part("clip_l", width.clipL);
    const clipG = part("clip_g", width.clipG);
    const count = clipG.shape[0]!;
    if (clipL.shape[0] !== count) throw new ModelFileError(file, `${file}: clip_l has ${clipL.shape[0]} vectors and clip_g ${count}; an SDXL embedding gives both encoders the same number`);
    checkCount(file, count);
    return { ...identity, count, vectors: clipL.toFloat32(), vectorsClipG: clipG.toFloat32() };
  }
  if (sdxlFile) {
    throw new ModelFileError(file, `${file} is an SDXL embedding (clip_g and clip_l); this model's text encoder takes vectors of ${width}`);
  }
  if (tensors.length !== 1) {
    throw new ModelFileError(file, `${file} holds ${tensors.length} tensors (${names.join(", ")}); an embedding file has exactly one (emb_params or string_to_param.*)`);
  }
  const tensor = tensors[0]!;
  const shape = tensor.shape.length === 1 ? [1, tensor.shape[0]!] : [...tensor.shape];
  const expected = `[vectors, ${width}] (or [${width}] for one vector)`;
  if (shape.length !== 2 || shape[1] !== width) {
    throw new ModelFileError(file, `${file}: the embedding ${tensor.name} has shape [${tensor.shape.join(", ")}], expected ${expected}: it was made for a model whose text encoder has another width`);
  }
  const count = shape[0]!;
  checkCount(file, count);
  return { ...identity, count, vectors: tensor.toFloat32() };
}

function checkCount(file: string, count: number): void {
  if (count < 1 || count > MAX_EMBEDDING_VECTORS) {
    throw new ModelFileError(file, `${file}: the embedding has ${count} vectors; it must have 1 to ${MAX_EMBEDDING_VECTORS} (one prompt chunk)`);
  }
}
