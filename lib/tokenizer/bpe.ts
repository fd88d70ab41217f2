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

/** A word's UTF-8 bytes as stand-in characters. */
export function toByteLevel(word: string): string {
  let out = "";
  for (const byte of utf8.encode(word)) out += BYTE_ENCODER[byte];
  return out;
}

/** Key of a merge pair in the rank table; stand-in characters never include a space. */
export function pairKey(first: string, second: string): string {
  return first + " " + second;
}

/** Byte-pair encodes one byte-level word into vocabulary tokens (simple_tokenizer.py `bpe`). */
export function bytePairEncode(byteLevelWord: string, ranks: ReadonlyMap<string, number>): string[] {
  let symbols = Array.from(byteLevelWord);
  symbols[symbols.length - 1] += END_OF_WORD;
  while (symbols.length > 1) {
    let bestRank = Infinity;
    let bestIndex = -1;
    for (let i = 0; i + 1 < symbols.length; i++) {
      const rank = ranks.get(pairKey(symbols[i]!, symbols[i + 1]!));
      if (rank !== undefined && rank < bestRank) {
        bestRank = rank;
        bestIndex = i;
      }
    }
    if (bestIndex < 0) break;
    const first = symbols[bestIndex]!;
    const second = symbols[bestIndex + 1]!;
    // Merge every occurrence, scanning left to right without overlap ("aaa" → "aa" + "a").
    const merged: string[] = [];
    for (let i = 0; i < symbols.length; ) {
      if (i + 1 < symbols.length && symbols[i] === first && symbols[i + 1] === second) {
        merged.push(first + second);
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
