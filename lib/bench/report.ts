/** Renders a benchmark report as a readable text table (the JSON form is the report itself). */
import type { BenchCase, BenchReport } from "./run-bench.js";

const ms = (v: number) => (v >= 100 ? v.toFixed(0) : v >= 10 ? v.toFixed(1) : v.toFixed(2));
const mib = (bytes: number) => `${(bytes / 1048576).toFixed(0)} MiB`;

function table(rows: string[][]): string {
  const widths = rows[0]!.map((_, c) => Math.max(...rows.map((r) => r[c]!.length)));
  return rows.map((r) => r.map((cell, c) => (c === 0 ? cell.padEnd(widths[c]!) : cell.padStart(widths[c]!))).join("  ")).join("\n");
}

function caseLabel(c: BenchCase): string {
  return `b${c.batch} ${c.width}x${c.height} ${c.steps}st`;
}

export function formatBenchReport(report: BenchReport): string {
  const lines: string[] = [];
  lines.push(
    `sd-trt ${report.sdTrtVersion} bench — backend ${report.backend} (${report.backendReason})${report.useGraphs === null ? "" : report.useGraphs ? ", CUDA graphs on" : ", CUDA graphs off"}`,
  );
  lines.push(`model ${report.model}`);
  lines.push(`${report.cpu.model} (${report.cpu.logicalCores} logical cores), Node ${report.node}; ${report.warmup} warm-up run(s), guidance ${report.guidance}, rng ${report.rng}`);
  lines.push("");
  lines.push("Latency (generate + PNG encode), ms, and throughput:");
  lines.push(
    table([
      ["case", "scheduler", "runs", "p50", "p90", "p99", "mean", "it/s", "images/s", "peak RSS", ...(report.cases.some((c) => c.gpuMemory) ? ["GPU mem"] : [])],
      ...report.cases.map((c) => [
        caseLabel(c),
        c.scheduler,
        String(c.runs),
        ms(c.latencyMs.p50),
        ms(c.latencyMs.p90),
        ms(c.latencyMs.p99),
        ms(c.latencyMs.mean),
        c.itPerSecond.toFixed(2),
        c.imagesPerSecond.toFixed(2),
        mib(c.memory.peakRssBytes),
        ...(report.cases.some((x) => x.gpuMemory) ? [c.gpuMemory ? mib(c.gpuMemory.peakUsedBytes) : "-"] : []),
      ]),
    ]),
  );
  lines.push("");
  lines.push("Stages (mean ms per generation):");
  const gpu = report.cases.some((c) => c.gpuDenoiseMs);
  lines.push(
    table([
      ["case", "tokenize", "text enc", "denoise", "per step", "decode", "PNG enc", "pipeline", "noise (overlapped)", ...(gpu ? ["GPU denoise", "CUDA graphs"] : [])],
      ...report.cases.map((c) => [
        caseLabel(c),
        ms(c.stagesMs.tokenize.mean),
        ms(c.stagesMs.textEncode.mean),
        ms(c.stagesMs.denoise.mean),
        ms(c.stagesMs.denoisePerStep.mean),
        ms(c.stagesMs.decode.mean),
        ms(c.stagesMs.pngEncode.mean),
        ms(c.stagesMs.pipeline.mean),
        ms(c.stagesMs.stepNoise.mean),
        ...(gpu ? [c.gpuDenoiseMs ? ms(c.gpuDenoiseMs.mean) : "-", c.cudaGraphs ?? "-"] : []),
      ]),
    ]),
  );
  if (report.cases.some((c) => c.ortOverhead)) {
    lines.push("");
    lines.push("Overhead (pipeline wall time / sum of ONNX Runtime session.run times; target ≤ 1.05):");
    lines.push(
      table([
        ["case", "pipeline ms", "ORT ms", "ratio", "ORT calls/run (text, unet, vae)"],
        ...report.cases
          .filter((c) => c.ortOverhead)
          .map((c) => {
            const o = c.ortOverhead!;
            const calls = `${o.callsPerRun.textEncoder ?? 0}, ${o.callsPerRun.unet ?? 0}, ${o.callsPerRun.vaeDecoder ?? 0}`;
            return [caseLabel(c), ms(o.pipelineMs / c.runs), ms(o.ortMs / c.runs), o.ratio.toFixed(3), calls];
          }),
      ]),
    );
  }
  return lines.join("\n");
}
