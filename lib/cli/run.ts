/**
 * `sd-trt` command line (started by ./main.ts once the Node.js version is known to be supported). Each command is a yargs CommandModule in ./commands; this file only
 * wires them up and turns errors into one readable line and an exit code:
 * 1 for failures, 2 for invalid options and usage errors, 130 for an interrupted run.
 */
import yargs from "yargs";
import { hideBin } from "yargs/helpers";
import { commands } from "./commands/index.js";
import { reportCliError, UsageError } from "./errors.js";
import { packageVersion } from "../package-info.js";

export async function main(argv: string[] = hideBin(process.argv)): Promise<void> {
  let cli = yargs(argv)
    .scriptName("sd-trt")
    .usage("$0 <command> [options]")
    .version(packageVersion())
    .strict()
    .demandCommand(1, "Name a command: see sd-trt --help")
    .recommendCommands()
    .wrap(Math.min(110, process.stdout.columns ?? 110))
    .fail((message, error) => {
      // yargs' own usage errors (unknown option, missing value) come as a message; throwing
      // stops the command from running and gives exit code 2.
      throw error ?? new UsageError(`${message}\nRun sd-trt --help for usage.`);
    });
  for (const command of commands) cli = cli.command(command);
  await cli.parseAsync();
}

/** Runs the command line on process.argv and sets the exit code. */
export async function run(): Promise<void> {
  try {
    await main();
  } catch (error) {
    process.exitCode = reportCliError(error);
  }
}
