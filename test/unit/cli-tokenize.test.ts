/**
 * `sd-trt tokenize`: the report and JSON formatting, and the yargs command run in-process the
 * way the CLI runs it (output captured from stdout).
 */
import { mkdtemp, mkdir, rm, symlink } from "node:fs/promises";
import { readFileSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { afterAll, beforeAll, describe, expect, jest, test } from "@jest/globals";
import yargs from "yargs";
import tokenizeCommand, {
  formatTokenization,
  promptFromArgs,
  runTokenize,
  tokenizationJson,
} from "../../lib/cli/commands/tokenize.js";
import { InvalidOptionError, ModelFileError } from "../../lib/errors.js";
import { ClipTokenizer, DEFAULT_VOCABULARY_DIR } from "../../lib/tokenizer/index.js";
import { copyTe05Model } from "../fixtures/tiny-sd-cases/model-variants.js";

let tokenizer: ClipTokenizer;
let root: string;
beforeAll(async () => {
  tokenizer = await ClipTokenizer.default();
  root = await mkdtemp(join(tmpdir(), "sd-trt-cli-tokenize-"));
});
afterAll(async () => {
  await rm(root, { recursive: true, force: true });
});

/** Runs `sd-trt <args>` with only the tokenize command, returning what it wrote to stdout. */
async function cli(args: string[]): Promise<string> {
  const chunks: string[] = [];
  const write = jest.spyOn(process.stdout, "write").mockImplementation((chunk: unknown) => {
    chunks.push(String(chunk));
    return true;
  });
  try {
    await yargs(args).command(tokenizeCommand).strict().exitProcess(false).fail(false).parseAsync();
  } finally {
    write.mockRestore();
  }
  return chunks.join("");
}

const decode = (ids: number[]) => tokenizer.decode(ids);
const longPrompt = Array(80).fill("a").join(" ") + " blue horse";

describe("formatTokenization", () => {
  test("lists the count, each token with its id, and the room left", () => {
    expect(formatTokenization(tokenizer.tokenize("A photo of a cat"), decode)).toBe(
      [
        "Normalized: a photo of a cat",
        "Tokens: 7 (5 from the prompt + <|startoftext|> and <|endoftext|>); SD reads 77",
        "",
        "  0  49406  <|startoftext|>",
        "  1    320  a</w>",
        "  2   1125  photo</w>",
        "  3    539  of</w>",
        "  4    320  a</w>",
        "  5   2368  cat</w>",
        "  6  49407  <|endoftext|>",
        "",
        "Not truncated: 70 tokens to spare before SD's limit of 77.",
        "",
      ].join("\n"),
    );
  });

  test("says how many tokens SD drops and which words they are", () => {
    const report = formatTokenization(tokenizer.tokenize(longPrompt), decode);
    expect(report).toContain("Tokens: 84 (82 from the prompt + <|startoftext|> and <|endoftext|>); SD reads 77");
    expect(report).toContain('Truncated: SD keeps the first 75 prompt tokens and drops the last 7 (7 tokens): "a a a a a blue horse"');
    expect(report).toContain("  75    320  a</w>\n  76    320  a</w>   (dropped)");
    expect(report).toContain("  82   4558  horse</w>   (dropped)\n  83  49407  <|endoftext|>\n");
  });

  test("at exactly 77 ids nothing is dropped; at 78 one token is", () => {
    const fits = formatTokenization(tokenizer.tokenize(Array(75).fill("a").join(" ")), decode);
    expect(fits).toContain("Not truncated: 0 tokens to spare before SD's limit of 77.");
    const over = formatTokenization(tokenizer.tokenize(Array(76).fill("a").join(" ")), decode);
    expect(over).toContain('drops the last 1 (1 token): "a"');
  });

  test("shows an empty prompt as such", () => {
    expect(formatTokenization(tokenizer.tokenize("   "), decode)).toContain("Normalized: (empty)\nTokens: 2 (0 from the prompt");
  });
});

describe("tokenizationJson", () => {
  test("prints ids, input_ids_77, tokens and truncated on one line", () => {
    const line = tokenizationJson(tokenizer.tokenize("a cat"));
    expect(line.endsWith("\n")).toBe(true);
    expect(line.trim()).not.toContain("\n");
    expect(JSON.parse(line)).toEqual({
      ids: [49406, 320, 2368, 49407],
      input_ids_77: [49406, 320, 2368, ...Array(74).fill(49407)],
      tokens: ["a</w>", "cat</w>"],
      truncated: false,
    });
  });
});

describe("the prompt from the command line", () => {
  test("words are joined by spaces", () => {
    expect(promptFromArgs(["a", "cat", 3])).toBe("a cat 3");
    expect(promptFromArgs([""])).toBe("");
  });

  test("no words at all is a usage error", () => {
    expect(() => promptFromArgs([])).toThrow(new InvalidOptionError("prompt", 'prompt is missing: sd-trt tokenize "a photo of an astronaut"'));
  });
});

describe("sd-trt tokenize", () => {
  test("--syntax plain prints diffusers' report for a quoted prompt", async () => {
    expect(await cli(["tokenize", "--syntax", "plain", "A photo of a cat"])).toBe(formatTokenization(tokenizer.tokenize("A photo of a cat"), decode));
  });

  test("--syntax plain --json adds the openai/CLIP goldens' fields to the one literal chunk; several words make one prompt", async () => {
    const out = JSON.parse(await cli(["tokenize", "--syntax", "plain", "--json", "a", "photo", "of", "a", "(cat)"]));
    const tokens = tokenizer.tokenize("a photo of a (cat)");
    expect(out).toEqual({
      ...JSON.parse(tokenizationJson(tokens)),
      parsed: [["a photo of a (cat)", 1]],
      chunks: [{ tokens: tokens.inputIds77, multipliers: Array(77).fill(1) }],
      tokenCount: 7,
    });
  });

  test("numbers stay as typed, and -- allows a prompt that starts with -", async () => {
    const out = JSON.parse(await cli(["tokenize", "--syntax", "plain", "--json", "0.50", "--", "-0.50", "+1e10"]));
    expect(out.ids).toEqual(tokenizer.encode("0.50 -0.50 +1e10"));
  });

  test("the empty prompt is [start, end]", async () => {
    expect(JSON.parse(await cli(["tokenize", "--syntax", "plain", "--json", ""])).ids).toEqual([49406, 49407]);
  });

  test("--syntax plain --json reports truncation", async () => {
    const out = JSON.parse(await cli(["tokenize", "--syntax", "plain", "--json", longPrompt]));
    expect(out.truncated).toBe(true);
    expect(out.ids).toHaveLength(84);
    expect(out.input_ids_77).toEqual([...out.ids.slice(0, 76), 49407]);
  });

  test("--vocab takes a tokenizer folder or a model folder with tokenizer/ inside", async () => {
    const model = join(root, "model");
    await mkdir(model);
    await symlink(DEFAULT_VOCABULARY_DIR, join(model, "tokenizer"));
    const expected = await cli(["tokenize", "--json", "a cat"]);
    expect(JSON.parse(expected).chunks[0].tokens.slice(0, 4)).toEqual([49406, 320, 2368, 49407]);
    expect(await cli(["tokenize", "--json", "--vocab", DEFAULT_VOCABULARY_DIR, "a cat"])).toBe(expected);
    expect(await cli(["tokenize", "--json", "--vocab", model, "a cat"])).toBe(expected);
  });

  test("--vocab naming a folder without a vocabulary fails with ModelFileError", async () => {
    const empty = join(root, "empty");
    await mkdir(empty);
    await expect(cli(["tokenize", "--vocab", empty, "a cat"])).rejects.toThrow(ModelFileError);
    await expect(runTokenize({ words: ["a"], vocab: empty })).rejects.toThrow(/CLIP vocabulary .*vocab\.json does not exist/);
  });

  test("a missing prompt is an InvalidOptionError", async () => {
    await expect(cli(["tokenize", "--json"])).rejects.toThrow(InvalidOptionError);
  });
});

describe("sd-trt tokenize reads A1111 prompts as A1111 does (the default)", () => {
  const goldens = (JSON.parse(readFileSync(new URL("../fixtures/goldens/a1111_prompts.json", import.meta.url), "utf8")) as { cases: A1111Golden[] }).cases;
  const byId = (id: string) => goldens.find((c) => c.id === id)!;

  test.each(["v010", "v016", "v019", "v038"])("--json prints A1111's parsed spans, chunks and token count (%s)", async (id) => {
    const golden = byId(id);
    expect(JSON.parse(await cli(["tokenize", "--json", "--", golden.text]))).toEqual({ parsed: golden.parsed, chunks: golden.chunks, tokenCount: golden.token_count });
  });

  test("--emphasis none reads the text without parsing, as A1111's emphasis None does", async () => {
    const golden = byId("v016");
    const out = JSON.parse(await cli(["tokenize", "--json", "--emphasis", "none", golden.text]));
    expect(out).toEqual({ parsed: [[golden.text, 1]], chunks: golden.chunks_none, tokenCount: golden.token_count_none });
  });

  test("the report lists each chunk's tokens with their weights", async () => {
    const report = await cli(["tokenize", "a (cat:1.3) BREAK dog"]);
    expect(report).toBe(
      [
        'Parsed: "a " × 1, "cat" × 1.3, "" × 1, "BREAK" × -1, "dog" × 1', // BREAK takes the spaces around it,
        "Tokens: 76/150 (A1111's count) in 2 chunks of 75, each sent as 77 with <|startoftext|> and <|endoftext|>",
        "",
        "Chunk 1:",
        "   1    320  a",
        "   2   2368  cat  × 1.3",
        "",
        "Chunk 2:",
        "   1   1929  dog",
        "",
      ].join("\n"),
    );
  });

  test("--model DIR --embeddings adds the conditioning, equal to A1111's on its stand-in encoder", async () => {
    const golden = byId("v018");
    const model = await copyTe05Model(join(root, "te05"));
    const out = JSON.parse(await cli(["tokenize", "--json", "--model", model, "--embeddings", golden.text]));
    expect(out.cond.shape).toEqual(golden.cond.shape);
    const worst = Math.max(...out.cond.values.map((v: number, i: number) => Math.abs(v - golden.cond.values[i]!)));
    expect(worst).toBeLessThan(2e-5);
  });

  test("--embeddings without --model, and a bad comma-padding-backtrack, are named", async () => {
    await expect(runTokenize({ words: ["a"], embeddings: true })).rejects.toThrow(new InvalidOptionError("embeddings", "--embeddings needs --model DIR (the text encoder that computes them)"));
    await expect(runTokenize({ words: ["a"], commaPaddingBacktrack: 80 })).rejects.toThrow(/commaPaddingBacktrack must be an integer from 0 to 74, got 80/);
  });
});

interface A1111Golden {
  id: string;
  text: string;
  parsed: unknown;
  chunks: unknown;
  token_count: number;
  chunks_none?: unknown;
  token_count_none?: number;
  cond: { shape: number[]; values: number[] };
}
