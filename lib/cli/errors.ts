/** Turns an error escaping a command into one line on stderr and the process exit code. */
import { SdTrtError, InvalidOptionError, AbortError } from "../errors.js";

export const EXIT_FAILURE = 1;
export const EXIT_USAGE = 2;
export const EXIT_INTERRUPTED = 130;

/** A command line that yargs could not parse (unknown option, missing value). */
export class UsageError extends SdTrtError {
  constructor(message: string) {
    super("ERR_USAGE", message);
  }
}

export function exitCodeFor(error: unknown): number {
  if (error instanceof AbortError || (error instanceof Error && error.name === "AbortError")) return EXIT_INTERRUPTED;
  if (error instanceof InvalidOptionError || error instanceof UsageError) return EXIT_USAGE;
  return EXIT_FAILURE;
}

export function reportCliError(error: unknown): number {
  if (error instanceof SdTrtError) {
    console.error(`sd-trt: ${error.message}`);
  } else if (error instanceof Error) {
    // Not one of ours: keep the stack, it is a bug or an environment problem worth reporting.
    console.error(`sd-trt: ${error.stack ?? error.message}`);
  } else {
    console.error(`sd-trt: ${String(error)}`);
  }
  return exitCodeFor(error);
}
