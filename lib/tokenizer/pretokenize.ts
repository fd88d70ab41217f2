/**
 * CLIP's word splitting: the reference pattern (clip/simple_tokenizer.py, `regex` module,
 * IGNORECASE)
 *
 *   <\|startoftext\|>|<\|endoftext\|>|'s|'t|'re|'ve|'m|'ll|'d|[\p{L}]+|[\p{N}]|[^\s\p{L}\p{N}]+
 *
 * found left to right; characters no alternative matches are skipped. Every digit is a word of
 * its own, and a contraction matches wherever an apostrophe precedes those letters.
 *
 * Written without the `i` flag because case-insensitive classes differ: with IGNORECASE the
 * `regex` module's `[^\s\p{L}\p{N}]` rejects U+0345 COMBINING GREEK YPOGEGRAMMENI (its case
 * fold "ι" is a letter) while `[\p{L}]` does not accept it, so the reference drops that character;
 * JavaScript's `/iu` would count it as a letter. The literal parts instead list every character
 * that matches case-insensitively, including "ſ" (U+017F), whose simple case fold is "s" and
 * which `str.lower()` keeps. (Checked for every code point against the `regex` module.)
 */
import { REGEX_MODULE_SPACE_CLASS } from "./python-text.js";

/** A pattern that matches `word` case-insensitively, as the `regex` module's IGNORECASE does. */
function caseless(word: string): string {
  return Array.from(word, (ch) => {
    if (ch === "s") return "[sS\u017f]";
    if (/[a-z]/.test(ch)) return `[${ch}${ch.toUpperCase()}]`;
    return ch === "|" ? "\\|" : ch;
  }).join("");
}

const CLIP_WORD_PATTERN = [
  caseless("<|startoftext|>"),
  caseless("<|endoftext|>"),
  ...["'s", "'t", "'re", "'ve", "'m", "'ll", "'d"].map(caseless),
  "\\p{L}+",
  "\\p{N}",
  `[^${REGEX_MODULE_SPACE_CLASS}\\p{L}\\p{N}\\u0345]+`,
].join("|");

const CLIP_WORD_RE = new RegExp(CLIP_WORD_PATTERN, "gu");

/** Splits cleaned text into the pieces that are byte-pair encoded one by one. */
export function splitWords(normalized: string): string[] {
  return normalized.match(CLIP_WORD_RE) ?? [];
}
