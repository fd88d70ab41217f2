/**
 * Python's `html.unescape` (CPython 3.11 Lib/html/__init__.py), which the CLIP reference
 * tokenizer applies twice. It follows the HTML5 rules for character references, including the
 * lenient ones browsers use: legacy names without ";" ("&amp", "&lt" — also as a prefix, so
 * "&ampx" is "&x"), numeric references without ";", C1 numbers read as Windows-1252, surrogates
 * and numbers above U+10FFFF turned into U+FFFD, and a few code points removed.
 */
import { HTML5_ENTITY_DATA } from "./html-entities.generated.js";

let html5: Map<string, string> | undefined;

/** The HTML5 named character references, name (without "&") → text; built on first use. */
export function html5Entities(): ReadonlyMap<string, string> {
  if (html5 === undefined) {
    html5 = new Map();
    for (const entry of HTML5_ENTITY_DATA.split(" ")) {
      if (entry === "") continue;
      const eq = entry.indexOf("=");
      const value = entry
        .slice(eq + 1)
        .split("+")
        .map((hex) => String.fromCodePoint(parseInt(hex, 16)));
      html5.set(entry.slice(0, eq), value.join(""));
    }
  }
  return html5;
}

/** Numbers that HTML5 maps to something else than the code point of the same number. */
const INVALID_CHARREFS = new Map<number, string>([
  [0x00, "\ufffd"],
  [0x0d, "\r"],
  [0x80, "\u20ac"],
  [0x81, "\x81"],
  [0x82, "\u201a"],
  [0x83, "\u0192"],
  [0x84, "\u201e"],
  [0x85, "\u2026"],
  [0x86, "\u2020"],
  [0x87, "\u2021"],
  [0x88, "\u02c6"],
  [0x89, "\u2030"],
  [0x8a, "\u0160"],
  [0x8b, "\u2039"],
  [0x8c, "\u0152"],
  [0x8d, "\x8d"],
  [0x8e, "\u017d"],
  [0x8f, "\x8f"],
  [0x90, "\x90"],
  [0x91, "\u2018"],
  [0x92, "\u2019"],
  [0x93, "\u201c"],
  [0x94, "\u201d"],
  [0x95, "\u2022"],
  [0x96, "\u2013"],
  [0x97, "\u2014"],
  [0x98, "\u02dc"],
  [0x99, "\u2122"],
  [0x9a, "\u0161"],
  [0x9b, "\u203a"],
  [0x9c, "\u0153"],
  [0x9d, "\x9d"],
  [0x9e, "\u017e"],
  [0x9f, "\u0178"],
]);

/** Code points that a numeric reference may not produce: they are dropped (Python's `_invalid_codepoints`). */
function isInvalidCodePoint(cp: number): boolean {
  return (
    (cp >= 0x1 && cp <= 0x8) ||
    cp === 0xb ||
    (cp >= 0xe && cp <= 0x1f) ||
    (cp >= 0x7f && cp <= 0x9f) ||
    (cp >= 0xfdd0 && cp <= 0xfdef) ||
    (cp & 0xfffe) === 0xfffe // U+xFFFE and U+xFFFF in every plane
  );
}

/** Beyond this the number is "above U+10FFFF" whatever its exact value. */
const LARGER_THAN_ANY_CODE_POINT = 0x110000;

function parseReferenceNumber(digits: string, radix: 10 | 16): number {
  const significant = digits.replace(/^0+/, "");
  // 7 decimal / 6 hex digits cover U+10FFFF; longer numbers are out of range. (Python raises
  // ValueError for more than 4300 decimal digits; we answer U+FFFD like for any other too-large
  // number instead of failing on a prompt.)
  if (significant.length > (radix === 10 ? 7 : 6)) return LARGER_THAN_ANY_CODE_POINT;
  return significant === "" ? 0 : parseInt(significant, radix);
}

function replaceNumericReference(ref: string): string {
  const body = ref.endsWith(";") ? ref.slice(1, -1) : ref.slice(1);
  const num = body[0] === "x" || body[0] === "X" ? parseReferenceNumber(body.slice(1), 16) : parseReferenceNumber(body, 10);
  const special = INVALID_CHARREFS.get(num);
  if (special !== undefined) return special;
  if ((num >= 0xd800 && num <= 0xdfff) || num > 0x10ffff) return "\ufffd";
  if (isInvalidCodePoint(num)) return "";
  return String.fromCodePoint(num);
}

function replaceNamedReference(ref: string): string {
  const entities = html5Entities();
  const whole = entities.get(ref);
  if (whole !== undefined) return whole;
  // The longest known name that is a prefix (at least 2 characters) wins, as the standard says;
  // only the legacy names without ";" can match that way.
  const chars = Array.from(ref);
  for (let length = chars.length - 1; length > 1; length--) {
    const value = entities.get(chars.slice(0, length).join(""));
    if (value !== undefined) return value + chars.slice(length).join("");
  }
  return "&" + ref;
}

// `u` so that {1,32} counts code points, as Python does.
const CHARREF = /&(#[0-9]+;?|#[xX][0-9a-fA-F]+;?|[^\t\n\f <&#;]{1,32};?)/gu;

/** Python's `html.unescape(text)`. */
export function htmlUnescape(text: string): string {
  if (!text.includes("&")) return text;
  return text.replace(CHARREF, (_match, ref: string) =>
    ref[0] === "#" ? replaceNumericReference(ref) : replaceNamedReference(ref),
  );
}
