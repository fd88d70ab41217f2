/**
 * `--devices` and what `serve` / `worker` run on: one pipeline per device behind one
 * PipelineService, or (serve --redis) a front end over the fleet's queue.
 */
import { InvalidOptionError } from "../../errors.js";
import type { LoraSpec } from "../../convert/lora/set.js";
import { MAX_DEVICE_INDEX } from "../../backends/select.js";
import { Pipeline, type BackendChoice } from "../../pipeline/pipeline.js";
import { PipelineService } from "../../service/pipeline-service.js";

/** `--devices 0,1,2` → [0, 1, 2]: distinct integers from 0 to 63. */
export function parseDevices(text: string | number): number[] {
  const parts = String(text).split(",").map((p) => p.trim());
  const devices = parts.map(Number);
  const bad = parts.find((p, i) => p === "" || !Number.isInteger(devices[i]) || devices[i]! < 0 || devices[i]! > MAX_DEVICE_INDEX);
  if (bad !== undefined || new Set(devices).size !== devices.length) {
    throw new InvalidOptionError("devices", `--devices must be a comma-separated list of distinct device indices from 0 to ${MAX_DEVICE_INDEX} (e.g. 0,1,2), got ${JSON.stringify(String(text))}`);
  }
  return devices;
}

export interface PipelineServiceArgs {
  model: string;
  backend: BackendChoice;
  engines?: string;
  /** CPU backend: the most bytes one generation may need. */
  memoryLimit?: number;
  /** Textual-inversion embeddings folder. */
  embeddingsDir?: string;
  loras?: readonly LoraSpec[];
  loraCacheDir?: string;
  loraDir?: string;
  devices: number[];
  maxQueue: number;
  batchWindowMs: number;
  maxBatch?: number;
}

/** Loads one pipeline per device (in parallel) behind one service that owns them. */
export async function openPipelineService(args: PipelineServiceArgs): Promise<PipelineService> {
  const loads = args.devices.map((device) =>
    Pipeline.load(args.model, {
      backend: args.backend,
      device,
      ...(args.engines ? { engines: args.engines } : {}),
      ...(args.memoryLimit !== undefined ? { memoryLimit: args.memoryLimit } : {}),
      ...(args.embeddingsDir !== undefined ? { embeddingsDir: args.embeddingsDir } : {}),
      ...(args.loras?.length ? { loras: args.loras } : {}),
      ...(args.loraCacheDir !== undefined ? { loraCacheDir: args.loraCacheDir } : {}),
      ...(args.loraDir !== undefined ? { loraDir: args.loraDir } : {}),
    }),
  );
  const settled = await Promise.allSettled(loads);
  const failure = settled.find((s): s is PromiseRejectedResult => s.status === "rejected");
  const pipelines = settled.flatMap((s) => (s.status === "fulfilled" ? [s.value] : []));
  try {
    if (failure) throw failure.reason;
    return await PipelineService.create(pipelines, {
      maxQueue: args.maxQueue,
      batchWindowMs: args.batchWindowMs,
      ...(args.maxBatch !== undefined ? { maxBatch: args.maxBatch } : {}),
      ownPipeline: true,
    });
  } catch (error) {
    // Do not leave worker threads or GPU contexts of the devices that did load.
    await Promise.all(pipelines.map((p) => p.dispose()));
    throw error;
  }
}
