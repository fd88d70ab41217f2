/**
 * Pipeline load options that reach the TensorRT backend, on a machine with an NVIDIA GPU and
 * TensorRT (skipped elsewhere, with the reason): `useGraphs: false` (`sd-trt bench --no-graphs`)
 * really runs the denoise loop without CUDA graphs, and the model's size multiple holds there too.
 */
import { afterAll, beforeAll, expect, test } from "@jest/globals";
import { mkdtemp, rm } from "node:fs/promises";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { Pipeline } from "../../lib/pipeline/pipeline.js";
import type { TensorRtBackend } from "../../lib/backends/tensorrt/backend.js";
import { buildEngines } from "../../lib/backends/tensorrt/build.js";
import { parseShapeOptions } from "../../lib/backends/tensorrt/profiles.js";
import { runBench } from "../../lib/bench/run-bench.js";
import { describeTensorRt } from "./support.js";

const TINY = join(process.cwd(), "models", "tiny-sd");
describeTensorRt("Pipeline on TensorRT engines of tiny-sd", () => {
  let root: string;
  let engines: string;
  beforeAll(async () => {
    root = await mkdtemp(join(tmpdir(), "sd-trt-pipeline-trt-"));
    engines = join(root, "tiny-sd");
    await buildEngines({ model: TINY, out: engines, shapes: parseShapeOptions({ batch: "1-2", size: "64x64" }) });
  }, 600_000);
  afterAll(async () => {
    await rm(root, { recursive: true, force: true });
  });

  const request = { prompt: "a lighthouse", width: 64, height: 64, steps: 4, seed: 1 } as const;

  test("useGraphs: false runs the loop without CUDA graphs; the default captures or replays one", async () => {
    for (const [useGraphs, expected] of [
      [false, ["disabled"]],
      [undefined, ["captured", "replayed"]],
    ] as const) {
      const pipe = await Pipeline.load(TINY, { backend: "tensorrt", engines, ...(useGraphs === undefined ? {} : { useGraphs }) });
      try {
        await pipe.generate(request);
        expect(expected).toContain((pipe.backend as TensorRtBackend).lastDenoise?.graph);
        expect(pipe.limits.sizeMultiple % 16).toBe(0);
      } finally {
        await pipe.dispose();
      }
    }
  });

  test("sd-trt bench --no-graphs reports runs without CUDA graphs", async () => {
    const report = await runBench({ model: TINY, backend: "tensorrt", engines, useGraphs: false, sizes: [{ width: 64, height: 64 }], steps: [3], warmup: 0, runs: 1 });
    expect(report.useGraphs).toBe(false);
    expect(report.cases[0]!.cudaGraphs).toBe("disabled");
  });
});
