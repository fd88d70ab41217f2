/**
 * A checked CLIP vocabulary as a few flat arrays instead of two 49k-entry Maps: building those
 * Maps from vocab.json and merges.txt cost ~0.3–0.4 s at every start, and this form is read back
 * from its bytes (`serialize`/`deserialize`, kept on disk by vocabulary-cache.ts) in a few ms.
 *
 * Entries are numbered 0…size−1 in id order; byte-pair encoding works on entry numbers (every
 * BPE symbol is a vocabulary token: the byte symbols are checked at load, and each merge result
 * too), and `idOf`/`tokenOf` are binary searches. Arrays are little-endian in the bytes, as on
 * every platform Node.js runs on.
 */
import { crc32 } from "node:zlib";
import { BYTE_ENCODER, END_OF_WORD } from "./bpe.js";

const MAGIC = "SDTRTVOC";
/** The layout of `serialize`; a cache file of another version is not read (vocabulary-cache.ts names files by it). */
export const VOCABULARY_FORMAT_VERSION = 2;
/** magic, version, crc32, key, entries, pairs, text length (UTF-16 units), reserved. */
const HEADER_BYTES = 8 + 4 + 4 + 32 + 4 + 4 + 4 + 4;
/** The byte symbols' entries: 256 bytes, alone and with "</w>". */
const BYTE_ENTRIES = 512;
/** The checksum covers everything after it. */
const CHECKSUMMED_FROM = 16;

/** The flat arrays; see VocabularyTable. */
interface Arrays {
  /** Entry → id, strictly ascending. */
  ids: Int32Array;
  /** Entry → where its token ends in `text` (it starts where the previous one ends). */
  ends: Uint32Array;
  /** Entries in the order of their tokens (JavaScript string order). */
  byToken: Uint32Array;
  /** Merge pairs as entry numbers, sorted by (first, second); rank and merged entry of each. */
  pairFirst: Int32Array;
  pairSecond: Int32Array;
  pairRank: Int32Array;
  pairMerged: Int32Array;
  /** Entry of each byte's stand-in character, then (at 256 + byte) of it with "</w>". */
  byteEntries: Int32Array;
  /** Every token, one after the other. */
  text: string;
}

export class VocabularyTable {
  /** Number of entries. */
  readonly size: number;
  readonly #a: Arrays;

  private constructor(arrays: Arrays) {
    this.#a = arrays;
    this.size = arrays.ids.length;
  }

  /**
   * The table of token → id `encoder` and the merges in rank order. A repeated pair takes its
   * later rank (as `dict(zip(merges, range(...)))` in the reference); a pair whose halves or
   * result are not tokens is left out, as it can never apply. The caller has checked the files.
   */
  static fromEntries(encoder: ReadonlyMap<string, number>, merges: ReadonlyArray<readonly [string, string]>): VocabularyTable {
    const sorted = [...encoder].sort((x, y) => x[1] - y[1]);
    const ids = Int32Array.from(sorted, ([, id]) => id);
    const ends = new Uint32Array(sorted.length);
    const entryOf = new Map<string, number>();
    let end = 0;
    sorted.forEach(([token], entry) => {
      end += token.length;
      ends[entry] = end;
      entryOf.set(token, entry);
    });
    const byToken = Uint32Array.from(sorted.keys()).sort((x, y) => compareStrings(sorted[x]![0], sorted[y]![0]));
    // (first, second) → [rank, merged]; a later line overwrites an earlier one.
    const pairs = new Map<number, [number, number, number, number]>();
    merges.forEach(([first, second], rank) => {
      const a = entryOf.get(first);
      const b = entryOf.get(second);
      const merged = entryOf.get(first + second);
      if (a === undefined || b === undefined || merged === undefined) return;
      pairs.set(a * sorted.length + b, [a, b, rank, merged]);
    });
    const ordered = [...pairs.values()].sort((x, y) => x[0] - y[0] || x[1] - y[1]);
    const byteEntries = new Int32Array(512);
    BYTE_ENCODER.forEach((symbol, byte) => {
      byteEntries[byte] = entryOf.get(symbol) ?? -1;
      byteEntries[256 + byte] = entryOf.get(symbol + END_OF_WORD) ?? -1;
    });
    return new VocabularyTable({
      ids,
      ends,
      byToken,
      pairFirst: Int32Array.from(ordered, (p) => p[0]),
      pairSecond: Int32Array.from(ordered, (p) => p[1]),
      pairRank: Int32Array.from(ordered, (p) => p[2]),
      pairMerged: Int32Array.from(ordered, (p) => p[3]),
      byteEntries,
      text: sorted.map(([token]) => token).join(""),
    });
  }

  /** The id of `token`, or undefined. */
  idOf(token: string): number | undefined {
    const entry = this.#entryOfToken(token);
    return entry < 0 ? undefined : this.#a.ids[entry];
  }

  /** The token of `id`, or undefined. */
  tokenOf(id: number): string | undefined {
    const entry = this.#entryOfId(id);
    return entry < 0 ? undefined : this.tokenAt(entry);
  }

  /** The entry of a byte's stand-in character (with "</w>" when `endOfWord`). */
  byteEntry(byte: number, endOfWord: boolean): number {
    return this.#a.byteEntries[endOfWord ? 256 + byte : byte]!;
  }

  /** The merge of two adjacent entries: its index for `mergeRank`/`mergeResult`, or −1. */
  mergeOf(first: number, second: number): number {
    const { pairFirst, pairSecond } = this.#a;
    let lo = 0;
    let hi = pairFirst.length - 1;
    while (lo <= hi) {
      const mid = (lo + hi) >>> 1;
      const order = pairFirst[mid]! - first || pairSecond[mid]! - second;
      if (order === 0) return mid;
      if (order < 0) lo = mid + 1;
      else hi = mid - 1;
    }
    return -1;
  }

  mergeRank(merge: number): number {
    return this.#a.pairRank[merge]!;
  }

  mergeResult(merge: number): number {
    return this.#a.pairMerged[merge]!;
  }

  /** The id of an entry. */
  idAt(entry: number): number {
    return this.#a.ids[entry]!;
  }

  /** The token of an entry. */
  tokenAt(entry: number): string {
    const { ends, text } = this.#a;
    return text.slice(entry === 0 ? 0 : ends[entry - 1]!, ends[entry]!);
  }

  #entryOfToken(token: string): number {
    const { byToken } = this.#a;
    let lo = 0;
    let hi = byToken.length - 1;
    while (lo <= hi) {
      const mid = (lo + hi) >>> 1;
      const entry = byToken[mid]!;
      const order = compareStrings(this.tokenAt(entry), token);
      if (order === 0) return entry;
      if (order < 0) lo = mid + 1;
      else hi = mid - 1;
    }
    return -1;
  }

  #entryOfId(id: number): number {
    const { ids } = this.#a;
    // Ids are usually 0…size−1, so the entry is the id.
    if (Number.isInteger(id) && id >= 0 && id < ids.length && ids[id] === id) return id;
    let lo = 0;
    let hi = ids.length - 1;
    while (lo <= hi) {
      const mid = (lo + hi) >>> 1;
      if (ids[mid] === id) return mid;
      if (ids[mid]! < id) lo = mid + 1;
      else hi = mid - 1;
    }
    return -1;
  }

  /** The table as bytes, with `key` (32 bytes: what it was built from) recorded in it. */
  serialize(key: Uint8Array): Uint8Array {
    if (key.length !== 32) throw new Error(`internal: a vocabulary table key has 32 bytes, got ${key.length}`);
    const a = this.#a;
    const n = a.ids.length;
    const p = a.pairFirst.length;
    const bytes = new Uint8Array(HEADER_BYTES + 4 * (3 * n + 4 * p + BYTE_ENTRIES) + 2 * a.text.length);
    const view = new DataView(bytes.buffer);
    for (let i = 0; i < MAGIC.length; i++) bytes[i] = MAGIC.charCodeAt(i);
    view.setUint32(8, VOCABULARY_FORMAT_VERSION, true);
    bytes.set(key, 16);
    view.setUint32(48, n, true);
    view.setUint32(52, p, true);
    view.setUint32(56, a.text.length, true);
    let at = HEADER_BYTES;
    for (const array of [a.ids, a.ends, a.byToken, a.pairFirst, a.pairSecond, a.pairRank, a.pairMerged, a.byteEntries]) {
      bytes.set(new Uint8Array(array.buffer, array.byteOffset, array.byteLength), at);
      at += array.byteLength;
    }
    Buffer.from(bytes.buffer, at, 2 * a.text.length).write(a.text, "utf16le");
    view.setUint32(12, crc32(bytes.subarray(CHECKSUMMED_FROM)), true);
    return bytes;
  }

  /**
   * The table in `bytes` when they are one `serialize` wrote for `key`, whole and unchanged
   * (checksum and structure checked); otherwise undefined.
   */
  static deserialize(bytes: Uint8Array, key: Uint8Array): VocabularyTable | undefined {
    if (bytes.length < HEADER_BYTES) return undefined;
    const view = new DataView(bytes.buffer, bytes.byteOffset, bytes.byteLength);
    for (let i = 0; i < MAGIC.length; i++) if (bytes[i] !== MAGIC.charCodeAt(i)) return undefined;
    if (view.getUint32(8, true) !== VOCABULARY_FORMAT_VERSION) return undefined;
    if (Buffer.compare(bytes.subarray(16, 48), key) !== 0) return undefined;
    const n = view.getUint32(48, true);
    const p = view.getUint32(52, true);
    const units = view.getUint32(56, true);
    if (bytes.length !== HEADER_BYTES + 4 * (3 * n + 4 * p + BYTE_ENTRIES) + 2 * units) return undefined;
    if (view.getUint32(12, true) !== crc32(bytes.subarray(CHECKSUMMED_FROM))) return undefined;
    // One aligned copy (a Buffer from readFile may start anywhere in its ArrayBuffer, and a
    // Buffer's slice is a view, not a copy).
    const body = new Uint8Array(bytes.subarray(HEADER_BYTES)).buffer;
    let at = 0;
    const next = <T>(make: (buffer: ArrayBuffer, offset: number, length: number) => T, length: number, unit: number): T => {
      const array = make(body, at, length);
      at += length * unit;
      return array;
    };
    const int32 = (length: number) => next((b, o, l) => new Int32Array(b, o, l), length, 4);
    const uint32 = (length: number) => next((b, o, l) => new Uint32Array(b, o, l), length, 4);
    const ids = int32(n);
    const ends = uint32(n);
    const byToken = uint32(n);
    const pairFirst = int32(p);
    const pairSecond = int32(p);
    const pairRank = int32(p);
    const pairMerged = int32(p);
    const byteEntries = int32(BYTE_ENTRIES);
    const units16 = next((b, o, l) => new Uint16Array(b, o, l), units, 2);
    const arrays: Arrays = { ids, ends, byToken, pairFirst, pairSecond, pairRank, pairMerged, byteEntries, text: stringOfUnits(units16) };
    return wellFormed(arrays) ? new VocabularyTable(arrays) : undefined;
  }
}

/** Whether every index in the arrays is in range, so no lookup can read outside them. */
function wellFormed(a: Arrays): boolean {
  const { ids, ends, byToken, pairFirst, pairSecond, pairMerged, byteEntries } = a;
  const n = ids.length;
  // Every byte is a symbol, as the files were checked for (a table without them is not one of ours).
  for (let i = 0; i < BYTE_ENTRIES; i++) if (byteEntries[i]! < 0 || byteEntries[i]! >= n) return false;
  if (n === 0 || ids[0]! < 0 || ends[n - 1] !== a.text.length) return false;
  for (let i = 1; i < n; i++) {
    if (ids[i]! <= ids[i - 1]! || ends[i]! < ends[i - 1]!) return false;
  }
  const seen = new Uint8Array(n);
  for (let i = 0; i < n; i++) {
    const entry = byToken[i]!;
    if (entry >= n || seen[entry] === 1) return false;
    seen[entry] = 1;
  }
  for (let i = 0; i < pairFirst.length; i++) {
    const first = pairFirst[i]!;
    const second = pairSecond[i]!;
    const merged = pairMerged[i]!;
    if (first < 0 || first >= n || second < 0 || second >= n || merged < 0 || merged >= n) return false;
    if (i > 0 && (first - pairFirst[i - 1]! || second - pairSecond[i - 1]!) <= 0) return false;
  }
  return true;
}

/** JavaScript's own string order (UTF-16 code units), as a comparator. */
function compareStrings(x: string, y: string): number {
  return x < y ? -1 : x > y ? 1 : 0;
}

/** The string of UTF-16 code units, lone surrogates included (a TextDecoder would replace them; Node's utf16le keeps them). */
function stringOfUnits(units: Uint16Array): string {
  return Buffer.from(units.buffer, units.byteOffset, units.byteLength).toString("utf16le");
}
