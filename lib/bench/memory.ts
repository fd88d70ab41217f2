/**
 * Peak resident memory of this process during a benchmark. Node has no portable peak-RSS call
 * for an interval, so a sampler reads `process.memoryUsage.rss()` every few milliseconds (and
 * at start and stop), and the process-lifetime maximum from `process.resourceUsage().maxRSS`
 * is reported beside it.
 */
export interface MemoryReport {
  /** Highest RSS seen while sampling, in bytes. */
  peakRssBytes: number;
  /** RSS when sampling started, in bytes. */
  startRssBytes: number;
  /** The process's lifetime maximum RSS (getrusage), in bytes. */
  processMaxRssBytes: number;
}

export class PeakRssSampler {
  readonly #timer: NodeJS.Timeout;
  readonly #start: number;
  #peak: number;

  constructor(intervalMs = 5) {
    this.#start = process.memoryUsage.rss();
    this.#peak = this.#start;
    this.#timer = setInterval(() => this.sample(), intervalMs);
    this.#timer.unref();
  }

  sample(): void {
    const rss = process.memoryUsage.rss();
    if (rss > this.#peak) this.#peak = rss;
  }

  stop(): MemoryReport {
    this.sample();
    clearInterval(this.#timer);
    return {
      peakRssBytes: this.#peak,
      startRssBytes: this.#start,
      processMaxRssBytes: process.resourceUsage().maxRSS * 1024,
    };
  }
}
