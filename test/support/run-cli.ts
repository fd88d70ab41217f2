/**
 * Runs one CLI command module in-process with the parser lib/cli/main.ts uses (strict parsing,
 * errors → one line on stderr and an exit code), capturing stdout and stderr. Fast enough
 * to exercise every flag; the child-process tests cover the real binary.
 */
import type { CommandModule } from "yargs";
import { reportCliError } from "../../lib/cli/errors.js";
import { cliParser } from "../../lib/cli/parser.js";
export interface CliRun {
  code: number;
  stdout: string;
  stderr: string;
}

export async function runCommand<Args>(command: CommandModule<object, Args>, argv: string[]): Promise<CliRun> {
  let stdout = "";
  let stderr = "";
  const writeOut = process.stdout.write.bind(process.stdout);
  const writeErr = process.stderr.write.bind(process.stderr);
  const capture = (append: (text: string) => void) =>
    ((chunk: string | Uint8Array, ...rest: unknown[]) => {
      append(typeof chunk === "string" ? chunk : Buffer.from(chunk).toString("utf8"));
      const callback = rest.find((r) => typeof r === "function") as (() => void) | undefined;
      callback?.();
      return true;
    }) as typeof process.stdout.write;
  process.stdout.write = capture((t) => (stdout += t));
  process.stderr.write = capture((t) => (stderr += t));
  const consoleError = console.error;
  console.error = (...args: unknown[]) => {
    stderr += `${args.map(String).join(" ")}\n`;
  };
  let code = 0;
  try {
    await cliParser(argv, [command], { exitProcess: false }).parseAsync();
  } catch (error) {
    code = reportCliError(error);
  } finally {
    process.stdout.write = writeOut;
    process.stderr.write = writeErr;
    console.error = consoleError;
  }
  return { code, stdout, stderr };
}
