/**
 * The CLIP tokenizer of Stable Diffusion 1.x text encoders, behaving like OpenAI's reference
 * (clip/simple_tokenizer.py): text cleaning (ftfy, html.unescape, whitespace, lower case), the
 * CLIP word pattern, and byte-level BPE with "</w>" end-of-word tokens. The SD 1.x vocabulary
 * (openai/clip-vit-large-patch14) ships in the package's data/clip-tokenizer/.
 */
import { existsSync } from "node:fs";
import { access, readFile } from "node:fs/promises";
import { join } from "node:path";
import { fileURLToPath } from "node:url";
import { InvalidOptionError, ModelFileError } from "../errors.js";
import { integerInRange, invalidOption, stringValue } from "../validate.js";
import { BYTE_DECODER, BoundedCache, bytePairEncode } from "./bpe.js";
import { normalizeClipText, normalizeTransformersClipText } from "./normalize.js";
import { splitWords } from "./pretokenize.js";
import { BOS_TOKEN, EOS_TOKEN, parseJsonFile, readVocabulary, type ClipVocabulary } from "./vocabulary.js";
import { defaultVocabularyCacheDir } from "./vocabulary-cache.js";

/** The sequence length of SD 1.x/2.x text encoders (CLIP's context length). */
export const CLIP_MAX_LENGTH = 77;

/** Longest `maxLength` accepted; far above any CLIP context, low enough to catch mistakes. */
const MAX_MODEL_LENGTH = 1 << 20;

/** Words remembered with their tokens; prompts reuse a small vocabulary of words. */
const WORD_CACHE_SIZE = 10_000;

/**
 * The folder with the default (SD 1.x, openai/clip-vit-large-patch14) vocabulary, from lib/tokenizer/
 * or dist/tokenizer/: `data/clip-tokenizer/` in a checkout. The published package ships the
 * vocabulary once, in the bundled tiny model's `models/tiny-sd/tokenizer/` (the same bytes: a unit
 * test compares the two copies), so there `data/clip-tokenizer/` has only its LICENSE and README.
 */
export const DEFAULT_VOCABULARY_DIR = defaultVocabularyDir();

function defaultVocabularyDir(): string {
  const data = fileURLToPath(new URL("../../data/clip-tokenizer/", import.meta.url));
  if (existsSync(join(data, "vocab.json"))) return data;
  return fileURLToPath(new URL("../../models/tiny-sd/tokenizer/", import.meta.url));
}

/** Options for loading a tokenizer. */
export interface ClipTokenizerOptions {
  /**
   * The token that pads `encodeForModel` output to its length; must be in the vocabulary.
   * Defaults to the `pad_token` of the folder's `special_tokens_map.json` or
   * `tokenizer_config.json` when loaded with `fromDirectory`, otherwise `"<|endoftext|>"` (the
   * pad token of SD 1.x's tokenizer; SD 2.x's folders name `"!"`).
   */
  padToken?: string;
  /**
   * Where the built vocabulary is kept for the next process (it is read back in milliseconds
   * instead of ~0.3 s of parsing and checking vocab.json and merges.txt); null: not kept.
   * Defaults to `$SDTRT_TOKENIZER_CACHE_DIR`, else `~/.cache/sd-trt/tokenizer`.
   */
  cacheDir?: string | null;
}

/** Everything the tokenizer made of one text. */
export interface ClipTokenization {
  /** Start-of-text id, the text's token ids, end-of-text id; not truncated, not padded. */
  ids: number[];
  /** The BPE tokens (vocabulary keys) of the text, without start and end tokens. */
  tokens: string[];
  /** The cleaned, lower-cased text that was split into words. */
  normalized: string;
  /** What SD feeds the text encoder: `ids` cut to 77 (keeping the end token last) and padded to 77. */
  inputIds77: number[];
  /** Whether `ids` is longer than 77, so SD ignores the end of the prompt. */
  truncated: boolean;
  /** How many of the text's tokens SD ignores (0 unless truncated). */
  droppedTokens: number;
}

interface EncodedWord {
  readonly tokens: readonly string[];
  readonly ids: readonly number[];
}

let defaultTokenizer: Promise<ClipTokenizer> | undefined;

export class ClipTokenizer {
  readonly #vocabulary: ClipVocabulary;
  readonly #cache = new BoundedCache<string, EncodedWord>(WORD_CACHE_SIZE);
  /** Id of "<|startoftext|>". */
  readonly bosTokenId: number;
  /** Id of "<|endoftext|>". */
  readonly eosTokenId: number;
  /** Id that pads `encodeForModel` output. */
  readonly padTokenId: number;

  private constructor(vocabulary: ClipVocabulary, padToken: string) {
    this.#vocabulary = vocabulary;
    this.bosTokenId = vocabulary.idOf(BOS_TOKEN)!;
    this.eosTokenId = vocabulary.idOf(EOS_TOKEN)!;
    this.padTokenId = vocabulary.idOf(padToken)!;
  }

  /** The SD 1.x tokenizer (openai/clip-vit-large-patch14), loaded once and shared. */
  static default(): Promise<ClipTokenizer> {
    if (defaultTokenizer === undefined) {
      defaultTokenizer = ClipTokenizer.fromDirectory(DEFAULT_VOCABULARY_DIR).catch((error: unknown) => {
        defaultTokenizer = undefined; // let a later call try again
        throw error;
      });
    }
    return defaultTokenizer;
  }

  /**
   * Loads `vocab.json` and `merges.txt`. Rejects with ModelFileError when a file is missing,
   * not JSON / not a merges file, or the two do not belong together.
   */
  static async fromFiles(vocabPath: string, mergesPath: string, options: ClipTokenizerOptions = {}): Promise<ClipTokenizer> {
    stringValue("vocabPath", vocabPath);
    stringValue("mergesPath", mergesPath);
    const padToken = checkPadTokenOption(options);
    const vocabulary = await readVocabulary(vocabPath, mergesPath, cacheOptions(options));
    return ClipTokenizer.#create(vocabulary, vocabPath, padToken);
  }

  /**
   * Loads a model's `tokenizer/` folder: `vocab.json`, `merges.txt`, and the pad token from
   * `special_tokens_map.json` or `tokenizer_config.json` when present.
   */
  static async fromDirectory(dir: string, options: ClipTokenizerOptions = {}): Promise<ClipTokenizer> {
    stringValue("dir", dir);
    const padToken = checkPadTokenOption(options);
    try {
      await access(dir);
    } catch (error) {
      throw new ModelFileError(dir, `tokenizer folder ${dir} does not exist or cannot be read`, { cause: error });
    }
    const vocabPath = join(dir, "vocab.json");
    const vocabulary = await readVocabulary(vocabPath, join(dir, "merges.txt"), cacheOptions(options));
    return ClipTokenizer.#create(vocabulary, vocabPath, padToken ?? (await readPadToken(dir)));
  }

  static #create(vocabulary: ClipVocabulary, vocabPath: string, padToken?: PadToken): ClipTokenizer {
    if (padToken !== undefined && vocabulary.idOf(padToken.token) === undefined) {
      if (padToken.file === undefined) throw invalidOption("padToken", `a token of ${vocabPath}`, padToken.token);
      throw new ModelFileError(
        padToken.file,
        `the pad token ${JSON.stringify(padToken.token)} named in ${padToken.file} is not in ${vocabPath}`,
      );
    }
    return new ClipTokenizer(vocabulary, padToken?.token ?? EOS_TOKEN);
  }

  /** Number of entries in the vocabulary (49408 for SD 1.x). */
  get vocabSize(): number {
    return this.#vocabulary.size;
  }

  /** The cleaned, lower-cased text that CLIP splits into words. */
  normalize(text: string): string {
    return normalizeClipText(stringValue("text", text));
  }

  /** Start-of-text id, the token ids of `text`, end-of-text id; not truncated, not padded. */
  encode(text: string): number[] {
    const { ids } = this.#encodeNormalized(this.normalize(text));
    return [this.bosTokenId, ...ids, this.eosTokenId];
  }

  /**
   * The token ids of `text` without start and end tokens, as transformers' `CLIPTokenizer` gives
   * them for `tokenizer(text, add_special_tokens=False)`: A1111 tokenizes each span of a parsed
   * prompt this way. The cleaning is transformers' (ftfy, whitespace, lower case; unlike openai/CLIP
   * no `html.unescape`, so "&amp;" stays as written); words and BPE are the same.
   */
  encodeSpan(text: string): number[] {
    return [...this.#encodeNormalized(normalizeTransformersClipText(stringValue("text", text))).ids];
  }

  /** The id of a vocabulary entry (`",</w>"`), or undefined. */
  tokenId(token: string): number | undefined {
    return this.#vocabulary.idOf(token);
  }

  /**
   * The text encoder's input for `text`, as diffusers prepares it for SD (`padding="max_length"`,
   * `truncation=True`): ids longer than `maxLength` keep their first `maxLength − 1` entries and
   * end with the end-of-text id; shorter ones are padded with the pad id.
   * @param maxLength the model's sequence length, an integer from 2. Defaults to 77.
   */
  encodeForModel(text: string, maxLength: number = CLIP_MAX_LENGTH): Int32Array {
    integerInRange("maxLength", maxLength, 2, MAX_MODEL_LENGTH);
    return Int32Array.from(this.#toModelInput(this.encode(text), maxLength));
  }

  /**
   * `encodeForModel` for several texts, row after row in one [texts.length, maxLength] array
   * (the layout the text encoder takes for a batch).
   */
  encodeBatchForModel(texts: readonly string[], maxLength: number = CLIP_MAX_LENGTH): Int32Array {
    if (!Array.isArray(texts)) throw invalidOption("texts", "an array of strings", texts);
    integerInRange("maxLength", maxLength, 2, MAX_MODEL_LENGTH);
    const out = new Int32Array(texts.length * maxLength);
    texts.forEach((text, row) => {
      if (typeof text !== "string") throw invalidOption(`texts[${row}]`, "a string", text);
      out.set(this.#toModelInput(this.encode(text), maxLength), row * maxLength);
    });
    return out;
  }

  /** Ids, tokens, cleaned text and SD's 77-token input for `text`, for inspection. */
  tokenize(text: string): ClipTokenization {
    const normalized = this.normalize(text);
    const { tokens, ids: body } = this.#encodeNormalized(normalized);
    const ids = [this.bosTokenId, ...body, this.eosTokenId];
    return {
      ids,
      tokens: [...tokens],
      normalized,
      inputIds77: this.#toModelInput(ids, CLIP_MAX_LENGTH),
      truncated: ids.length > CLIP_MAX_LENGTH,
      droppedTokens: Math.max(0, ids.length - CLIP_MAX_LENGTH),
    };
  }

  /**
   * Text for token ids, as the reference `decode` does: tokens joined, bytes decoded as UTF-8
   * (invalid sequences → U+FFFD), each "</w>" → " ". Start and end tokens stay in the text.
   */
  decode(ids: readonly number[]): string {
    if (!Array.isArray(ids)) throw invalidOption("ids", "an array of token ids", ids);
    const bytes: number[] = [];
    const utf8 = new TextEncoder();
    ids.forEach((id, index) => {
      const token = typeof id === "number" ? this.#vocabulary.tokenOf(id) : undefined;
      if (token === undefined) {
        throw new InvalidOptionError(
          `ids[${index}]`,
          `ids[${index}] must be a token id of this vocabulary, got ${JSON.stringify(id)}`,
        );
      }
      for (const ch of token) {
        const byte = BYTE_DECODER.get(ch);
        if (byte !== undefined) bytes.push(byte);
        else bytes.push(...utf8.encode(ch)); // a token outside the byte-level alphabet: keep it as written
      }
    });
    return new TextDecoder("utf-8").decode(Uint8Array.from(bytes)).replaceAll("</w>", " ");
  }

  #encodeNormalized(normalized: string): EncodedWord {
    const tokens: string[] = [];
    const ids: number[] = [];
    for (const word of splitWords(normalized)) {
      const encoded = this.#encodeWord(word);
      tokens.push(...encoded.tokens);
      ids.push(...encoded.ids);
    }
    return { tokens, ids };
  }

  #encodeWord(word: string): EncodedWord {
    const cached = this.#cache.get(word);
    if (cached !== undefined) return cached;
    const vocabulary = this.#vocabulary;
    // The special tokens written out in a prompt are the special tokens, not BPE'd text.
    const special = word === BOS_TOKEN || word === EOS_TOKEN;
    const entries = special ? [] : bytePairEncode(word, vocabulary);
    const encoded = special
      ? { tokens: [word], ids: [vocabulary.idOf(word)!] }
      : { tokens: entries.map((entry) => vocabulary.tokenAt(entry)), ids: entries.map((entry) => vocabulary.idAt(entry)) };
    this.#cache.set(word, encoded);
    return encoded;
  }

  #toModelInput(ids: readonly number[], maxLength: number): number[] {
    const input = ids.length > maxLength ? [...ids.slice(0, maxLength - 1), this.eosTokenId] : [...ids];
    while (input.length < maxLength) input.push(this.padTokenId);
    return input;
  }
}

/** A pad token and the file that named it (undefined: the caller's option). */
interface PadToken {
  token: string;
  file?: string;
}

function cacheOptions(options: ClipTokenizerOptions): { cacheDir: string | null } {
  const { cacheDir } = options;
  if (cacheDir === undefined) return { cacheDir: defaultVocabularyCacheDir() };
  return { cacheDir: cacheDir === null ? null : stringValue("cacheDir", cacheDir) };
}

function checkPadTokenOption(options: ClipTokenizerOptions): PadToken | undefined {
  if (options === null || typeof options !== "object") throw invalidOption("options", "an object", options);
  return options.padToken === undefined ? undefined : { token: stringValue("padToken", options.padToken) };
}

/** The pad token a Hugging Face tokenizer folder names, if any. */
async function readPadToken(dir: string): Promise<PadToken | undefined> {
  for (const name of ["special_tokens_map.json", "tokenizer_config.json"]) {
    const file = join(dir, name);
    let text: string;
    try {
      text = await readFile(file, "utf8");
    } catch (error) {
      if ((error as NodeJS.ErrnoException).code === "ENOENT") continue;
      throw new ModelFileError(file, `${file} cannot be read (${(error as Error).message})`, { cause: error });
    }
    const parsed = parseJsonFile(text, file);
    if (parsed === null || typeof parsed !== "object" || Array.isArray(parsed)) {
      throw new ModelFileError(file, `${file} must be a JSON object`);
    }
    const pad = (parsed as Record<string, unknown>).pad_token;
    if (pad === undefined || pad === null) continue;
    // Either a plain string or a serialized AddedToken {"content": "...", ...}.
    const content = typeof pad === "object" ? (pad as Record<string, unknown>).content : pad;
    if (typeof content !== "string") {
      throw new ModelFileError(file, `${file}: pad_token must be a string or {"content": string}, got ${JSON.stringify(pad)}`);
    }
    return { token: content, file };
  }
  return undefined;
}
