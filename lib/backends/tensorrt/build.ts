/**
 * `sd-trt build`: a model folder's ONNX graphs → TensorRT plans for this GPU, with their
 * manifest, in the engine cache layout of `layout.ts`.
 *
 * For each model (text encoder, UNet, VAE decoder, VAE encoder when present):
 * 1. read the graph and its I/O contract; fp32 exports are converted to fp16 (`onnx/convert-fp16.ts`;
 *    the VAE stays fp32 with `fp32Vae`) into a temporary folder, fp16 exports are used as they are;
 * 2. build with the optimization profiles of `profiles.ts`, the shared timing cache, progress and
 *    cancellation (`binding.tensorrt.buildEngine`);
 * 3. write the plan into a staging folder.
 * The manifest is written last, and the staging folder then replaces the engine folder in one
 * rename: a cancelled or failed build leaves the previous engines (or nothing) — never a partial
 * set. The timing cache is saved after each model, so a cancelled build still keeps what it timed.
 */
import { randomBytes } from "node:crypto";
import { mkdir, readFile, rename, rm, stat } from "node:fs/promises";
import { basename, dirname, join, relative, sep } from "node:path";
import { InvalidOptionError, ModelFileError, AbortError, NativeError, EngineBuildError, throwIfAborted } from "../../errors.js";
import { locateModelFolder, type ModelFile, type ModelFolder } from "../../model/folder.js";
import { refuseSdxlEngines } from "./sdxl.js";
import { ROLE_TITLES, type ModelIo, type ModelRole, type TextEncoderIo } from "../../model/graph-io.js";
import { callNativeAsync } from "../../native/load.js";
import type { TensorRtBinding, TrtBuildProgress, TrtBuildResult } from "../../native/tensorrt-types.js";
import { packageVersion } from "../../package-info.js";
import { writeFileAtomic } from "../../fs/atomic.js";
import { requireTensorRt } from "./availability.js";
import { digestFiles, sha256Bytes, type FileDigest } from "./hash.js";
import { ENGINE_ROLES, engineLocation, MANIFEST_FILE, planFileName } from "./layout.js";
import {
  checkManifestTarget,
  MANIFEST_FORMAT,
  normalizeTensorRtVersion,
  readManifest,
  serializeManifest,
  sourceDifferences,
  type EngineEntry,
  type EngineManifest,
} from "./manifest.js";
import { convertToFp16, type Fp16ConversionReport } from "../../onnx/convert-fp16.js";
import { ExternalDataReader, OnnxModel } from "../../onnx/model.js";
import { ATTENTION_SCORES_KEY, modelMetadata } from "../../onnx/sd-trt-metadata.js";
import { writeOnnxModel } from "../../onnx/write.js";
import { editTextEncoder } from "../../onnx/text-encoder-edit.js";
import { ClipTokenizer } from "../../tokenizer/index.js";
import { profilesFor, type EngineShapes, type OptimizationProfile } from "./profiles.js";
import { declaredShapes, describeForEngine, exportPrecision, onnxSignature } from "./roles.js";

export interface BuildEnginesOptions {
  /** The model folder (optimum or TensorRT demo layout). */
  model: string;
  /** The engine folder of this model, `engines/<model-id>`; plans go to its `<gpu-sm>-trt<version>/`. */
  out: string;
  /** Batch and image sizes (`parseShapeOptions`). */
  shapes: EngineShapes;
  /** Build the VAE decoder and encoder in fp32 (the fp16 SD VAE can overflow). Defaults to false. */
  fp32Vae?: boolean;
  /** Timing cache file. Defaults to `engines/timing-<gpu-sm>-trt<version>.cache` beside `out`. */
  timingCache?: string;
  /** Rebuild even when the manifest says the engines are up to date. Defaults to false. */
  force?: boolean;
  /** TensorRT builder optimization level, 0 to 5. Defaults to TensorRT's (3). */
  optimizationLevel?: number;
  /** Builder workspace limit in bytes. Defaults to TensorRT's (the device's memory). */
  workspaceBytes?: number;
  /** CUDA device. Defaults to 0. */
  device?: number;
  /** Keep each layer's tactic, formats and fused ops in the plans for `engine.inspect()` (the GPU
   *  self-test's layer report). Changes no result. Defaults to false. */
  detailedProfiling?: boolean;
  /** Build the text encoder and UNet refittable (TensorRT's kREFIT), so LoRA sets can be applied
   *  by refitting their weights instead of rebuilding; recorded in the manifest. Defaults to false. */
  refittable?: boolean;
  signal?: AbortSignal;
  onProgress?: (event: BuildEvent) => void;
}

export type BuildEvent =
  | { type: "plan"; variantDir: string; roles: ModelRole[]; timingCache: string }
  | { type: "up-to-date"; variantDir: string }
  | { type: "model-start"; role: ModelRole; index: number; total: number; onnx: string; conversion: EngineEntry["conversion"]; profiles: number }
  | { type: "converted"; role: ModelRole; report: Fp16ConversionReport }
  | { type: "builder"; role: ModelRole; progress: TrtBuildProgress }
  | { type: "model-done"; role: ModelRole; planBytes: number; seconds: number; warnings: number }
  | { type: "warning"; message: string };

export interface BuildEnginesResult {
  variantDir: string;
  manifest: EngineManifest;
  /** Nothing was built: the existing engines match the model, shapes, GPU and TensorRT. */
  upToDate: boolean;
  warnings: string[];
}

interface PlannedModel {
  role: ModelRole;
  file: ModelFile;
  contract: ModelIo;
  declared: Record<string, (number | string)[]>;
  conversion: EngineEntry["conversion"];
  precision: EngineEntry["precision"];
  profiles: OptimizationProfile[];
  sources: FileDigest[];
  /**
   * Text encoder: the tokenizer's vocabulary size when the graph is built edited
   * (lib/onnx/text-encoder-edit.ts: clip_skip and extra_token_vectors inputs, for clip skip and
   * textual inversion); absent when its layers could not be found (then it is built as exported).
   */
  textEncoderEdit?: { vocabSize: number; layers: number };
}

function roleFile(folder: ModelFolder, role: ModelRole): ModelFile | undefined {
  switch (role) {
    case "text_encoder":
      return folder.textEncoder;
    case "unet":
      return folder.unet;
    case "vae_decoder":
      return folder.vaeDecoder;
    case "vae_encoder":
      return folder.vaeEncoder;
  }
}

async function hiddenSizeOf(folder: ModelFolder, contracts: Partial<Record<ModelRole, ModelIo>>): Promise<number> {
  const unet = contracts.unet;
  const text = contracts.text_encoder;
  const fromGraph = (unet?.role === "unet" ? unet.contextSize : undefined) ?? (text?.role === "text_encoder" ? text.hiddenSize : undefined);
  if (fromGraph !== undefined) return fromGraph;
  // Neither graph declares it: diffusers' UNet config does (cross_attention_dim).
  const config = join(folder.dir, "unet", "config.json");
  try {
    const value = (JSON.parse(await readFile(config, "utf8")) as Record<string, unknown>)["cross_attention_dim"];
    if (typeof value === "number" && Number.isInteger(value) && value > 0) return value;
  } catch {
    // fall through to the error
  }
  throw new ModelFileError(
    folder.unet.path,
    `${folder.unet.path}: the embedding size is dynamic in both the UNet and the text encoder graphs, and ${config} ` +
      `gives no cross_attention_dim; export the models with a fixed hidden size`,
  );
}

/** Whether the model folder's unet/config.json sets diffusers' `upcast_attention` (absent: false). */
async function upcastAttention(folder: ModelFolder): Promise<boolean> {
  let text: string;
  try {
    text = await readFile(join(folder.dir, "unet", "config.json"), "utf8");
  } catch {
    return false; // the TensorRT demo layout has no configs
  }
  try {
    return (JSON.parse(text) as { upcast_attention?: unknown }).upcast_attention === true;
  } catch (cause) {
    throw new ModelFileError(join(folder.dir, "unet", "config.json"), `${join(folder.dir, "unet", "config.json")} is not valid JSON: ${(cause as Error).message}`, { cause });
  }
}

async function planModels(folder: ModelFolder, options: BuildEnginesOptions): Promise<{ models: PlannedModel[]; hiddenSize: number }> {
  const partial: Omit<PlannedModel, "profiles" | "sources">[] = [];
  for (const role of ENGINE_ROLES) {
    const file = roleFile(folder, role);
    if (!file) continue;
    // Read for planning only (an inline fp16 UNet is gigabytes): the conversion reads it again.
    const model = await OnnxModel.read(file.path);
    const textEncoderEdit = role === "text_encoder" ? await planTextEncoderEdit(folder, model, options) : undefined;
    const signature = onnxSignature(model);
    const contract = describeForEngine(role, signature, file.path);
    const exported = exportPrecision(model);
    const isVae = role === "vae_decoder" || role === "vae_encoder";
    if (isVae && options.fp32Vae && exported === "fp16") {
      throw new InvalidOptionError(
        "--fp32-vae",
        `--fp32-vae needs an fp32 export of the VAE, but ${file.path} is an fp16 export: export the VAE in fp32, or build without --fp32-vae`,
      );
    }
    const keepFp32 = isVae && options.fp32Vae === true;
    // diffusers' upcast_attention (SD 2.x 768-v): the attention scores overflow in fp16. sd-trt's
    // converter keeps them fp32 inside its fp16 graphs and records it (lib/onnx/sd-trt-metadata.ts).
    const upcast = role === "unet" && (await upcastAttention(folder));
    if (upcast && exported === "fp16" && modelMetadata(model).get(ATTENTION_SCORES_KEY) !== "float32") {
      options.onProgress?.({
        type: "warning",
        message: `${folder.dir}/unet/config.json sets upcast_attention, but ${file.path} is an fp16 export: its attention scores are computed in fp16 and may overflow (UnetOverflowError). Export the UNet in fp32 and sd-trt keeps them in fp32`,
      });
    }
    if (textEncoderEdit) (contract as TextEncoderIo).layers = textEncoderEdit.layers;
    partial.push({
      role,
      file,
      contract,
      declared: declaredShapes(signature),
      conversion: exported === "fp32" && !keepFp32 ? (upcast ? "fp32-to-fp16-fp32-attention" : "fp32-to-fp16") : "none",
      precision: keepFp32 ? "fp32" : "fp16",
      ...(textEncoderEdit ? { textEncoderEdit } : {}),
    });
  }
  const contracts = Object.fromEntries(partial.map((p) => [p.role, p.contract])) as Partial<Record<ModelRole, ModelIo>>;
  const hiddenSize = await hiddenSizeOf(folder, contracts);
  const models: PlannedModel[] = [];
  for (const p of partial) {
    models.push({
      ...p,
      profiles: profilesFor(p.contract, options.shapes, { file: p.file.path, declared: p.declared, hiddenSize }),
      sources: await digestFiles(folder.dir, [p.file.path, ...p.file.externalData]),
    });
  }
  return { models, hiddenSize };
}

async function exists(path: string): Promise<boolean> {
  try {
    await stat(path);
    return true;
  } catch {
    return false;
  }
}

/** The existing manifest when it describes exactly this build and its plans are all there. */
async function upToDate(manifestPath: string, variantDir: string, models: PlannedModel[], options: BuildEnginesOptions, target: { tensorrtVersion: string; gpu: { name: string; computeCapability: string } }): Promise<EngineManifest | undefined> {
  if (!(await exists(manifestPath))) return undefined;
  let manifest: EngineManifest;
  try {
    manifest = await readManifest(manifestPath);
    checkManifestTarget(manifest, variantDir, target);
  } catch {
    return undefined;
  }
  const sources = Object.fromEntries(models.map((m) => [m.role, m.sources]));
  if (sourceDifferences(manifest, { sources, shapes: options.shapes, fp32Vae: options.fp32Vae ?? false }).length > 0) return undefined;
  // A conversion that changed (e.g. fp32 attention scores for an upcast_attention UNet) rebuilds.
  if (models.some((m) => manifest.engines[m.role]?.conversion !== m.conversion)) return undefined;
  for (const entry of Object.values(manifest.engines)) {
    try {
      if ((await stat(join(variantDir, entry.plan))).size !== entry.planBytes) return undefined;
    } catch {
      return undefined;
    }
  }
  return manifest;
}

function checkOptions(options: BuildEnginesOptions): void {
  if (typeof options !== "object" || options === null) throw new InvalidOptionError("options", "build options must be an object");
  if (typeof options.model !== "string" || options.model.length === 0) throw new InvalidOptionError("--model", "--model must name a model folder");
  if (typeof options.out !== "string" || options.out.length === 0) throw new InvalidOptionError("--out", "--out must name an engine folder, e.g. engines/sd15");
  if (options.optimizationLevel !== undefined && (!Number.isInteger(options.optimizationLevel) || options.optimizationLevel < 0 || options.optimizationLevel > 5)) {
    throw new InvalidOptionError("--optimization-level", `--optimization-level must be an integer from 0 to 5, got ${String(options.optimizationLevel)}`);
  }
  if (options.device !== undefined && (!Number.isInteger(options.device) || options.device < 0)) {
    throw new InvalidOptionError("--device", `--device must be a CUDA device index (0, 1, …), got ${String(options.device)}`);
  }
}

/**
 * Builds (or confirms up to date) the engines of a model folder for this GPU.
 * @throws TensorRtUnavailableError (nothing is written), InvalidOptionError, ModelFileError,
 *   EngineBuildError, AbortError (cancelled; the previous engines stay as they were).
 */
export async function buildEngines(options: BuildEnginesOptions, injected?: { binding: TensorRtBinding; gpu: { name: string; computeCapability: string }; tensorrtVersion: string }): Promise<BuildEnginesResult> {
  checkOptions(options);
  // Check TensorRT before touching any file: without it, the answer is the diagnosis alone.
  let binding: TensorRtBinding;
  let gpu: { name: string; computeCapability: string };
  let tensorrtVersion: string;
  if (injected) {
    ({ binding, gpu, tensorrtVersion } = injected);
  } else {
    const trt = requireTensorRt("build", "cannot build engines");
    binding = trt.binding;
    const device = trt.info.devices.find((d) => d.index === (options.device ?? 0));
    if (!device) {
      throw new InvalidOptionError("--device", `--device ${options.device ?? 0} is not a CUDA device here (devices: ${trt.info.devices.map((d) => d.index).join(", ") || "none"})`);
    }
    gpu = { name: device.name, computeCapability: device.computeCapability };
    tensorrtVersion = normalizeTensorRtVersion(String(trt.report.tensorrt.runtimeVersion ?? ""));
  }
  throwIfAborted(options.signal);

  const folder = await locateModelFolder(options.model);
  refuseSdxlEngines(folder);
  const { models, hiddenSize } = await planModels(folder, options);
  const location = engineLocation(options.out, gpu.computeCapability, tensorrtVersion);
  const timingCachePath = options.timingCache ?? location.timingCache;
  const warnings: string[] = [];
  const emit = (event: BuildEvent) => {
    try {
      options.onProgress?.(event);
    } catch {
      // A failing progress callback must not break a half-hour build.
    }
  };

  const target = { tensorrtVersion, gpu };
  if (!options.force) {
    const current = await upToDate(location.manifest, location.variantDir, models, options, target);
    if (current) {
      emit({ type: "up-to-date", variantDir: location.variantDir });
      return { variantDir: location.variantDir, manifest: current, upToDate: true, warnings };
    }
  }
  emit({ type: "plan", variantDir: location.variantDir, roles: models.map((m) => m.role), timingCache: timingCachePath });

  const suffix = `${process.pid}-${randomBytes(4).toString("hex")}`;
  const staging = `${location.variantDir}.partial-${suffix}`;
  const work = join(location.modelDir, `.work-${suffix}`);
  let timingCache: Uint8Array | undefined = (await exists(timingCachePath)) ? await readFile(timingCachePath) : undefined;
  const engines: Partial<Record<ModelRole, EngineEntry>> = {};
  let driverVersion = "";
  let builtGpuName = gpu.name;
  try {
    await mkdir(staging, { recursive: true });
    for (const [index, planned] of models.entries()) {
      throwIfAborted(options.signal);
      const started = Date.now();
      const onnxRel = relative(folder.dir, planned.file.path).split(sep).join("/");
      emit({ type: "model-start", role: planned.role, index, total: models.length, onnx: onnxRel, conversion: planned.conversion, profiles: planned.profiles.length });
      let onnxPath = planned.file.path;
      const source = async (): Promise<OnnxModel> => {
        const model = await OnnxModel.read(planned.file.path);
        if (planned.textEncoderEdit) editTextEncoder(model, { ...textEncoderNames(planned), vocabSize: planned.textEncoderEdit.vocabSize });
        return model;
      };
      if (planned.conversion === "none" && planned.textEncoderEdit) {
        onnxPath = join(work, planned.role, "model.onnx");
        await mkdir(dirname(onnxPath), { recursive: true });
        await writeOnnxModel((await source()).proto, onnxPath);
      }
      if (planned.conversion !== "none") {
        const reader = new ExternalDataReader();
        try {
          const fp32Attention = planned.conversion === "fp32-to-fp16-fp32-attention";
          const { model, report } = await convertToFp16(await source(), reader, { fp32Attention });
          onnxPath = join(work, planned.role, "model.onnx");
          await mkdir(dirname(onnxPath), { recursive: true });
          await writeOnnxModel(model, onnxPath);
          emit({ type: "converted", role: planned.role, report });
        } finally {
          await reader.close();
        }
      }
      throwIfAborted(options.signal);
      const result = await runBuild(binding, planned, onnxPath, timingCache, options, emit);
      if (normalizeTensorRtVersion(result.tensorrtVersion) !== tensorrtVersion || result.gpu.computeCapability !== gpu.computeCapability) {
        throw new EngineBuildError(planned.role, `the build ran on ${result.gpu.name} (compute capability ${result.gpu.computeCapability}) with TensorRT ${result.tensorrtVersion}, not the ${gpu.name} / TensorRT ${tensorrtVersion} the engine folder was chosen for`);
      }
      driverVersion = result.gpu.driverVersion;
      builtGpuName = result.gpu.name;
      if (result.timingCache.length > 0) {
        // Saved after every model: a later failure or Ctrl-C keeps the tactics timed so far.
        await writeFileAtomic(timingCachePath, result.timingCache);
        timingCache = result.timingCache;
      }
      if (result.timingCacheReset) {
        const message = `the timing cache ${timingCachePath} was made for another GPU or TensorRT version; it was replaced`;
        warnings.push(message);
        emit({ type: "warning", message });
      }
      const plan = planFileName(planned.role);
      await writeFileAtomic(join(staging, plan), result.plan);
      const logged = result.log.filter((m) => m.severity !== "info" && m.severity !== "verbose");
      engines[planned.role] = {
        plan,
        planSha256: sha256Bytes(result.plan),
        planBytes: result.plan.length,
        source: { onnx: onnxRel, files: planned.sources },
        precision: planned.precision,
        conversion: planned.conversion,
        profiles: planned.profiles,
        io: result.io.map((t) => ({ name: t.name, mode: t.mode, dtype: t.dtype, shape: t.shape })),
        contract: planned.contract,
      };
      emit({ type: "model-done", role: planned.role, planBytes: result.plan.length, seconds: (Date.now() - started) / 1000, warnings: logged.length });
    }
    throwIfAborted(options.signal);
    const manifest: EngineManifest = {
      format: MANIFEST_FORMAT,
      sdTrtVersion: packageVersion(),
      createdAt: new Date().toISOString(),
      tensorrt: { version: tensorrtVersion },
      gpu: { name: builtGpuName, computeCapability: gpu.computeCapability, driverVersion: driverVersion || "unknown" },
      shapes: options.shapes,
      options: { fp32Vae: options.fp32Vae ?? false, ...(options.refittable ? { refittable: true } : {}) },
      model: { dir: folder.dir, hiddenSize, scalingFactor: folder.scalingFactor },
      engines,
    };
    await writeFileAtomic(join(staging, MANIFEST_FILE), serializeManifest(manifest));
    await replaceFolder(staging, location.variantDir, suffix);
    return { variantDir: location.variantDir, manifest, upToDate: false, warnings };
  } finally {
    await rm(work, { recursive: true, force: true });
    await rm(staging, { recursive: true, force: true });
  }
}

/** Swaps `staging` in for `target` (the old folder, if any, is removed after the swap). */
async function replaceFolder(staging: string, target: string, suffix: string): Promise<void> {
  const old = `${target}.old-${suffix}`;
  const hadOld = await exists(target);
  if (hadOld) await rename(target, old);
  try {
    await rename(staging, target);
  } catch (error) {
    if (hadOld) await rename(old, target).catch(() => undefined);
    throw error;
  }
  if (hadOld) await rm(old, { recursive: true, force: true });
}

async function runBuild(
  binding: TensorRtBinding,
  planned: PlannedModel,
  onnxPath: string,
  timingCache: Uint8Array | undefined,
  options: BuildEnginesOptions,
  emit: (event: BuildEvent) => void,
): Promise<TrtBuildResult> {
  const job = binding.buildEngine(
    {
      onnxPath,
      profiles: planned.profiles,
      ...(timingCache ? { timingCache } : {}),
      ...(options.workspaceBytes !== undefined ? { workspaceBytes: options.workspaceBytes } : {}),
      ...(options.optimizationLevel !== undefined ? { optimizationLevel: options.optimizationLevel } : {}),
      ...(options.detailedProfiling ? { detailedProfiling: true } : {}),
      ...(options.refittable && (planned.role === "text_encoder" || planned.role === "unet") ? { refittable: true } : {}),
      // The text encoder's other outputs (optimum's pooler_output) are never read: unmarked, so
      // TensorRT does not compute them.
      ...(planned.role === "text_encoder" ? { keepOutputs: [(planned.contract as TextEncoderIo).hiddenName] } : {}),
      device: options.device ?? 0,
    },
    (progress) => emit({ type: "builder", role: planned.role, progress }),
  );
  const onAbort = () => job.cancel();
  options.signal?.addEventListener("abort", onAbort, { once: true });
  try {
    return await callNativeAsync(() => job.promise);
  } catch (error) {
    if (error instanceof AbortError) {
      throwIfAborted(options.signal);
      throw error;
    }
    if (error instanceof NativeError) {
      throw new EngineBuildError(
        planned.role,
        `building the ${ROLE_TITLES[planned.role]} engine from ${basename(dirname(planned.file.path))}/${basename(planned.file.path)} failed: ${error.message}`,
        { cause: error },
      );
    }
    throw error;
  } finally {
    options.signal?.removeEventListener("abort", onAbort);
  }
}

function textEncoderNames(planned: PlannedModel): { idsName: string; hiddenName: string } {
  const io = planned.contract as TextEncoderIo;
  return { idsName: io.idsName, hiddenName: io.hiddenName };
}

/**
 * Edits the text encoder read for planning (so its signature, contract and profiles include the
 * new inputs) and says how the build must edit it again. A graph whose layers cannot be found, or
 * whose weights live in external files next to an fp16 export, is built as exported (with a
 * warning): clip skip and textual inversion are then unavailable with its engines.
 */
async function planTextEncoderEdit(folder: ModelFolder, model: OnnxModel, options: BuildEnginesOptions): Promise<{ vocabSize: number; layers: number } | undefined> {
  const tokenizer = folder.tokenizer ? await ClipTokenizer.fromDirectory(dirname(folder.tokenizer.vocab)) : await ClipTokenizer.default();
  const io = describeForEngine("text_encoder", onnxSignature(model), model.path) as TextEncoderIo;
  if (exportPrecision(model) === "fp16" && model.externalDataFiles().length > 0) {
    options.onProgress?.({ type: "warning", message: `${model.path} is an fp16 export with external weights: built as exported, without the clip-skip and textual-inversion inputs` });
    return undefined;
  }
  let layers: number;
  try {
    layers = editTextEncoder(model, { idsName: io.idsName, hiddenName: io.hiddenName, vocabSize: tokenizer.vocabSize }).layout.layers;
  } catch (error) {
    if (!(error instanceof ModelFileError)) throw error;
    options.onProgress?.({ type: "warning", message: `${error.message}; the text encoder is built as exported, without clip skip and textual inversion` });
    return undefined;
  }
  return { vocabSize: tokenizer.vocabSize, layers };
}
