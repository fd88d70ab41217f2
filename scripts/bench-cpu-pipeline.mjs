#!/usr/bin/env node
// Benchmark (not a test) of the CPU pipeline's own overhead: the wall time of
// Pipeline.generate() against the sum of the ONNX Runtime calls it makes (time inside
// session.run on the worker thread), for a 20-step generation, and the process's peak RSS.
// Target (docs/architecture.md): wall ≤ 1.05 × the ONNX Runtime sum.
//
//   npm run build:ts && node scripts/bench-cpu-pipeline.mjs [--model DIR] [--size 512] [--steps 20] [--runs 5] [--scheduler pndm] [--json]
import { parseArgs } from "node:util";

const { values } = parseArgs({
  options: {
    model: { type: "string" },
    size: { type: "string", default: "512" },
    steps: { type: "string", default: "20" },
    runs: { type: "string", default: "5" },
    scheduler: { type: "string" },
    threads: { type: "string" },
    json: { type: "boolean", default: false },
  },
});

const { Pipeline } = await import(new URL("../dist/index.js", import.meta.url).href);
const size = Number(values.size);
const steps = Number(values.steps);
const runs = Number(values.runs);

const pipe = await Pipeline.load(values.model, { backend: "cpu", ...(values.threads ? { threads: Number(values.threads) } : {}) });
const backend = pipe.backend;
const request = { prompt: "a lighthouse on a cliff at dusk, oil painting", width: size, height: size, steps, seed: 1, ...(values.scheduler ? { scheduler: values.scheduler } : {}) };

const sumMs = (stats) => stats.textEncoder.ms + stats.unet.ms + stats.vaeDecoder.ms + stats.vaeEncoder.ms;
await pipe.generate(request); // warm-up: first-run allocations, ORT's arena, JIT

const samples = [];
for (let i = 0; i < runs; i++) {
  backend.resetRuntimeStats();
  const start = performance.now();
  const result = await pipe.generate(request);
  const wall = performance.now() - start;
  const stats = backend.runtimeStats;
  samples.push({ wall, ort: sumMs(stats), unetCalls: stats.unet.calls, unetMs: stats.unet.ms, evaluations: result.evaluations, timings: result.timings });
}
await pipe.dispose();

const median = (xs) => [...xs].sort((a, b) => a - b)[Math.floor(xs.length / 2)];
const wall = median(samples.map((s) => s.wall));
const ort = median(samples.map((s) => s.ort));
const report = {
  model: pipe.modelDir,
  size: `${size}x${size}`,
  steps,
  scheduler: request.scheduler ?? pipe.defaultScheduler,
  unetCalls: samples[0].unetCalls,
  runs,
  wallMs: wall,
  onnxRuntimeMs: ort,
  overheadRatio: wall / ort,
  overheadMs: wall - ort,
  unetMsPerCall: median(samples.map((s) => s.unetMs / s.unetCalls)),
  peakRssMiB: process.resourceUsage().maxRSS / 1024,
  node: process.version,
};
if (values.json) {
  console.log(JSON.stringify(report, null, 2));
} else {
  console.log(`CPU pipeline, ${report.size}, ${steps} steps of ${report.scheduler} (${report.unetCalls} UNet calls), median of ${runs} runs`);
  console.log(`  wall time            ${wall.toFixed(1)} ms`);
  console.log(`  ONNX Runtime calls   ${ort.toFixed(1)} ms (UNet ${report.unetMsPerCall.toFixed(2)} ms/call)`);
  console.log(`  overhead             ${report.overheadMs.toFixed(1)} ms, ratio ${report.overheadRatio.toFixed(3)} (target ≤ 1.05)`);
  console.log(`  peak RSS             ${report.peakRssMiB.toFixed(0)} MiB`);
}
