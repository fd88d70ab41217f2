/**
 * ftfy's mojibake heuristic: counts juxtapositions of characters that are far more likely to
 * come from text decoded in the wrong encoding than from real writing (a lower-case accented
 * letter followed by a currency sign, "Ã" followed by a no-break space, C1 controls, …).
 *
 * Ported from ftfy 6.3.1 ftfy/badness.py (Copyright 2023 Robyn Speer, Apache-2.0; see
 * ./LICENSE-ftfy). The pattern itself is generated from ftfy's BADNESS_RE.
 */
import { BADNESS_SOURCE } from "./tables.generated.js";

const BADNESS_SEARCH = new RegExp(BADNESS_SOURCE, "u");
const BADNESS_ALL = new RegExp(BADNESS_SOURCE, "gu");

/** The number of unlikely character sequences in `text` (ftfy.badness.badness). */
export function badness(text: string): number {
  return text.match(BADNESS_ALL)?.length ?? 0;
}

/** Whether `text` looks like it contains mojibake (ftfy.badness.is_bad). */
export function isBad(text: string): boolean {
  return BADNESS_SEARCH.test(text);
}
