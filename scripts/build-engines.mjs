#!/usr/bin/env node
// The per-GPU build step: builds the TensorRT engines of one or more model folders on this machine
// with `sd-trt build` (engines/README.md), each into engines/<folder name>.
//
//   node scripts/build-engines.mjs [MODEL_DIR ...] [-- BUILD OPTIONS]
//   node scripts/build-engines.mjs models/tiny-sd -- --batch 1-2 --size 64x64
//
// Without a model folder it builds the bundled tiny model (models/tiny-sd), the one the GPU
// self-test compares with the CPU backend. Build options default to `--batch 1 --size 512x512`
// and are passed to every build. Needs the compiled CLI (`npm run build:ts`). Exits with the first
// failing build's status.
import { spawnSync } from "node:child_process";
import { existsSync } from "node:fs";
import { basename, dirname, join, resolve } from "node:path";
import { fileURLToPath } from "node:url";

const root = join(dirname(fileURLToPath(import.meta.url)), "..");
const cli = join(root, "dist", "cli", "main.js");

const args = process.argv.slice(2);
const split = args.indexOf("--");
const models = (split < 0 ? args : args.slice(0, split)).filter((a) => a.length > 0);
const options = split < 0 ? [] : args.slice(split + 1);

if (models.some((m) => m.startsWith("-"))) {
  console.error("build-engines: put build options after `--`, e.g. node scripts/build-engines.mjs models/tiny-sd -- --batch 1-4");
  process.exit(2);
}
if (!existsSync(cli)) {
  console.error(`build-engines: ${cli} is missing; compile the CLI first: npm run build:ts`);
  process.exit(1);
}
if (models.length === 0) models.push(join(root, "models", "tiny-sd"));

for (const model of models) {
  const out = join(process.cwd(), "engines", basename(resolve(model)));
  console.error(`build-engines: ${model} → ${out}`);
  const run = spawnSync(process.execPath, [cli, "build", "--model", model, "--out", out, ...options], { stdio: "inherit" });
  if (run.status !== 0) process.exit(run.status ?? 1);
}
