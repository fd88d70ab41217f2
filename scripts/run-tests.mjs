#!/usr/bin/env node
// Runs the jest suite and ends with one plain line "N passed, N failed[, N skipped]" (what CI
// reads), exiting non-zero on any failure. Extra arguments go to jest (e.g. a test path).
import { spawnSync } from "node:child_process";
import { mkdtempSync, readFileSync, rmSync } from "node:fs";
import { tmpdir } from "node:os";
import { join, dirname } from "node:path";
import { fileURLToPath } from "node:url";

const root = join(dirname(fileURLToPath(import.meta.url)), "..");
const outDir = mkdtempSync(join(tmpdir(), "sd-trt-jest-"));
const outFile = join(outDir, "results.json");

const jest = spawnSync(
  process.execPath,
  ["--experimental-vm-modules", join(root, "node_modules/jest/bin/jest.js"), "--json", `--outputFile=${outFile}`, ...process.argv.slice(2)],
  { cwd: root, stdio: "inherit", env: { ...process.env, NODE_NO_WARNINGS: "1" } },
);

let summary;
try {
  const results = JSON.parse(readFileSync(outFile, "utf8"));
  const skipped = results.numPendingTests + results.numTodoTests;
  // A test file that fails to load counts as a failure even though it ran no test.
  const failed = results.numFailedTests + results.numRuntimeErrorTestSuites;
  summary = { passed: results.numPassedTests, failed, skipped };
  // Say what was skipped and why (GPU tests name the reason: no GPU, no TensorRT, …): jest's
  // default output only counts them.
  for (const file of results.testResults ?? []) {
    for (const t of file.assertionResults ?? []) if (t.status === "pending" || t.status === "skipped") console.log(`skipped: ${t.fullName}`);
  }
} catch (error) {
  console.error(`could not read jest's results (${error.message})`);
  summary = { passed: 0, failed: 1, skipped: 0 };
}
rmSync(outDir, { recursive: true, force: true });

const status = jest.status ?? 1;
if (status !== 0 && summary.failed === 0) summary.failed = 1; // jest failed for another reason
console.log(`${summary.passed} passed, ${summary.failed} failed${summary.skipped ? `, ${summary.skipped} skipped` : ""}`);
process.exit(summary.failed > 0 || status !== 0 ? 1 : 0);
