#!/usr/bin/env node
// Stands in for node-gyp under prebuildify (`npm run prebuildify` =
// `prebuildify --napi --strip --node-gyp scripts/prebuildify-cmake.mjs`). prebuildify calls
//   <this script> rebuild --target=<version> --devdir=<dir> --arch=<arch> --release|--debug
// and then takes the .node file from build/Release (or build/Debug), strips it and stores it as
// prebuilds/<platform>-<arch>/sd-trt.napi.node, which node-gyp-build finds at run time.
//
// The addon is Node-API 8 (ABI-stable), so --target and --devdir do not matter; a clean
// `cmake-js rebuild` makes the binary. A prebuild without CUDA would be useless to ship, so CUDA is
// required here (SDTRT_CUDA=ON unless set otherwise); TensorRT is compiled in when TENSORRT_ROOT is
// set (libnvinfer is still loaded at run time, never bundled). The default CUDA architectures
// (sm_80/86/89/90 + PTX) are used unless SDTRT_CUDA_ARCHS says otherwise.
import { spawnSync } from "node:child_process";
import { createRequire } from "node:module";
import os from "node:os";
import path from "node:path";
import { fileURLToPath } from "node:url";

const root = path.resolve(path.dirname(fileURLToPath(import.meta.url)), "..");
const require = createRequire(import.meta.url);
const DEFAULT_CUDA_ARCHS = "80-real;86-real;89-real;90-real;90-virtual";

const args = process.argv.slice(2);
if (args[0] !== "rebuild") {
  console.error(`prebuildify-cmake: expected "rebuild" from prebuildify, got ${JSON.stringify(args.join(" "))}`);
  process.exit(2);
}
const option = (name) => args.find((a) => a.startsWith(`--${name}=`))?.slice(name.length + 3);
const config = args.includes("--debug") ? "Debug" : "Release";
const arch = option("arch") || process.env.PREBUILD_ARCH || os.arch();

const cmakeJsArgs = [
  require.resolve("cmake-js/bin/cmake-js"),
  "rebuild",
  "--directory", root,
  "--out", path.join(root, "build"),
  "--config", config,
  "--arch", arch,
  "--parallel", String(os.availableParallelism?.() ?? os.cpus().length),
  `--CDSDTRT_TENSORRT_ROOT=${process.env.TENSORRT_ROOT ?? ""}`,
  `--CDSDTRT_CUDA=${process.env.SDTRT_CUDA || "ON"}`,
  `--CDSDTRT_CUDA_ARCHS=${process.env.SDTRT_CUDA_ARCHS || DEFAULT_CUDA_ARCHS}`,
];
console.log(`prebuildify-cmake: cmake-js rebuild (${config}, ${arch}, TensorRT ${process.env.TENSORRT_ROOT ? `from ${process.env.TENSORRT_ROOT}` : "not compiled in"})`);
const result = spawnSync(process.execPath, cmakeJsArgs, { cwd: root, stdio: "inherit", env: process.env });
process.exit(result.status ?? 1);
