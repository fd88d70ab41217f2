/** The CLIP tokenizer: public surface of lib/tokenizer/. */
export {
  CLIP_MAX_LENGTH,
  ClipTokenizer,
  DEFAULT_VOCABULARY_DIR,
  type ClipTokenization,
  type ClipTokenizerOptions,
} from "./clip-tokenizer.js";
export { normalizeClipText } from "./normalize.js";
export { fixText } from "./ftfy/fix-text.js";
export { htmlUnescape } from "./html-unescape.js";
