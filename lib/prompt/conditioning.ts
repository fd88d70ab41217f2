/**
 * The text-encoder input of a list of prompts (one per image), built the way A1111 builds it
 * (syntax "a1111") or the way diffusers does (syntax "plain"):
 *
 * - "a1111": each distinct prompt's schedule (`promptSchedule`: prompt editing `[a:b:when]` and
 *   alternation `[a|b]`; one text without them), each text through `tokenizePrompt` (A1111's parser
 *   and chunker); a text with fewer chunks than the longest of its list is padded with A1111's empty
 *   chunk (BOS + 76 EOS, weights 1), as A1111's `forward` pads a batch of texts.
 * - "plain": diffusers' `tokenizer(padding="max_length", truncation=True)`: one 77-token chunk,
 *   the text literal, tokens past 75 dropped (reported as a warning), weights 1.
 *
 * The result holds each distinct prompt once; `rowOf` maps the images to them. The backends
 * encode each chunk separately, apply the emphasis per chunk and join the chunks along the
 * sequence: the embeddings of a row are [77 · chunks, hidden].
 */
import { InvalidOptionError } from "../errors.js";
import type { ClipTokenizer } from "../tokenizer/clip-tokenizer.js";
import { CHUNK_TOKENS, emptyChunk, tokenizePrompt, type PromptChunk } from "./chunks.js";
import { promptSchedule } from "./schedule.js";
import type { Emphasis } from "./emphasis.js";
import type { EmbeddingVocabulary } from "./embeddings.js";

/** How prompt text is read: A1111's syntax, or diffusers' literal, truncating reading. */
export type PromptSyntax = "a1111" | "plain";
export const PROMPT_SYNTAXES: readonly PromptSyntax[] = ["a1111", "plain"];

export interface PromptReading {
  syntax: PromptSyntax;
  /** Only with syntax "a1111". */
  emphasis: Emphasis;
  /** A1111's `comma_padding_backtrack` (syntax "a1111"). */
  commaPaddingBacktrack: number;
}

/** The prompts of one side of classifier-free guidance (cond or uncond), as the text encoder takes them. */
export interface PromptBatch {
  /** Chunks per prompt: every prompt has this many, so each row's embeddings are [77 · chunks, hidden]. */
  chunks: number;
  /** Texts to encode: each distinct prompt once, or, with prompt editing, each text of its schedule. */
  prompts: number;
  /** Token ids [prompts, chunks, 77]. */
  ids: Int32Array;
  /** Per-token weights [prompts, chunks, 77], float32 as A1111's `torch.asarray(multipliers)` makes them. */
  multipliers: Float32Array;
  /** For each image, its text at evaluation 0. */
  rowOf: Int32Array;
  /**
   * For each text, its emphasis group: the texts of one prompt's schedule, which A1111 encodes in
   * one call, so emphasis "original" takes its two means over all of them, chunk by chunk.
   */
  groupOf: Int32Array;
  /**
   * Prompt editing and alternation (A1111's schedules), when some prompt changes: for each image,
   * its [endAtStep, text] pairs; evaluation j (0-based) uses the first pair with j ≤ endAtStep, else
   * the first (`reconstruct_cond_batch`).
   */
  schedules?: Array<Array<[endAtStep: number, text: number]>>;
}

export interface BuiltPrompts {
  batch: PromptBatch;
  /** A1111's token count of the longest prompt (what its counter shows). */
  tokenCount: number;
  /** Non-fatal notes (a plain prompt truncated). */
  warnings: string[];
  /**
   * The textual-inversion embeddings each distinct prompt uses, one list per prompt in order, each
   * as A1111's `forward` collects them for that prompt's one encoder call (chunk by chunk, every
   * text of its schedule, first use only): what its `TI hashes` are made of.
   */
  embeddingsUsed: string[][];
}

/**
 * The text-encoder input for one prompt per image.
 * @param option the option the texts came from ("prompt", "negativePrompt"), for messages.
 * @param steps the sampling steps, which prompt editing's `when` refers to. Defaults to 1.
 * @param hiresSteps hires fix's second pass: its steps, the schedules then being that pass's (`steps` the first pass's).
 * @throws InvalidOptionError naming `option` when a weight is not a number (A1111 fails there too),
 *   or (syntax "a1111") the prompt has an extra-network tag such as `<lora:name:1>`.
 */
export function buildPromptBatch(
  tokenizer: ClipTokenizer,
  texts: readonly string[],
  reading: PromptReading,
  option: string,
  steps = 1,
  embeddings?: EmbeddingVocabulary,
  hiresSteps?: number,
): BuiltPrompts {
  const distinct = new Map<string, number>();
  const promptOf = new Int32Array(texts.length);
  texts.forEach((text, row) => {
    let index = distinct.get(text);
    if (index === undefined) {
      index = distinct.size;
      distinct.set(text, index);
    }
    promptOf[row] = index;
  });
  const warnings: string[] = [];
  let tokenCount = 0;
  const perText: PromptChunk[][] = [];
  const groupOf: number[] = [];
  // Per distinct prompt: its [endAtStep, text index] schedule.
  const schedulesOf: Array<Array<[number, number]>> = [];
  const embeddingsUsed: string[][] = [];
  for (const [text, index] of distinct) {
    const name = texts.length > 1 ? `${option}[${promptOf.indexOf(index)}]` : option;
    if (reading.syntax === "plain") {
      const plain = plainPrompt(tokenizer, text);
      if (plain.droppedTokens > 0) warnings.push(`${name} is longer than CLIP's 77 tokens; the last ${plain.droppedTokens} tokens are ignored (promptSyntax "plain")`);
      tokenCount = Math.max(tokenCount, plain.tokenCount);
      schedulesOf.push([[hiresSteps ?? steps, perText.length]]);
      groupOf.push(index);
      perText.push([plain.chunk]);
      embeddingsUsed.push([]);
      continue;
    }
    refuseExtraNetworks(text, name);
    const schedule: Array<[number, number]> = [];
    const first = perText.length;
    for (const [endAtStep, scheduled] of promptSchedule(text, steps, hiresSteps)) {
      const tokenized = tokenizePrompt(tokenizer, scheduled, {
        emphasis: reading.emphasis,
        commaPaddingBacktrack: reading.commaPaddingBacktrack,
        option: name,
        ...(embeddings ? { embeddings } : {}),
      });
      tokenCount = Math.max(tokenCount, tokenized.tokenCount);
      schedule.push([endAtStep, perText.length]);
      groupOf.push(index);
      perText.push(tokenized.chunks);
    }
    schedulesOf.push(schedule);
    embeddingsUsed.push(usedInOneCall(perText.slice(first)));
  }
  const rowSchedules = Array.from(promptOf, (p) => schedulesOf[p]!);
  const rowOf = Int32Array.from(rowSchedules, (schedule) => schedule[0]![1]);
  const edited = rowSchedules.some((schedule) => schedule.length > 1);
  const batch = packPrompts(tokenizer, perText, rowOf, Int32Array.from(groupOf), edited ? rowSchedules : undefined);
  return { batch, tokenCount, warnings, embeddingsUsed };
}

/** The embeddings of texts encoded in one call, in A1111's order: chunk by chunk, text by text, each name once. */
function usedInOneCall(texts: PromptChunk[][]): string[] {
  const used = new Set<string>();
  const chunks = Math.max(...texts.map((t) => t.length));
  for (let c = 0; c < chunks; c++) for (const text of texts) for (const name of text[c]?.embeddings ?? []) used.add(name);
  return [...used];
}

/**
 * A prompt read as diffusers reads it (syntax "plain"): one chunk of the text's first 75 tokens
 * between start and end tokens, padded, weights 1; the tokens it drops.
 */
export function plainPrompt(tokenizer: ClipTokenizer, text: string): { chunk: PromptChunk; tokenCount: number; droppedTokens: number } {
  const tokens = tokenizer.tokenize(text);
  return {
    chunk: { tokens: tokens.inputIds77, multipliers: new Array<number>(CHUNK_TOKENS).fill(1) },
    tokenCount: Math.min(tokens.tokens.length, CHUNK_TOKENS - 2),
    droppedTokens: tokens.droppedTokens,
  };
}

// A1111's `re_extra_net` (modules/extra_networks.py): `<kind:arguments>`, `\w` being Unicode.
const EXTRA_NETWORK_TAG = /<([\p{L}\p{N}_]+):([^>]+)>/u;

/**
 * A1111 takes every `<kind:…>` tag out of the prompt and applies the network it names (LoRA,
 * hypernetwork). The pipeline takes `<lora:…>` tags out of the prompts first (extra-networks.ts);
 * any tag still here is one sd-trt cannot apply (a hypernetwork, a LoRA in a negative prompt), and
 * dropping it would silently give another picture, so the prompt is refused, naming the tag.
 */
function refuseExtraNetworks(text: string, option: string): void {
  const tag = EXTRA_NETWORK_TAG.exec(text);
  if (tag) {
    throw new InvalidOptionError(
      option,
      `${option} has the extra-network tag ${tag[0]}: A1111 would apply the ${tag[1]} network it names, which sd-trt cannot do yet; remove the tag (or use promptSyntax "plain" to read it as text)`,
    );
  }
}

/**
 * The same prompts with `chunks` chunks each, the missing ones A1111's empty chunk: what
 * `pad_cond_uncond` does to the shorter side (A1111 pads with the empty prompt's conditioning,
 * which is the encoding of exactly that chunk).
 */
export function padPromptBatch(tokenizer: ClipTokenizer, batch: PromptBatch, chunks: number): PromptBatch {
  if (chunks <= batch.chunks) return batch;
  const perPrompt: PromptChunk[][] = [];
  for (let p = 0; p < batch.prompts; p++) {
    const own: PromptChunk[] = [];
    for (let c = 0; c < batch.chunks; c++) {
      const at = (p * batch.chunks + c) * CHUNK_TOKENS;
      own.push({ tokens: [...batch.ids.subarray(at, at + CHUNK_TOKENS)], multipliers: [...batch.multipliers.subarray(at, at + CHUNK_TOKENS)] });
    }
    perPrompt.push(own);
  }
  return packPrompts(tokenizer, perPrompt, batch.rowOf, batch.groupOf, batch.schedules, chunks);
}

/**
 * A1111's `process_tokens` (sd_hijack_clip.py): "SD1 uses the same token for padding and end of
 * text, while SD2 uses different ones" — with a pad token other than EOS (OpenCLIP's "!", SDXL's
 * tokenizer_2), every id after a chunk's first EOS becomes the pad id. diffusers' reading already
 * pads that way (`padding="max_length"`), so this changes only A1111-syntax chunks.
 */
function padAfterEnd(tokenizer: ClipTokenizer, chunk: Int32Array): void {
  if (tokenizer.padTokenId === tokenizer.eosTokenId) return;
  const end = chunk.indexOf(tokenizer.eosTokenId);
  if (end >= 0) chunk.fill(tokenizer.padTokenId, end + 1);
}

function packPrompts(
  tokenizer: ClipTokenizer,
  perPrompt: PromptChunk[][],
  rowOf: Int32Array,
  groupOf: Int32Array,
  schedules: PromptBatch["schedules"],
  atLeast = 1,
): PromptBatch {
  const chunks = Math.max(atLeast, ...perPrompt.map((c) => c.length));
  const ids = new Int32Array(perPrompt.length * chunks * CHUNK_TOKENS);
  const multipliers = new Float32Array(ids.length);
  const empty = emptyChunk(tokenizer);
  perPrompt.forEach((own, p) => {
    for (let c = 0; c < chunks; c++) {
      const chunk = own[c] ?? empty;
      const at = (p * chunks + c) * CHUNK_TOKENS;
      ids.set(chunk.tokens, at);
      multipliers.set(chunk.multipliers, at);
      padAfterEnd(tokenizer, ids.subarray(at, at + CHUNK_TOKENS));
    }
  });
  const batch: PromptBatch = { chunks, prompts: perPrompt.length, ids, multipliers, rowOf, groupOf };
  if (schedules) batch.schedules = schedules;
  return batch;
}
