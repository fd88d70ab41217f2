/**
 * The pipeline-options tests' refusal check: options resolved before any model runs must fail with
 * an InvalidOptionError naming the option, its message saying why.
 */
import { expect } from "@jest/globals";
import { InvalidOptionError } from "../../lib/errors.js";
import { resolveGenerateOptions, type GenerateOptions, type ValidationContext } from "../../lib/pipeline/options.js";

/** Resolves `options` (prompt "a cat" unless given) in `context`; expects an InvalidOptionError for `option` whose message matches `message`. */
export function expectOptionRefused(options: Partial<GenerateOptions> | Record<string, unknown>, option: string, message: RegExp, context: ValidationContext): void {
  let error: unknown;
  try {
    resolveGenerateOptions({ prompt: "a cat", ...options } as GenerateOptions, context);
  } catch (e) {
    error = e;
  }
  expect(error).toBeInstanceOf(InvalidOptionError);
  expect({ option: (error as InvalidOptionError).option, message: (error as Error).message }).toEqual({ option, message: expect.stringMatching(message) });
}
