/**
 * `sd-trt bench`: statistics, flag parsing, and a short real run on the tiny model (CPU backend)
 * whose JSON report has the documented shape and an overhead ratio computed from the ONNX
 * Runtime call times.
 */
import { describe, expect, test } from "@jest/globals";
import bench, { parseIntegerList, parseSizeList } from "../../lib/cli/commands/bench.js";
import { formatBenchReport } from "../../lib/bench/report.js";
import { runBench, type BenchReport } from "../../lib/bench/run-bench.js";
import { percentileOfSorted, summarize } from "../../lib/bench/stats.js";
import { runCommand } from "../support/run-cli.js";

describe("statistics", () => {
  test("percentiles interpolate linearly between ranks, as numpy.percentile does", () => {
    const values = [15, 20, 35, 40, 50];
    // numpy.percentile([15, 20, 35, 40, 50], [50, 90, 99]) = [35, 46, 49.6]
    expect(percentileOfSorted(values, 50)).toBe(35);
    expect(percentileOfSorted(values, 90)).toBeCloseTo(46, 12);
    expect(percentileOfSorted(values, 99)).toBeCloseTo(49.6, 12);
    expect(summarize([4, 1, 3, 2])).toMatchObject({ count: 4, mean: 2.5, min: 1, max: 4, p50: 2.5 });
    expect(summarize([]).count).toBe(0);
  });
});

describe("flags", () => {
  test("lists of batch sizes, step counts and sizes parse, and bad ones name the flag", () => {
    expect(parseIntegerList("batch", "1, 2,4")).toEqual([1, 2, 4]);
    expect(() => parseIntegerList("steps", "20,x")).toThrow(/--steps must be a comma-separated list of positive integers/);
    expect(() => parseIntegerList("batch", "0")).toThrow(/--batch/);
    expect(parseSizeList("512x512,768x512,64")).toEqual([{ width: 512, height: 512 }, { width: 768, height: 512 }, { width: 64, height: 64 }]);
    expect(() => parseSizeList("512by512")).toThrow(/--size must be a comma-separated list of WIDTHxHEIGHT/);
  });
});

function checkShape(report: BenchReport): void {
  expect(report).toMatchObject({ format: "sd-trt-bench/1", backend: "cpu", warmup: 1, useGraphs: null, rng: "cpu" });
  for (const c of report.cases) {
    expect(c.runs).toBe(3);
    expect(c.evaluations).toBeGreaterThanOrEqual(c.steps);
    const l = c.latencyMs;
    expect(l.count).toBe(3);
    expect(l.min).toBeGreaterThan(0);
    expect(l.p50).toBeLessThanOrEqual(l.p90);
    expect(l.p90).toBeLessThanOrEqual(l.p99);
    expect(l.p99).toBeLessThanOrEqual(l.max);
    for (const stage of ["tokenize", "textEncode", "denoise", "denoisePerStep", "decode", "pngEncode", "pipeline"] as const) {
      expect(c.stagesMs[stage].count).toBe(3);
      expect(c.stagesMs[stage].mean).toBeGreaterThanOrEqual(0);
    }
    expect(c.stagesMs.denoisePerStep.mean).toBeCloseTo(c.stagesMs.denoise.mean / c.steps, 6);
    expect(c.itPerSecond).toBeGreaterThan(0);
    expect(c.imagesPerSecond).toBeCloseTo(c.batch / (l.mean / 1000), 6);
    expect(c.memory.peakRssBytes).toBeGreaterThanOrEqual(c.memory.startRssBytes);
    expect(c.gpuMemory).toBeNull();
    expect(c.cudaGraphs).toBeNull();
    expect(c.gpuDenoiseMs).toBeNull();
    // The overhead ratio: pipeline wall time over the time spent inside ONNX Runtime.
    const o = c.ortOverhead!;
    expect(o.ortMs).toBeGreaterThan(0);
    expect(o.pipelineMs).toBeCloseTo(c.stagesMs.pipeline.mean * c.runs, 6);
    expect(o.ratio).toBeCloseTo(o.pipelineMs / o.ortMs, 12);
    expect(o.ratio).toBeGreaterThan(1); // the pipeline contains its ONNX Runtime calls
    // One text-encoder call per prompt list (prompt and negative prompt), one UNet call per evaluation, one VAE call per image.
    expect(o.callsPerRun).toEqual({ textEncoder: 2, unet: c.evaluations, vaeDecoder: c.batch, vaeEncoder: 0 });
  }
}

describe("runBench on the tiny model", () => {
  test("measures every batch × size × steps case and reports the documented JSON shape", async () => {
    const report = await runBench({ backend: "cpu", batches: [1, 2], sizes: [{ width: 64, height: 64 }], steps: [4], warmup: 1, runs: 3, scheduler: "euler" });
    expect(report.cases.map((c) => [c.batch, c.width, c.height, c.steps, c.scheduler])).toEqual([
      [1, 64, 64, 4, "euler"],
      [2, 64, 64, 4, "euler"],
    ]);
    checkShape(report);
    const text = formatBenchReport(report);
    expect(text).toMatch(/Latency \(generate \+ PNG encode\)/);
    expect(text).toMatch(/b2 64x64 4st/);
    expect(text).toMatch(/Overhead \(pipeline wall time \/ sum of ONNX Runtime session\.run times/);
  });

  test("`sd-trt bench --backend cpu --json` prints the report", async () => {
    const run = await runCommand(bench, ["bench", "--backend", "cpu", "--json", "--size", "64x64", "--steps", "3", "--warmup", "1", "--runs", "3", "--scheduler", "ddim"]);
    expect(run.code).toBe(0);
    const report = JSON.parse(run.stdout) as BenchReport;
    expect(report.cases).toHaveLength(1);
    checkShape(report);
  });

  test("bad flags exit with a message naming them", async () => {
    const noGraphs = await runCommand(bench, ["bench", "--backend", "cpu", "--no-graphs", "--size", "64", "--runs", "1", "--warmup", "0"]);
    expect(noGraphs.code).toBe(2);
    expect(noGraphs.stderr).toMatch(/--no-graphs applies to the TensorRT backend/);
    // An unwritable --out is found before the benchmark runs, not after it.
    const badOut = await runCommand(bench, ["bench", "--backend", "cpu", "--size", "64", "--runs", "1", "--warmup", "0", "--out", "/nonexistent/x.json"]);
    expect({ code: badOut.code, stderr: badOut.stderr }).toEqual({ code: 1, stderr: "sd-trt: cannot write --out /nonexistent/x.json: ENOENT: no such file or directory\n" });
    const badBatch = await runCommand(bench, ["bench", "--backend", "cpu", "--batch", "1,0"]);
    expect(badBatch.code).toBe(2);
    expect(badBatch.stderr).toMatch(/--batch must be a comma-separated list/);
    const badSize = await runCommand(bench, ["bench", "--backend", "cpu", "--size", "100x64", "--runs", "1", "--warmup", "0"]);
    expect(badSize.code).toBe(2);
    expect(badSize.stderr).toMatch(/^sd-trt: --size: sizes\[0\]\.width must be a multiple of 16/);
    // --threads is checked before the models load and named as a flag, not blamed on a model file.
    const badThreads = await runCommand(bench, ["bench", "--backend", "cpu", "--threads=-3", "--runs", "1", "--warmup", "0"]);
    expect({ code: badThreads.code, stderr: badThreads.stderr }).toEqual({ code: 2, stderr: "sd-trt: --threads: threads must be an integer from 1 to 1024, got -3 (number)\n" });
    const unetSize = await runCommand(bench, ["bench", "--backend", "cpu", "--size", "72x64", "--runs", "1", "--warmup", "0"]);
    expect(unetSize.code).toBe(2);
    expect(unetSize.stderr).toMatch(/sizes\[0\]\.width must be a multiple of 16 from 64 to 2048 for this model, got 72/);
  });
});
