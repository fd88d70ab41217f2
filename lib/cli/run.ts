/**
 * `sd-trt` command line (started by ./main.ts once the Node.js version is known to be
 * supported). Each command is a yargs CommandModule in ./commands; this file only wires them up
 * (parser.ts) and turns errors into one readable line and an exit code: 1 for failures, 2 for
 * invalid options and usage errors, 130 for an interrupted run.
 */
import { hideBin } from "yargs/helpers";
import { commands } from "./commands/index.js";
import { reportCliError } from "./errors.js";
import { cliParser } from "./parser.js";
import { packageVersion } from "../package-info.js";

export async function main(argv: string[] = hideBin(process.argv)): Promise<void> {
  await cliParser(argv, commands, { version: packageVersion() }).parseAsync();
}

/** Runs the command line on process.argv and sets the exit code. */
export async function run(): Promise<void> {
  try {
    await main();
  } catch (error) {
    process.exitCode = reportCliError(error);
  }
}
