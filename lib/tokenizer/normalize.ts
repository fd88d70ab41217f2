/**
 * The text cleaning of OpenAI's CLIP tokenizer (clip/simple_tokenizer.py `basic_clean`,
 * `whitespace_clean` and the `.lower()` in `encode`), step for step:
 *
 * 1. `ftfy.fix_text` (mojibake, curly quotes, ligatures, widths, controls, NFC, HTML entities
 *    when the text has no "<");
 * 2. `html.unescape` twice (so "&amp;lt;" becomes "<", and bare legacy forms such as "&amp" are
 *    decoded too);
 * 3. strip; every run of whitespace → one space; strip;
 * 4. lower-case.
 */
import { fixText } from "./ftfy/fix-text.js";
import { htmlUnescape } from "./html-unescape.js";
import { REGEX_MODULE_SPACE_CLASS, pyLower, pyStrip } from "./python-text.js";

// simple_tokenizer.py does `import regex as re`, so this `\s+` is the regex module's.
const WHITESPACE_RUN = new RegExp(`[${REGEX_MODULE_SPACE_CLASS}]+`, "gu");

/** The cleaned, lower-cased text that CLIP splits into words (the goldens' `normalized`). */
export function normalizeClipText(text: string): string {
  return cleanClipText(htmlUnescape(htmlUnescape(fixText(text))));
}

/**
 * The cleaning of transformers' `CLIPTokenizer` (slow, with ftfy installed), which is what A1111
 * tokenizes prompts with: `whitespace_clean(ftfy.fix_text(text)).lower()` — no `html.unescape`.
 */
export function normalizeTransformersClipText(text: string): string {
  return cleanClipText(fixText(text));
}

/** Steps 3 and 4. */
function cleanClipText(text: string): string {
  const cleaned = pyStrip(text);
  return pyLower(pyStrip(cleaned.replace(WHITESPACE_RUN, " ")));
}
