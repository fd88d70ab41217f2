// Runs the built `generate` command under yargs in its own process, the way dist/cli/main.js
// does, for child-process tests while main.js does not register the command yet.
import yargs from "yargs";
import { hideBin } from "yargs/helpers";

const dist = new URL("../../../dist/", import.meta.url);
const { default: generate } = await import(new URL("cli/commands/generate.js", dist).href);
const { reportCliError, EXIT_USAGE } = await import(new URL("cli/errors.js", dist).href);

class UsageError extends Error {}
try {
  await yargs(hideBin(process.argv))
    .scriptName("sd-trt")
    .strict()
    .command(generate)
    .demandCommand(1)
    .fail((message, error) => {
      throw error ?? new UsageError(message);
    })
    .parseAsync();
} catch (error) {
  if (error instanceof UsageError) {
    console.error(error.message);
    process.exitCode = EXIT_USAGE;
  } else {
    process.exitCode = reportCliError(error);
  }
}
