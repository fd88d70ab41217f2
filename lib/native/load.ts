/**
 * The one place that loads the native addon (docs/architecture.md, native boundary rule 6).
 *
 * Loading never throws: {@link loadNativeBinding} returns either the binding or a diagnosis — every
 * path tried, each error, and "possible solutions" tailored to those errors (sharp's
 * `lib/sharp.mjs`). {@link requireNativeBinding} is the throwing form for code that cannot go on
 * without the addon. {@link callNative} / {@link callNativeAsync} rethrow native failures as typed
 * errors carrying the caller's stack.
 *
 * Where it looks, in order:
 *   1. `SDTRT_ADDON`: an explicit path to a `.node` file (tests, custom builds);
 *   2. node-gyp-build from the package root: `build/Release/sd_trt.node` (from `npm run build:native`),
 *      then `prebuilds/<platform>-<arch>/` (from `npm run prebuildify`); `SD_TRT_PREBUILD` may point
 *      node-gyp-build at another folder.
 */
import { existsSync } from "node:fs";
import { createRequire } from "node:module";
import { join, relative } from "node:path";

import { AbortError, NativeError, UnetOverflowError } from "../errors.js";
import { buildNativeCommand, packageRoot } from "../package-info.js";
import type { NativeBinding, NativeErrorShape } from "./types.js";

const require = createRequire(import.meta.url);

/** One place the loader looked, and why it did not work. */
export interface NativeLoadAttempt {
  /** "SDTRT_ADDON", "node-gyp-build". */
  source: string;
  /** The file tried, when one was found. */
  path?: string;
  error: string;
}

export interface NativeLoadSuccess {
  loaded: true;
  binding: NativeBinding;
  /** The `.node` file that loaded. */
  path: string;
}

export interface NativeLoadFailure {
  loaded: false;
  attempts: NativeLoadAttempt[];
  /** What to do about it, most specific first. */
  solutions: string[];
  /** The attempts and solutions as text (what `requireNativeBinding` throws). */
  message: string;
}

export type NativeLoadResult = NativeLoadSuccess | NativeLoadFailure;

/** The default build output, relative to the package root. */
export const DEFAULT_ADDON_PATH = join("build", "Release", "sd_trt.node");

let cached: NativeLoadResult | undefined;
let exitHookInstalled = false;

/**
 * process.on("exit") → the addon's shutdown(): cancel in-flight denoise loops and engine builds,
 * wait for the loops to stop and free the GPU objects. Needed because process.exit() runs no
 * environment cleanup hooks, and without process.exit() Node waits for pending async work (a whole
 * denoise loop, an engine build) before it runs them: a second Ctrl-C would wait for the loop.
 * In a worker thread, "exit" fires when the worker calls process.exit(); a parent that terminates a
 * worker should have it call {@link cancelNativeWork} (or dispose its pipeline) first, since
 * worker.terminate() waits for native work in flight too.
 */
function installExitHook(binding: NativeBinding): void {
  if (exitHookInstalled || typeof binding.shutdown !== "function") return;
  exitHookInstalled = true;
  process.once("exit", () => {
    try {
      binding.shutdown();
    } catch {
      // exiting: nothing can be reported, and nothing may stop the exit
    }
  });
}

/**
 * Asks every denoise loop and engine build in flight on this thread to stop (their promises reject
 * with AbortError); returns at once, with how many were running. For a worker thread about to be
 * terminated, and for a second Ctrl-C. A no-op (0) when the addon is not loaded.
 */
export function cancelNativeWork(): number {
  if (cached?.loaded && typeof cached.binding.cancelAll === "function") return cached.binding.cancelAll();
  return 0;
}

interface NodeGypBuild {
  (dir: string): unknown;
  resolve(dir: string): string;
}

function message(error: unknown): string {
  return error instanceof Error ? error.message : String(error);
}

function tryRequire(source: string, path: string, attempts: NativeLoadAttempt[]): NativeBinding | undefined {
  try {
    const binding = require(path) as NativeBinding;
    if (typeof binding?.info !== "function" || typeof binding.Denoiser !== "function") {
      attempts.push({ source, path, error: "the file loaded but is not the sd-trt addon (no info() / Denoiser export)" });
      return undefined;
    }
    return binding;
  } catch (error) {
    attempts.push({ source, path, error: message(error) });
    return undefined;
  }
}

/** "Possible solutions" for the errors seen. Exported for tests of the wording. */
export function solutionsFor(attempts: NativeLoadAttempt[]): string[] {
  const errors = attempts.map((a) => a.error).join("\n");
  const solutions: string[] = [];
  const needs = "needs CMake and a C++17 compiler; the CUDA toolkit for GPU support; TENSORRT_ROOT=<TensorRT folder> for TensorRT";
  const rebuild = `Rebuild the addon on this machine: \`${buildNativeCommand()}\` (${needs})`;
  if (/No native build was found/i.test(errors)) {
    solutions.push(`Build the addon: \`${buildNativeCommand()}\` (${needs})`);
    solutions.push("Or install a release of sd-trt that ships a prebuild for this platform (prebuilds/<platform>-<arch>/)");
  }
  if (/GLIBC(XX)?_[0-9.]+' not found|version `GLIBC/i.test(errors)) {
    solutions.push(`The addon was built for a newer C/C++ runtime than this system has. ${rebuild}`);
  }
  if (/undefined symbol/i.test(errors)) {
    solutions.push(`The addon binary is incomplete or from another version of sd-trt. ${rebuild}`);
  }
  if (/invalid ELF header|wrong ELF class|cannot open shared object file: No such file or directory|not a valid Win32|mach-o/i.test(errors)) {
    if (/lib(cuda|nvinfer|nvonnxparser|cudart)/i.test(errors)) {
      solutions.push("The addon links a CUDA or TensorRT library that is not installed. sd-trt links the CUDA runtime statically and loads TensorRT at run time, so this binary was not built by this package's CMakeLists.txt: " + rebuild);
    } else {
      solutions.push(`The addon was built for another platform or architecture. ${rebuild}`);
    }
  }
  if (/NODE_MODULE_VERSION|napi_register_module|Module did not self-register/i.test(errors)) {
    solutions.push(`The addon was built for another Node.js runtime. ${rebuild}`);
  }
  if (/not the sd-trt addon/.test(errors)) {
    solutions.push("SDTRT_ADDON or SD_TRT_PREBUILD points at another addon: unset it or point it at sd_trt.node");
  }
  if (solutions.length === 0) solutions.push(rebuild);
  solutions.push("Run `sd-trt doctor` for a report of the driver, CUDA, GPUs and TensorRT on this machine");
  solutions.push("The CPU backend (`--backend cpu`) works without the addon");
  return solutions;
}

function describeFailure(attempts: NativeLoadAttempt[], solutions: string[]): string {
  const lines = ["The sd-trt native addon could not be loaded."];
  for (const a of attempts) {
    lines.push(`  - ${a.source}${a.path ? ` (${relative(process.cwd(), a.path) || a.path})` : ""}: ${a.error}`);
  }
  lines.push("Possible solutions:");
  for (const s of solutions) lines.push(`  - ${s}`);
  return lines.join("\n");
}

/**
 * Loads the addon once per process (the result, success or diagnosis, is cached; `reload` tries
 * again, e.g. after a build). Never throws.
 */
export function loadNativeBinding(options: { reload?: boolean } = {}): NativeLoadResult {
  if (cached && !options.reload) return cached;
  const attempts: NativeLoadAttempt[] = [];
  const explicit = process.env.SDTRT_ADDON;
  if (explicit) {
    if (!existsSync(explicit)) {
      attempts.push({ source: "SDTRT_ADDON", path: explicit, error: "no such file" });
    } else {
      const binding = tryRequire("SDTRT_ADDON", explicit, attempts);
      if (binding) {
        installExitHook(binding);
        cached = { loaded: true, binding, path: explicit };
        return cached;
      }
    }
  } else {
    let path: string | undefined;
    try {
      const nodeGypBuild = require("node-gyp-build") as NodeGypBuild;
      path = nodeGypBuild.resolve(packageRoot);
    } catch (error) {
      attempts.push({ source: "node-gyp-build", error: message(error).split("\n")[0]! });
    }
    if (path) {
      const binding = tryRequire("node-gyp-build", path, attempts);
      if (binding) {
        installExitHook(binding);
        cached = { loaded: true, binding, path };
        return cached;
      }
    }
  }
  const solutions = solutionsFor(attempts);
  cached = { loaded: false, attempts, solutions, message: describeFailure(attempts, solutions) };
  return cached;
}

/** The addon, or a NativeError (code ERR_NATIVE_UNAVAILABLE, stage "load") with the diagnosis. */
export function requireNativeBinding(): NativeBinding {
  const result = loadNativeBinding();
  if (!result.loaded) throw new NativeError("ERR_NATIVE_UNAVAILABLE", "load", result.message);
  return result.binding;
}

function isNativeShape(error: unknown): error is NativeErrorShape {
  return error instanceof Error || (typeof error === "object" && error !== null && "message" in error);
}

/**
 * Turns an error thrown by the addon into the library's typed error, with the stack of
 * `callerStack` (an `Error` created before the native call, so the trace shows the caller rather
 * than the promise machinery):
 *   ABORT_ERR → AbortError; ERR_UNET_NAN (the denoise loop counted NaN/Inf UNet outputs) →
 *   UnetOverflowError; a TypeError / RangeError stays one (a programming error);
 *   anything else with a code → NativeError(code, stage, message, status).
 */
export function toTypedError(error: unknown, callerStack: Error): Error {
  if (!isNativeShape(error)) return new NativeError("ERR_NATIVE", "native", String(error));
  let typed: Error;
  // By name, not instanceof: errors created by the addon belong to the main realm, which is not the
  // realm of code running in a vm context (jest, REPL contexts).
  if (error.name === "TypeError" || error.name === "RangeError") {
    typed = error;
  } else if (error.code === "ABORT_ERR") {
    typed = new AbortError(error.message);
  } else if (error.code === "ERR_UNET_NAN") {
    // native/denoiser/denoiser.cc words it as UnetOverflowError.describe does.
    typed = UnetOverflowError.fromMessage(error.message.replace(/^denoise: /, ""), UnetOverflowError.advice.tensorrt);
  } else {
    typed = new NativeError(error.code ?? "ERR_NATIVE", error.stage ?? "native", error.message, error.status);
  }
  const frames = (callerStack.stack ?? "").split("\n").slice(1).join("\n");
  typed.stack = `${typed.name}: ${typed.message}${frames ? `\n${frames}` : ""}`;
  return typed;
}

/** Calls a synchronous native function, rethrowing its failure as a typed error with this caller's stack. */
export function callNative<T>(fn: () => T): T {
  const callerStack = new Error();
  try {
    return fn();
  } catch (error) {
    throw toTypedError(error, callerStack);
  }
}

/** The same for a native call returning a promise (an AsyncWorker). */
export async function callNativeAsync<T>(fn: () => Promise<T>): Promise<T> {
  const callerStack = new Error();
  try {
    return await fn();
  } catch (error) {
    throw toTypedError(error, callerStack);
  }
}
