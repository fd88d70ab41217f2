/**
 * GPU tests run only where the addon is built with CUDA and sees a GPU; everywhere else they are
 * skipped with the reason (normal `npm test`). `npm run test:gpu` (scripts/test-gpu.mjs) runs them
 * on a GPU machine and fails instead when there is no GPU.
 */
import { describe, test } from "@jest/globals";
import { loadNativeBinding } from "../../lib/native/load.js";
import type { NativeBinding, NativeInfo } from "../../lib/native/types.js";

export type GpuContext = { ok: true; addon: NativeBinding; info: NativeInfo } | { ok: false; reason: string };

export function detectGpu(): GpuContext {
  const load = loadNativeBinding();
  if (!load.loaded) return { ok: false, reason: `the addon did not load (run \`npm run build:native\`): ${load.attempts.map((a) => a.error).join("; ")}` };
  const info = load.binding.info();
  if (!info.cudaCompiledIn) return { ok: false, reason: "the addon was built without CUDA" };
  if (info.devices.length === 0) return { ok: false, reason: `no GPU: ${info.deviceError ?? "CUDA reports no device"}` };
  return { ok: true, addon: load.binding, info };
}

/** `describe` on a GPU machine; else one skipped test whose name says why, plus a console note. */
export function describeGpu(name: string, body: (gpu: { addon: NativeBinding; info: NativeInfo }) => void): void {
  const gpu = detectGpu();
  if (!gpu.ok && process.env.SDTRT_REQUIRE_GPU === "1") {
    // `npm run test:gpu`: a GPU test that cannot run is a failure, not a skip.
    test(`${name} — needs a GPU`, () => {
      throw new Error(`GPU required (SDTRT_REQUIRE_GPU=1) but ${gpu.reason}`);
    });
    return;
  }
  if (!gpu.ok) {
    console.info(`GPU tests skipped (${name}): ${gpu.reason}`);
    test.skip(`${name} — skipped: ${gpu.reason}`, () => undefined);
    return;
  }
  describe(name, () => body(gpu));
}
