/** Where the package lives on disk, and its version, whether running from lib/ (ts-jest) or dist/. */
import { existsSync, readFileSync } from "node:fs";
import { homedir } from "node:os";
import { dirname, join } from "node:path";
import { fileURLToPath } from "node:url";

/** The package root: the folder holding package.json (one level above lib/ or dist/). */
export const packageRoot: string = join(dirname(fileURLToPath(import.meta.url)), "..");

let cachedVersion: string | undefined;
export function packageVersion(): string {
  cachedVersion ??= (JSON.parse(readFileSync(join(packageRoot, "package.json"), "utf8")) as { version: string }).version;
  return cachedVersion;
}

/** The tiny SD model shipped in the package: the default model of the CLI and the tests. */
export const defaultModelDir: string = join(packageRoot, "models", "tiny-sd");

/**
 * Where models converted from checkpoints are kept (`--cache-dir` overrides it): `$SDTRT_CACHE_DIR`,
 * else the platform's per-user cache folder: `$XDG_CACHE_HOME/sd-trt/models` (`~/.cache/sd-trt/models`)
 * on Linux, `~/Library/Caches/sd-trt/models` on macOS, `%LOCALAPPDATA%\sd-trt\cache\models` on Windows.
 */
export function defaultModelCacheDir(env: NodeJS.ProcessEnv = process.env, platform: NodeJS.Platform = process.platform, home: string = homedir()): string {
  if (env["SDTRT_CACHE_DIR"]) return env["SDTRT_CACHE_DIR"];
  if (platform === "darwin") return join(home, "Library", "Caches", "sd-trt", "models");
  if (platform === "win32") return join(env["LOCALAPPDATA"] || join(home, "AppData", "Local"), "sd-trt", "cache", "models");
  return join(env["XDG_CACHE_HOME"] || join(home, ".cache"), "sd-trt", "models");
}

/**
 * True in a development checkout (tsconfig.json next to package.json), false in an installed
 * package (npm install sd-trt), where `npm run build:native` does not exist for the user.
 */
export const isDevelopmentCheckout: boolean = existsSync(join(packageRoot, "tsconfig.json"));

/**
 * The command that (re)builds the native addon from source where this package is: `npm run
 * build:native` in a checkout; in an installed package, `npm rebuild sd-trt` with
 * SDTRT_BUILD_FROM_SOURCE=1 (scripts/install.mjs then compiles instead of taking the prebuild).
 * @param env variables to put in front, e.g. "TENSORRT_ROOT=/path/to/TensorRT".
 */
export function buildNativeCommand(env = "", checkout: boolean = isDevelopmentCheckout): string {
  const prefix = env ? `${env} ` : "";
  return checkout ? `${prefix}npm run build:native` : `${prefix}SDTRT_BUILD_FROM_SOURCE=1 npm rebuild sd-trt`;
}
