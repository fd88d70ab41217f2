/**
 * Cancellation at exit starts from JS (native/README.md, "Ownership and shutdown"): Node waits for
 * pending native work before it runs environment cleanup hooks, and process.exit() runs none, so
 * lib/native/load.ts calls the addon's shutdown() on process "exit". These run where the addon
 * loads (no GPU needed); test/gpu/denoiser.test.ts stops a real running loop the same way.
 */
import { describe, expect, test } from "@jest/globals";
import { spawnSync } from "node:child_process";
import { join } from "node:path";
import { cancelNativeWork } from "../../lib/native/load.js";
import { packageRoot } from "../../lib/package-info.js";
import { ADDON_PATH, builtAddon } from "./support.js";

const addon = builtAddon();

describe("exit-time cancellation", () => {
  test("cancelAll() and cancelNativeWork() report how many runs they stopped (none here)", () => {
    expect(addon.cancelAll()).toBe(0);
    expect(cancelNativeWork()).toBe(0);
  });

  test("process.exit() runs the loader's exit hook, which shuts the addon down", () => {
    const load = join(packageRoot, "dist", "native", "load.js");
    const script = `
      const { loadNativeBinding } = await import(${JSON.stringify(load)});
      const before = process.listenerCount("exit");
      const first = loadNativeBinding();
      loadNativeBinding({ reload: true }); // a reload must not add a second hook
      const hooks = process.listenerCount("exit") - before;
      const real = first.binding.shutdown.bind(first.binding);
      first.binding.shutdown = () => { process.stdout.write("shutdown called, stopped " + real() + "\\n"); return 0; };
      process.stdout.write("exit hooks: " + hooks + "\\n");
      process.exit(0);
    `;
    const run = spawnSync(process.execPath, ["--input-type=module", "-e", script], { encoding: "utf8", env: { ...process.env, SDTRT_ADDON: ADDON_PATH } });
    expect(run.stderr).toBe("");
    expect(run.status).toBe(0);
    expect(run.stdout).toBe("exit hooks: 1\nshutdown called, stopped 0\n");
  });
});
