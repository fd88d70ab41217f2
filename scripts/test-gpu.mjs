#!/usr/bin/env node
// The GPU self-test (`npm run test:gpu`), for a machine with an NVIDIA GPU:
//   1. builds the addon (incremental; CUDA required: SDTRT_CUDA=ON; TENSORRT_ROOT passes through),
//   2. checks, in a child process, that the addon loads and sees a GPU (else exits 1 saying why),
//   3. runs every test file under test/gpu with SDTRT_REQUIRE_GPU=1 (a GPU test that would skip for
//      want of a GPU fails instead): the denoise loop under CUDA graphs with the analytic stand-in
//      against the scheduler goldens and the CPU executor, device latents, and the TensorRT engine
//      tests (test/gpu/tensorrt.test.ts) where TensorRT is installed (else they skip, saying why),
//   4. prints each test's result, the loop timings, and "N passed, N failed", and writes everything
//      to build/gpu-report.json: the machine (info(), doctor's checks), every test with its status
//      and failure message, the loop timings, and the engine report (differences to the CPU
//      backend, graph use, each engine's layers from IEngineInspector), so that the first run on a
//      machine with a GPU and TensorRT answers every question in one file.
// Extra arguments go to jest (e.g. -t "graph").
import { spawnSync } from "node:child_process";
import { existsSync, mkdirSync, readFileSync, writeFileSync } from "node:fs";
import path from "node:path";
import { fileURLToPath } from "node:url";

const root = path.resolve(path.dirname(fileURLToPath(import.meta.url)), "..");
const buildDir = path.resolve(root, process.env.SDTRT_BUILD_DIR || "build");
const addonPath = path.join(buildDir, "Release", "sd_trt.node");
const resultsPath = path.join(buildDir, "gpu-tests.json");
const reportPath = path.join(buildDir, "gpu-loop-timings.json");
const engineReportPath = path.join(buildDir, "gpu-engines.json");
const fullReportPath = path.join(buildDir, "gpu-report.json");

function say(line) {
  console.log(`test:gpu: ${line}`);
}

// 1. Build (a no-op when nothing changed).
say("building the addon (CUDA required)");
const build = spawnSync(process.execPath, [path.join(root, "scripts", "build-native.mjs")], {
  cwd: root,
  stdio: "inherit",
  env: { ...process.env, SDTRT_CUDA: "ON" },
});
if (build.status !== 0 || !existsSync(addonPath)) {
  say("the addon did not build; see the output above");
  console.log("0 passed, 1 failed");
  process.exit(1);
}

// 2. Does it see a GPU? (A child process: a crash here must not take this script down.)
const probe = spawnSync(
  process.execPath,
  ["-e", `process.stdout.write(JSON.stringify(require(${JSON.stringify(addonPath)}).info({ freeMemory: true })))`],
  { encoding: "utf8", timeout: 120000 },
);
if (probe.status !== 0) {
  say(`the addon does not load: ${probe.stderr || probe.error?.message}`);
  console.log("0 passed, 1 failed");
  process.exit(1);
}
const info = JSON.parse(probe.stdout);
if (info.devices.length === 0) {
  say(`no usable GPU: ${info.deviceError ?? "none found"} (driver supports CUDA ${info.cudaDriverVersion || "—"}); run \`sd-trt doctor\``);
  console.log("0 passed, 1 failed");
  process.exit(1);
}
for (const d of info.devices) {
  say(`GPU ${d.index}: ${d.name}, sm ${d.computeCapability}, ${(d.totalMemory / 2 ** 30).toFixed(1)} GiB`);
}
say(
  info.tensorrtCompiledIn
    ? `TensorRT compiled in; runtime: ${JSON.stringify(info.tensorrt)}`
    : "TensorRT not compiled in: engine tests will skip (set TENSORRT_ROOT and rerun to include them)",
);

// 3. The GPU tests.
mkdirSync(buildDir, { recursive: true });
const jest = spawnSync(
  process.execPath,
  [
    "--experimental-vm-modules",
    path.join(root, "node_modules/jest/bin/jest.js"),
    "--runInBand",
    "--verbose",
    "--json",
    `--outputFile=${resultsPath}`,
    // Every test file under test/gpu (jest matches this pattern against each file's path).
    `${path.join("test", "gpu")}${path.sep}`,
    ...process.argv.slice(2),
  ],
  {
    cwd: root,
    stdio: "inherit",
    env: { ...process.env, NODE_NO_WARNINGS: "1", SDTRT_REQUIRE_GPU: "1", SDTRT_ADDON: addonPath, SDTRT_GPU_REPORT: reportPath, SDTRT_GPU_ENGINE_REPORT: engineReportPath },
  },
);

// 4. Summary.
let passed = 0;
let failed = 0;
let skipped = 0;
try {
  const results = JSON.parse(readFileSync(resultsPath, "utf8"));
  console.log("\nGPU self-test summary");
  for (const file of results.testResults) {
    console.log(`  ${path.relative(root, file.name)}${file.failureMessage && file.assertionResults.length === 0 ? " — failed to run" : ""}`);
    for (const t of file.assertionResults) {
      const mark = t.status === "passed" ? "pass" : t.status === "failed" ? "FAIL" : "skip";
      console.log(`    ${mark}  ${t.fullName}${t.duration ? ` (${t.duration} ms)` : ""}`);
    }
  }
  passed = results.numPassedTests;
  failed = results.numFailedTests + results.numRuntimeErrorTestSuites;
  skipped = results.numPendingTests + results.numTodoTests;
} catch (error) {
  say(`could not read jest's results (${error.message})`);
  failed = 1;
}
if (existsSync(reportPath)) {
  const timings = JSON.parse(readFileSync(reportPath, "utf8"));
  const ms = (v) => `${(v * 1000).toFixed(1)} µs`;
  console.log(
    `  loop per evaluation (analytic stand-in, ${timings.evaluations} evaluations): ` +
      `graphs ${ms(timings.graphs.gpuMsPerEval)} GPU / ${ms(timings.graphs.hostMsPerEval)} wall, ` +
      `plain launches ${ms(timings.plain.gpuMsPerEval)} GPU / ${ms(timings.plain.hostMsPerEval)} wall`,
  );
}
if ((jest.status ?? 1) !== 0 && failed === 0) failed = 1;

// The one-file report.
const readJson = (file) => {
  try {
    return JSON.parse(readFileSync(file, "utf8"));
  } catch {
    return null;
  }
};
const jestResults = readJson(resultsPath);
writeFileSync(
  fullReportPath,
  `${JSON.stringify(
    {
      date: new Date().toISOString(),
      node: process.version,
      info,
      tests: (jestResults?.testResults ?? []).flatMap((file) =>
        file.assertionResults.map((t) => ({
          file: path.relative(root, file.name),
          name: t.fullName,
          status: t.status,
          ms: t.duration ?? null,
          ...(t.failureMessages?.length ? { failure: t.failureMessages.join("\n").slice(0, 4000) } : {}),
        })),
      ),
      loopTimings: readJson(reportPath),
      engines: readJson(engineReportPath),
      summary: { passed, failed, skipped },
    },
    null,
    2,
  )}\n`,
);
say(`report: ${path.relative(root, fullReportPath)}`);
if (passed === 0 && failed === 0) {
  say("no GPU test ran");
  failed = 1;
}
console.log(`${passed} passed, ${failed} failed${skipped ? `, ${skipped} skipped` : ""}`);
process.exit(failed > 0 ? 1 : 0);
