/**
 * `sd-trt doctor [--json]`: whether the native addon loads (and why not), the CUDA runtime and
 * driver versions, each GPU (name, compute capability, memory, whether the kernels run on it),
 * TensorRT at build time and at run time — and what to do about each missing piece.
 *
 * It is a report: it exits 0 whatever it finds (a missing GPU is an answer, not a failure).
 * `--json` prints the {@link DoctorReport} object.
 */
import type { ArgumentsCamelCase, Argv, CommandModule } from "yargs";
import { collectDoctorReport, type DoctorReport } from "../../native/doctor-report.js";

export interface DoctorArgs {
  json: boolean;
}

const LABEL: Record<string, string> = {
  addon: "addon",
  cuda: "CUDA build",
  driver: "driver",
  gpu: "GPU",
  tensorrt: "TensorRT build",
  "tensorrt-runtime": "TensorRT runtime",
  "onnx-parser": "ONNX parser",
};

const STATUS: Record<string, string> = { ok: "ok", missing: "MISSING", warning: "warning" };

function gib(bytes: number | null): string {
  return bytes === null ? "?" : `${(bytes / 2 ** 30).toFixed(1)} GiB`;
}

/** The human-readable report. */
export function formatDoctorReport(report: DoctorReport): string {
  const lines = ["sd-trt doctor"];
  const width = Math.max(...Object.values(LABEL).map((l) => l.length));
  for (const check of report.checks) {
    lines.push(`  ${(LABEL[check.name] ?? check.name).padEnd(width)}  ${STATUS[check.status]!.padEnd(7)}  ${check.summary}`);
    if (check.fix) lines.push(`  ${"".padEnd(width)}  ${"".padEnd(7)}  → ${check.fix}`);
  }
  if (report.cuda.compiledIn) {
    lines.push("");
    const release = report.cuda.driverRelease ? `driver ${report.cuda.driverRelease}, ` : "driver ";
    const floor = report.cuda.driverFloor ? ` (this runtime needs driver ${report.cuda.driverFloor}+)` : "";
    lines.push(`CUDA runtime ${report.cuda.runtimeVersion ?? "?"} (static)${floor}, ${release}supports CUDA ${report.cuda.driverVersion ?? "— (no driver)"}`);
    for (const g of report.gpus) {
      lines.push(`  GPU ${g.index}: ${g.name}, compute capability ${g.computeCapability}, ${gib(g.totalMemory)} total, ${gib(g.freeMemory)} free; kernels: ${g.kernels}`);
    }
  }
  if (!report.addon.loaded && report.addon.attempts?.length) {
    lines.push("");
    lines.push("Load attempts:");
    for (const a of report.addon.attempts) lines.push(`  - ${a.source}${a.path ? ` (${a.path})` : ""}: ${a.error}`);
  }
  lines.push("");
  const missing = report.checks.filter((c) => c.status === "missing").length;
  lines.push(
    report.tensorrtUsable
      ? "TensorRT backend: ready (build engines for this GPU with `sd-trt build`). CPU backend: ready."
      : `TensorRT backend: not usable (${missing} missing piece${missing === 1 ? "" : "s"} above). CPU backend: ready (\`--backend cpu\`).`,
  );
  return lines.join("\n");
}

/** Runs the command; tests pass their own stream. */
export function runDoctor(args: { json: boolean }, stdout: NodeJS.WritableStream = process.stdout): DoctorReport {
  const report = collectDoctorReport();
  stdout.write(args.json ? `${JSON.stringify(report, null, 2)}\n` : `${formatDoctorReport(report)}\n`);
  return report;
}

const command: CommandModule<object, DoctorArgs> = {
  command: "doctor",
  describe: "Report the native addon, CUDA driver, GPUs and TensorRT on this machine, and what to do about anything missing",
  builder: (yargs: Argv<object>) =>
    yargs.option("json", { type: "boolean", default: false, describe: "Print the report as JSON" }) as Argv<DoctorArgs>,
  handler: (args: ArgumentsCamelCase<DoctorArgs>) => {
    runDoctor({ json: args.json });
    process.exitCode = 0;
  },
};

export default command;
