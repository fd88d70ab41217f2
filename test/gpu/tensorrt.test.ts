/**
 * TensorRT engines of the tiny-sd fixture against the CPU backend, on a machine with an NVIDIA GPU
 * and TensorRT (the engine half of `npm run test:gpu`). Builds fp16 engines for 64×64 into a temporary
 * folder (with detailed layer information), then runs text encoding, the whole denoise loop (CUDA
 * graphs, and plain launches) and the VAE on both backends with the same inputs; checks the UNet
 * runner's single owner and the UNet overflow error; and writes what it measured — differences to the
 * CPU backend, graph use, each engine's layers from IEngineInspector — to the JSON report named by
 * SDTRT_GPU_ENGINE_REPORT (scripts/test-gpu.mjs folds it into build/gpu-report.json), so the first run
 * on a GPU machine answers every question at once. Skipped, with the reason, where there is no GPU
 * or TensorRT cannot build engines.
 */
import { expect, test, beforeAll, afterAll } from "@jest/globals";
import { writeFileSync } from "node:fs";
import { mkdtemp, readFile, rm } from "node:fs/promises";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { CpuBackend } from "../../lib/backends/cpu/backend.js";
import { TensorRtBackend } from "../../lib/backends/tensorrt/backend.js";
import type { Backend } from "../../lib/backends/backend.js";
import { buildEngines } from "../../lib/backends/tensorrt/build.js";
import { parseShapeOptions } from "../../lib/backends/tensorrt/profiles.js";
import { readManifest } from "../../lib/backends/tensorrt/manifest.js";
import { NativeError, UnetOverflowError } from "../../lib/errors.js";
import { Denoiser } from "../../lib/native/denoiser.js";
import { callNative, callNativeAsync, requireNativeBinding } from "../../lib/native/load.js";
import { tensorRtBindingOf } from "../../lib/native/tensorrt-types.js";
import type { UnetIo, VaeDecoderIo } from "../../lib/model/graph-io.js";
import { createScheduler } from "../../lib/schedulers/index.js";
import { describeTensorRt, maxRelativeError } from "./support.js";

/** What the run measured, for the JSON report (SDTRT_GPU_ENGINE_REPORT). */
const report: Record<string, unknown> = {};

/** A summary of IEngineInspector's JSON: layer count, layer types, and the layers that look like attention. */
function summarizeLayers(inspected: { verbosity: string; layers: string }): Record<string, unknown> {
  let parsed: { Layers?: unknown[] } = {};
  try {
    parsed = JSON.parse(inspected.layers) as { Layers?: unknown[] };
  } catch {
    return { verbosity: inspected.verbosity, unparsed: inspected.layers.slice(0, 2000) };
  }
  const layers = (parsed.Layers ?? []).map((l) => (typeof l === "string" ? { Name: l } : (l as Record<string, unknown>)));
  const types: Record<string, number> = {};
  for (const l of layers) {
    const type = String(l.LayerType ?? "?");
    types[type] = (types[type] ?? 0) + 1;
  }
  const attention = layers
    .filter((l) => /softmax|attn|attention|mha|fmha|matmul/i.test(`${String(l.Name)} ${String(l.Metadata ?? "")} ${String(l.TacticName ?? "")}`))
    .map((l) => ({ name: l.Name, type: l.LayerType, tactic: l.TacticName, precision: (l.Outputs as Array<{ Format?: string }> | undefined)?.[0]?.Format }));
  return { verbosity: inspected.verbosity, layerCount: layers.length, layerTypes: types, attentionLayers: attention, layers };
}

const TINY = join(process.cwd(), "models", "tiny-sd");

function ids(words: number[]): Int32Array {
  const out = new Int32Array(77).fill(49407);
  out[0] = 49406;
  out.set(words, 1);
  return out;
}

function seeded(n: number, seed: number): Float32Array {
  // Box–Muller on a small LCG: a fixed pseudo-normal draw, identical for both backends.
  const out = new Float32Array(n);
  let s = seed >>> 0;
  const next = () => {
    s = (Math.imul(s, 1664525) + 1013904223) >>> 0;
    return (s + 1) / 4294967297;
  };
  for (let i = 0; i < n; i++) out[i] = Math.sqrt(-2 * Math.log(next())) * Math.cos(2 * Math.PI * next());
  return out;
}

describeTensorRt("TensorRT engines vs the CPU backend on tiny-sd", () => {
  let root: string;
  let trt: TensorRtBackend;
  let cpu: CpuBackend;

  beforeAll(async () => {
    root = await mkdtemp(join(tmpdir(), "sd-trt-gpu-"));
    await buildEngines({ model: TINY, out: join(root, "tiny-sd"), shapes: parseShapeOptions({ batch: "1-2", size: "64x64" }), detailedProfiling: true });
    trt = await TensorRtBackend.load(TINY, { engines: join(root, "tiny-sd") });
    cpu = await CpuBackend.load(TINY);
  }, 600_000);

  afterAll(async () => {
    await trt?.dispose();
    await cpu?.dispose();
    await rm(root, { recursive: true, force: true });
    if (process.env.SDTRT_GPU_ENGINE_REPORT) writeFileSync(process.env.SDTRT_GPU_ENGINE_REPORT, `${JSON.stringify(report, null, 2)}\n`);
  });

  test("limits come from the engines' profiles", () => {
    expect(trt.limits).toMatchObject({ maxBatch: 2, minWidth: 64, maxWidth: 64, minHeight: 64, maxHeight: 64, canEncodeImages: true });
    expect(trt.hiddenSize).toBe(32);
  });

  async function generate(backend: Backend, batch: number, edit?: (z: Float32Array) => void): Promise<{ latents: Float32Array; images: Uint8Array[] }> {
    const scheduler = createScheduler("euler");
    const program = scheduler.compile(6);
    const prompt = ids([320, 1125, 539, 320, 2368]);
    const rowOf = new Int32Array(batch);
    const z = seeded(batch * 4 * 8 * 8, 42).map((v) => v * program.initNoiseSigma);
    edit?.(z);
    const out = await backend.generate({
      program,
      start: { latents: z },
      batch,
      latentHeight: 8,
      latentWidth: 8,
      cond: { chunks: 1, prompts: 1, ids: prompt, multipliers: new Float32Array(77).fill(1), rowOf, groupOf: new Int32Array(1) },
      uncond: { chunks: 1, prompts: 1, ids: ids([]), multipliers: new Float32Array(77).fill(1), rowOf, groupOf: new Int32Array(1) },
      emphasis: "original" as const,
      guidance: new Float64Array(batch).fill(7.5),
      noise: [],
      returnLatents: true,
    });
    return { latents: out.latents!, images: out.images };
  }

  test("denoise (CUDA graphs) and decode match the CPU backend within fp16 tolerance", async () => {
    const comparisons: unknown[] = [];
    report.cpuComparison = comparisons;
    for (const batch of [1, 2]) {
      const a = await generate(cpu, batch);
      const b = await generate(trt, batch);
      comparisons.push({ batch, latentsRelativeError: maxRelativeError(a.latents, b.latents), denoise: trt.lastDenoise });
      expect(maxRelativeError(a.latents, b.latents)).toBeLessThan(3e-2);
      for (let i = 0; i < batch; i++) {
        let max = 0;
        let sum = 0;
        for (let p = 0; p < a.images[i]!.length; p++) {
          const d = Math.abs(a.images[i]![p]! - b.images[i]![p]!);
          max = Math.max(max, d);
          sum += d;
        }
        expect(max).toBeLessThanOrEqual(12);
        expect(sum / a.images[i]!.length).toBeLessThan(2);
      }
      expect(["captured", "replayed"]).toContain(trt.lastDenoise?.graph);
    }
  });

  test("img2img (the VAE encoder, then add_noise) matches the CPU backend", async () => {
    const pixels = seeded(3 * 64 * 64, 7).map((v) => Math.max(-1, Math.min(1, v * 0.5)));
    const program = createScheduler("euler").compile(6, { startIndex: 3 });
    const job = {
      program,
      start: { images: [{ pixels, rows: 1, eps: [seeded(4 * 8 * 8, 3)], noise: seeded(4 * 8 * 8, 5) }] },
      batch: 1,
      latentHeight: 8,
      latentWidth: 8,
      cond: { chunks: 1, prompts: 1, ids: ids([320, 1125]), multipliers: new Float32Array(77).fill(1), rowOf: new Int32Array(1), groupOf: new Int32Array(1) },
      uncond: null,
      emphasis: "original" as const,
      guidance: Float64Array.of(1),
      noise: [],
      returnLatents: true,
    };
    const a = await cpu.generate(job);
    const b = await trt.generate(job);
    expect(maxRelativeError(a.latents!, b.latents!)).toBeLessThan(3e-2);
  });

  test("each engine reports its layers in detail (IEngineInspector), recorded in the report", () => {
    const engines = trt.inspectEngines();
    const summary: Record<string, unknown> = {};
    for (const [role, inspected] of Object.entries(engines)) {
      summary[role] = summarizeLayers(inspected!);
      expect(inspected!.verbosity).toBe("detailed");
      expect((summary[role] as { layerCount: number }).layerCount).toBeGreaterThan(0);
    }
    report.engineLayers = summary;
  });

  test("CUDA graphs on and off give the same latents, bit for bit", async () => {
    const plain = await TensorRtBackend.load(TINY, { engines: join(root, "tiny-sd"), useGraphs: false });
    try {
      const graphs = await generate(trt, 1);
      const graphUse = trt.lastDenoise?.graph;
      const launches = await generate(plain, 1);
      report.graphsOnOff = { graphUse, plainUse: plain.lastDenoise?.graph, relativeError: maxRelativeError(graphs.latents, launches.latents) };
      expect(plain.lastDenoise?.graph).toBe("disabled");
      expect(Array.from(launches.latents)).toEqual(Array.from(graphs.latents));
    } finally {
      await plain.dispose();
    }
  });

  test("a UNet context serves one Denoiser: a second one is refused until the first is disposed", async () => {
    const trtBinding = tensorRtBindingOf(requireNativeBinding())!;
    const manifest = await readManifest(join(trt.variantDir, "manifest.json"));
    const entry = manifest.engines.unet!;
    const contract = entry.contract as UnetIo;
    const engine = await callNativeAsync(async () => trtBinding.loadEngine(await readFile(join(trt.variantDir, entry.plan)), { name: "unet" }));
    const scratch = callNative(() => new trtBinding.DeviceScratch(Math.max(engine.deviceMemoryBytes, 1)));
    const context = callNative(() => engine.createContext(scratch));
    const options = { sample: contract.sampleName, timestep: contract.timestepName, hidden: contract.contextName, out: contract.outputName, timestepLayout: contract.timestepLayout, hiddenSize: manifest.model.hiddenSize };
    const unet = callNative(() => context.createUnet(options));
    const sameContext = callNative(() => context.createUnet(options));
    const first = await Denoiser.create({ unet });
    try {
      for (const other of [unet, sameContext]) {
        const error = await Denoiser.create({ unet: other }).catch((e: unknown) => e);
        expect(error).toBeInstanceOf(NativeError);
        expect(error).toMatchObject({ code: "ERR_RUNNER_OWNED" });
      }
    } finally {
      await first.dispose();
    }
    const second = await Denoiser.create({ unet: sameContext });
    await second.dispose();
    unet.dispose();
    sameContext.dispose();
    context.dispose();
    scratch.dispose();
    engine.dispose();
  });

  test("a decode that fails after the engine was enqueued waits for it before releasing the shared scratch", async () => {
    // Naming an input as the output makes the decode fail on its output shape *after* enqueueV3:
    // the path that used to unlock the scratch while the engine still ran on it.
    const trtBinding = tensorRtBindingOf(requireNativeBinding())!;
    const manifest = await readManifest(join(trt.variantDir, "manifest.json"));
    const entry = manifest.engines.vae_decoder!;
    const contract = entry.contract as VaeDecoderIo;
    const engine = await callNativeAsync(async () => trtBinding.loadEngine(await readFile(join(trt.variantDir, entry.plan)), { name: "vae_decoder" }));
    const scratch = callNative(() => new trtBinding.DeviceScratch(Math.max(engine.deviceMemoryBytes, 1)));
    const first = callNative(() => engine.createContext(scratch));
    const second = callNative(() => engine.createContext(scratch));
    try {
      const latents = seeded(4 * 8 * 8, 11);
      const good = { latents, batch: 1, height: 8, width: 8, input: contract.latentName, output: contract.imageName, scalingFactor: 0.18215 };
      const expected = await callNativeAsync(() => first.decodeImage(good));
      const failing = callNativeAsync(() => first.decodeImage({ ...good, output: contract.latentName }));
      // Queued behind the failing call on the same scratch: it must start on a quiet GPU.
      const after = callNativeAsync(() => second.decodeImage(good));
      await expect(failing).rejects.toMatchObject({ code: "ERR_SHAPE" });
      expect(Buffer.from((await after).pixels).equals(Buffer.from(expected.pixels))).toBe(true);
    } finally {
      first.dispose();
      second.dispose();
      scratch.dispose();
      engine.dispose();
    }
  });

  test("NaN from the UNet is a UnetOverflowError raised before the VAE, not a VaeOverflowError", async () => {
    const error = await generate(trt, 1, (z) => {
      z[0] = Number.NaN;
    }).catch((e: unknown) => e);
    report.unetOverflow = error instanceof Error ? { name: error.name, message: error.message } : String(error);
    expect(error).toBeInstanceOf(UnetOverflowError);
    expect(error).toMatchObject({ code: "ERR_UNET_NAN", evaluation: 0 });
  });
});
