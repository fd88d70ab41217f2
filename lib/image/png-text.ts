/**
 * PNG text chunks: sharp cannot write them, so the A1111 `parameters` text is spliced into the
 * encoded PNG here. `tEXt` (Latin-1) when the text fits Latin-1, else `iTXt` (UTF-8, not
 * compressed), exactly as PIL's `PngInfo.add_text` — what A1111 and its readers use — except that
 * control characters other than newline are escaped (PIL would write them raw).
 */
// A namespace import, not `{ crc32 }`: on a Node without zlib.crc32 (< 20.15) a named import fails
// while modules link, before lib/node-check.ts can say which Node is needed.
import * as zlib from "node:zlib";
import { type SdTrtError, InvalidArgumentError, InvalidImageError } from "../errors.js";

const SIGNATURE = Buffer.from([0x89, 0x50, 0x4e, 0x47, 0x0d, 0x0a, 0x1a, 0x0a]);

export interface PngChunk {
  type: string;
  data: Buffer;
}

export interface PngText {
  /** "tEXt", "iTXt" or "zTXt". */
  chunk: string;
  keyword: string;
  text: string;
}

function malformed(problem: string): SdTrtError {
  return new InvalidImageError(`not a valid PNG: ${problem}`);
}

/** Splits a PNG into its chunks, checking the signature and every CRC. */
export function readPngChunks(png: Uint8Array): PngChunk[] {
  const buffer = Buffer.from(png.buffer, png.byteOffset, png.byteLength);
  if (buffer.length < SIGNATURE.length || !buffer.subarray(0, 8).equals(SIGNATURE)) throw malformed("bad signature");
  const chunks: PngChunk[] = [];
  let position = 8;
  while (position < buffer.length) {
    if (position + 12 > buffer.length) throw malformed("truncated chunk header");
    const length = buffer.readUInt32BE(position);
    const end = position + 12 + length;
    if (end > buffer.length) throw malformed("truncated chunk");
    const typeAndData = buffer.subarray(position + 4, position + 8 + length);
    if (zlib.crc32(typeAndData) !== buffer.readUInt32BE(position + 8 + length)) throw malformed(`bad CRC in chunk at byte ${position}`);
    chunks.push({ type: typeAndData.subarray(0, 4).toString("latin1"), data: typeAndData.subarray(4) });
    position = end;
    if (chunks[chunks.length - 1]!.type === "IEND") break;
  }
  if (chunks[chunks.length - 1]?.type !== "IEND") throw malformed("no IEND chunk");
  return chunks;
}

function encodeChunk(type: string, data: Buffer): Buffer {
  const out = Buffer.alloc(12 + data.length);
  out.writeUInt32BE(data.length, 0);
  out.write(type, 4, "latin1");
  data.copy(out, 8);
  out.writeUInt32BE(zlib.crc32(out.subarray(4, 8 + data.length)), 8 + data.length);
  return out;
}

const isLatin1 = (text: string): boolean => /^[\u0000-\u00ff]*$/.test(text);

/** The chunk PIL would write for `keyword` = `text`: tEXt if Latin-1 fits, else iTXt. */
export function textChunk(keyword: string, text: string): Buffer {
  if (!/^[\u0020-\u007e\u00a1-\u00ff]{1,79}$/.test(keyword) || keyword.startsWith(" ") || keyword.endsWith(" ")) {
    throw new InvalidArgumentError(`PNG text keyword must be 1-79 printable Latin-1 characters, got ${JSON.stringify(keyword)}`);
  }
  // PNG text may hold newlines but no other control character (a NUL would even end a tEXt
  // string early in many readers): those are written as \uXXXX, the way JSON spells them.
  text = text.replace(/[\u0000-\u0009\u000b-\u001f\u007f-\u009f]/g, (c) => `\\u${c.charCodeAt(0).toString(16).padStart(4, "0")}`);
  if (isLatin1(text)) {
    return encodeChunk("tEXt", Buffer.concat([Buffer.from(keyword, "latin1"), Buffer.from([0]), Buffer.from(text, "latin1")]));
  }
  // iTXt: keyword \0, compression flag 0, method 0, empty language tag \0, empty translated keyword \0, UTF-8 text.
  return encodeChunk("iTXt", Buffer.concat([Buffer.from(keyword, "latin1"), Buffer.from([0, 0, 0, 0, 0]), Buffer.from(text, "utf8")]));
}

/**
 * Returns a copy of `png` with a text chunk added after the header chunks, before the first
 * IDAT (where PIL puts it, so readers that stop at the image data still see it).
 */
export function insertPngText(png: Uint8Array, keyword: string, text: string): Buffer {
  const chunks = readPngChunks(png);
  const buffer = Buffer.from(png.buffer, png.byteOffset, png.byteLength);
  let position = 8;
  for (const chunk of chunks) {
    if (chunk.type === "IDAT" || chunk.type === "IEND") break;
    position += 12 + chunk.data.length;
  }
  return Buffer.concat([buffer.subarray(0, position), textChunk(keyword, text), buffer.subarray(position)]);
}

/** Reads every tEXt / iTXt / zTXt chunk of a PNG. */
export async function readPngText(png: Uint8Array): Promise<PngText[]> {
  const { inflateSync } = await import("node:zlib");
  const texts: PngText[] = [];
  for (const { type, data } of readPngChunks(png)) {
    if (type !== "tEXt" && type !== "iTXt" && type !== "zTXt") continue;
    const nul = data.indexOf(0);
    if (nul < 0) throw malformed(`${type} chunk without a keyword terminator`);
    const keyword = data.subarray(0, nul).toString("latin1");
    if (type === "tEXt") {
      texts.push({ chunk: type, keyword, text: data.subarray(nul + 1).toString("latin1") });
    } else if (type === "zTXt") {
      texts.push({ chunk: type, keyword, text: inflateSync(data.subarray(nul + 2)).toString("latin1") });
    } else {
      const compressed = data[nul + 1] === 1;
      const languageEnd = data.indexOf(0, nul + 3);
      const translatedEnd = data.indexOf(0, languageEnd + 1);
      if (languageEnd < 0 || translatedEnd < 0) throw malformed("truncated iTXt chunk");
      const body = data.subarray(translatedEnd + 1);
      texts.push({ chunk: type, keyword, text: (compressed ? inflateSync(body) : body).toString("utf8") });
    }
  }
  return texts;
}
