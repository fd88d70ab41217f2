/**
 * Which prompt words are textual-inversion embeddings, found the way A1111 finds them
 * (`EmbeddingDatabase.register_embedding_by_name` and `find_embedding_at_position`,
 * modules/textual_inversion/textual_inversion.py at 82a973c): each embedding's name is tokenized
 * like a prompt span; at each position of a span's tokens the embeddings whose token ids start
 * there are tried, longest first, and the first whose ids all match takes those tokens.
 *
 * In the chunks an embedding's vectors appear as ids from the tokenizer's vocabulary size on:
 * embedding e's vector v is `vocabSize + firstRow(e) + v`, row `firstRow(e) + v` of the extra
 * vectors the text encoder's edited graph takes (lib/onnx/text-encoder-edit.ts). A1111 puts 0
 * there and swaps the vectors in after the lookup; the encoder sees the same thing.
 */
import { InvalidArgumentError } from "../errors.js";
import type { ClipTokenizer } from "../tokenizer/clip-tokenizer.js";

/** What the prompt side needs of an embedding. */
export interface EmbeddingWord {
  name: string;
  /** Number of vectors. */
  count: number;
}

export interface EmbeddingMatch {
  name: string;
  count: number;
  /** Prompt tokens the name took. */
  length: number;
  /** The id of its first vector (vocabSize + its first row). */
  firstId: number;
}

interface Entry extends EmbeddingMatch {
  ids: number[];
}

export class EmbeddingVocabulary {
  /** Rows of extra vectors, all embeddings together, in the order given. */
  readonly rows: number;
  readonly #byFirstId = new Map<number, Entry[]>();

  /**
   * @param embeddings in the order of their rows in the extra vectors.
   * @throws InvalidArgumentError when two names read as the same tokens (a word could mean either).
   */
  constructor(tokenizer: ClipTokenizer, embeddings: readonly EmbeddingWord[]) {
    let row = 0;
    const seen = new Map<string, string>();
    for (const { name, count } of embeddings) {
      const ids = tokenizer.encodeSpan(name);
      if (ids.length === 0) throw new InvalidArgumentError(`the embedding name "${name}" has no tokens; rename its file`);
      const key = ids.join(",");
      const other = seen.get(key);
      if (other !== undefined) throw new InvalidArgumentError(`the embeddings "${other}" and "${name}" read as the same prompt tokens; rename one of their files`);
      seen.set(key, name);
      const entry: Entry = { name, count, length: ids.length, firstId: tokenizer.vocabSize + row, ids };
      row += count;
      const list = this.#byFirstId.get(ids[0]!) ?? [];
      list.push(entry);
      // Longest first (A1111 sorts by length, reversed; equal token lists are refused above).
      list.sort((a, b) => b.ids.length - a.ids.length);
      this.#byFirstId.set(ids[0]!, list);
    }
    this.rows = row;
  }

  /** `find_embedding_at_position(tokens, offset)`: the embedding whose name's tokens start at `position`, if any. */
  at(tokens: readonly number[], position: number): EmbeddingMatch | undefined {
    const candidates = this.#byFirstId.get(tokens[position]!);
    if (!candidates) return undefined;
    for (const { ids, ...match } of candidates) {
      if (ids.every((id, i) => tokens[position + i] === id)) return match;
    }
    return undefined;
  }
}
