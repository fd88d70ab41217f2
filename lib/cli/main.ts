#!/usr/bin/env node
/**
 * `sd-trt` command line. Each command is a yargs CommandModule in ./commands; this file only
 * wires them up (parser.ts) and turns errors into one readable line and an exit code:
 * 1 for failures, 2 for invalid options and usage errors, 130 for an interrupted run.
 */
import { hideBin } from "yargs/helpers";
import { commands } from "./commands/index.js";
import { reportCliError } from "./errors.js";
import { cliParser } from "./parser.js";
import { packageVersion } from "../package-info.js";

export async function main(argv: string[] = hideBin(process.argv)): Promise<void> {
  await cliParser(argv, commands, { version: packageVersion() }).parseAsync();
}

main().catch((error: unknown) => {
  process.exitCode = reportCliError(error);
});
