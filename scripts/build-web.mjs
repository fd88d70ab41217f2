#!/usr/bin/env node
// Builds the web page of `sd-trt serve` into dist/web/: web/app.ts through tsc with its own
// tsconfig (DOM types, a browser module), then the HTML and CSS copied beside it.
import { spawnSync } from "node:child_process";
import { copyFileSync, mkdirSync } from "node:fs";
import { dirname, join } from "node:path";
import { fileURLToPath } from "node:url";

const root = join(dirname(fileURLToPath(import.meta.url)), "..");
const out = join(root, "dist", "web");
mkdirSync(out, { recursive: true });
const tsc = spawnSync(process.execPath, [join(root, "node_modules", "typescript", "bin", "tsc"), "-p", join(root, "web", "tsconfig.json")], { cwd: root, stdio: "inherit" });
if (tsc.status !== 0) process.exit(tsc.status ?? 1);
for (const file of ["index.html", "style.css"]) copyFileSync(join(root, "web", file), join(out, file));
