#!/usr/bin/env node
// `npm install` hook for users of the published package. It never fails the install: the CPU
// backend works without the native addon, and `sd-trt doctor` explains what is missing.
//   1. a prebuilt addon for this platform (prebuilds/<platform>-<arch>/, made by prebuildify at
//      release time) → nothing to do, unless SDTRT_BUILD_FROM_SOURCE=1 (or npm's
//      --build-from-source) asks for a source build, e.g. to compile TensorRT support in with
//      TENSORRT_ROOT or to target a CUDA 12 toolkit;
//   2. else, compile it (scripts/build-native.mjs): cmake-js and node-addon-api are dependencies of
//      the package, so what is needed beyond them is CMake, a C++17 compiler and, for the GPU, the
//      CUDA toolkit; build-native.mjs skips with instructions when CMake or the compiler is missing;
//   3. say how to retry: `SDTRT_BUILD_FROM_SOURCE=1 npm rebuild sd-trt` in the consumer project.
// In a development checkout (tsconfig.json present) it does nothing: `npm run build` builds the addon.
import { spawnSync } from "node:child_process";
import { existsSync } from "node:fs";
import { createRequire } from "node:module";
import path from "node:path";
import { fileURLToPath } from "node:url";

const root = path.resolve(path.dirname(fileURLToPath(import.meta.url)), "..");
const require = createRequire(import.meta.url);
const log = (line) => console.log(`sd-trt install: ${line}`);
const retry = "SDTRT_BUILD_FROM_SOURCE=1 npm rebuild sd-trt";

if (existsSync(path.join(root, "tsconfig.json"))) {
  process.exit(0); // development checkout
}

const fromSource = ["1", "true"].includes(process.env.SDTRT_BUILD_FROM_SOURCE ?? "") || process.env.npm_config_build_from_source === "true";
if (!fromSource) {
  try {
    const found = require("node-gyp-build").path(root);
    log(`using the native addon at ${path.relative(root, found)}`);
    process.exit(0);
  } catch {
    // no prebuild for this platform: compile below
  }
  log("no prebuilt native addon for this platform: compiling it from source");
} else {
  log("SDTRT_BUILD_FROM_SOURCE: compiling the native addon from source");
}

const build = spawnSync(process.execPath, [path.join(root, "scripts", "build-native.mjs")], { cwd: root, stdio: "inherit" });
if (build.status !== 0) {
  log("compiling the native addon failed (see above); the CPU backend still works.");
  log(`run \`npx sd-trt doctor\` for what is missing, then \`${retry}\` to retry.`);
}
process.exit(0);
