/**
 * `sd-trt tokenize [--json] [--vocab DIR] <prompt words…>`: shows how the CLIP tokenizer splits a
 * prompt — token count, each token with its id — and whether SD truncates it (its text encoder
 * reads 77 tokens, start and end included), naming the words it would drop.
 */
import { access } from "node:fs/promises";
import { join } from "node:path";
import type { ArgumentsCamelCase, Argv, CommandModule } from "yargs";
import { InvalidOptionError } from "../../errors.js";
import { CLIP_MAX_LENGTH, ClipTokenizer, type ClipTokenization } from "../../tokenizer/index.js";

interface TokenizeArgs {
  prompt?: string[];
  /** Words after "--" (kept as written: positional-number parsing is off for this command). */
  "--"?: Array<string | number>;
  json: boolean;
  vocab?: string;
}

/** What `--json` prints (the field names of the reference goldens). */
export interface TokenizeJson {
  ids: number[];
  input_ids_77: number[];
  tokens: string[];
  truncated: boolean;
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

/** `--json` output: one line. */
export function tokenizationJson(result: ClipTokenization): string {
  const json: TokenizeJson = {
    ids: result.ids,
    input_ids_77: result.inputIds77,
    tokens: result.tokens,
    truncated: result.truncated,
  };
  return JSON.stringify(json) + "\n";
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
export async function runTokenize(args: { words: readonly (string | number)[]; json?: boolean; vocab?: string }): Promise<string> {
  const prompt = promptFromArgs(args.words);
  const tokenizer = await tokenizerForVocab(args.vocab);
  const result = tokenizer.tokenize(prompt);
  return args.json ? tokenizationJson(result) : formatTokenization(result, (ids) => tokenizer.decode(ids));
}

const command: CommandModule<object, TokenizeArgs> = {
  command: "tokenize [prompt..]",
  describe: "Show a prompt's CLIP tokens and whether SD truncates it (77-token limit)",
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
        describe: "Print {ids, input_ids_77, tokens, truncated} as JSON",
      })
      .option("vocab", {
        type: "string",
        describe: "Tokenizer folder with vocab.json and merges.txt, or a model folder with tokenizer/ (default: SD 1.x's)",
      })
      .example('$0 tokenize "a photo of an astronaut riding a horse"', "Count and list the tokens")
      .example("$0 tokenize --json -- -0.5 weight", "JSON output; -- lets the prompt start with -") as unknown as Argv<TokenizeArgs>,
  handler: async (argv: ArgumentsCamelCase<TokenizeArgs>) => {
    const words = [...(argv.prompt ?? []), ...(argv["--"] ?? [])];
    process.stdout.write(await runTokenize({ words, json: argv.json, vocab: argv.vocab }));
  },
};

export default command;
