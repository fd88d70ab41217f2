/**
 * `sd-trt build`: a model folder's ONNX graphs → TensorRT plans for this GPU, with their
 * manifest, in the engine cache layout of `layout.ts`.
 *
 * For each model (text encoder, UNet, VAE decoder, VAE encoder when present; SDXL adds
 * text_encoder_2 and the UNet's text_embeds/time_ids profiles):
 * 1. read the graph and its I/O contract; fp32 exports are converted to fp16 (`onnx/convert-fp16.ts`;
 *    the VAE stays fp32 with `fp32Vae`, or when an SDXL VAE config sets `force_upcast`) into a
 *    temporary folder, fp16 exports are used as they are;
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
import type { ModelIo, ModelRole, SdxlTextEncoderIo, TextEncoderIo } from "../../model/graph-io.js";
import { callNativeAsync } from "../../native/load.js";
import type { TensorRtBinding, TrtBuildProgress, TrtBuildResult } from "../../native/tensorrt-types.js";
import { packageVersion } from "../../package-info.js";
import { writeFileAtomic } from "../../fs/atomic.js";
import { requireTensorRt } from "./availability.js";
import { digestFiles, sha256Bytes, type FileDigest } from "./hash.js";
import { contractRole, ENGINE_ROLES, engineLocation, engineTitle, MANIFEST_FILE, planFileName, REFITTABLE_ROLES, type EngineRole } from "./layout.js";
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
import { declaredShapes, describeForEngine, describeSdxlEncoderForEngine, exportPrecision, onnxSignature } from "./roles.js";

export interface BuildEnginesOptions {
  /** The model folder (optimum or TensorRT demo layout). */
  model: string;
  /** The engine folder of this model, `engines/<model-id>`; plans go to its `<gpu-sm>-trt<version>/`. */
  out: string;
  /**
   * Batch and image sizes (`parseShapeOptions`), or a function of the model folder that picks them
   * (`shapesForModel`: SDXL's default range when no size was given).
   */
  shapes: EngineShapes | ((folder: ModelFolder) => EngineShapes);
  /** Build the VAE decoder and encoder in fp32 (the fp16 SD VAE can overflow). Defaults to false;
   *  an SDXL VAE whose config sets `force_upcast` is built in fp32 either way. */
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
  /** Build the engines a LoRA changes (REFITTABLE_ROLES: the text encoders and UNet) refittable
   *  (TensorRT's kREFIT), so LoRA sets can be applied by refitting their weights instead of
   *  rebuilding; recorded in the manifest. Defaults to false. */
  refittable?: boolean;
  signal?: AbortSignal;
  onProgress?: (event: BuildEvent) => void;
}

export type BuildEvent =
  | { type: "plan"; variantDir: string; roles: EngineRole[]; timingCache: string }
  | { type: "up-to-date"; variantDir: string }
  | { type: "model-start"; role: EngineRole; index: number; total: number; onnx: string; conversion: EngineEntry["conversion"]; precision: EngineEntry["precision"]; fp32Reason?: string; profiles: number }
  | { type: "converted"; role: EngineRole; report: Fp16ConversionReport }
  | { type: "builder"; role: EngineRole; progress: TrtBuildProgress }
  | { type: "model-done"; role: EngineRole; planBytes: number; seconds: number; warnings: number }
  | { type: "done"; seconds: number; engines: Array<{ role: EngineRole; seconds: number }> }
  | { type: "warning"; message: string };

export interface BuildEnginesResult {
  variantDir: string;
  manifest: EngineManifest;
  /** Nothing was built: the existing engines match the model, shapes, GPU and TensorRT. */
  upToDate: boolean;
  warnings: string[];
}

interface PlannedModel {
  role: EngineRole;
  file: ModelFile;
  contract: ModelIo;
  declared: Record<string, (number | string)[]>;
  conversion: EngineEntry["conversion"];
  precision: EngineEntry["precision"];
  /** Why an fp32 engine is fp32 ("--fp32-vae", "force_upcast in vae_decoder/config.json"). */
  fp32Reason?: string;
  profiles: OptimizationProfile[];
  sources: FileDigest[];
  /**
   * Text encoder: the tokenizer's vocabulary size when the graph is built edited
   * (lib/onnx/text-encoder-edit.ts: clip_skip and extra_token_vectors inputs, for clip skip and
   * textual inversion); absent when its layers could not be found (then it is built as exported).
   */
  textEncoderEdit?: { vocabSize: number; layers: number };
}

function roleFile(folder: ModelFolder, role: EngineRole): ModelFile | undefined {
  switch (role) {
    case "text_encoder":
      return folder.textEncoder;
    case "text_encoder_2":
      // A refiner's only encoder is text_encoder_2, and it is already folder.textEncoder.
      return folder.sdxl && !folder.sdxl.secondEncoderOnly ? folder.sdxl.textEncoder2 : undefined;
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

/** Whether the VAE is built in fp32: `--fp32-vae`, or an SDXL VAE config's `force_upcast`. */
function vaePrecision(folder: ModelFolder, options: BuildEnginesOptions): { fp32: boolean; reason?: string } {
  if (options.fp32Vae === true) return { fp32: true, reason: "--fp32-vae" };
  if (folder.sdxl?.vaeForceUpcast) return { fp32: true, reason: "force_upcast in the VAE config" };
  return { fp32: false };
}

/** The I/O contract of one engine's graph: SDXL's text encoders give their penultimate hidden state (and text_encoder_2 its pooled text_embeds). */
function engineContract(folder: ModelFolder, role: EngineRole, signature: ReturnType<typeof onnxSignature>, file: string): ModelIo {
  if (folder.sdxl && contractRole(role) === "text_encoder") {
    return describeSdxlEncoderForEngine(signature, file, role === "text_encoder_2" || folder.sdxl.secondEncoderOnly);
  }
  return describeForEngine(contractRole(role), signature, file);
}

/**
 * The sizes of an SDXL UNet's text_embeds and time_ids: from the UNet graph when it declares them,
 * else text_embeds from text_encoder_2's pooled output and diffusers' 6 time ids (5 for a refiner's
 * aesthetic-score ids).
 */
function addedConditioningSizes(folder: ModelFolder, unetContract: ModelIo | undefined, pooledSize: number | undefined): { textEmbedsSize: number; timeIdsSize: number } | undefined {
  const added = unetContract?.role === "unet" ? unetContract.addedConditioning : undefined;
  if (!added) return undefined;
  const textEmbedsSize = added.textEmbedsSize ?? pooledSize;
  if (textEmbedsSize === undefined) {
    throw new ModelFileError(folder.unet.path, `${folder.unet.path}: the size of text_embeds is dynamic in the UNet and in text_encoder_2's text_embeds output; export one of them with a fixed size`);
  }
  const timeIdsSize = added.timeIdsSize ?? (folder.sdxl?.requiresAestheticsScore ? 5 : 6);
  return { textEmbedsSize, timeIdsSize };
}

async function planModels(folder: ModelFolder, options: BuildEnginesOptions & { shapes: EngineShapes }): Promise<{ models: PlannedModel[]; hiddenSize: number; fp32Vae: boolean }> {
  const partial: Omit<PlannedModel, "profiles" | "sources">[] = [];
  const vae = vaePrecision(folder, options);
  // text_encoder_2's text_embeds width, when its graph declares it (for the UNet's text_embeds profile).
  let pooledSize: number | undefined;
  for (const role of ENGINE_ROLES) {
    const file = roleFile(folder, role);
    if (!file) continue;
    // Read for planning only (an inline fp16 UNet is gigabytes): the conversion reads it again.
    const model = await OnnxModel.read(file.path);
    // SDXL's encoders are built as exported: clip skip and textual inversion are SD 1.x/2.x only for now (as on the CPU).
    const textEncoderEdit = role === "text_encoder" && !folder.sdxl ? await planTextEncoderEdit(folder, model, options) : undefined;
    const signature = onnxSignature(model);
    const contract = engineContract(folder, role, signature, file.path);
    const pooledName = (contract as SdxlTextEncoderIo).pooledName;
    const pooledDim = signature.outputs.find((o) => o.name === pooledName)?.shape[1];
    if (typeof pooledDim === "number" && pooledDim > 0) pooledSize = pooledDim;
    const exported = exportPrecision(model);
    const isVae = role === "vae_decoder" || role === "vae_encoder";
    if (isVae && vae.fp32 && exported === "fp16") {
      if (options.fp32Vae) {
        throw new InvalidOptionError(
          "--fp32-vae",
          `--fp32-vae needs an fp32 export of the VAE, but ${file.path} is an fp16 export: export the VAE in fp32, or build without --fp32-vae`,
        );
      }
      throw new ModelFileError(
        file.path,
        `${file.path} is an fp16 export, but the VAE config sets force_upcast (the SDXL VAE overflows in fp16): export the VAE in fp32, or use an fp16-fixed VAE whose config sets force_upcast to false`,
      );
    }
    const keepFp32 = isVae && vae.fp32;
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
      ...(keepFp32 && vae.reason ? { fp32Reason: vae.reason } : {}),
    });
  }
  const contracts = Object.fromEntries(partial.map((p) => [p.role, p.contract])) as Partial<Record<ModelRole, ModelIo>>;
  const hiddenSize = await hiddenSizeOf(folder, contracts);
  const addedConditioning = addedConditioningSizes(folder, contracts.unet, pooledSize);
  const models: PlannedModel[] = [];
  for (const p of partial) {
    models.push({
      ...p,
      profiles: profilesFor(p.contract, options.shapes, { file: p.file.path, declared: p.declared, hiddenSize, ...(addedConditioning ? { addedConditioning } : {}) }),
      sources: await digestFiles(folder.dir, [p.file.path, ...p.file.externalData]),
    });
  }
  return { models, hiddenSize, fp32Vae: vae.fp32 };
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
async function upToDate(manifestPath: string, variantDir: string, models: PlannedModel[], options: BuildEnginesOptions & { shapes: EngineShapes }, fp32Vae: boolean, target: { tensorrtVersion: string; gpu: { name: string; computeCapability: string } }): Promise<EngineManifest | undefined> {
  if (!(await exists(manifestPath))) return undefined;
  let manifest: EngineManifest;
  try {
    manifest = await readManifest(manifestPath);
    checkManifestTarget(manifest, variantDir, target);
  } catch {
    return undefined;
  }
  const sources = Object.fromEntries(models.map((m) => [m.role, m.sources]));
  if (sourceDifferences(manifest, { sources, shapes: options.shapes, fp32Vae }).length > 0) return undefined;
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
  const shapes = typeof options.shapes === "function" ? options.shapes(folder) : options.shapes;
  const { models, hiddenSize, fp32Vae } = await planModels(folder, { ...options, shapes });
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
    const current = await upToDate(location.manifest, location.variantDir, models, { ...options, shapes }, fp32Vae, target);
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
  const engines: Partial<Record<EngineRole, EngineEntry>> = {};
  let driverVersion = "";
  let builtGpuName = gpu.name;
  const buildStarted = Date.now();
  const timings: Array<{ role: EngineRole; seconds: number }> = [];
  try {
    await mkdir(staging, { recursive: true });
    for (const [index, planned] of models.entries()) {
      throwIfAborted(options.signal);
      const started = Date.now();
      const onnxRel = relative(folder.dir, planned.file.path).split(sep).join("/");
      emit({ type: "model-start", role: planned.role, index, total: models.length, onnx: onnxRel, conversion: planned.conversion, precision: planned.precision, ...(planned.fp32Reason ? { fp32Reason: planned.fp32Reason } : {}), profiles: planned.profiles.length });
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
      const seconds = (Date.now() - started) / 1000;
      timings.push({ role: planned.role, seconds });
      emit({ type: "model-done", role: planned.role, planBytes: result.plan.length, seconds, warnings: logged.length });
    }
    throwIfAborted(options.signal);
    const manifest: EngineManifest = {
      format: MANIFEST_FORMAT,
      sdTrtVersion: packageVersion(),
      createdAt: new Date().toISOString(),
      tensorrt: { version: tensorrtVersion },
      gpu: { name: builtGpuName, computeCapability: gpu.computeCapability, driverVersion: driverVersion || "unknown" },
      shapes,
      // The VAE precision actually built (--fp32-vae or SDXL's force_upcast); each entry's precision says it too.
      options: { fp32Vae, ...(options.refittable ? { refittable: true } : {}) },
      model: { dir: folder.dir, hiddenSize, scalingFactor: folder.scalingFactor },
      engines,
    };
    await writeFileAtomic(join(staging, MANIFEST_FILE), serializeManifest(manifest));
    await replaceFolder(staging, location.variantDir, suffix);
    emit({ type: "done", seconds: (Date.now() - buildStarted) / 1000, engines: timings });
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
      ...(options.refittable && REFITTABLE_ROLES.includes(planned.role) ? { refittable: true } : {}),
      // The text encoder's other outputs (optimum's pooler_output) are never read: unmarked, so
      // TensorRT does not compute them.
      // SDXL's text_embeds (text_encoder_2's pooled projection) is read, so it stays an output.
      ...(planned.contract.role === "text_encoder" ? { keepOutputs: textEncoderOutputs(planned.contract as SdxlTextEncoderIo) } : {}),
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
        `building the ${engineTitle(planned.role)} engine from ${basename(dirname(planned.file.path))}/${basename(planned.file.path)} failed: ${error.message}`,
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

/** The outputs a text encoder engine computes: the hidden state the UNet reads, and SDXL's pooled text_embeds. */
function textEncoderOutputs(contract: SdxlTextEncoderIo): string[] {
  return contract.pooledName !== undefined ? [contract.hiddenName, contract.pooledName] : [contract.hiddenName];
}
