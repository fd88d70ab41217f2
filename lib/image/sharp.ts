/**
 * sharp (libvips), loaded on first use: importing it costs ~0.15–0.2 s (its JavaScript and the
 * native library), which a process that writes one image pays at the end instead of at its start,
 * and a caller that knows an image is coming can start early with `preloadSharp` (the `generate`
 * command does while the model loads on the worker thread).
 */
import type SharpModule from "sharp";

export type Sharp = typeof SharpModule;

let loading: Promise<Sharp> | undefined;

/** sharp's default export, imported once. */
export function loadSharp(): Promise<Sharp> {
  if (loading === undefined) {
    loading = import("sharp").then((module) => module.default);
    loading.catch(() => {
      loading = undefined; // a later call tries again (and reports the failure itself)
    });
  }
  return loading;
}

/** Starts importing sharp without waiting for it; a failure is reported by the `loadSharp` that needs it. */
export function preloadSharp(): void {
  loadSharp().catch(() => undefined);
}
