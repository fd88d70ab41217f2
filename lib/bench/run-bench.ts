/**
 * The benchmark behind `sd-trt bench`: for every batch size × image size × step count asked for,
 * warm-up generations (not measured), then timed generations, each followed by PNG encoding of
 * its images (what a service returns). Per case it reports:
 *
 * - end-to-end latency (generate + PNG encode) p50 / p90 / p99, images/s and it/s
 *   (sampler steps per second of denoising, A1111's "it/s");
 * - per-stage times (tokenize, text encode, denoise total and per step, VAE decode, PNG encode);
 * - peak RSS during the timed runs, and on TensorRT the GPU's peak memory in use;
 * - on the CPU backend, the overhead ratio: the pipeline's wall time over the sum of the raw
 *   ONNX Runtime `session.run` times it caused (measured inside the ONNX Runtime worker, see
 *   `CpuBackend.runtimeStats`). 1.00 would mean the TypeScript around the models costs nothing.
 *
 * Every run of a case uses the same prompt and seeds, so the work is identical run to run.
 */
import { cpus } from "node:os";
import type { Backend } from "../backends/backend.js";
import type { RuntimeStats } from "../backends/cpu/backend.js";
import { encodeImage } from "../image/encode.js";
import { packageVersion } from "../package-info.js";
import { Pipeline, type BackendChoice, type GenerateResult, type PipelineLoadOptions } from "../pipeline/pipeline.js";
import { InvalidOptionError } from "../errors.js";
import { integerInRange, numberInRange } from "../validate.js";
import { imageSize } from "../pipeline/options.js";
import { PeakRssSampler } from "./memory.js";
import { GpuMemorySampler } from "./gpu-memory.js";
import { summarize, type Summary } from "./stats.js";

export interface BenchSize {
  width: number;
  height: number;
}

export interface BenchOptions {
  /** Model folder. Defaults to the tiny model shipped with the package. */
  model?: string;
  /** Defaults to `"auto"`. */
  backend?: BackendChoice;
  /** TensorRT engine folder. */
  engines?: string;
  /** CPU: ONNX Runtime intra-op threads. */
  threads?: number;
  /** Batch sizes to measure. Defaults to [1]. */
  batches?: number[];
  /** Image sizes to measure. Defaults to the model's native size. */
  sizes?: BenchSize[];
  /** Step counts to measure. Defaults to [20]. */
  steps?: number[];
  /** Unmeasured generations before each case, 0 … 100. Defaults to 2. */
  warmup?: number;
  /** Measured generations per case, 1 … 10000. Defaults to 10. */
  runs?: number;
  /** Scheduler. Defaults to the model's. */
  scheduler?: string;
  /** Guidance scale. Defaults to 7.5. */
  guidance?: number;
  /** Defaults to "a photograph of an astronaut riding a horse". */
  prompt?: string;
  /** Noise source. Defaults to "cpu". */
  rng?: "cpu" | "nv";
  /** TensorRT: capture the denoise loop in CUDA graphs. Defaults to true; false is `--no-graphs`. */
  useGraphs?: boolean;
  /** Called before each case with a short label, for progress output. */
  onCase?: (label: string, index: number, count: number) => void;
}

export interface StageTimes {
  tokenize: Summary;
  textEncode: Summary;
  denoise: Summary;
  /** Denoise time divided by the step count. */
  denoisePerStep: Summary;
  decode: Summary;
  /** Drawing the step noise: overlapped with the model work (see GenerateTimings.stepNoise), not part of `pipeline`. */
  stepNoise: Summary;
  /** PNG encoding of the batch's images (with the infotext chunk). */
  pngEncode: Summary;
  /** The whole `generate()` call. */
  pipeline: Summary;
}

export interface OrtOverhead {
  /** Sum of pipeline wall times over the timed runs, ms. */
  pipelineMs: number;
  /** Sum of the ONNX Runtime `session.run` times those runs made, ms. */
  ortMs: number;
  /** pipelineMs / ortMs. */
  ratio: number;
  /** ONNX Runtime calls per run, by model. */
  callsPerRun: Record<string, number>;
  /** ONNX Runtime ms per run, by model (mean). */
  msPerRun: Record<string, number>;
}

export interface BenchCase {
  batch: number;
  width: number;
  height: number;
  steps: number;
  scheduler: string;
  /** UNet evaluations per generation (steps + 1 for PNDM, about 2·steps for Heun). */
  evaluations: number;
  runs: number;
  /** End-to-end per generation: generate() + PNG encoding of its images. */
  latencyMs: Summary;
  stagesMs: StageTimes;
  /** Sampler steps per second of denoising (mean over runs). */
  itPerSecond: number;
  /** Images per second, end to end, one generation at a time. */
  imagesPerSecond: number;
  memory: { peakRssBytes: number; startRssBytes: number };
  /** TensorRT: the GPU's memory in use (all processes), sampled; null elsewhere. */
  gpuMemory: { peakUsedBytes: number; totalBytes: number; device: string } | null;
  /** TensorRT: how the timed runs used CUDA graphs ("captured", "replayed", "disabled", "fallback"); null elsewhere. */
  cudaGraphs: string | null;
  /** TensorRT: GPU time of the denoise loop per run (CUDA events); null elsewhere. */
  gpuDenoiseMs: Summary | null;
  /** CPU backend only: the pipeline against its raw ONNX Runtime calls. */
  ortOverhead: OrtOverhead | null;
}

export interface BenchReport {
  format: "sd-trt-bench/1";
  createdAt: string;
  sdTrtVersion: string;
  node: string;
  platform: string;
  cpu: { model: string; logicalCores: number };
  model: string;
  backend: string;
  backendReason: string;
  guidance: number;
  prompt: string;
  rng: string;
  warmup: number;
  useGraphs: boolean | null;
  cases: BenchCase[];
}

const DEFAULT_PROMPT = "a photograph of an astronaut riding a horse";

interface CpuStatsBackend extends Backend {
  readonly runtimeStats: RuntimeStats;
}

function hasRuntimeStats(backend: Backend): backend is CpuStatsBackend {
  return "runtimeStats" in backend && typeof (backend as CpuStatsBackend).runtimeStats === "object";
}

/** The TensorRT backend's report of its last denoise (lib/backends/tensorrt/backend.ts). */
interface GraphReportingBackend extends Backend {
  readonly lastDenoise?: { graph: "disabled" | "captured" | "replayed" | "fallback"; graphFallbackReason?: string; gpuMs: number };
}

/** How the last denoise used CUDA graphs, when the backend says. */
function lastGraphUse(backend: Backend): { graph: string; gpuMs: number } | undefined {
  const last = (backend as GraphReportingBackend).lastDenoise;
  return last ? { graph: last.graph, gpuMs: last.gpuMs } : undefined;
}

function statsDelta(after: RuntimeStats, before: RuntimeStats): { calls: Record<string, number>; ms: Record<string, number>; totalMs: number } {
  const calls: Record<string, number> = {};
  const ms: Record<string, number> = {};
  let totalMs = 0;
  for (const key of Object.keys(after) as (keyof RuntimeStats)[]) {
    calls[key] = after[key].calls - before[key].calls;
    ms[key] = after[key].ms - before[key].ms;
    totalMs += ms[key]!;
  }
  return { calls, ms, totalMs };
}

function validateList(name: string, values: number[], min: number, max: number): number[] {
  if (!Array.isArray(values) || values.length === 0) throw new InvalidOptionError(name, `${name} must list at least one value`);
  return values.map((v) => integerInRange(name, v, min, max));
}

/** Runs the benchmark on a freshly loaded pipeline, which it disposes at the end. */
export async function runBench(options: BenchOptions = {}): Promise<BenchReport> {
  const warmup = integerInRange("warmup", options.warmup ?? 2, 0, 100);
  const runs = integerInRange("runs", options.runs ?? 10, 1, 10_000);
  const guidance = numberInRange("guidance", options.guidance ?? 7.5, 0, 100);
  const prompt = options.prompt ?? DEFAULT_PROMPT;
  const rng = options.rng ?? "cpu";
  // `useGraphs` goes to the TensorRT backend's load options; how the runs really used CUDA graphs
  // is read back from the backend after each run (`lastDenoise.graph`) and reported, not assumed.
  const loadOptions: PipelineLoadOptions = { backend: options.backend ?? "auto" };
  if (options.engines !== undefined) loadOptions.engines = options.engines;
  if (options.threads !== undefined) loadOptions.threads = options.threads;
  if (options.useGraphs !== undefined) loadOptions.useGraphs = options.useGraphs;
  const pipeline = await Pipeline.load(options.model, loadOptions);
  try {
    const backend = pipeline.backend;
    let useGraphs: boolean | null = null;
    if (backend.name === "tensorrt") {
      useGraphs = options.useGraphs ?? true;
    } else if (options.useGraphs === false) {
      throw new InvalidOptionError("useGraphs", `--no-graphs applies to the TensorRT backend; this run uses the ${backend.name} backend`);
    }
    const limits = pipeline.limits;
    const batches = validateList("batch", options.batches ?? [1], 1, limits.maxBatch);
    const steps = validateList("steps", options.steps ?? [20], 1, 1000);
    const sizes = options.sizes ?? [pipeline.defaultSize];
    sizes.forEach((s, i) => {
      imageSize(`sizes[${i}].width`, "width", s.width, limits);
      imageSize(`sizes[${i}].height`, "height", s.height, limits);
    });

    const cases: BenchCase[] = [];
    const count = batches.length * sizes.length * steps.length;
    for (const size of sizes) {
      for (const batch of batches) {
        for (const stepCount of steps) {
          options.onCase?.(`batch ${batch}, ${size.width}×${size.height}, ${stepCount} steps`, cases.length, count);
          cases.push(await runCase(pipeline, { batch, ...size, steps: stepCount, warmup, runs, guidance, prompt, rng, scheduler: options.scheduler }));
        }
      }
    }
    return {
      format: "sd-trt-bench/1",
      createdAt: new Date().toISOString(),
      sdTrtVersion: packageVersion(),
      node: process.version,
      platform: `${process.platform}-${process.arch}`,
      cpu: { model: cpus()[0]?.model ?? "unknown", logicalCores: cpus().length },
      model: pipeline.modelDir,
      backend: pipeline.backendName,
      backendReason: pipeline.backendReason,
      guidance,
      prompt,
      rng,
      warmup,
      useGraphs,
      cases,
    };
  } finally {
    await pipeline.dispose();
  }
}

interface CaseSettings extends BenchSize {
  batch: number;
  steps: number;
  warmup: number;
  runs: number;
  guidance: number;
  prompt: string;
  rng: "cpu" | "nv";
  scheduler: string | undefined;
}

async function runCase(pipeline: Pipeline, settings: CaseSettings): Promise<BenchCase> {
  const backend = pipeline.backend;
  const request = {
    prompt: settings.prompt,
    width: settings.width,
    height: settings.height,
    steps: settings.steps,
    guidance: settings.guidance,
    rng: settings.rng,
    seeds: Array.from({ length: settings.batch }, (_, i) => 1 + i),
    ...(settings.scheduler !== undefined ? { scheduler: settings.scheduler } : {}),
  };
  const encodeAll = async (result: GenerateResult) => {
    for (const image of result.images) await encodeImage(image.rgb, image.width, image.height, { format: "png", parameters: image.infotext });
  };
  for (let i = 0; i < settings.warmup; i++) await encodeAll(await pipeline.generate(request));
  const rss = new PeakRssSampler();
  const gpu = backend.name === "tensorrt" ? GpuMemorySampler.start() : null;
  const samples = { latency: [] as number[], tokenize: [] as number[], textEncode: [] as number[], denoise: [] as number[], perStep: [] as number[], decode: [] as number[], stepNoise: [] as number[], png: [] as number[], pipeline: [] as number[], it: [] as number[], gpuDenoise: [] as number[] };
  const graphUses = new Set<string>();
  const ortStart = hasRuntimeStats(backend) ? backend.runtimeStats : null;
  let evaluations = 0;
  let scheduler = settings.scheduler ?? pipeline.defaultScheduler;
  for (let i = 0; i < settings.runs; i++) {
    const start = performance.now();
    const result = await pipeline.generate(request);
    const generated = performance.now();
    await encodeAll(result);
    const end = performance.now();
    evaluations = result.evaluations;
    scheduler = result.scheduler;
    samples.latency.push(end - start);
    samples.pipeline.push(generated - start);
    samples.png.push(end - generated);
    samples.tokenize.push(result.timings.tokenize);
    samples.textEncode.push(result.timings.textEncode);
    samples.denoise.push(result.timings.denoise);
    samples.perStep.push(result.timings.denoise / settings.steps);
    samples.decode.push(result.timings.decode);
    samples.stepNoise.push(result.timings.stepNoise);
    samples.it.push(settings.steps / (result.timings.denoise / 1000));
    const use = lastGraphUse(backend);
    if (use) {
      graphUses.add(use.graph);
      samples.gpuDenoise.push(use.gpuMs);
    }
    gpu?.sample();
  }
  const memory = rss.stop();
  const gpuMemory = gpu?.stop() ?? null;

  let ortOverhead: OrtOverhead | null = null;
  if (ortStart && hasRuntimeStats(backend)) {
    const delta = statsDelta(backend.runtimeStats, ortStart);
    const pipelineMs = samples.pipeline.reduce((a, b) => a + b, 0);
    ortOverhead = {
      pipelineMs,
      ortMs: delta.totalMs,
      ratio: pipelineMs / delta.totalMs,
      callsPerRun: Object.fromEntries(Object.entries(delta.calls).map(([k, v]) => [k, v / settings.runs])),
      msPerRun: Object.fromEntries(Object.entries(delta.ms).map(([k, v]) => [k, v / settings.runs])),
    };
  }
  const latency = summarize(samples.latency);
  return {
    batch: settings.batch,
    width: settings.width,
    height: settings.height,
    steps: settings.steps,
    scheduler,
    evaluations,
    runs: settings.runs,
    latencyMs: latency,
    stagesMs: {
      tokenize: summarize(samples.tokenize),
      textEncode: summarize(samples.textEncode),
      denoise: summarize(samples.denoise),
      denoisePerStep: summarize(samples.perStep),
      decode: summarize(samples.decode),
      stepNoise: summarize(samples.stepNoise),
      pngEncode: summarize(samples.png),
      pipeline: summarize(samples.pipeline),
    },
    itPerSecond: summarize(samples.it).mean,
    imagesPerSecond: settings.batch / (latency.mean / 1000),
    memory: { peakRssBytes: memory.peakRssBytes, startRssBytes: memory.startRssBytes },
    gpuMemory,
    cudaGraphs: graphUses.size ? [...graphUses].join(", ") : null,
    gpuDenoiseMs: samples.gpuDenoise.length ? summarize(samples.gpuDenoise) : null,
    ortOverhead,
  };
}
