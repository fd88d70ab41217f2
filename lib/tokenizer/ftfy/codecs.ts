/**
 * The text ↔ bytes conversions ftfy's mojibake repair needs: the single-byte code pages it
 * tries (with ftfy's "sloppy" Windows variants), strict UTF-8, and ftfy's "utf-8-variants"
 * decoder (CESU-8 surrogate pairs and Java's two-byte NUL).
 *
 * Ported from ftfy 6.3.1 (Copyright 2023 Robyn Speer, Apache-2.0; see ./LICENSE-ftfy):
 * ftfy/chardata.py `possible_encoding`, ftfy/bad_codecs/sloppy.py, ftfy/bad_codecs/utf8_variants.py.
 *
 * Bytes are carried as "binary strings" (one char per byte, codes 0..255) so that ftfy's bytes
 * regular expressions keep their exact form as JavaScript regular expressions without the `u` flag.
 */
import { CHARMAPS, type CharmapEncoding } from "./tables.generated.js";

interface Charmap {
  /** Character for each byte value. */
  decode: readonly string[];
  /** Byte value for each character the code page can represent. */
  encode: ReadonlyMap<string, number>;
  /** Bytes the strict (non-sloppy) codec refuses to decode. */
  holes: ReadonlySet<number>;
}

const charmaps = new Map<CharmapEncoding, Charmap>();

function charmap(encoding: CharmapEncoding): Charmap {
  let map = charmaps.get(encoding);
  if (map === undefined) {
    const decode = Array.from(CHARMAPS[encoding].decode);
    map = {
      decode,
      encode: new Map(decode.map((ch, byte) => [ch, byte])),
      holes: new Set(CHARMAPS[encoding].holes),
    };
    charmaps.set(encoding, map);
  }
  return map;
}

/** True when every character of `text` is ASCII (ftfy's `possible_encoding(text, "ascii")`). */
export function isAscii(text: string): boolean {
  return /^[\x00-\x7f]*$/.test(text);
}

/**
 * ftfy's `possible_encoding`: whether `text` could have come from decoding bytes in `encoding`,
 * i.e. every character is one the code page decodes to (for the sloppy ones U+FFFD stands for
 * byte 0x1A).
 */
export function canEncode(text: string, encoding: CharmapEncoding): boolean {
  const { encode } = charmap(encoding);
  for (const ch of text) if (!encode.has(ch)) return false;
  return true;
}

/** `text.encode(encoding)` for text that `canEncode` accepted; returns a binary string. */
export function encodeCharmap(text: string, encoding: CharmapEncoding): string {
  const { encode } = charmap(encoding);
  let out = "";
  for (const ch of text) {
    const byte = encode.get(ch);
    if (byte === undefined) throw new Error(`internal: ${JSON.stringify(ch)} is not in ${encoding}`);
    out += String.fromCharCode(byte);
  }
  return out;
}

/**
 * `bytes.decode(encoding)`. With `strict`, this is Python's own codec rather than ftfy's sloppy
 * one: the holes of the Windows code page are errors (the result is undefined) and byte 0x1A is
 * the control character U+001A, not U+FFFD.
 */
export function decodeCharmap(binary: string, encoding: CharmapEncoding, strict: boolean): string | undefined {
  const { decode, holes } = charmap(encoding);
  let out = "";
  for (let i = 0; i < binary.length; i++) {
    const byte = binary.charCodeAt(i);
    if (strict && holes.has(byte)) return undefined;
    out += strict && byte === 0x1a ? "\x1a" : decode[byte];
  }
  return out;
}

function toBytes(binary: string): Uint8Array {
  const bytes = new Uint8Array(binary.length);
  for (let i = 0; i < binary.length; i++) bytes[i] = binary.charCodeAt(i);
  return bytes;
}

// Python's strict UTF-8 and the WHATWG fatal decoder reject the same sequences (overlong forms,
// surrogates, > U+10FFFF, truncated sequences). ignoreBOM: Python keeps a leading U+FEFF.
const strictUtf8 = new TextDecoder("utf-8", { fatal: true, ignoreBOM: true });

/** `bytes.decode("utf-8")`, or undefined where Python raises UnicodeDecodeError. */
export function decodeUtf8(binary: string): string | undefined {
  try {
    return strictUtf8.decode(toBytes(binary));
  } catch {
    return undefined;
  }
}

// ftfy/bad_codecs/utf8_variants.py. Python's `$` matches at the end and also just before a final
// "\n"; `(?=\n?$)` says the same in JavaScript.
const END = "(?=\\n?$)";
const NULL_EXPR = `(\\xc0(\\x80|${END}))`;
const CESU8_EXPR = `(\\xed([\\xa0-\\xaf]|${END})([\\x80-\\xbf]|${END})(\\xed|${END})([\\xb0-\\xbf]|${END})([\\x80-\\xbf]|${END}))`;
const SURROGATE_EXPR = `(\\xed([\\xa0-\\xbf]|${END})([\\x80-\\xbf]|${END}))`;
const SPECIAL_BYTES_RE = new RegExp([NULL_EXPR, CESU8_EXPR, SURROGATE_EXPR].join("|"));
const CESU8_AT_START_RE = new RegExp("^" + CESU8_EXPR);

/** One step of ftfy's IncrementalDecoder._buffer_decode_step (final=True): [text, bytes consumed]. */
function decodeVariantStep(input: string): [string, number] | undefined {
  const match = SPECIAL_BYTES_RE.exec(input);
  if (match === null) {
    const text = decodeUtf8(input);
    return text === undefined ? undefined : [text, input.length];
  }
  if (match.index > 0) {
    const text = decodeUtf8(input.slice(0, match.index));
    return text === undefined ? undefined : [text, match.index];
  }
  if (input.charCodeAt(0) === 0xc0) {
    // Java's "modified UTF-8" NUL. (ftfy consumes two bytes whatever the second one is.)
    return input.length > 1 ? ["\u0000", 2] : undefined;
  }
  if (input.length < 6) return undefined; // a lone or truncated surrogate: invalid UTF-8
  if (CESU8_AT_START_RE.test(input)) {
    const b = (k: number) => input.charCodeAt(k);
    const codePoint = ((b(1) & 0x0f) << 16) + ((b(2) & 0x3f) << 10) + ((b(4) & 0x0f) << 6) + (b(5) & 0x3f) + 0x10000;
    return [String.fromCodePoint(codePoint), 6];
  }
  // An encoded surrogate that is not half of a CESU-8 pair: ftfy hands those three bytes to the
  // strict UTF-8 decoder, which always rejects them.
  return undefined;
}

/**
 * ftfy's "utf-8-variants" codec: UTF-8 that may also contain CESU-8 (UTF-16 surrogate pairs
 * encoded separately) and 0xC0 0x80 for NUL. Undefined where ftfy raises UnicodeDecodeError.
 */
export function decodeUtf8Variants(binary: string): string | undefined {
  let out = "";
  let position = 0;
  while (position < binary.length) {
    const step = decodeVariantStep(binary.slice(position));
    if (step === undefined) return undefined;
    out += step[0];
    position += step[1];
  }
  return out;
}
