#!/usr/bin/env node
/**
 * The `sd-trt` executable. It checks the Node.js version before loading anything else (yargs 18
 * and zlib.crc32 need Node ^20.19 || ^22.12 || >=23, lib/node-version.ts): static imports would be
 * linked before any check could run, so the command line itself is imported dynamically.
 */
import { nodeVersionProblem } from "../node-version.js";

const problem = nodeVersionProblem(process.version);
if (problem) {
  process.stderr.write(`sd-trt: ${problem}\n`);
  process.exitCode = 1;
} else {
  const { run } = await import("./run.js");
  await run();
}
