#!/usr/bin/env node
// Builds the native addon (build/Release/sd_trt.node) with cmake-js and says what was compiled in.
//
//   npm run build:native                  CUDA when nvcc is found, TensorRT when TENSORRT_ROOT is set
//   TENSORRT_ROOT=/opt/TensorRT npm run build:native
//
// Environment:
//   TENSORRT_ROOT      TensorRT install or header root (include/NvInfer.h); unset = no TensorRT
//   SDTRT_CUDA         AUTO (default) | ON (fail when CUDA is missing) | OFF (build without CUDA)
//   SDTRT_CUDA_ARCHS   CUDA architectures, default "80-real;86-real;89-real;90-real;90-virtual";
//                      e.g. SDTRT_CUDA_ARCHS=80-real for a quicker local build
//   SDTRT_BUILD_DIR    build folder (default build/; the addon lands in <dir>/Release)
//   SDTRT_BUILD_JOBS   parallel compile jobs (default: the number of CPUs)
//   SDTRT_CUDA_TOOLKIT CUDA toolkit folder to build with (its bin/nvcc). Default: CUDACXX when set,
//                      else the newest CUDA 12.x under /usr/local when one is installed, else the nvcc
//                      on PATH. Why prefer 12.x: the CUDA runtime is linked statically, so the toolkit
//                      sets the driver floor — r525+ for CUDA 12, r580+ for CUDA 13 (native/README.md,
//                      "Build matrix"). Delete build/ when switching toolkits (CMake caches nvcc).
//
// Missing CUDA or TensorRT is not an error (the addon then says what is missing, and the CPU backend
// works without it); a missing C++ toolchain or CMake skips the build with instructions. But when the
// toolchain is there, a failure to configure, compile or load the addon fails this script: a broken
// native build must never hide behind "optional".
import { spawnSync } from "node:child_process";
import { existsSync, readdirSync, readFileSync } from "node:fs";
import { createRequire } from "node:module";
import os from "node:os";
import path from "node:path";
import { fileURLToPath } from "node:url";

/** Keep in step with CMakeLists.txt's SDTRT_CUDA_ARCHS default. */
const DEFAULT_CUDA_ARCHS = "80-real;86-real;89-real;90-real;90-virtual";
const root = path.resolve(path.dirname(fileURLToPath(import.meta.url)), "..");
const require = createRequire(import.meta.url);
const buildDir = path.resolve(root, process.env.SDTRT_BUILD_DIR || "build");
const addonPath = path.join(buildDir, "Release", "sd_trt.node");

function log(line) {
  console.log(`sd-trt native: ${line}`);
}

function onPath(command) {
  const result = spawnSync("sh", ["-c", `command -v ${command}`], { encoding: "utf8" });
  return result.status === 0 && result.stdout.trim() !== "";
}

function skip(reason, fix) {
  log(`skipped: ${reason}`);
  log(`to build it: ${fix}`);
  log("the CPU backend works without the addon; the TensorRT backend needs it.");
  process.exit(0);
}

// ---------------------------------------------------------------- toolchain
if (!onPath("cmake")) skip("CMake was not found", "install CMake ≥ 3.18 (e.g. `apt-get install cmake`)");
const cxx = process.env.CXX || ["c++", "g++", "clang++"].find(onPath);
if (!cxx || !onPath(cxx.split(" ")[0])) skip("no C++ compiler was found", "install g++ or clang++ (C++17)");
let cmakeJs;
try {
  cmakeJs = require.resolve("cmake-js/bin/cmake-js");
} catch {
  skip("cmake-js is not installed", "`npm install --include=dev` (cmake-js is a devDependency)");
}

// ---------------------------------------------------------------- CUDA toolkit
// The newest /usr/local/cuda-12.x, or undefined.
function newestCuda12() {
  let names = [];
  try {
    names = readdirSync("/usr/local");
  } catch {
    return undefined;
  }
  const found = names
    .map((name) => ({ name, match: /^cuda-12\.(\d+)$/.exec(name) }))
    .filter((e) => e.match && existsSync(path.join("/usr/local", e.name, "bin", "nvcc")))
    .sort((a, b) => Number(b.match[1]) - Number(a.match[1]))[0];
  return found ? path.join("/usr/local", found.name) : undefined;
}
const buildEnv = { ...process.env };
if (process.env.SDTRT_CUDA_TOOLKIT) {
  buildEnv.CUDACXX = path.join(process.env.SDTRT_CUDA_TOOLKIT, "bin", "nvcc");
  log(`CUDA toolkit: ${process.env.SDTRT_CUDA_TOOLKIT} (SDTRT_CUDA_TOOLKIT)`);
} else if (!process.env.CUDACXX && process.env.SDTRT_CUDA !== "OFF") {
  const cuda12 = newestCuda12();
  if (cuda12) {
    buildEnv.CUDACXX = path.join(cuda12, "bin", "nvcc");
    log(`CUDA toolkit: ${cuda12} (a CUDA 12 toolkit runs on drivers r525+, CUDA 13 needs r580+; SDTRT_CUDA_TOOLKIT overrides)`);
  }
}

// ---------------------------------------------------------------- configure + build
const defines = [
  // Always passed, empty included, so a TENSORRT_ROOT from an earlier configure does not stick.
  `--CDSDTRT_TENSORRT_ROOT=${process.env.TENSORRT_ROOT ?? ""}`,
  `--CDSDTRT_CUDA=${process.env.SDTRT_CUDA || "AUTO"}`,
  // Likewise: a narrowed list from a quick local build must not stick to the next default build.
  `--CDSDTRT_CUDA_ARCHS=${process.env.SDTRT_CUDA_ARCHS || DEFAULT_CUDA_ARCHS}`,
];
const common = ["--directory", root, "--out", buildDir, "--config", "Release", ...defines];
const jobs = String(Number(process.env.SDTRT_BUILD_JOBS) || os.availableParallelism?.() || os.cpus().length);

function cmakeJsRun(command, extra = []) {
  log(`cmake-js ${command}`);
  const result = spawnSync(process.execPath, [cmakeJs, command, ...common, ...extra], {
    cwd: root,
    stdio: "inherit",
    env: buildEnv,
  });
  if (result.status !== 0) {
    console.error(`sd-trt native: cmake-js ${command} failed (exit ${result.status ?? result.signal}).`);
    console.error("sd-trt native: the toolchain is present, so this is a real build error: see the compiler output above.");
    process.exit(1);
  }
}

// configure every time (cheap when nothing changed) so changed options always take effect;
// `cmake-js build` alone reuses a stale configuration.
cmakeJsRun("configure");
cmakeJsRun("build", ["--parallel", jobs]);

// ---------------------------------------------------------------- check it loads, then report
if (!existsSync(addonPath)) {
  console.error(`sd-trt native: the build finished but ${path.relative(root, addonPath)} is missing.`);
  process.exit(1);
}
let config = {};
try {
  config = JSON.parse(readFileSync(path.join(buildDir, "sdtrt-config.json"), "utf8"));
} catch {
  // Older build folder: the load check below still reports what the addon says.
}
// Load in a child process: a broken binary must not take this script down with it.
const probe = spawnSync(
  process.execPath,
  ["-e", `const a = require(${JSON.stringify(addonPath)}); process.stdout.write(JSON.stringify(a.info()))`],
  { encoding: "utf8", timeout: 60000 },
);
if (probe.status !== 0) {
  console.error(`sd-trt native: ${path.relative(root, addonPath)} was built but does not load:`);
  console.error(probe.stderr || probe.error?.message || `exit ${probe.status ?? probe.signal}`);
  process.exit(1);
}
const info = JSON.parse(probe.stdout);
log(`built ${path.relative(root, addonPath)} (sd-trt ${info.version}, Node-API ${info.napi})`);
log(
  info.cudaCompiledIn
    ? `CUDA: compiled in (${config.cudaStatus ?? `CUDA ${info.build.cudaVersion}`})`
    : `CUDA: ${config.cudaStatus ?? "not compiled in"}`,
);
log(
  info.tensorrtCompiledIn
    ? `TensorRT: compiled in (${config.tensorrtStatus ?? "headers found"})`
    : `TensorRT: ${config.tensorrtStatus ?? "not compiled in"}${process.env.TENSORRT_ROOT ? "" : " (set TENSORRT_ROOT to a TensorRT install to add it)"}`,
);
if (info.cudaCompiledIn) {
  log(
    info.devices.length > 0
      ? `GPUs here: ${info.devices.map((d) => `${d.name} (sm ${d.computeCapability})`).join(", ")}`
      : `no usable GPU here: ${info.deviceError ?? "none found"} (fine for building; run \`sd-trt doctor\` on the GPU machine)`,
  );
}
