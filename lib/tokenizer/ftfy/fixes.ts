/**
 * ftfy's individual fixes, each a function from text to text (or bytes to bytes).
 *
 * Ported from ftfy 6.3.1 ftfy/fixes.py (Copyright 2023 Robyn Speer, Apache-2.0; see
 * ./LICENSE-ftfy).
 */
import { htmlUnescape } from "../html-unescape.js";
import { isBad } from "./badness.js";
import {
  ALTERED_UTF8_RE,
  ANSI_RE,
  A_GRAVE_WORD_RE,
  C1_CONTROL_RE,
  CONTROL_CHARS_RE,
  DOUBLE_QUOTE_RE,
  HTML_ENTITY_RE,
  LIGATURES,
  LIGATURES_RE,
  LOSSY_UTF8_RE,
  SINGLE_QUOTE_RE,
  UTF8_DETECTOR_RE,
  WIDTH_RE,
  ftfyHtmlEntities,
  widthMap,
} from "./chardata.js";
import { decodeCharmap } from "./codecs.js";

/**
 * Decodes the HTML entities that are unambiguous: names from the HTML5 table that end in ";"
 * (plus all-caps spellings of lower-case ones) and numeric references with ";". Bare legacy
 * forms such as "&amp" are left alone here ("this&not that" is not "this¬ that").
 */
export function unescapeHtml(text: string): string {
  const entities = ftfyHtmlEntities();
  return text.replace(HTML_ENTITY_RE, (entity) => {
    const known = entities.get(entity);
    if (known !== undefined) return known;
    if (entity.startsWith("&#")) {
      const unescaped = htmlUnescape(entity);
      // If html.unescape decoded only part of it, the ";" was not consumed: keep the original.
      return unescaped.includes(";") ? entity : unescaped;
    }
    return entity;
  });
}

/** Removes "ANSI" terminal escape sequences (colours and the like). */
export function removeTerminalEscapes(text: string): string {
  return text.replace(ANSI_RE, "");
}

/** Curly quotes → straight quotes. */
export function uncurlQuotes(text: string): string {
  return text.replace(DOUBLE_QUOTE_RE, '"').replace(SINGLE_QUOTE_RE, "'");
}

/** Latin ligatures such as "ﬁ" → "fi" (other scripts' ligatures are left alone). */
export function fixLatinLigatures(text: string): string {
  return text.replace(LIGATURES_RE, (ch) => LIGATURES.get(ch) ?? ch);
}

/** Fullwidth and halfwidth forms → standard width ("ＡＢＣ" → "ABC", U+3000 → " "). */
export function fixCharacterWidth(text: string): string {
  const map = widthMap();
  return text.replace(WIDTH_RE, (ch) => map.get(ch) ?? ch);
}

/** CRLF, CR, U+2028, U+2029 and U+0085 → "\n". */
export function fixLineBreaks(text: string): string {
  return text
    .replaceAll("\r\n", "\n")
    .replaceAll("\r", "\n")
    .replaceAll("\u2028", "\n")
    .replaceAll("\u2029", "\n")
    .replaceAll("\u0085", "\n");
}

const LONE_SURROGATE_RE = /[\ud800-\udbff](?![\udc00-\udfff])|(?<![\ud800-\udbff])[\udc00-\udfff]/g;

/**
 * Surrogate code points → U+FFFD. (ftfy first joins surrogate pairs into the character they
 * encode; a JavaScript string already reads a well-formed pair as that character, so only lone
 * surrogates remain to replace.)
 */
export function fixSurrogates(text: string): string {
  return text.replace(LONE_SURROGATE_RE, "\ufffd");
}

/** Removes control characters that have no displayed effect (see CONTROL_CHARS_RE). */
export function removeControlChars(text: string): string {
  return text.replace(CONTROL_CHARS_RE, "");
}

/**
 * (bytes) Puts back 0xA0 bytes that became spaces inside otherwise valid UTF-8 sequences, and
 * reads a lone "Ã " as "à " (see A_GRAVE_WORD_RE).
 */
export function restoreByteA0(binary: string): string {
  return binary
    .replace(A_GRAVE_WORD_RE, "\xc3\xa0 ")
    .replace(ALTERED_UTF8_RE, (match) => match.replaceAll(" ", "\xa0"));
}

/** (bytes) UTF-8 sequences with lost continuation bytes → the UTF-8 bytes of U+FFFD. */
export function replaceLossySequences(binary: string): string {
  return binary.replace(LOSSY_UTF8_RE, "\xef\xbf\xbd");
}

/**
 * Fixes mojibake runs embedded in otherwise different text, one run at a time, when the run on
 * its own looks bad. `fixEncoding` is passed in to keep the module graph acyclic.
 */
export function decodeInconsistentUtf8(text: string, fixEncoding: (text: string) => string): string {
  return text.replace(UTF8_DETECTOR_RE, (run) =>
    // Only a proper part of the text, so this cannot recurse forever.
    run.length < text.length && isBad(run) ? fixEncoding(run) : run,
  );
}

/** C1 control characters → their Windows-1252 meaning, as web browsers do. */
export function fixC1Controls(text: string): string {
  // A C1 character is its own Latin-1 byte, so it is already the binary string to decode.
  return text.replace(C1_CONTROL_RE, (ch) => decodeCharmap(ch, "sloppy-windows-1252", false) ?? ch);
}
