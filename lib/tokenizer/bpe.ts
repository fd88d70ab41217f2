/**
 * Byte-level byte-pair encoding as in OpenAI's CLIP (and GPT-2): a word's UTF-8 bytes are
 * written with 256 printable stand-in characters, "</w>" is appended to the last one, and the
 * adjacent pair with the lowest merge rank is merged everywhere, again and again, until no pair
 * has a rank.
 */

/**
 * GPT-2's `bytes_to_unicode`: the printable bytes "!".."~", "¡".."¬", "®".."ÿ" stand for
 * themselves; the other 68 bytes, in byte order, get U+0100, U+0101, ….
 */
function buildByteEncoder(): string[] {
  const printable: number[] = [];
  const push = (from: number, to: number) => {
    for (let b = from; b <= to; b++) printable.push(b);
  };
  push(0x21, 0x7e);
  push(0xa1, 0xac);
  push(0xae, 0xff);
  const encoder = new Array<string>(256);
  for (const b of printable) encoder[b] = String.fromCharCode(b);
  let next = 0;
  for (let b = 0; b < 256; b++) {
    if (encoder[b] === undefined) encoder[b] = String.fromCharCode(256 + next++);
  }
  return encoder;
}

/** Stand-in character for each byte value. */
export const BYTE_ENCODER: readonly string[] = buildByteEncoder();

/** Byte value for each stand-in character. */
export const BYTE_DECODER: ReadonlyMap<string, number> = new Map(BYTE_ENCODER.map((ch, byte) => [ch, byte]));

/** The end-of-word marker CLIP's vocabulary appends to a word's last symbol. */
export const END_OF_WORD = "</w>";

const utf8 = new TextEncoder();

/** What byte-pair encoding needs of a vocabulary (VocabularyTable): symbols are entry numbers. */
export interface MergeTable {
  /** The entry of a byte's stand-in character (with "</w>" when `endOfWord`). */
  byteEntry(byte: number, endOfWord: boolean): number;
  /** The merge of two adjacent entries (an index for `mergeRank`/`mergeResult`), or −1. */
  mergeOf(first: number, second: number): number;
  mergeRank(merge: number): number;
  mergeResult(merge: number): number;
}

/**
 * Byte-pair encodes one word (simple_tokenizer.py `bpe`) into vocabulary entries: its UTF-8
 * bytes, "</w>" on the last, then the adjacent pair of lowest rank merged everywhere, again and
 * again, until no pair has a rank.
 */
export function bytePairEncode(word: string, table: MergeTable): number[] {
  const bytes = utf8.encode(word);
  let symbols = Array.from(bytes, (byte, i) => table.byteEntry(byte, i === bytes.length - 1));
  while (symbols.length > 1) {
    let bestRank = Infinity;
    let bestIndex = -1;
    let bestMerge = -1;
    for (let i = 0; i + 1 < symbols.length; i++) {
      const merge = table.mergeOf(symbols[i]!, symbols[i + 1]!);
      if (merge >= 0 && table.mergeRank(merge) < bestRank) {
        bestRank = table.mergeRank(merge);
        bestIndex = i;
        bestMerge = merge;
      }
    }
    if (bestIndex < 0) break;
    const first = symbols[bestIndex]!;
    const second = symbols[bestIndex + 1]!;
    const result = table.mergeResult(bestMerge);
    // Merge every occurrence, scanning left to right without overlap ("aaa" → "aa" + "a").
    const merged: number[] = [];
    for (let i = 0; i < symbols.length; ) {
      if (i + 1 < symbols.length && symbols[i] === first && symbols[i + 1] === second) {
        merged.push(result);
        i += 2;
      } else {
        merged.push(symbols[i]!);
        i += 1;
      }
    }
    symbols = merged;
  }
  return symbols;
}

/** A map that forgets its least recently used entry beyond `capacity` entries. */
export class BoundedCache<K, V> {
  readonly #entries = new Map<K, V>();
  readonly #capacity: number;

  constructor(capacity: number) {
    this.#capacity = capacity;
  }

  get size(): number {
    return this.#entries.size;
  }

  get(key: K): V | undefined {
    const value = this.#entries.get(key);
    if (value !== undefined) {
      // Map keeps insertion order: re-inserting marks the entry as most recently used.
      this.#entries.delete(key);
      this.#entries.set(key, value);
    }
    return value;
  }

  set(key: K, value: V): void {
    this.#entries.delete(key);
    this.#entries.set(key, value);
    if (this.#entries.size > this.#capacity) {
      const oldest = this.#entries.keys().next().value as K;
      this.#entries.delete(oldest);
    }
  }
}
