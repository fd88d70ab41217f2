/**
 * The TypeScript side of the Denoiser: one run at a time, AbortSignal → native cancel(), typed
 * errors, idempotent dispose that refuses later calls. The native class needs a GPU, so these
 * tests drive the wrapper with a scripted object implementing the NativeDenoiser interface; the
 * same behaviour against the real addon is in test/gpu/denoiser.test.ts.
 */
import { describe, expect, test } from "@jest/globals";
import { InvalidOptionError, AbortError, DisposedError, NativeError } from "../../lib/errors.js";
import { Denoiser } from "../../lib/native/denoiser.js";
import type { NativeDenoiseOptions, NativeDenoiseResult, NativeDenoiser, NativeDeviceTensor } from "../../lib/native/types.js";

/** Records calls; each run settles when the test says so, like the AsyncWorker would. */
class ScriptedNative implements NativeDenoiser {
  disposed = false;
  busy = false;
  cancels = 0;
  disposeCalls = 0;
  runs: { options: NativeDenoiseOptions; resolve: () => void; reject: (e: Error) => void }[] = [];
  concurrent = 0;
  maxConcurrent = 0;

  /** What the next run resolves with as `latents` (default: a copy of the input latents). */
  nextLatents: NativeDeviceTensor | undefined;

  run(options: NativeDenoiseOptions): Promise<NativeDenoiseResult<Float32Array | NativeDeviceTensor>> {
    if (this.disposed) return Promise.reject(Object.assign(new Error("denoise: Denoiser is disposed"), { code: "ERR_DISPOSED", stage: "denoise" }));
    this.busy = true;
    this.concurrent++;
    this.maxConcurrent = Math.max(this.maxConcurrent, this.concurrent);
    return new Promise((resolve, reject) => {
      const done = () => {
        this.busy = false;
        this.concurrent--;
      };
      this.runs.push({
        options,
        resolve: () => {
          done();
          const latents = this.nextLatents ?? options.latents.slice();
          this.nextLatents = undefined;
          resolve({ latents, graph: "captured", evaluations: 1, gpuMs: 1, hostMs: 2 });
        },
        reject: (e) => {
          done();
          reject(e);
        },
      });
    });
  }
  cancel(): void {
    this.cancels++;
    const current = this.runs.at(-1);
    if (this.busy && current) {
      current.reject(Object.assign(new Error("denoise: cancelled after 1 of 4 evaluations"), { code: "ABORT_ERR", stage: "denoise" }));
    }
  }
  dispose(): void {
    this.disposeCalls++;
    this.disposed = true;
  }
}

const tick = () => new Promise((r) => setImmediate(r));
const request = () => ({
  program: new Float64Array(8),
  latents: new Float32Array(4 * 2 * 2),
  noise: [] as Float32Array[],
  batch: 1,
  latentHeight: 2,
  latentWidth: 2,
});

describe("Denoiser (TS wrapper)", () => {
  test("runs go to the native side one at a time, in order", async () => {
    const native = new ScriptedNative();
    const denoiser = Denoiser.fromNative(native);
    const first = denoiser.run(request());
    const second = denoiser.run(request());
    expect(denoiser.queueLength).toBe(2);
    await tick();
    expect(native.runs).toHaveLength(1);
    native.runs[0]!.resolve();
    await first;
    await tick();
    expect(native.runs).toHaveLength(2);
    native.runs[1]!.resolve();
    await second;
    expect(native.maxConcurrent).toBe(1);
    expect(denoiser.queueLength).toBe(0);
  });

  test("passes the request through: noise draws concatenated, onStep 0-based", async () => {
    const native = new ScriptedNative();
    const denoiser = Denoiser.fromNative(native);
    const steps: [number, number][] = [];
    const run = denoiser.run({
      ...request(),
      noise: [new Float32Array(16).fill(1), new Float32Array(16).fill(2)],
      guidance: new Float64Array([7.5]),
      useGraphs: false,
      queueDepth: 0,
      onStep: (i, total) => steps.push([i, total]),
    });
    await tick();
    const options = native.runs[0]!.options;
    expect(options.noise).toHaveLength(32);
    expect(options.noise[16]).toBe(2);
    expect(options).toMatchObject({ batch: 1, height: 2, width: 2, useGraphs: false, queueDepth: 0, sequenceLength: 77 });
    options.onProgress!(1, 4);
    options.onProgress!(4, 4);
    expect(steps).toEqual([
      [0, 4],
      [3, 4],
    ]);
    native.runs[0]!.resolve();
    await expect(run).resolves.toMatchObject({ graph: "captured" });
  });

  test("aborting cancels the native loop and rejects with the signal's reason", async () => {
    const native = new ScriptedNative();
    const denoiser = Denoiser.fromNative(native);
    const controller = new AbortController();
    const run = denoiser.run({ ...request(), signal: controller.signal });
    await tick();
    const reason = new AbortError("user pressed stop");
    controller.abort(reason);
    await expect(run).rejects.toBe(reason);
    expect(native.cancels).toBe(1);
  });

  test("an already aborted signal never reaches the native side", async () => {
    const native = new ScriptedNative();
    const controller = new AbortController();
    controller.abort();
    await expect(Denoiser.fromNative(native).run({ ...request(), signal: controller.signal })).rejects.toThrow(AbortError);
    expect(native.runs).toHaveLength(0);
  });

  test("native failures become NativeError with code, stage, status and the caller's stack", async () => {
    const native = new ScriptedNative();
    const run = Denoiser.fromNative(native).run(request());
    await tick();
    native.runs[0]!.reject(
      Object.assign(new Error("denoise: cudaMalloc failed: out of memory (cudaErrorMemoryAllocation)"), {
        code: "ERR_CUDA",
        stage: "denoise",
        status: "cudaErrorMemoryAllocation",
      }),
    );
    const error = (await run.catch((e: unknown) => e)) as NativeError;
    expect(error).toBeInstanceOf(NativeError);
    expect(error).toMatchObject({ code: "ERR_CUDA", stage: "denoise", status: "cudaErrorMemoryAllocation" });
    expect(error.stack).toContain("denoiser-wrapper.test.ts");
  });

  test("dispose cancels the running loop, waits for it, frees once, and refuses later runs", async () => {
    const native = new ScriptedNative();
    const denoiser = Denoiser.fromNative(native);
    const running = denoiser.run(request());
    const queued = denoiser.run(request());
    await tick();
    const disposing = denoiser.dispose();
    expect(denoiser.disposed).toBe(true);
    await expect(running).rejects.toThrow(AbortError);
    await expect(queued).rejects.toThrow(DisposedError);
    await disposing;
    await denoiser.dispose();
    await denoiser[Symbol.asyncDispose]();
    expect(native.disposeCalls).toBe(1);
    expect(native.runs).toHaveLength(1);
    await expect(denoiser.run(request())).rejects.toThrow("Denoiser is disposed");
  });

  test("options are validated in TS with the option's name, as rejections (never a synchronous throw)", async () => {
    const denoiser = Denoiser.fromNative(new ScriptedNative());
    await expect(denoiser.run({ ...request(), batch: 0 })).rejects.toThrow(new InvalidOptionError("batch", "batch must be an integer from 1 to 1024, got 0 (number)"));
    await expect(denoiser.run({ ...request(), latents: new Float32Array(3) })).rejects.toThrow(/latents must be 16 values/);
    await expect(denoiser.run({ ...request(), guidance: new Float64Array(2) })).rejects.toThrow(/guidance must be a Float64Array of 1 scales/);
    await expect(denoiser.run({ ...request(), queueDepth: 65 })).rejects.toThrow(/queueDepth must be an integer from 0 to 64, got 65/);
    // A1111's long prompts: 77 · chunks tokens of text.
    await expect(denoiser.run({ ...request(), sequenceLength: 100 })).rejects.toThrow(/sequenceLength must be a multiple of 77 \(chunks of 77 tokens\), got 100/);
    await expect(denoiser.run({ ...request(), sequenceLength: 77 * 65 })).rejects.toThrow(/sequenceLength must be an integer from 77 to 4928, got 5005/);
    await expect(denoiser.run({ ...request(), program: [1] as unknown as Float64Array })).rejects.toThrow(/program must be a Float64Array from packProgram\(\)/);
    await expect(denoiser.run({ ...request(), noise: [new Float64Array(4) as unknown as Float32Array] })).rejects.toThrow(/noise\[0\] must be a Float32Array/);
    await expect(denoiser.run({ ...request(), output: "gpu" as never })).rejects.toThrow(/output must be "host" or "device", got "gpu"/);
  });

  test("output: host by default (no option sent), \"device\" forwarded and its tensor handed back as is", async () => {
    const native = new ScriptedNative();
    const denoiser = Denoiser.fromNative(native);
    const host = denoiser.run(request());
    await tick();
    expect(native.runs[0]!.options).not.toHaveProperty("output");
    native.runs[0]!.resolve();
    const hostResult = await host;
    expect(hostResult.latents).toBeInstanceOf(Float32Array);

    const explicitHost = denoiser.run({ ...request(), output: "host" });
    await tick();
    expect(native.runs[1]!.options).not.toHaveProperty("output");
    native.runs[1]!.resolve();
    await explicitHost;

    const tensor: NativeDeviceTensor = {
      dtype: "float32",
      shape: [1, 4, 2, 2],
      byteLength: 64,
      disposed: false,
      dispose: () => undefined,
      toHost: () => Promise.resolve(new Float32Array(16)),
    };
    native.nextLatents = tensor;
    const device = denoiser.run({ ...request(), output: "device" });
    await tick();
    expect(native.runs[2]!.options.output).toBe("device");
    native.runs[2]!.resolve();
    // Typed as NativeDeviceTensor by the overload: no cast needed to read its shape.
    const deviceResult = await device;
    expect(deviceResult.latents).toBe(tensor);
    expect(deviceResult.latents.shape).toEqual([1, 4, 2, 2]);
  });

  test("device embeddings may be a list of tensors, passed through unchanged", async () => {
    const native = new ScriptedNative();
    const denoiser = Denoiser.fromNative(native);
    const part = { dtype: "float16", shape: [1, 77, 8], byteLength: 1232, disposed: false, dispose: () => undefined } as unknown as NativeDeviceTensor;
    const parts = [part, part];
    const run = denoiser.run({ ...request(), embeddings: parts, guidance: new Float64Array([7.5]) });
    await tick();
    expect(native.runs[0]!.options.embeddings).toBe(parts);
    native.runs[0]!.resolve();
    await run;
  });

  test("splitCalls (uncond and cond as two UNet calls) is checked in TS and passed through; without it nothing is sent", async () => {
    const denoiser = Denoiser.fromNative(new ScriptedNative());
    const guidance = new Float64Array([7.5]);
    await expect(denoiser.run({ ...request(), splitCalls: { uncondSequenceLength: 77, callRows: 1 } })).rejects.toThrow(
      new InvalidOptionError("splitCalls", "splitCalls needs guidance: only the uncond rows of classifier-free guidance run as their own UNet call"),
    );
    await expect(denoiser.run({ ...request(), guidance, splitCalls: { uncondSequenceLength: 100, callRows: 1 } })).rejects.toThrow(
      /splitCalls.uncondSequenceLength must be a multiple of 77 \(chunks of 77 tokens\), got 100/,
    );
    await expect(denoiser.run({ ...request(), guidance, splitCalls: { uncondSequenceLength: 77, callRows: 3 } })).rejects.toThrow(
      /splitCalls.callRows must be the batch \(1\) or twice it \(2\), got 3/,
    );
    const native = new ScriptedNative();
    const passing = Denoiser.fromNative(native);
    for (const splitCalls of [{ uncondSequenceLength: 154, callRows: 2 }, undefined]) {
      const run = passing.run({ ...request(), guidance, sequenceLength: 77, ...(splitCalls ? { splitCalls } : {}) });
      await tick();
      expect(native.runs.at(-1)!.options.splitCalls).toEqual(splitCalls);
      expect("splitCalls" in native.runs.at(-1)!.options).toBe(splitCalls !== undefined);
      native.runs.at(-1)!.resolve();
      await run;
    }
  });
});
