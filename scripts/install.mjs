#!/usr/bin/env node
// `npm install` hook for users of the published package. It never fails the install: the CPU
// backend works without the native addon, and `sd-trt doctor` explains what is missing.
//   1. a prebuilt addon for this platform (prebuilds/, made by prebuildify) → nothing to do;
//   2. else, when CMake and a C++ compiler are here, compile it (scripts/build-native.mjs);
//   3. else say how to get it.
// In a development checkout (lib/ present) it does nothing: `npm run build` builds the addon.
import { spawnSync } from "node:child_process";
import { existsSync } from "node:fs";
import { createRequire } from "node:module";
import path from "node:path";
import { fileURLToPath } from "node:url";

const root = path.resolve(path.dirname(fileURLToPath(import.meta.url)), "..");
const require = createRequire(import.meta.url);
const log = (line) => console.log(`sd-trt install: ${line}`);

if (existsSync(path.join(root, "lib")) && existsSync(path.join(root, "tsconfig.json"))) {
  process.exit(0); // development checkout
}

try {
  const found = require("node-gyp-build").path(root);
  log(`using the native addon at ${path.relative(root, found)}`);
  process.exit(0);
} catch {
  // no prebuild for this platform: try to compile below
}

let cmakeJsAvailable = true;
try {
  require.resolve("cmake-js/bin/cmake-js");
} catch {
  cmakeJsAvailable = false;
}
if (!cmakeJsAvailable) {
  log("no prebuilt native addon for this platform, and cmake-js is not installed to compile one.");
  log("the CPU backend works as it is; for TensorRT: `npm install cmake-js && TENSORRT_ROOT=/path/to/TensorRT node node_modules/sd-trt/scripts/build-native.mjs`");
  process.exit(0);
}

const build = spawnSync(process.execPath, [path.join(root, "scripts", "build-native.mjs")], { cwd: root, stdio: "inherit" });
if (build.status !== 0) {
  log("compiling the native addon failed (see above); the CPU backend still works.");
  log("run `sd-trt doctor` for what is missing, then `node scripts/build-native.mjs` in this package to retry.");
}
process.exit(0);
