/**
 * The `sd-trt` argument parser: yargs configured the way every command expects, shared by
 * main.ts and the tests that run commands in-process.
 *
 * Two things yargs does not do on its own:
 * - An option that takes a value but is given none (`--steps` at the end, `--out --json`) is a
 *   usage error. yargs would parse it as "not given" and run with the default.
 * - An argument that starts with "-" but cannot be an option (`"-weird prompt"`: it has a space)
 *   is a positional argument, or the value of the option before it (`--prompt "-weird prompt"`).
 *   yargs would split it into one-letter flags ("Unknown arguments: w, e, i, r, d").
 */
import yargs, { type Argv, type CommandModule } from "yargs";
import { UsageError } from "./errors.js";

// biome-ignore lint/suspicious/noExplicitAny: each command has its own argument type; yargs takes them as one list
type AnyCommand = CommandModule<any, any>;

/** `--name`, `-n`, `--name=value`: what yargs treats as an option. */
const OPTION = /^--?[A-Za-z][A-Za-z0-9-]*(=[\s\S]*)?$/;
const NUMBER = /^-\d*\.?\d+(e[-+]?\d+)?$/i;

/** What yargs has been told about the options (`getOptions` is public in yargs, missing from its types). */
function optionsOf(y: Argv): { key: Record<string, unknown>; boolean: string[]; count: string[]; alias: Record<string, string[]> } {
  return (y as unknown as { getOptions(): ReturnType<typeof optionsOf> }).getOptions();
}

/** The positional names in a command string: "generate [prompts..]" → ["prompts"]. */
function positionalNames(command: AnyCommand): string[] {
  const spec = Array.isArray(command.command) ? command.command[0] : command.command;
  return [...String(spec ?? "").matchAll(/[[<]([\w-]+)(?:\.\.)?[\]>]/g)].map((m) => m[1]!);
}

/** The options of a command that take a value (every alias of them), from its builder. */
function valueOptions(command: AnyCommand): { values: Set<string>; positionals: string[] } {
  const positionals = positionalNames(command);
  const probe = yargs([]);
  if (typeof command.builder === "function") command.builder(probe);
  const options = optionsOf(probe);
  const flags = new Set([...options.boolean, ...options.count]);
  const values = new Set<string>();
  for (const key of Object.keys(options.key)) {
    if (flags.has(key) || positionals.includes(key)) continue;
    values.add(key);
    for (const alias of options.alias[key] ?? []) values.add(alias);
  }
  return { values, positionals };
}

function commandName(command: AnyCommand): string {
  const spec = Array.isArray(command.command) ? command.command[0] : command.command;
  return String(spec ?? "").split(" ")[0]!;
}

/**
 * Rewrites `argv` so that yargs reads arguments starting with "-" that cannot be options as
 * values or positionals: `--prompt "-a b"` becomes `--prompt=-a b`, and when a positional starts
 * with "-", every positional moves after `--` (in order), where yargs leaves them alone.
 */
export function normalizeArgv(argv: string[], commands: AnyCommand[]): string[] {
  const command = commands.find((c) => commandName(c) === argv[0]);
  if (!command) return argv;
  const { values } = valueOptions(command);
  const options: string[] = [];
  const positionals: string[] = [];
  let dashPositional = false;
  let attached = false;
  let i = 1;
  for (; i < argv.length; i++) {
    const token = argv[i]!;
    if (token === "--") break;
    if (OPTION.test(token)) {
      options.push(token);
      const name = token.replace(/^--?/, "");
      const next = argv[i + 1];
      if (!token.includes("=") && values.has(name) && next !== undefined && next !== "--" && !OPTION.test(next)) {
        // Its value; one that starts with "-" is attached, or yargs would take it for options.
        if (next.startsWith("-") && !NUMBER.test(next)) {
          options[options.length - 1] = `${token}=${next}`;
          attached = true;
        } else {
          options.push(next);
        }
        i++;
      }
    } else {
      if (token.startsWith("-") && token !== "-" && !NUMBER.test(token)) dashPositional = true;
      positionals.push(token);
    }
  }
  if (!dashPositional) return attached ? [argv[0]!, ...options, ...positionals, ...argv.slice(i)] : argv;
  return [argv[0]!, ...options, "--", ...positionals, ...argv.slice(i + 1)];
}

/** Makes every option of the command that takes a value refuse to be given without one. */
function requireValues(command: AnyCommand): AnyCommand {
  const builder = command.builder;
  if (typeof builder !== "function") return command;
  return {
    ...command,
    builder: (y: Argv) => {
      const built = (builder(y) as Argv | undefined) ?? y;
      const { values } = valueOptions(command);
      const keys = Object.keys(optionsOf(built).key).filter((key) => values.has(key));
      return built.requiresArg(keys);
    },
  };
}

/** Whether `flag` is followed in `argv` by something that starts with "-". */
function followedByDash(argv: string[], flag: string): boolean {
  const at = argv.indexOf(flag);
  return at >= 0 && (argv[at + 1]?.startsWith("-") ?? false);
}

/**
 * yargs renders the running command's whole help text right after it starts the handler, in case
 * the handler later asks to show it (command.js: `cacheHelpMessage`). For generate's options that
 * is 0.1–0.2 s of cliui/string-width on the main thread while the command loads its model. No
 * sd-trt command shows help once it runs (usage errors come through `.fail`), so the text is not
 * rendered; `--help` renders it as before. (yargs' internal methods are not in its types; if they
 * change, yargs simply renders the text as it did.)
 */
function skipHelpCache(cli: Argv): void {
  const internals = (cli as unknown as { getInternalMethods?: () => { getUsageInstance?: () => { cacheHelpMessage?: unknown } } }).getInternalMethods?.();
  const usage = internals?.getUsageInstance?.();
  if (usage && typeof usage.cacheHelpMessage === "function") usage.cacheHelpMessage = () => undefined;
}

/** yargs for `sd-trt` over `argv` (without the node and script paths). */
export function cliParser(argv: string[], commands: AnyCommand[], options: { version?: string; exitProcess?: boolean } = {}): Argv {
  let cli = yargs(normalizeArgv(argv, commands))
    .scriptName("sd-trt")
    .usage("$0 <command> [options]")
    .strict()
    .help()
    .alias("h", "help")
    .demandCommand(1, "Name a command: see sd-trt --help")
    .recommendCommands()
    .wrap(Math.min(110, process.stdout.columns ?? 110))
    .fail((message, error) => {
      // yargs' own usage errors (unknown option, missing value) come as a message; throwing
      // stops the command from running and gives exit code 2.
      // requiresArg's "Not enough arguments" comes as a YError: a usage error all the same.
      if (error && error.name !== "YError") throw error;
      const text = (message ?? error?.message ?? "").replace(/^Not enough arguments following: (\S+)/, "--$1 needs a value").replace(/\s*\n\s*/g, " ");
      const hint = /^Unknown arguments?: /.test(text) && argv[0] === "generate"
        ? ' (a prompt that starts with "-" goes after --: sd-trt generate -- "-prompt")'
        : / needs a value$/.test(text) && followedByDash(argv, text.split(" ")[0]!)
          ? ` (a value that starts with "-" is written ${text.split(" ")[0]}=-value)`
          : "";
      throw new UsageError(`${text}${hint}. Run sd-trt --help for usage.`);
    });
  skipHelpCache(cli);
  cli = options.version !== undefined ? cli.version(options.version) : cli.version(false);
  if (options.exitProcess === false) cli = cli.exitProcess(false);
  for (const command of commands) cli = cli.command(requireValues(command));
  return cli;
}
