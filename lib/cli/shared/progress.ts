/**
 * The progress display of long CLI commands, on stderr: a cli-progress bar on a terminal, plain
 * lines when stderr is not a TTY (one at the start, then about every second, then one at the
 * end), and nothing with `--quiet`.
 */
import cliProgress from "cli-progress";

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
  let bar: cliProgress.SingleBar | null = null;
  return {
    start(label, total, unit) {
      bar?.stop();
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
