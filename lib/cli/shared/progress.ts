/**
 * The progress display of long CLI commands, on stderr: a cli-progress bar on a terminal, plain
 * lines when stderr is not a TTY (one at the start, then about every second, then one at the
 * end), and nothing with `--quiet`.
 */
import { createRequire } from "node:module";
import type CliProgress from "cli-progress";

/**
 * cli-progress, loaded when the first bar starts (it and its dependencies cost tens of ms at every
 * start, and `--quiet` or a command that fails early never shows a bar). It is CommonJS, so this
 * synchronous require serves the synchronous `start`.
 */
let cliProgress: typeof CliProgress | undefined;
function loadCliProgress(): typeof CliProgress {
  cliProgress ??= createRequire(import.meta.url)("cli-progress") as typeof CliProgress;
  return cliProgress;
}

export interface ProgressDisplay {
  /** Starts (or restarts) the bar for a stage of `total` units (named after the count, e.g. "UNet evaluations"). */
  start(label: string, total: number, unit?: string): void;
  update(value: number): void;
  stop(): void;
}

const SILENT: ProgressDisplay = { start() {}, update() {}, stop() {} };

export function createProgress(options: { quiet: boolean; stream?: NodeJS.WriteStream }): ProgressDisplay {
  if (options.quiet) return SILENT;
  const stream = options.stream ?? process.stderr;
  let bar: CliProgress.SingleBar | null = null;
  return {
    start(label, total, unit) {
      bar?.stop();
      const cliProgress = loadCliProgress();
      bar = new cliProgress.SingleBar(
        {
          stream,
          noTTYOutput: true,
          notTTYSchedule: 1000,
          hideCursor: stream.isTTY ? true : null,
          format: `${label} [{bar}] {value}/{total}${unit ? ` ${unit}` : ""} | {duration_formatted} | ETA {eta_formatted}`,
        },
        stream.isTTY ? cliProgress.Presets.shades_classic : cliProgress.Presets.legacy,
      );
      bar.start(total, 0);
    },
    update(value) {
      bar?.update(value);
    },
    stop() {
      bar?.stop();
      bar = null;
    },
  };
}
