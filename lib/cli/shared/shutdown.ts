/**
 * The shutdown of a long-running command (`serve`, `worker`) on SIGINT/SIGTERM: the first signal
 * drains (`drain`), a second one asks for the fast way out (`hurry`) and sets exit code 130.
 * Never `process.exit()`: that terminates the ONNX Runtime worker thread wherever it is, and a
 * worker terminated inside a native run aborts the whole process (SIGABRT). Both ways stop the
 * native loops between evaluations instead; the returned promise settles when `drain` has ended.
 */
export function untilShutdown(options: {
  log: (line: string) => void;
  /** What the first signal does, e.g. "shutting down (in-flight requests get 30 s)". */
  drainMessage: string;
  drain: () => Promise<unknown>;
  /** What a second signal does, e.g. "cancelling in-flight requests and exiting". */
  hurryMessage: string;
  hurry: () => void;
}): Promise<void> {
  const { log } = options;
  return new Promise<void>((resolve) => {
    let stopping = false;
    const stop = (signal: NodeJS.Signals) => {
      if (stopping) {
        log(`${signal} again: ${options.hurryMessage}`);
        process.exitCode = 130;
        options.hurry();
        return;
      }
      stopping = true;
      log(`${signal}: ${options.drainMessage}`);
      options
        .drain()
        .catch((error: unknown) => log(`shutdown failed: ${String(error)}`))
        .finally(() => {
          process.off("SIGINT", stop);
          process.off("SIGTERM", stop);
          resolve();
        });
    };
    process.on("SIGINT", stop);
    process.on("SIGTERM", stop);
  });
}
