#!/usr/bin/env node
// Benchmark (not a test) of checkpoint conversion at full size: writes a single-file checkpoint
// with SD 1.5's real tensor names and shapes (test/fixtures/checkpoints/full_size_shapes.json, from
// scripts/reference/gen_full_size_shapes.py) and random fp16 weights (|w| < 1, finite) to a
// temporary folder, converts it with `convertCheckpoint` (what `sd-trt convert` runs), and reports
// the time of each stage and the process's peak RSS. The temporary files are deleted afterwards.
//
//   npx tsc -p tsconfig.json && node scripts/bench-convert-checkpoint.mjs [--family sd15|sd21] [--dtype fp16|fp32] [--tmp DIR] [--json]
import { open, mkdtemp, readFile, rm } from "node:fs/promises";
import os, { tmpdir } from "node:os";
import { join } from "node:path";
import { parseArgs } from "node:util";

const { values } = parseArgs({
  options: {
    family: { type: "string", default: "sd15" },
    dtype: { type: "string", default: "fp16" },
    tmp: { type: "string", default: tmpdir() },
    json: { type: "boolean", default: false },
  },
});

const { convertCheckpoint } = await import(new URL("../dist/convert/index.js", import.meta.url).href);
const shapes = JSON.parse(await readFile(new URL("../test/fixtures/checkpoints/full_size_shapes.json", import.meta.url), "utf8"))[values.family];
if (!shapes) throw new Error(`--family must be sd15 or sd21, got ${values.family}`);

const dir = await mkdtemp(join(values.tmp, "sd-trt-bench-convert-"));
const checkpoint = join(dir, `${values.family}-random.safetensors`);
const out = join(dir, "converted");
const mib = (bytes) => Math.round(bytes / 2 ** 20);
const peakRssMiB = () => Math.round(process.resourceUsage().maxRSS / 1024);

try {
  // 1. The checkpoint: header, then each tensor's random fp16 values, written in 16 MiB pieces.
  const writeStart = performance.now();
  const header = {};
  let offset = 0;
  for (const [name, shape] of Object.entries(shapes.tensors)) {
    const bytes = 2 * shape.reduce((n, d) => n * d, 1);
    header[name] = { dtype: "F16", shape, data_offsets: [offset, offset + bytes] };
    offset += bytes;
  }
  const json = Buffer.from(JSON.stringify(header));
  const length = Buffer.alloc(8);
  length.writeBigUInt64LE(BigInt(json.length));
  const fh = await open(checkpoint, "w");
  await fh.write(Buffer.concat([length, json]));
  const piece = new Uint16Array(8 << 20);
  let state = 0x9e3779b9;
  for (let left = offset; left > 0; ) {
    const n = Math.min(piece.length, left / 2);
    for (let i = 0; i < n; i++) {
      state ^= state << 13;
      state ^= state >>> 17;
      state ^= state << 5;
      piece[i] = state & 0xbbff; // exponent ≤ 14: finite, |w| < 1
    }
    await fh.write(new Uint8Array(piece.buffer, 0, 2 * n));
    left -= 2 * n;
  }
  await fh.close();
  const writeSeconds = (performance.now() - writeStart) / 1000;
  const rssBefore = peakRssMiB();

  // 2. The conversion.
  const stages = [];
  let stageStart = performance.now();
  let stageName = "read + hash";
  const convertStart = performance.now();
  const cpuStart = process.cpuUsage();
  const result = await convertCheckpoint(checkpoint, out, {
    dtype: values.dtype,
    onProgress: (event) => {
      if (event.stage !== "graph") return;
      stages.push({ stage: stageName, seconds: (performance.now() - stageStart) / 1000 });
      stageName = event.graph;
      stageStart = performance.now();
    },
  });
  stages.push({ stage: stageName, seconds: (performance.now() - stageStart) / 1000 });
  const report = {
    family: values.family,
    dtype: values.dtype,
    checkpointMiB: mib(8 + json.length + offset),
    tensors: Object.keys(shapes.tensors).length,
    writeCheckpointSeconds: Number(writeSeconds.toFixed(1)),
    convertSeconds: Number(((performance.now() - convertStart) / 1000).toFixed(1)),
    // CPU time of this process (user + system): on a shared machine the wall time says more about the neighbours.
    convertCpuSeconds: Number(((({ user, system }) => (user + system) / 1e6)(process.cpuUsage(cpuStart))).toFixed(1)),
    loadAverage: os.loadavg().map((l) => Number(l.toFixed(1))),
    stages: stages.map((s) => ({ ...s, seconds: Number(s.seconds.toFixed(1)) })),
    outputMiB: Object.fromEntries(Object.entries(result.graphs).map(([g, s]) => [g, mib(s.modelBytes + s.dataBytes)])),
    peakRssMiBBeforeConvert: rssBefore,
    peakRssMiB: peakRssMiB(),
    node: process.version,
  };
  if (values.json) console.log(JSON.stringify(report, null, 2));
  else {
    console.log(`${report.family} ${report.dtype}: ${report.checkpointMiB} MiB checkpoint (${report.tensors} tensors), written in ${report.writeCheckpointSeconds} s`);
    console.log(`converted in ${report.convertSeconds} s (${report.convertCpuSeconds} s of CPU; load average ${report.loadAverage.join(", ")}): ${report.stages.map((s) => `${s.stage} ${s.seconds} s`).join(", ")}`);
    console.log(`output MiB: ${JSON.stringify(report.outputMiB)}; peak RSS ${report.peakRssMiB} MiB (${report.peakRssMiBBeforeConvert} MiB before converting)`);
  }
} finally {
  await rm(dir, { recursive: true, force: true });
}
