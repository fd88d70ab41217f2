/**
 * Shared by the native tests: the addon `npm run build:native` produced, loaded through the one
 * loader (lib/native/load.ts). The tests assume the build ran; when it did not, they fail with
 * what to run rather than skipping silently.
 */
import { existsSync } from "node:fs";
import { join } from "node:path";
import { DEFAULT_ADDON_PATH, loadNativeBinding } from "../../lib/native/load.js";
import type { NativeBinding } from "../../lib/native/types.js";
import { packageRoot } from "../../lib/package-info.js";

export const ADDON_PATH = process.env.SDTRT_ADDON ?? join(packageRoot, DEFAULT_ADDON_PATH);

export function builtAddon(): NativeBinding {
  if (!existsSync(ADDON_PATH)) {
    throw new Error(`${ADDON_PATH} is missing: run \`npm run build:native\` before the native tests`);
  }
  const result = loadNativeBinding();
  if (!result.loaded) throw new Error(result.message);
  return result.binding;
}
