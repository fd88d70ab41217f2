/**
 * What `sd-trt serve` serves: pipelines in this process (`--devices`), or the fleet's queue
 * (`--redis`). Kept apart from serve.ts so the server command itself stays about HTTP.
 */
import type { Options } from "yargs";
import { InvalidOptionError } from "../../errors.js";
import { parseLoraSpec, type LoraSpec } from "../../convert/lora/set.js";
import type { BackendChoice } from "../../pipeline/pipeline.js";
import type { GenerationService } from "../../service/generation-service.js";
import { openPipelineService, parseDevices } from "./devices.js";

export interface ServeServiceArgs {
  model: string;
  backend: BackendChoice;
  engines?: string;
  "max-queue": number;
  "batch-window-ms": number;
  "max-batch"?: number;
  /** Absent when the handler is called without yargs' defaults (as tests do): device 0. */
  devices?: string;
  redis?: string;
  queue?: string;
  /** CPU backend: the most bytes one generation may need (`--memory-limit`, converted). */
  memoryLimit?: number;
  /** Textual-inversion embeddings folder (`--embeddings-dir`). */
  "embeddings-dir"?: string;
  /** `--lora FILE[:SCALE]`, repeatable: LoRAs merged into every generation. */
  lora?: string[];
  "lora-cache-dir"?: string;
  "lora-dir"?: string;
}

/** `--lora FILE[:SCALE]` (repeatable) and `--lora-cache-dir`, for the commands that load a model. */
export function loraCliOptions(): Record<string, Options> {
  return {
    lora: { type: "string", array: true, describe: "A LoRA (.safetensors, kohya/A1111 or diffusers/PEFT) merged into the model, FILE or FILE:SCALE (default scale 1); repeatable. The model must be a converted folder (sd-trt convert); TensorRT engines must be built --refittable" },
    "lora-cache-dir": { type: "string", describe: "Where the cpu backend caches LoRA-merged graphs (default: ~/.cache/sd-trt/lora)" },
    "lora-dir": { type: "string", describe: "A folder of LoRAs that A1111's <lora:NAME:SCALE> prompt tags name (file name without .safetensors, or its ss_output_name)" },
  };
}

/** Pipeline.load's `loras` / `loraCacheDir` from those flags. @throws InvalidOptionError naming --lora. */
export function loraLoadOptions(argv: { lora?: string[]; "lora-cache-dir"?: string; "lora-dir"?: string }): { loras?: LoraSpec[]; loraCacheDir?: string; loraDir?: string } {
  return {
    ...(argv["lora-dir"] !== undefined ? { loraDir: argv["lora-dir"] } : {}),
    ...(argv.lora?.length ? { loras: argv.lora.map((value) => parseLoraSpec(value)) } : {}),
    ...(argv["lora-cache-dir"] !== undefined ? { loraCacheDir: argv["lora-cache-dir"] } : {}),
  };
}

export function addServeServiceOptions(): Record<string, Options> {
  return {
    devices: { type: "string", default: "0", describe: "Devices to run on, one pipeline each, behind one queue (CUDA indices; on the CPU backend, that many worker pipelines), e.g. 0,1,2" },
    redis: { type: "string", describe: "Be a front end of a worker fleet: enqueue requests on this Redis (redis://host:port) for `sd-trt worker`s; no model is loaded here" },
    queue: { type: "string", default: "sd-trt", describe: "BullMQ queue name (with --redis)" },
    ...loraCliOptions(),
  };
}

export async function openServeService(argv: ServeServiceArgs, log: (line: string) => void): Promise<GenerationService> {
  const devices = parseDevices(argv.devices ?? "0");
  if (argv.redis !== undefined) {
    if (devices.length !== 1 || devices[0] !== 0) throw new InvalidOptionError("devices", "--devices cannot be used with --redis: the front end runs no model; give --devices to each sd-trt worker");
    // Imported on demand: BullMQ loads only for the fleet.
    const { RedisQueueClient } = await import("../../fleet/client.js");
    return RedisQueueClient.connect({ redis: argv.redis, ...(argv.queue !== undefined ? { queue: argv.queue } : {}), maxQueue: argv["max-queue"], log });
  }
  return openPipelineService({
    model: argv.model,
    backend: argv.backend,
    ...(argv.engines ? { engines: argv.engines } : {}),
    ...(argv.memoryLimit !== undefined ? { memoryLimit: argv.memoryLimit } : {}),
    ...(argv["embeddings-dir"] !== undefined ? { embeddingsDir: argv["embeddings-dir"] } : {}),
    ...loraLoadOptions(argv),
    devices,
    maxQueue: argv["max-queue"],
    batchWindowMs: argv["batch-window-ms"],
    ...(argv["max-batch"] !== undefined ? { maxBatch: argv["max-batch"] } : {}),
  });
}
