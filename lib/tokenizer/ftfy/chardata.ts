/**
 * Character tables and patterns of ftfy's individual fixes.
 *
 * Ported from ftfy 6.3.1 ftfy/chardata.py and ftfy/fixes.py (Copyright 2023 Robyn Speer,
 * Apache-2.0; see ./LICENSE-ftfy). Patterns marked "(bytes)" apply to binary strings (one char
 * per byte) and are Python bytes patterns written as JavaScript non-`u` patterns.
 */
import { html5Entities, htmlUnescape } from "../html-unescape.js";
import { UTF8_DETECTOR_SOURCE } from "./tables.generated.js";

/** Curly single quotes and look-alikes → "'" (chardata.SINGLE_QUOTE_RE). */
export const SINGLE_QUOTE_RE = /[\u02bc\u2018-\u201b]/g;
/** Curly double quotes → '"' (chardata.DOUBLE_QUOTE_RE). */
export const DOUBLE_QUOTE_RE = /[\u201c-\u201f]/g;

/** Entity-looking text that ftfy's own unescaper considers (chardata.HTML_ENTITY_RE). */
export const HTML_ENTITY_RE = /&#?[0-9A-Za-z]{1,24};/g;

let htmlEntities: Map<string, string> | undefined;

/**
 * chardata.HTML_ENTITIES: "&name;" → text for every HTML5 name that ends in ";", plus the
 * all-caps spelling of the lower-case names ("&EACUTE;" → "É", "&SZLIG;" → "SS") where that
 * spelling is not itself an entity for Python's html.unescape.
 */
export function ftfyHtmlEntities(): ReadonlyMap<string, string> {
  if (htmlEntities === undefined) {
    htmlEntities = new Map();
    for (const [name, char] of html5Entities()) {
      if (!name.endsWith(";")) continue;
      htmlEntities.set("&" + name, char);
      if (name === name.toLowerCase()) {
        const entityUpper = "&" + name.toUpperCase();
        if (htmlUnescape(entityUpper) === entityUpper) htmlEntities.set(entityUpper, char.toUpperCase());
      }
    }
  }
  return htmlEntities;
}

/** "ANSI" terminal escapes such as colour codes (fixes.ANSI_RE; Python's `\d` is any Nd digit). */
export const ANSI_RE = /\x1b\[((?:\p{Nd}|;)*)([a-zA-Z])/gu;

/**
 * Control characters with no visible effect that ftfy removes (chardata.CONTROL_CHARS): C0
 * controls except tab and line breaks, DEL, deprecated Arabic format controls, interlinear
 * annotation marks, the object replacement character and the byte order mark.
 */
export const CONTROL_CHARS_RE = /[\x00-\x08\x0b\x0e-\x1f\x7f\u206a-\u206f\ufeff\ufff9-\ufffc]/g;

/** Latin ligatures and legacy digraphs → their letters (chardata.LIGATURES). */
export const LIGATURES: ReadonlyMap<string, string> = new Map([
  ["\u0132", "IJ"],
  ["\u0133", "ij"],
  ["\u0149", "\u02bcn"],
  ["\u01c4", "D\u017d"],
  ["\u01c5", "D\u017e"],
  ["\u01c6", "d\u017e"],
  ["\u01c7", "LJ"],
  ["\u01c8", "Lj"],
  ["\u01c9", "lj"],
  ["\u01ca", "NJ"],
  ["\u01cb", "Nj"],
  ["\u01cc", "nj"],
  ["\u01f1", "DZ"],
  ["\u01f2", "Dz"],
  ["\u01f3", "dz"],
  ["\ufb00", "ff"],
  ["\ufb01", "fi"],
  ["\ufb02", "fl"],
  ["\ufb03", "ffi"],
  ["\ufb04", "ffl"],
  ["\ufb05", "\u017ft"],
  ["\ufb06", "st"],
]);
export const LIGATURES_RE = /[\u0132\u0133\u0149\u01c4-\u01cc\u01f1-\u01f3\ufb00-\ufb06]/g;

let widthMapCache: Map<string, string> | undefined;

/**
 * chardata.WIDTH_MAP: fullwidth ASCII and halfwidth katakana/hangul (U+FF01..U+FFEF) → their
 * NFKC form, and the ideographic space U+3000 → " ".
 */
export function widthMap(): ReadonlyMap<string, string> {
  if (widthMapCache === undefined) {
    widthMapCache = new Map([["\u3000", " "]]);
    for (let cp = 0xff01; cp < 0xfff0; cp++) {
      const ch = String.fromCodePoint(cp);
      const alternate = ch.normalize("NFKC");
      if (alternate !== ch) widthMapCache.set(ch, alternate);
    }
  }
  return widthMapCache;
}
export const WIDTH_RE = /[\u3000\uff01-\uffef]/g;

/** C1 control characters (chardata.C1_CONTROL_RE). */
export const C1_CONTROL_RE = /[\x80-\x9f]/g;

/**
 * (bytes) UTF-8 sequences that would be valid if a 0xA0 byte had not been turned into a space
 * (chardata.ALTERED_UTF8_RE); only lead bytes whose 0xA0 forms are likely characters.
 */
export const ALTERED_UTF8_RE =
  /[\xc2\xc3\xc5\xce\xd0\xd9][ ]|[\xe2\xe3][ ][\x80-\x84\x86-\x9f\xa1-\xbf]|[\xe0-\xe3][\x80-\x84\x86-\x9f\xa1-\xbf][ ]|[\xf0][ ][\x80-\xbf][\x80-\xbf]|[\xf0][\x80-\xbf][ ][\x80-\xbf]|[\xf0][\x80-\xbf][\x80-\xbf][ ]/g;

/**
 * (bytes) "Ã " as a word of its own is "à " whose 0xA0 became the space (fixes.A_GRAVE_WORD_RE),
 * except before the Portuguese words "às", "àquele", "àquela", "àquilo".
 */
export const A_GRAVE_WORD_RE = /\xc3 (?! |quele|quela|quilo|s )/g;

/**
 * (bytes) UTF-8 (and CESU-8) sequences with continuation bytes lost to U+FFFD (byte 0x1A in
 * the sloppy code pages) or, once per sequence, to "?" (chardata.LOSSY_UTF8_RE).
 */
export const LOSSY_UTF8_RE =
  /[\xc2-\xdf][\x1a]|[\xc2-\xc3][?]|\xed[\xa0-\xaf][\x1a?]\xed[\xb0-\xbf][\x1a?\x80-\xbf]|\xed[\xa0-\xaf][\x1a?\x80-\xbf]\xed[\xb0-\xbf][\x1a?]|[\xe0-\xef][\x1a?][\x1a\x80-\xbf]|[\xe0-\xef][\x1a\x80-\xbf][\x1a?]|[\xf0-\xf4][\x1a?][\x1a\x80-\xbf][\x1a\x80-\xbf]|[\xf0-\xf4][\x1a\x80-\xbf][\x1a?][\x1a\x80-\xbf]|[\xf0-\xf4][\x1a\x80-\xbf][\x1a\x80-\xbf][\x1a?]|\x1a/g;

/** Runs of characters that look like UTF-8 read as a single-byte encoding (chardata.UTF8_DETECTOR_RE). */
export const UTF8_DETECTOR_RE = new RegExp(UTF8_DETECTOR_SOURCE, "gu");
