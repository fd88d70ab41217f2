/**
 * Chooses and loads a backend: `"cpu"` (ONNX Runtime), `"tensorrt"` (the native addon and
 * engines built by `sd-trt build`), or `"auto"` — TensorRT when its addon, a GPU and the engines
 * are usable, else the CPU, with the reason reported either way.
 *
 * The TensorRT module is imported lazily, so the CPU path never loads native GPU code and works
 * on machines (and in builds) without it.
 */
import { InvalidOptionError, TensorRtUnavailableError } from "../errors.js";
import { booleanValue, integerInRange, oneOf } from "../validate.js";
import { buildNativeCommand } from "../package-info.js";
import type { Backend } from "./backend.js";
import type { LoraSpec } from "../convert/lora/set.js";
import { CpuBackend } from "./cpu/backend.js";
import type { ModelFolder } from "../model/folder.js";

export const BACKEND_CHOICES = ["cpu", "tensorrt", "auto"] as const;
export type BackendChoice = (typeof BACKEND_CHOICES)[number];

export interface BackendLoadOptions {
  /** Folder of built TensorRT engines. Defaults to the TensorRT backend's own default. */
  engines?: string;
  /** ONNX Runtime intra-op threads (CPU backend). Defaults to ONNX Runtime's choice. */
  threads?: number;
  /** CPU backend: most memory a generation may need, bytes. Defaults to this machine's memory. */
  memoryLimit?: number;
  /** CPU backend: textual inversion (CpuBackendOptions.tokenVocabularySize). */
  tokenVocabularySize?: number;
  /** TensorRT backend: run the denoise loop under CUDA graphs. Defaults to true; the CPU backend ignores it. */
  useGraphs?: boolean;
  /**
   * TensorRT: the CUDA device index the engines load on. The CPU backend has no devices: each
   * pipeline is its own ONNX Runtime worker thread, and the index only names it. Defaults to 0.
   */
  device?: number;
  /** LoRAs merged into the weights (CPU backend; see CpuBackendOptions.loras). */
  loras?: readonly LoraSpec[];
  /** Where the CPU backend caches LoRA-merged graphs. */
  loraCacheDir?: string;
}

/** Largest device index accepted (far above any machine's GPU count; catches typos like 10000). */
export const MAX_DEVICE_INDEX = 63;

export interface SelectedBackend {
  backend: Backend;
  /** Why this backend runs (e.g. "requested", or why TensorRT was not usable). */
  reason: string;
}

type TensorRtModule = typeof import("./tensorrt/backend.js");

/** First line of an error's message (module-resolution errors run over many lines). */
function firstLine(error: unknown): string {
  return String((error as Error)?.message ?? error).split("\n")[0]!;
}

async function importTensorRt(): Promise<TensorRtModule> {
  // Imported on demand: the CPU path never loads the native GPU code.
  return import("./tensorrt/backend.js");
}

async function loadCpu(folder: ModelFolder, options: BackendLoadOptions): Promise<Backend> {
  return CpuBackend.load(folder, {
    ...(options.threads === undefined ? {} : { intraOpThreads: options.threads }),
    ...(options.memoryLimit === undefined ? {} : { memoryLimit: options.memoryLimit }),
    ...(options.tokenVocabularySize === undefined ? {} : { tokenVocabularySize: options.tokenVocabularySize }),
    ...(options.loras?.length ? { loras: options.loras } : {}),
    ...(options.loraCacheDir === undefined ? {} : { loraCacheDir: options.loraCacheDir }),
  });
}

export async function loadBackend(folder: ModelFolder, choice: BackendChoice, options: BackendLoadOptions = {}): Promise<SelectedBackend> {
  oneOf("backend", choice, BACKEND_CHOICES);
  if (options.useGraphs !== undefined) booleanValue("useGraphs", options.useGraphs);
  if (options.device !== undefined) integerInRange("device", options.device, 0, MAX_DEVICE_INDEX);
  if (options.engines !== undefined && choice === "cpu") {
    throw new InvalidOptionError("engines", "engines applies to the TensorRT backend; it cannot be used with backend \"cpu\"");
  }
  if (choice === "cpu") return { backend: await loadCpu(folder, options), reason: "requested" };
  let trt: TensorRtModule;
  try {
    trt = await importTensorRt();
  } catch (error) {
    const reason = `the TensorRT backend is not available in this build (${firstLine(error)})`;
    if (choice === "tensorrt") throw new TensorRtUnavailableError("the TensorRT backend cannot run", [reason], [`rebuild the addon with TensorRT (${buildNativeCommand("TENSORRT_ROOT=…")}) and see sd-trt doctor`]);
    return { backend: await loadCpu(folder, options), reason: `auto: ${reason}; using the CPU` };
  }
  const { usable, reason } = await trt.TensorRtBackend.isUsable();
  if (!usable) {
    if (choice === "tensorrt") throw new TensorRtUnavailableError("the TensorRT backend cannot run here", reason.split("; "), ["run sd-trt doctor for the full diagnosis"]);
    // The full diagnosis is `sd-trt doctor`'s job; name only the first missing piece here.
    const firstMissing = reason.split("; ")[0]!.replace(/ \(.*$/, "");
    return { backend: await loadCpu(folder, options), reason: `auto: TensorRT is not usable (${firstMissing}; see sd-trt doctor); using the CPU` };
  }
  const engineOptions: { engines?: string; useGraphs?: boolean; device?: number } = {};
  if (options.engines !== undefined) engineOptions.engines = options.engines;
  if (options.device !== undefined) engineOptions.device = options.device;
  if (options.useGraphs !== undefined) engineOptions.useGraphs = options.useGraphs;
  // LoRAs on TensorRT: the engines' weights are refitted (they must have been built --refittable).
  const loadTensorRt = async () => {
    const backend = await trt.TensorRtBackend.load(folder, engineOptions);
    if (options.loras?.length) {
      try {
        await backend.setLoras(options.loras);
      } catch (error) {
        await backend.dispose();
        throw error;
      }
    }
    return backend;
  };
  if (choice === "tensorrt") return { backend: await loadTensorRt(), reason: "requested" };
  try {
    return { backend: await loadTensorRt(), reason: `auto: TensorRT is usable (${reason})` };
  } catch (error) {
    // Usable hardware but no engines for this model (not built yet, or built for another GPU).
    return { backend: await loadCpu(folder, options), reason: `auto: TensorRT engines could not be loaded (${firstLine(error)}); using the CPU` };
  }
}

/**
 * Stops every backend worker thread of this process, each once it is outside native code. Call it
 * before `process.exit` while a generation may still run: a worker terminated inside ONNX
 * Runtime aborts the whole process (see `disposeAllOrtHosts`).
 */
export { disposeAllOrtHosts as stopBackendWorkers } from "./cpu/ort-host.js";
