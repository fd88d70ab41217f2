#!/usr/bin/env node
// Runs the linter (Biome, as `npm run lint`), then the jest suite, and ends with one plain line
// "N passed, N failed[, N skipped]" (what CI reads), exiting non-zero on any failure. A lint
// failure counts as one failed check, with Biome's report printed. Extra arguments go to jest
// (e.g. a test path).
import { spawnSync } from "node:child_process";
import { mkdtempSync, readFileSync, rmSync } from "node:fs";
import { tmpdir } from "node:os";
import { join, dirname, relative } from "node:path";
import { fileURLToPath } from "node:url";

const root = join(dirname(fileURLToPath(import.meta.url)), "..");
const outDir = mkdtempSync(join(tmpdir(), "sd-trt-jest-"));
const outFile = join(outDir, "results.json");

// 1. Lint. Its report is printed only when it finds something.
const lint = spawnSync(process.execPath, [join(root, "node_modules/@biomejs/biome/bin/biome"), "lint", "--error-on-warnings", "--colors=off"], {
  cwd: root,
  encoding: "utf8",
  maxBuffer: 64 * 2 ** 20,
});
const lintFailed = lint.status !== 0;
if (lintFailed) {
  process.stdout.write(lint.stdout ?? "");
  process.stderr.write(lint.stderr ?? "");
  console.log(`lint: FAILED${lint.error ? ` (${lint.error.message})` : ""} — see above; \`npm run lint\` reruns it`);
} else {
  const checked = /Checked \d+ files?/.exec(`${lint.stdout}${lint.stderr}`)?.[0] ?? "checked";
  console.log(`lint: no problems (${checked.toLowerCase()})`);
}

// 2. The tests.
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
  // Jest's default reporter shows nothing of a test file whose tests are all skipped, not even
  // its console; the skipped tests' names say why (GPU, addon, TensorRT), so list them here.
  const skips = results.testResults.flatMap((file) =>
    file.assertionResults.filter((t) => t.status === "pending" || t.status === "todo").map((t) => `${relative(root, file.name)}: ${t.fullName}`),
  );
  if (skips.length > 0) {
    console.log(`skipped tests (${skips.length}):`);
    for (const line of skips.slice(0, 40)) console.log(`  ${line}`);
    if (skips.length > 40) console.log(`  … and ${skips.length - 40} more`);
  }
} catch (error) {
  console.error(`could not read jest's results (${error.message})`);
  summary = { passed: 0, failed: 1, skipped: 0 };
}
rmSync(outDir, { recursive: true, force: true });

const status = jest.status ?? 1;
if (status !== 0 && summary.failed === 0) summary.failed = 1; // jest failed for another reason
if (lintFailed) summary.failed += 1;
console.log(`${summary.passed} passed, ${summary.failed} failed${summary.skipped ? `, ${summary.skipped} skipped` : ""}`);
process.exit(summary.failed > 0 || status !== 0 ? 1 : 0);
