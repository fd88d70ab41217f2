/**
 * GPU memory in use during a TensorRT benchmark, read through the native binding's device info
 * (`info({ freeMemory: true })`: total − free of device 0). It is the device's memory in use by
 * every process, which on a benchmark machine is this process's engines, scratch and buffers.
 * Sampled on a timer and after each run; the peak is reported.
 */
import { loadNativeBinding } from "../native/load.js";
import type { NativeBinding } from "../native/types.js";

export class GpuMemorySampler {
  readonly #binding: NativeBinding;
  readonly #timer: NodeJS.Timeout;
  #peak = 0;
  #total = 0;
  #device = "";

  private constructor(binding: NativeBinding, intervalMs: number) {
    this.#binding = binding;
    this.sample();
    this.#timer = setInterval(() => this.sample(), intervalMs);
    this.#timer.unref();
  }

  /** Starts sampling, or returns null when the binding or a GPU is not available. */
  static start(intervalMs = 50): GpuMemorySampler | null {
    const loaded = loadNativeBinding();
    if (!loaded.loaded) return null;
    try {
      const device = loaded.binding.info({ freeMemory: true }).devices[0];
      if (!device || device.freeMemory === null) return null;
    } catch {
      return null;
    }
    return new GpuMemorySampler(loaded.binding, intervalMs);
  }

  sample(): void {
    try {
      const device = this.#binding.info({ freeMemory: true }).devices[0];
      if (!device || device.freeMemory === null) return;
      this.#total = device.totalMemory;
      this.#device = device.name;
      this.#peak = Math.max(this.#peak, device.totalMemory - device.freeMemory);
    } catch {
      // A failed read leaves the peak as it is.
    }
  }

  stop(): { peakUsedBytes: number; totalBytes: number; device: string } {
    this.sample();
    clearInterval(this.#timer);
    return { peakUsedBytes: this.#peak, totalBytes: this.#total, device: this.#device };
  }
}
