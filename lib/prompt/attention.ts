/**
 * A1111's prompt attention syntax: `parse_prompt_attention` of modules/prompt_parser.py
 * (AUTOMATIC1111/stable-diffusion-webui@82a973c04367123ae98bd9abdf80d9eda9b910e2), ported line for
 * line so that every input, malformed ones included, gives what A1111 returns:
 *
 * - `(x)` ×1.1, `[x]` ×(1/1.1), `(x:1.3)` × 1.3, nested products in float64 in A1111's order;
 * - `\(` `\)` `\[` `\]` `\\` → the literal character; a lone `\` is dropped;
 * - a closer with nothing open, and a `:` that is not a weight, are plain text;
 * - `BREAK` (case-sensitive, a whole word) splits plain text and adds `["BREAK", -1]`;
 * - groups left open apply to the end of the text (all `(` first, then all `[`);
 * - neighbouring entries with equal weights are merged.
 *
 * A1111 raises only on a weight `float()` cannot read (`(x:1.2.3)`); so does this, with an
 * InvalidOptionError naming the option.
 */
import { InvalidOptionError } from "../errors.js";
import { PY_ISSPACE_CLASS } from "../tokenizer/python-text.js";

/** One parsed span: its text and its weight (BREAK is `["BREAK", -1]`). */
export type AttentionSpan = [text: string, weight: number];

// re_attention, alternative for alternative: `:\s*([+-]?[.\d]+)\s*\)` is a weight with optional
// spaces around the number. Python's `\d` in a str pattern is any Unicode decimal digit (\p{Nd})
// and its `\s` is str.isspace().
const RE_ATTENTION = new RegExp(
  `\\\\\\(|\\\\\\)|\\\\\\[|\\\\\\]|\\\\\\\\|\\\\|\\(|\\[|:[${PY_ISSPACE_CLASS}]*([+\\-]?[.\\p{Nd}]+)[${PY_ISSPACE_CLASS}]*\\)|\\)|\\]|[^\\\\()[\\]:]+|:`,
  "gu",
);

// re_break = \s*\bBREAK\b\s* with Python's Unicode `\s` (str.isspace) and `\b` (word characters:
// letters, numbers and "_"; JavaScript's `\b` knows only ASCII).
const RE_BREAK = new RegExp(`[${PY_ISSPACE_CLASS}]*(?<![\\p{L}\\p{N}_])BREAK(?![\\p{L}\\p{N}_])[${PY_ISSPACE_CLASS}]*`, "gsu");

const ROUND_MULTIPLIER = 1.1;
const SQUARE_MULTIPLIER = 1 / 1.1;

/**
 * `parse_prompt_attention(text)`: the spans of `text` with their weights, exactly as A1111
 * returns them.
 * @param option the option the text came from, for the error message. Defaults to "prompt".
 * @throws InvalidOptionError when a weight is not a number Python's `float()` reads (`(x:1.2.3)`).
 */
export function parsePromptAttention(text: string, option = "prompt"): AttentionSpan[] {
  const res: AttentionSpan[] = [];
  const roundBrackets: number[] = [];
  const squareBrackets: number[] = [];
  const multiplyRange = (start: number, multiplier: number): void => {
    for (let p = start; p < res.length; p++) res[p]![1] *= multiplier;
  };

  for (const m of text.matchAll(RE_ATTENTION)) {
    const token = m[0];
    const weight = m[1];
    if (token.startsWith("\\")) {
      res.push([token.slice(1), 1.0]);
    } else if (token === "(") {
      roundBrackets.push(res.length);
    } else if (token === "[") {
      squareBrackets.push(res.length);
    } else if (weight !== undefined && roundBrackets.length > 0) {
      multiplyRange(roundBrackets.pop()!, pythonFloat(weight, option));
    } else if (token === ")" && roundBrackets.length > 0) {
      multiplyRange(roundBrackets.pop()!, ROUND_MULTIPLIER);
    } else if (token === "]" && squareBrackets.length > 0) {
      multiplyRange(squareBrackets.pop()!, SQUARE_MULTIPLIER);
    } else {
      token.split(RE_BREAK).forEach((part, i) => {
        if (i > 0) res.push(["BREAK", -1]);
        res.push([part, 1.0]);
      });
    }
  }
  for (const pos of roundBrackets) multiplyRange(pos, ROUND_MULTIPLIER);
  for (const pos of squareBrackets) multiplyRange(pos, SQUARE_MULTIPLIER);
  if (res.length === 0) res.push(["", 1.0]);

  // Merge runs of identical weights.
  let i = 0;
  while (i + 1 < res.length) {
    const here = res[i]!;
    const next = res[i + 1]!;
    if (here[1] === next[1]) {
      here[0] += next[0];
      res.splice(i + 1, 1);
    } else {
      i++;
    }
  }
  return res;
}

/** Whether a parsed span is a BREAK (A1111: `text == "BREAK" and weight == -1`). */
export function isBreak(span: AttentionSpan): boolean {
  return span[0] === "BREAK" && span[1] === -1;
}

/**
 * Python's `float()` on what `[+-]?[.\d]+` matched: digits (any Unicode decimal digit) with at
 * most one point and at least one digit, correctly rounded (as `Number` rounds).
 */
function pythonFloat(weight: string, option: string): number {
  const ascii = Array.from(weight, (ch) => (/\p{Nd}/u.test(ch) ? String(decimalValue(ch)) : ch)).join("");
  if (!/^[+-]?(?:\d+\.?\d*|\.\d+)$/.test(ascii)) {
    throw new InvalidOptionError(
      option,
      `${option} has the weight ${JSON.stringify(weight)}, which is not a number (A1111 rejects it too: could not convert string to float)`,
    );
  }
  return Number(ascii);
}

/** The value of a Unicode decimal digit: Nd digits come in runs of ten, 0 first. */
function decimalValue(ch: string): number {
  let cp = ch.codePointAt(0)!;
  let offset = 0;
  while (/\p{Nd}/u.test(String.fromCodePoint(cp - 1))) {
    cp--;
    offset++;
  }
  return offset % 10;
}
