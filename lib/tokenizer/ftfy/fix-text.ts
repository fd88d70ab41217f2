/**
 * `ftfy.fix_text(text)` with ftfy's default configuration: the text repair that OpenAI's CLIP
 * tokenizer runs first. It decodes HTML entities (unless the text looks like HTML), repairs
 * mojibake ("cafÃ©" → "café") by re-encoding and decoding as UTF-8 where a heuristic says the
 * text is garbled and the result decodes cleanly, maps C1 controls to Windows-1252, splits Latin
 * ligatures, normalises character widths, straightens curly quotes, unifies line breaks, replaces
 * lone surrogates, removes terminal escapes and invisible control characters, and applies NFC —
 * repeatedly, until nothing changes.
 *
 * Ported from ftfy 6.3.1 ftfy/__init__.py (Copyright 2023 Robyn Speer, Apache-2.0; see
 * ./LICENSE-ftfy).
 */
import { advanceCodePoints } from "../python-text.js";
import { isBad } from "./badness.js";
import { ALTERED_UTF8_RE, C1_CONTROL_RE, UTF8_DETECTOR_RE } from "./chardata.js";
import { canEncode, decodeCharmap, decodeUtf8, decodeUtf8Variants, encodeCharmap, isAscii } from "./codecs.js";
import {
  decodeInconsistentUtf8,
  fixC1Controls,
  fixCharacterWidth,
  fixLatinLigatures,
  fixLineBreaks,
  fixSurrogates,
  removeControlChars,
  removeTerminalEscapes,
  replaceLossySequences,
  restoreByteA0,
  uncurlQuotes,
  unescapeHtml,
} from "./fixes.js";
import { CHARMAP_ENCODINGS, type CharmapEncoding } from "./tables.generated.js";

/** ftfy fixes text in segments of at most this many code points (TextFixerConfig.max_decode_length). */
const MAX_DECODE_LENGTH = 1_000_000;

/** A non-global copy of a global pattern, for `test()` without `lastIndex` state. */
function searcher(pattern: RegExp): RegExp {
  return new RegExp(pattern.source, pattern.flags.replace("g", ""));
}
const ALTERED_UTF8_SEARCH = searcher(ALTERED_UTF8_RE);
const UTF8_DETECTOR_SEARCH = searcher(UTF8_DETECTOR_RE);
const C1_CONTROL_SEARCH = searcher(C1_CONTROL_RE);

/**
 * One step of mojibake repair (ftfy's `_fix_encoding_one_step_and_explain`). Returns the text
 * unchanged when it is ASCII, does not look garbled, or no repair applies.
 */
function fixEncodingOneStep(text: string): string {
  if (text.length === 0 || isAscii(text) || !isBad(text)) return text;

  // Most likely: UTF-8 that was decoded with a single-byte encoding. Re-encode with each code
  // page that could have produced this text, and keep the first that decodes as UTF-8.
  const possible: CharmapEncoding[] = [];
  for (const encoding of CHARMAP_ENCODINGS) {
    if (!canEncode(text, encoding)) continue;
    possible.push(encoding);
    let bytes = encodeCharmap(text, encoding);
    // Not for MacRoman, where it would match an en dash followed by a space.
    if (encoding !== "macroman" && ALTERED_UTF8_SEARCH.test(bytes)) bytes = restoreByteA0(bytes);
    if (encoding.startsWith("sloppy")) bytes = replaceLossySequences(bytes);
    const fixed =
      bytes.includes("\xed") || bytes.includes("\xc0") ? decodeUtf8Variants(bytes) : decodeUtf8(bytes);
    if (fixed !== undefined) return fixed;
  }

  // Mojibake runs mixed with text that has no consistent re-encoding: fix them one by one.
  if (UTF8_DETECTOR_SEARCH.test(text)) {
    const fixed = decodeInconsistentUtf8(text, fixEncoding);
    if (fixed !== text) return fixed;
  }

  // Latin-1 that was meant as Windows-1252. (ftfy 6.3.1 also means to stop here when the text
  // fits "windows-1252", but its list only ever holds "sloppy-windows-1252", so that test never
  // passes; kept as ftfy behaves.)
  if (possible.includes("latin-1")) {
    const fixed = decodeCharmap(encodeCharmap(text, "latin-1"), "sloppy-windows-1252", true);
    if (fixed !== undefined && fixed !== text) return fixed;
  }

  if (C1_CONTROL_SEARCH.test(text)) return fixC1Controls(text);
  return text;
}

/** `ftfy.fix_encoding(text)`: mojibake repair steps until the text stops changing. */
export function fixEncoding(text: string): string {
  for (;;) {
    const fixed = fixEncodingOneStep(text);
    if (fixed === text) return fixed;
    text = fixed;
  }
}

/** `ftfy.fix_and_explain` for one segment, without the explanation. */
function fixSegment(text: string, unescapeHtmlEnabled: boolean): string {
  for (;;) {
    const original = text;
    if (unescapeHtmlEnabled) text = unescapeHtml(text);
    text = fixEncoding(text);
    text = fixC1Controls(text);
    text = fixLatinLigatures(text);
    text = fixCharacterWidth(text);
    text = uncurlQuotes(text);
    text = fixLineBreaks(text);
    text = fixSurrogates(text);
    text = removeTerminalEscapes(text);
    text = removeControlChars(text);
    text = text.normalize("NFC");
    if (text === original) return text;
  }
}

/** `ftfy.fix_text(text)` with the default configuration. */
export function fixText(text: string): string {
  const out: string[] = [];
  // unescape_html="auto": off once a segment contains "<" (the text is probably real HTML,
  // whose entities must stay), and off for every later segment too, as ftfy's loop does.
  let unescapeHtmlEnabled = true;
  let pos = 0;
  while (pos < text.length) {
    // Segments are lines (the "\n" stays with its line), at most MAX_DECODE_LENGTH code points.
    let end = text.indexOf("\n", pos) + 1;
    if (end === 0) end = text.length;
    // (A code point is one or two code units, so only a longer run can exceed the limit.)
    if (end - pos > MAX_DECODE_LENGTH) end = Math.min(end, advanceCodePoints(text, pos, MAX_DECODE_LENGTH));
    const segment = text.slice(pos, end);
    if (segment.includes("<")) unescapeHtmlEnabled = false;
    out.push(fixSegment(segment, unescapeHtmlEnabled));
    pos = end;
  }
  return out.join("");
}
