/** The benchmark behind `sd-trt bench`. */
export { runBench, type BenchCase, type BenchOptions, type BenchReport, type BenchSize, type OrtOverhead, type StageTimes } from "./run-bench.js";
export { formatBenchReport } from "./report.js";
export { summarize, percentileOfSorted, type Summary } from "./stats.js";
