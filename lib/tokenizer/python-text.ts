/**
 * The few Python string semantics the CLIP reference tokenizer relies on and JavaScript spells
 * differently. The reference runs `str.strip()` (whitespace = `str.isspace()`) and the `regex`
 * module's `\s` (the Unicode White_Space property); JavaScript's `\s` is neither (it includes
 * U+FEFF and lacks U+0085), so both sets are written out here.
 */

/** Characters for which Python's `str.isspace()` is true (also what stdlib `re`'s `\s` matches). */
export const PY_ISSPACE_CLASS =
  "\\t\\n\\v\\f\\r\\x1c-\\x20\\x85\\xa0\\u1680\\u2000-\\u200a\\u2028\\u2029\\u202f\\u205f\\u3000";

/** What `\s` matches in the `regex` module (Unicode White_Space), which openai/CLIP imports as `re`. */
export const REGEX_MODULE_SPACE_CLASS =
  "\\t\\n\\v\\f\\r\\x20\\x85\\xa0\\u1680\\u2000-\\u200a\\u2028\\u2029\\u202f\\u205f\\u3000";

const LEADING_SPACE = new RegExp(`^[${PY_ISSPACE_CLASS}]+`, "u");
const TRAILING_SPACE = new RegExp(`[${PY_ISSPACE_CLASS}]+$`, "u");

/** Python's `str.strip()` with no argument. */
export function pyStrip(text: string): string {
  return text.replace(LEADING_SPACE, "").replace(TRAILING_SPACE, "");
}

/**
 * Python's `str.lower()`. JavaScript's `toLowerCase()` applies the same full, locale-independent
 * mappings from UnicodeData.txt and SpecialCasing.txt ("İ" → "i̇", final sigma); checked equal for
 * every character Python 3.11 knows (Unicode 14).
 */
export function pyLower(text: string): string {
  return text.toLowerCase();
}

/** The code-unit index just after the first `count` code points of `text` from `start`. */
export function advanceCodePoints(text: string, start: number, count: number): number {
  let i = start;
  for (let n = 0; n < count && i < text.length; n++) {
    const unit = text.charCodeAt(i);
    if (unit >= 0xd800 && unit <= 0xdbff && i + 1 < text.length) {
      const next = text.charCodeAt(i + 1);
      if (next >= 0xdc00 && next <= 0xdfff) i++;
    }
    i++;
  }
  return i;
}
