/**
 * A1111's prompt chunking: `TextConditionalModel.tokenize_line` of modules/sd_hijack_clip.py
 * (AUTOMATIC1111/stable-diffusion-webui@82a973c04367123ae98bd9abdf80d9eda9b910e2), ported step for
 * step. A prompt becomes chunks of 75 tokens, each sent to the text encoder as
 * [BOS] + 75 + [EOS] (padded with EOS), every token with the weight of its span:
 *
 * - each parsed span is tokenized on its own (so `(cat)s` is `cat` + `s`);
 * - a BREAK closes the current chunk, even an empty one;
 * - when a token that is not a comma meets a full chunk whose last comma is at most
 *   `commaPaddingBacktrack` tokens back, the tokens after that comma move to the next chunk;
 * - `tokenCount` is what A1111's token counter shows (75 per closed chunk + the last chunk's tokens);
 * - a textual-inversion embedding's name (lib/prompt/embeddings.ts) becomes its vectors' ids, all in
 *   one chunk: when they do not fit in the current chunk, it is closed first.
 */
import type { ClipTokenizer } from "../tokenizer/clip-tokenizer.js";
import { isBreak, parsePromptAttention, type AttentionSpan } from "./attention.js";
import type { Emphasis } from "./emphasis.js";
import type { EmbeddingVocabulary } from "./embeddings.js";

/** Prompt tokens per chunk (CLIP's 77 less the start and end tokens). */
export const CHUNK_LENGTH = 75;
/** Token ids per chunk as the text encoder takes them. */
export const CHUNK_TOKENS = CHUNK_LENGTH + 2;
/** A1111's default `comma_padding_backtrack`. */
export const DEFAULT_COMMA_PADDING_BACKTRACK = 20;
/** Largest `comma_padding_backtrack` A1111's settings accept. */
export const MAX_COMMA_PADDING_BACKTRACK = 74;

/** One chunk as the text encoder takes it: 77 token ids and 77 multipliers (float64, as A1111 holds them). */
export interface PromptChunk {
  tokens: number[];
  multipliers: number[];
  /** The textual-inversion embeddings in the chunk, in order (absent when none). */
  embeddings?: string[];
}

export interface TokenizedPrompt {
  /** `parse_prompt_attention`'s result, or `[[text, 1]]` with emphasis "none". */
  parsed: AttentionSpan[];
  /** At least one. */
  chunks: PromptChunk[];
  /** A1111's token count (75 per closed chunk + the tokens of the last). */
  tokenCount: number;
}

export interface ChunkOptions {
  /** "none" skips the attention parser, as A1111's emphasis "None" does. Defaults to "original". */
  emphasis?: Emphasis;
  /** A1111's `comma_padding_backtrack`, 0 (off) … 74. Defaults to 20. */
  commaPaddingBacktrack?: number;
  /** The option the text came from, for error messages. Defaults to "prompt". */
  option?: string;
  /** Textual-inversion embeddings a prompt word can name. */
  embeddings?: EmbeddingVocabulary;
}

/** The chunk A1111 pads batches with (`empty_chunk`): BOS + 76 × EOS, multipliers 1. */
export function emptyChunk(tokenizer: ClipTokenizer): PromptChunk {
  return {
    tokens: [tokenizer.bosTokenId, ...new Array<number>(CHUNK_LENGTH + 1).fill(tokenizer.eosTokenId)],
    multipliers: new Array<number>(CHUNK_TOKENS).fill(1.0),
  };
}

/**
 * `tokenize_line(text)`: A1111's chunks and token count for one prompt.
 * @throws InvalidOptionError naming `options.option` when a weight is not a number.
 */
export function tokenizePrompt(tokenizer: ClipTokenizer, text: string, options: ChunkOptions = {}): TokenizedPrompt {
  const backtrack = options.commaPaddingBacktrack ?? DEFAULT_COMMA_PADDING_BACKTRACK;
  const parsed: AttentionSpan[] = options.emphasis === "none" ? [[text, 1.0]] : parsePromptAttention(text, options.option);
  const commaToken = tokenizer.tokenId(",</w>");
  const { bosTokenId: idStart, eosTokenId: idEnd } = tokenizer;

  const chunks: PromptChunk[] = [];
  let chunk: PromptChunk = { tokens: [], multipliers: [] };
  let used: string[] = [];
  let tokenCount = 0;
  let lastComma = -1;

  const nextChunk = (isLast = false): void => {
    tokenCount += isLast ? chunk.tokens.length : CHUNK_LENGTH;
    const toAdd = CHUNK_LENGTH - chunk.tokens.length;
    for (let i = 0; i < toAdd; i++) {
      chunk.tokens.push(idEnd);
      chunk.multipliers.push(1.0);
    }
    chunks.push({ tokens: [idStart, ...chunk.tokens, idEnd], multipliers: [1.0, ...chunk.multipliers, 1.0], ...(used.length > 0 ? { embeddings: used } : {}) });
    lastComma = -1;
    chunk = { tokens: [], multipliers: [] };
    used = [];
  };

  for (const span of parsed) {
    if (isBreak(span)) {
      nextChunk();
      continue;
    }
    const [spanText, weight] = span;
    const tokens = tokenizer.encodeSpan(spanText);
    for (let position = 0; position < tokens.length; ) {
      const token = tokens[position]!;
      if (token === commaToken) {
        lastComma = chunk.tokens.length;
      } else if (backtrack !== 0 && chunk.tokens.length === CHUNK_LENGTH && lastComma !== -1 && chunk.tokens.length - lastComma <= backtrack) {
        // The tokens after the last comma move to the next chunk, with their multipliers.
        const breakLocation = lastComma + 1;
        const relocTokens = chunk.tokens.slice(breakLocation);
        const relocMultipliers = chunk.multipliers.slice(breakLocation);
        chunk.tokens = chunk.tokens.slice(0, breakLocation);
        chunk.multipliers = chunk.multipliers.slice(0, breakLocation);
        nextChunk();
        chunk.tokens = relocTokens;
        chunk.multipliers = relocMultipliers;
      }
      if (chunk.tokens.length === CHUNK_LENGTH) nextChunk();
      const embedding = options.embeddings?.at(tokens, position);
      if (!embedding) {
        chunk.tokens.push(token);
        chunk.multipliers.push(weight);
        position++;
        continue;
      }
      if (chunk.tokens.length + embedding.count > CHUNK_LENGTH) nextChunk();
      used.push(embedding.name);
      for (let v = 0; v < embedding.count; v++) {
        chunk.tokens.push(embedding.firstId + v);
        chunk.multipliers.push(weight);
      }
      position += embedding.length;
    }
  }
  if (chunk.tokens.length > 0 || chunks.length === 0) nextChunk(true);
  return { parsed, chunks, tokenCount };
}
