/** Where the package lives on disk, and its version, whether running from lib/ (ts-jest) or dist/. */
import { readFileSync } from "node:fs";
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
