/** A1111's prompt handling as pure functions: public surface of lib/prompt/. */
export { parsePromptAttention, isBreak, type AttentionSpan } from "./attention.js";
export {
  tokenizePrompt,
  emptyChunk,
  CHUNK_LENGTH,
  CHUNK_TOKENS,
  DEFAULT_COMMA_PADDING_BACKTRACK,
  MAX_COMMA_PADDING_BACKTRACK,
  type ChunkOptions,
  type PromptChunk,
  type TokenizedPrompt,
} from "./chunks.js";
export { applyEmphasis, emphasisScales, EMPHASIS_MODES, A1111_EMPHASIS_NAMES, type Emphasis } from "./emphasis.js";
export { buildPromptBatch, padPromptBatch, plainPrompt, PROMPT_SYNTAXES, type BuiltPrompts, type PromptBatch, type PromptReading, type PromptSyntax } from "./conditioning.js";
export { promptSchedule, scheduleIndexAt, type ScheduleEntry } from "./schedule.js";
export { EmbeddingVocabulary, type EmbeddingMatch, type EmbeddingWord } from "./embeddings.js";
