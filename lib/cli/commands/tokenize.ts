/**
 * `sd-trt tokenize [--json] [--syntax a1111|plain] [--vocab DIR] [--model DIR --embeddings] <prompt words…>`:
 * shows how a prompt reaches the text encoder.
 *
 * - `--syntax a1111` (the default): A1111's reading — the parsed spans with their weights, the
 *   77-token chunks with each token's weight, and A1111's token count. `--json` prints
 *   `{parsed, chunks: [{tokens, multipliers}], tokenCount}`, equal to A1111's own values.
 * - `--syntax plain`: diffusers' reading — token count, each token with its id, and whether SD
 *   truncates it (77 tokens, start and end included), naming the words it would drop. `--json`
 *   adds `{ids, input_ids_77, tokens, truncated}` to the fields above.
 * - `--model DIR --embeddings`: also the conditioning the UNet gets (`cond`: shape [77·chunks,
 *   hidden] and values), computed with the model's text encoder on the CPU.
 */
import { access } from "node:fs/promises";
import { join } from "node:path";
import type { ArgumentsCamelCase, Argv, CommandModule } from "yargs";
import { InvalidOptionError } from "../../errors.js";
import { integerInRange } from "../../validate.js";
import { CLIP_MAX_LENGTH, ClipTokenizer, type ClipTokenization } from "../../tokenizer/index.js";
import {
  CHUNK_TOKENS,
  DEFAULT_COMMA_PADDING_BACKTRACK,
  EMPHASIS_MODES,
  MAX_COMMA_PADDING_BACKTRACK,
  PROMPT_SYNTAXES,
  plainPrompt,
  tokenizePrompt,
  type AttentionSpan,
  type Emphasis,
  type PromptChunk,
  type PromptSyntax,
} from "../../prompt/index.js";
import { Pipeline } from "../../pipeline/pipeline.js";

interface TokenizeArgs {
  prompt?: string[];
  /** Words after "--" (kept as written: positional-number parsing is off for this command). */
  "--"?: Array<string | number>;
  json: boolean;
  vocab?: string;
  syntax: PromptSyntax;
  emphasis: Emphasis;
  "comma-padding-backtrack": number;
  model?: string;
  embeddings: boolean;
  "clip-skip"?: number;
  "embeddings-dir"?: string;
}

/** The diffusers view (`--syntax plain`): the field names of the openai/CLIP reference goldens. */
export interface TokenizeJson {
  ids: number[];
  input_ids_77: number[];
  tokens: string[];
  truncated: boolean;
}

/** What `--json` prints: A1111's `parse_prompt_attention` and `tokenize_line` results (field names as in the A1111 goldens). */
export interface PromptJson {
  parsed: AttentionSpan[];
  chunks: PromptChunk[];
  tokenCount: number;
  /** With `--model DIR --embeddings`: the UNet's text conditioning [77 · chunks, hidden], row-major. */
  /** The conditioning (`--embeddings`); SDXL adds text_encoder_2's pooled text_embeds and the time ids (A1111's `vector` before its size embeddings). */
  cond?: { shape: [number, number]; values: number[]; pooled?: number[]; timeIds?: number[] };
}

export interface PromptReadingArgs {
  syntax?: PromptSyntax;
  emphasis?: Emphasis;
  commaPaddingBacktrack?: number;
}

/** The prompt as the text encoder gets it under `--syntax`: A1111's spans and chunks, or diffusers' one truncated chunk. */
export function promptJson(tokenizer: ClipTokenizer, prompt: string, reading: PromptReadingArgs = {}): PromptJson & Partial<TokenizeJson> {
  if (reading.syntax === "plain") {
    const { chunk, tokenCount } = plainPrompt(tokenizer, prompt);
    return { parsed: [[prompt, 1]], chunks: [chunk], tokenCount, ...diffusersFields(tokenizer.tokenize(prompt)) };
  }
  const { parsed, chunks, tokenCount } = tokenizePrompt(tokenizer, prompt, {
    emphasis: reading.emphasis ?? "original",
    commaPaddingBacktrack: integerInRange("commaPaddingBacktrack", reading.commaPaddingBacktrack ?? DEFAULT_COMMA_PADDING_BACKTRACK, 0, MAX_COMMA_PADDING_BACKTRACK),
  });
  return { parsed, chunks, tokenCount };
}

function diffusersFields(result: ClipTokenization): TokenizeJson {
  return { ids: result.ids, input_ids_77: result.inputIds77, tokens: result.tokens, truncated: result.truncated };
}

/**
 * The human-readable A1111 report: the parsed spans, A1111's token count, and each chunk's
 * prompt tokens with their weights (padding left out).
 */
export function formatPromptReading(reading: PromptJson, decode: (ids: number[]) => string, eos: number): string {
  const lines: string[] = [];
  lines.push(`Parsed: ${reading.parsed.map(([text, weight]) => `${JSON.stringify(text)} × ${weight}`).join(", ")}`);
  const capacity = reading.chunks.length * (CHUNK_TOKENS - 2);
  lines.push(`Tokens: ${reading.tokenCount}/${capacity} (A1111's count) in ${plural(reading.chunks.length, "chunk")} of 75, each sent as 77 with <|startoftext|> and <|endoftext|>`);
  reading.chunks.forEach((chunk, c) => {
    lines.push("");
    lines.push(`Chunk ${c + 1}:`);
    // The body: positions 1…75, up to the padding (end-of-text ids with weight 1 at the end).
    let end = CHUNK_TOKENS - 1;
    while (end > 1 && chunk.tokens[end - 1] === eos && chunk.multipliers[end - 1] === 1) end--;
    for (let i = 1; i < end; i++) {
      const weight = chunk.multipliers[i]!;
      lines.push(`  ${String(i).padStart(2)}  ${String(chunk.tokens[i]).padStart(5)}  ${decode([chunk.tokens[i]!]).trim()}${weight === 1 ? "" : `  × ${weight}`}`);
    }
    if (end === 1) lines.push("  (padding only)");
  });
  return lines.join("\n") + "\n";
}

/**
 * The prompt as one string: the positional words, then those after "--", joined by single
 * spaces. Throws InvalidOptionError when there is none ("" is a prompt: the empty one).
 */
export function promptFromArgs(words: readonly (string | number)[]): string {
  if (words.length === 0) {
    throw new InvalidOptionError("prompt", 'prompt is missing: sd-trt tokenize "a photo of an astronaut"');
  }
  return words.map(String).join(" ");
}

/**
 * The tokenizer for `--vocab DIR`: DIR is a tokenizer folder (vocab.json + merges.txt) or a
 * model folder with a `tokenizer/` inside; without it, the SD 1.x vocabulary in the package.
 */
export async function tokenizerForVocab(dir: string | undefined): Promise<ClipTokenizer> {
  if (dir === undefined) return ClipTokenizer.default();
  const nested = join(dir, "tokenizer");
  const hasOwnVocab = await exists(join(dir, "vocab.json"));
  return ClipTokenizer.fromDirectory(!hasOwnVocab && (await exists(join(nested, "vocab.json"))) ? nested : dir);
}

async function exists(path: string): Promise<boolean> {
  try {
    await access(path);
    return true;
  } catch {
    return false;
  }
}

/** The diffusers fields of `--syntax plain --json`, as one line. */
export function tokenizationJson(result: ClipTokenization): string {
  return JSON.stringify(diffusersFields(result)) + "\n";
}

/**
 * The human-readable report: the cleaned prompt, the count, a table of ids and tokens (dropped
 * ones marked), and the truncation verdict with the dropped text.
 * @param decode turns ids back into text, to show what SD will not see.
 */
export function formatTokenization(result: ClipTokenization, decode: (ids: number[]) => string): string {
  const { ids, tokens } = result;
  const promptTokens = tokens.length;
  const lines: string[] = [];
  lines.push(`Normalized: ${result.normalized === "" ? "(empty)" : result.normalized}`);
  lines.push(
    `Tokens: ${ids.length} (${promptTokens} from the prompt + <|startoftext|> and <|endoftext|>); ` +
      `SD reads ${CLIP_MAX_LENGTH}`,
  );
  lines.push("");
  const indexWidth = String(ids.length - 1).length;
  const idWidth = Math.max(...ids.map((id) => String(id).length));
  // ids[CLIP_MAX_LENGTH - 1 .. ids.length - 2] are the prompt tokens SD replaces by its end token.
  const firstDropped = CLIP_MAX_LENGTH - 1;
  ids.forEach((id, i) => {
    const token = i === 0 ? "<|startoftext|>" : i === ids.length - 1 ? "<|endoftext|>" : tokens[i - 1];
    const dropped = result.truncated && i >= firstDropped && i < ids.length - 1 ? "   (dropped)" : "";
    lines.push(`  ${String(i).padStart(indexWidth)}  ${String(id).padStart(idWidth)}  ${token}${dropped}`);
  });
  lines.push("");
  if (result.truncated) {
    const droppedText = decode(ids.slice(firstDropped, ids.length - 1)).trim();
    lines.push(
      `Truncated: SD keeps the first ${CLIP_MAX_LENGTH - 2} prompt tokens and drops the last ` +
        `${result.droppedTokens} (${plural(result.droppedTokens, "token")}): "${droppedText}"`,
    );
  } else {
    const spare = CLIP_MAX_LENGTH - ids.length;
    lines.push(`Not truncated: ${plural(spare, "token")} to spare before SD's limit of ${CLIP_MAX_LENGTH}.`);
  }
  return lines.join("\n") + "\n";
}

function plural(count: number, noun: string): string {
  return `${count} ${noun}${count === 1 ? "" : "s"}`;
}

/** Runs the command for a prompt's words and returns what it prints. */
export async function runTokenize(
  args: { words: readonly (string | number)[]; json?: boolean; vocab?: string; model?: string; embeddings?: boolean; clipSkip?: number; embeddingsDir?: string } & PromptReadingArgs,
): Promise<string> {
  const prompt = promptFromArgs(args.words);
  if (args.embeddingsDir !== undefined && !args.embeddings) {
    throw new InvalidOptionError("embeddingsDir", "--embeddings-dir needs --model DIR --embeddings (the embeddings are read with the model's text encoder)");
  }
  if (args.clipSkip !== undefined && !args.embeddings) throw new InvalidOptionError("clipSkip", "--clip-skip needs --model DIR --embeddings (it changes the conditioning, not the tokens)");
  if (args.embeddings && args.model === undefined) throw new InvalidOptionError("embeddings", "--embeddings needs --model DIR (the text encoder that computes them)");
  const tokenizer = await tokenizerForVocab(args.vocab ?? args.model);
  let reading = promptJson(tokenizer, prompt, args);
  // Ids from the vocabulary size on are embedding vectors: "<name> vector k" in the listing.
  const vectorNames = new Map<number, string>();
  if (args.embeddings) {
    const pipeline = await Pipeline.load(args.model, { backend: "cpu", ...(args.embeddingsDir !== undefined ? { embeddingsDir: args.embeddingsDir } : {}) });
    try {
      // With embeddings the chunks are the pipeline's (embedding words become their vectors' ids).
      if (args.embeddingsDir !== undefined && args.syntax !== "plain") reading = { ...reading, ...pipeline.readPrompt(prompt, args) };
      let id = tokenizer.vocabSize;
      for (const e of pipeline.embeddings) for (let v = 0; v < e.count; v++) vectorNames.set(id++, `<${e.name} vector ${v + 1}/${e.count}>`);
      const { shape, values, sdxl } = await pipeline.promptConditioning(prompt, {
        promptSyntax: args.syntax ?? "a1111",
        ...(args.emphasis !== undefined ? { emphasis: args.emphasis } : {}),
        ...(args.commaPaddingBacktrack !== undefined ? { commaPaddingBacktrack: args.commaPaddingBacktrack } : {}),
        ...(args.clipSkip !== undefined ? { clipSkip: args.clipSkip } : {}),
      });
      reading.cond = { shape, values: Array.from(values), ...(sdxl ? { pooled: Array.from(sdxl.pooled), timeIds: Array.from(sdxl.timeIds) } : {}) };
    } finally {
      await pipeline.dispose();
    }
  }
  if (args.json) return JSON.stringify(reading) + "\n";
  const decode = (ids: number[]) => (ids.length === 1 && vectorNames.has(ids[0]!) ? vectorNames.get(ids[0]!)! : tokenizer.decode(ids));
  let text = args.syntax === "plain" ? formatTokenization(tokenizer.tokenize(prompt), decode) : formatPromptReading(reading, decode, tokenizer.eosTokenId);
  if (reading.cond) text += `\nConditioning: [${reading.cond.shape.join(", ")}] (use --json for the values)\n`;
  return text;
}

const command: CommandModule<object, TokenizeArgs> = {
  command: "tokenize [prompt..]",
  describe: "Show how a prompt reaches the text encoder: A1111's spans, chunks and weights, or diffusers' truncated tokens",
  builder: (yargs: Argv) =>
    yargs
      // Keep "-0.50" and "1e10" as written; collect words after "--" (prompts starting with "-").
      .parserConfiguration({ "populate--": true, "parse-positional-numbers": false })
      .positional("prompt", {
        type: "string",
        array: true,
        describe: 'The prompt; several words are joined by spaces (put "--" before a prompt that starts with "-")',
      })
      .option("json", {
        type: "boolean",
        default: false,
        describe: "Print {parsed, chunks, tokenCount} as JSON (plain syntax adds ids, input_ids_77, tokens, truncated)",
      })
      .option("syntax", { choices: PROMPT_SYNTAXES, default: "a1111" as PromptSyntax, describe: "a1111: A1111's weights, BREAK and 75-token chunks; plain: diffusers' literal text cut at 77 tokens" })
      .option("emphasis", { choices: EMPHASIS_MODES, default: "original" as Emphasis, describe: "A1111's emphasis (none: no parsing)" })
      .option("comma-padding-backtrack", { type: "number", default: DEFAULT_COMMA_PADDING_BACKTRACK, describe: "A1111's comma_padding_backtrack, 0-74" })
      .option("model", { type: "string", describe: "A model folder: its tokenizer, and its text encoder for --embeddings" })
      .option("embeddings", { type: "boolean", default: false, describe: "With --model: also print the conditioning the UNet gets (cond: shape and values)" })
      .option("clip-skip", { type: "number", describe: "With --embeddings: A1111's clip skip, 1 to the text encoder's layer count (default 1)" })
      .option("embeddings-dir", { type: "string", describe: "With --embeddings: a folder of A1111 textual-inversion embeddings; their words become their vectors (ids from 49408 on in chunks)" })
      .option("vocab", {
        type: "string",
        describe: "Tokenizer folder with vocab.json and merges.txt, or a model folder with tokenizer/ (default: SD 1.x's)",
      })
      .example('$0 tokenize "a photo of an astronaut riding a horse"', "Count and list the tokens")
      .example("$0 tokenize --json -- -0.5 weight", "JSON output; -- lets the prompt start with -") as unknown as Argv<TokenizeArgs>,
  handler: async (argv: ArgumentsCamelCase<TokenizeArgs>) => {
    const words = [...(argv.prompt ?? []), ...(argv["--"] ?? [])];
    const model = argv.model !== undefined ? { model: argv.model } : {};
    const vocab = argv.vocab !== undefined ? { vocab: argv.vocab } : {};
    process.stdout.write(
      await runTokenize({ words, json: argv.json, ...vocab, ...model, embeddings: argv.embeddings, ...(argv["clip-skip"] !== undefined ? { clipSkip: argv["clip-skip"] } : {}), ...(argv["embeddings-dir"] !== undefined ? { embeddingsDir: argv["embeddings-dir"] } : {}), syntax: argv.syntax, emphasis: argv.emphasis, commaPaddingBacktrack: argv["comma-padding-backtrack"] }),
    );
  },
};

export default command;
