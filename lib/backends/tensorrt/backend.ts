/**
 * The TensorRT backend: the Backend interface (backend.ts) on engines built by `sd-trt build`.
 *
 * - Engines come from `engines/<model-id>/<gpu-sm>-trt<version>/` (resolve.ts): the
 *   manifest must match this GPU and TensorRT and the model folder's files, or loading fails with
 *   the command that rebuilds them.
 * - All contexts share one device scratch buffer sized to the largest engine's need; generations
 *   are serialised per backend (one at a time, design rule 8), which is what makes sharing safe.
 * - `generate` runs a whole batch with its intermediates on the device: the text embeddings
 *   (joined [uncond; cond] on the device) go to the native Denoiser, which runs the whole sampler
 *   program (UNet, guidance, scheduler update) under CUDA graphs; the VAE and the fused uint8
 *   kernel follow. NaN/Inf from the VAE (an overflowing fp16 VAE) is a VaeOverflowError with the
 *   command that rebuilds the VAE in fp32 — never a black image.
 * - Limits (batch, sizes, img2img) come from the engines' optimization profiles.
 * - SDXL (sdxl.ts): both text encoders, their states joined per token and text_encoder_2's pooled
 *   output on the host, text_embeds and time_ids bound as UNet inputs by the denoiser.
 */
import { readFile } from "node:fs/promises";
import { basename, join, resolve } from "node:path";
import { DisposedError, InvalidArgumentError, InvalidOptionError, ModelFileError, NativeError, VaeOverflowError, throwIfAborted } from "../../errors.js";
import { checkTensorRt, requireTensorRt } from "./availability.js";
import { MAX_TOKEN_VECTOR_ROWS, shapeArguments } from "./profiles.js";
import { embeddingRowTable, emphasisGroupIds, everyText, type EmbeddingHalf } from "./embedding-rows.js";
import { limitsFromEngines, smallestBatch, splitCallRows, textRowsFor, unetAccepts, type EngineShapeInfo } from "./limits.js";
import { normalizeTensorRtVersion, rebuildCommand, type EngineManifest } from "./manifest.js";
import { resolveEngines } from "./resolve.js";
import { locateModelFolder, type ModelFolder } from "../../model/folder.js";
import { sdxlConditioning, sdxlEngineInfo, type EncodedRows, type SdxlEngineInfo, type SdxlUnetInputs } from "./sdxl.js";
import type { EngineRole } from "./layout.js";
import { float16ArrayToFloat32 } from "../../onnx/float16.js";
import type { ModelIo, SdxlTextEncoderIo, TextEncoderIo, UnetIo, VaeDecoderIo, VaeEncoderIo } from "../../model/graph-io.js";
import { Denoiser, type DenoiseRunResult } from "../../native/denoiser.js";
import { callNative, callNativeAsync } from "../../native/load.js";
import type { TensorRtBinding, TrtContext, TrtDeviceScratch, TrtEngine, TrtUnet } from "../../native/tensorrt-types.js";
import type { NativeDeviceTensor, NativeSplitCalls } from "../../native/types.js";
import { packProgram } from "../../sampler/pack.js";
import { drawAllStepNoise, stepNoiseOf } from "../../sampler/step-noise.js";
import type { Backend, BackendLimits, GenerationJob, GenerationOutput, PromptBatch } from "../backend.js";
import { emphasisScales, type Emphasis } from "../../prompt/emphasis.js";
import { Lifecycle } from "../../lifecycle.js";
import { splitPosterior } from "../../sampler/latents.js";
import { startLatents } from "../start-latents.js";
import { folderLoraTarget } from "../../convert/lora/merged-folder.js";
import { refitEngineWeights } from "../../convert/lora/refit.js";
import { loraSetDeltas, type LoraSpec } from "../../convert/lora/set.js";

const TOKENS = 77;

export interface TensorRtBackendOptions {
  /** `engines/<model-id>` (the folder for this GPU and TensorRT is picked) or one variant folder.
   *  Defaults to `engines/<model folder name>` in the current directory (where `sd-trt build` puts them). */
  engines?: string;
  /** CUDA device. Defaults to 0. */
  device?: number;
  /** Capture the denoise loop in a CUDA graph. Defaults to true. */
  useGraphs?: boolean;
}

/** How the last denoise ran (for `sd-trt bench` and logs). */
export interface TensorRtDenoiseStats {
  graph: DenoiseRunResult["graph"];
  graphFallbackReason?: string;
  evaluations: number;
  gpuMs: number;
  hostMs: number;
}

/** Text embeddings [rows, 77 · chunks, hidden] on the device, as `#encodeText` made them. */
class DeviceEmbeddings {
  #device: NativeDeviceTensor | undefined;
  constructor(
    readonly rows: number,
    device: NativeDeviceTensor,
    /** SDXL's text_encoder_2: text_embeds of every computed chunk row, on the host. */
    readonly pooled?: Float32Array,
  ) {
    this.#device = device;
  }
  get device(): NativeDeviceTensor {
    if (!this.#device || this.#device.disposed) throw new DisposedError("TensorRT text embeddings");
    return this.#device;
  }
  dispose(): void {
    this.#device?.dispose();
    this.#device = undefined;
  }
}

/** GPU milliseconds of the last call of each stage. */
export interface TensorRtStageTimings {
  textEncoder?: number;
  unet?: number;
  vaeDecoder?: number;
  vaeEncoder?: number;
}

interface LoadedModel<Io extends ModelIo> {
  engine: TrtEngine;
  context: TrtContext;
  contract: Io;
  shapes: EngineShapeInfo;
}

/** Default engine folder of a model: engines/<model folder name> in the current directory. */
export function defaultEnginesDir(modelDir: string): string {
  return resolve("engines", basename(resolve(modelDir)));
}

export class TensorRtBackend implements Backend {
  readonly name = "tensorrt" as const;
  readonly limits: BackendLimits;
  /** Hidden size of the text encoder output (768 for SD 1.x). */
  readonly hiddenSize: number;
  readonly scalingFactor: number;
  /** The engine folder in use and its manifest. */
  readonly variantDir: string;
  readonly manifest: EngineManifest;
  /** Loaded, but worth telling the user (e.g. built on another GPU of the same architecture). */
  readonly warnings: readonly string[];
  readonly #trt: TensorRtBinding;
  readonly #useGraphs: boolean;
  #scratch: TrtDeviceScratch | undefined;
  #text: LoadedModel<TextEncoderIo>;
  #unet: LoadedModel<UnetIo>;
  #unetEngine: TrtUnet;
  #decoder: LoadedModel<VaeDecoderIo>;
  #encoder: LoadedModel<VaeEncoderIo> | undefined;
  /** SDXL: text_encoder_2 (null for a refiner, whose one encoder is #text) and the engines' sizes. */
  #sdxl: { text2: LoadedModel<SdxlTextEncoderIo> | null; info: SdxlEngineInfo } | null;
  #denoiser: Denoiser;
  readonly #life = new Lifecycle("TensorRT backend");
  #lastDenoise: TensorRtDenoiseStats | undefined;
  readonly #folder: ModelFolder;
  /** The weights the current LoRA set changed, per refitted engine (empty: base weights). */
  #loraChanged = { text: new Set<string>(), text2: new Set<string>(), unet: new Set<string>() };
  #timings: TensorRtStageTimings = {};

  private constructor(parts: {
    trt: TensorRtBinding;
    folder: ModelFolder;
    variantDir: string;
    manifest: EngineManifest;
    warnings: string[];
    scratch: TrtDeviceScratch;
    models: { text: LoadedModel<TextEncoderIo>; unet: LoadedModel<UnetIo>; decoder: LoadedModel<VaeDecoderIo>; encoder?: LoadedModel<VaeEncoderIo> };
    sdxl: { text2: LoadedModel<SdxlTextEncoderIo> | null; info: SdxlEngineInfo } | null;
    unetEngine: TrtUnet;
    denoiser: Denoiser;
    useGraphs: boolean;
  }) {
    this.#trt = parts.trt;
    this.variantDir = parts.variantDir;
    this.manifest = parts.manifest;
    this.warnings = parts.warnings;
    this.#scratch = parts.scratch;
    this.#text = parts.models.text;
    this.#unet = parts.models.unet;
    this.#decoder = parts.models.decoder;
    this.#encoder = parts.models.encoder;
    this.#sdxl = parts.sdxl;
    this.#unetEngine = parts.unetEngine;
    this.#denoiser = parts.denoiser;
    this.#useGraphs = parts.useGraphs;
    this.#folder = parts.folder;
    this.hiddenSize = parts.manifest.model.hiddenSize;
    this.scalingFactor = parts.folder.scalingFactor;
    const shapes = {
      text_encoder: parts.models.text.shapes,
      unet: parts.models.unet.shapes,
      vae_decoder: parts.models.decoder.shapes,
      ...(parts.models.encoder ? { vae_encoder: parts.models.encoder.shapes } : {}),
    };
    const text = parts.models.text.contract;
    this.limits = {
      ...limitsFromEngines(shapes),
      // Engines built from the edited text encoder (lib/onnx/text-encoder-edit.ts) take clip skip and embeddings.
      ...(text.clipSkipName && text.layers ? { maxClipSkip: text.layers } : {}),
      ...(text.extraVectorsName ? { tokenVectorWidth: parts.manifest.model.hiddenSize } : {}),
      // SDXL's text_encoder engine is bound at its penultimate state only.
      ...(parts.folder.sdxl
        ? {
            sdxlClipLSkipUnavailable: "the TensorRT backend binds text_encoder's penultimate hidden state only (use the CPU backend)",
            // The embedding bank switches the states per step, but SDXL's pooled text_embeds is bound once per run.
            sdxlPromptEditingUnavailable: "the TensorRT backend binds SDXL's pooled text_embeds once per run, so it cannot switch them per step (use the CPU backend)",
          }
        : {}),
    };
    const minBatch = smallestBatch(shapes);
    if (minBatch > 1) {
      parts.warnings.push(`the engines in ${parts.variantDir} take batches of ${minBatch} to ${this.limits.maxBatch} images only (built with --batch ${minBatch}-…)`);
    }
  }

  /**
   * Applies a LoRA set (empty: the base model) by refitting the text encoder(s) and UNet engines'
   * weights in place (lib/convert/lora/refit.ts), between generations; never a rebuild. The weights
   * the previous set changed go back to the model's own values, so the base is restored exactly.
   * @throws InvalidOptionError when the engines were built without `--refittable`; ModelFileError
   *   naming a LoRA that does not fit the model.
   */
  setLoras(set: readonly LoraSpec[]): Promise<void> {
    return this.#life.exclusive(async () => {
      if (!this.manifest.options.refittable) {
        throw new InvalidOptionError("loras", `the engines in ${this.variantDir} were built without --refittable, so LoRAs cannot be applied to them; rebuild with\n  ${rebuildCommand(this.manifest, this.variantDir)} --refittable --force`);
      }
      const deltas = await loraSetDeltas(set, await folderLoraTarget(this.#folder));
      // A refiner's one encoder (#text) is text_encoder_2.
      const textComponent = this.#sdxl && !this.#sdxl.text2 ? "text_encoder_2" : "text_encoder";
      this.#loraChanged.text = await refitEngineWeights(this.#text.engine, this.#folder.textEncoder.path, deltas.get(textComponent) ?? new Map(), this.#loraChanged.text);
      const text2 = this.#sdxl?.text2;
      if (text2) {
        this.#loraChanged.text2 = await refitEngineWeights(text2.engine, this.#folder.sdxl!.textEncoder2.path, deltas.get("text_encoder_2") ?? new Map(), this.#loraChanged.text2);
      }
      this.#loraChanged.unet = await refitEngineWeights(this.#unet.engine, this.#folder.unet.path, deltas.get("unet") ?? new Map(), this.#loraChanged.unet);
    });
  }

  /**
   * Whether this machine can run TensorRT engines (addon with TensorRT, libnvinfer, driver, GPU),
   * and why not. Never throws; engines still have to exist for the model (checked by `load`).
   */
  static async isUsable(): Promise<{ usable: boolean; reason: string }> {
    const { usable, reason, fixes } = checkTensorRt("run");
    return { usable, reason: usable || fixes.length === 0 ? reason : `${reason} (${fixes[0]})` };
  }

  /**
   * Loads the engines of a model folder for this GPU.
   * @throws TensorRtUnavailableError, ModelFileError (no engines), EngineMismatchError (built for
   *   another GPU/TensorRT or from other model files; the message has the rebuild command).
   */
  static async load(model: string | ModelFolder, options: TensorRtBackendOptions = {}): Promise<TensorRtBackend> {
    const device = options.device === undefined ? 0 : options.device;
    if (!Number.isInteger(device) || device < 0) throw new InvalidOptionError("device", `device must be a CUDA device index, got ${String(device)}`);
    const { binding: trt, info, report } = requireTensorRt("run", "cannot load TensorRT engines");
    const gpu = info.devices.find((d) => d.index === device);
    if (!gpu) throw new InvalidOptionError("device", `device ${device} is not a CUDA device here (devices: ${info.devices.map((d) => d.index).join(", ") || "none"})`);
    const folder = typeof model === "string" ? await locateModelFolder(model) : model;
    const enginesDir = options.engines ?? defaultEnginesDir(folder.dir);
    const target = { tensorrtVersion: normalizeTensorRtVersion(String(report.tensorrt.runtimeVersion ?? "")), gpu: { name: gpu.name, computeCapability: gpu.computeCapability } };
    const { variantDir, manifest, warnings } = await resolveEngines(enginesDir, folder.dir, target);
    const sdxlInfo = sdxlEngineInfo(folder, manifest, variantDir);

    const engines: TrtEngine[] = [];
    const disposables: Array<{ dispose(): unknown }> = [];
    try {
      const loadOne = async (role: EngineRole): Promise<{ engine: TrtEngine; entry: NonNullable<EngineManifest["engines"][EngineRole]> } | undefined> => {
        const entry = manifest.engines[role];
        if (!entry) return undefined;
        const path = join(variantDir, entry.plan);
        let plan: Buffer;
        try {
          plan = await readFile(path);
        } catch (cause) {
          throw new ModelFileError(path, `cannot read the ${role} plan ${path}: ${(cause as Error).message}; rebuild with\n  ${rebuildCommand(manifest, variantDir)} --force`, { cause });
        }
        if (plan.length !== entry.planBytes) {
          throw new ModelFileError(path, `${path} has ${plan.length} bytes, its manifest says ${entry.planBytes}; rebuild with\n  ${rebuildCommand(manifest, variantDir)} --force`);
        }
        const engine = await callNativeAsync(() => trt.loadEngine(plan, { name: role, device }));
        engines.push(engine);
        return { engine, entry };
      };
      const loaded: Partial<Record<EngineRole, { engine: TrtEngine; entry: NonNullable<EngineManifest["engines"][EngineRole]> }>> = {};
      for (const role of ["text_encoder", "unet", "vae_decoder", "vae_encoder", ...(sdxlInfo && !sdxlInfo.secondEncoderOnly ? (["text_encoder_2"] as const) : [])] as const) {
        const one = await loadOne(role);
        if (one) loaded[role] = one;
      }
      const scratchBytes = Math.max(...engines.map((e) => e.deviceMemoryBytes), 1);
      const scratch = callNative(() => new trt.DeviceScratch(scratchBytes, { device }));
      disposables.push(scratch);
      const open = <Io extends ModelIo>(role: EngineRole): LoadedModel<Io> => {
        const { engine, entry } = loaded[role]!;
        const context = callNative(() => engine.createContext(scratch));
        disposables.push(context);
        return { engine, context, contract: entry.contract as Io, shapes: { contract: entry.contract, profiles: engine.profiles, io: engine.io } };
      };
      const text = open<TextEncoderIo>("text_encoder");
      const unet = open<UnetIo>("unet");
      const decoder = open<VaeDecoderIo>("vae_decoder");
      const encoder = loaded.vae_encoder ? open<VaeEncoderIo>("vae_encoder") : undefined;
      const sdxl = sdxlInfo && { text2: sdxlInfo.secondEncoderOnly ? null : open<SdxlTextEncoderIo>("text_encoder_2"), info: sdxlInfo };
      const unetEngine = callNative(() =>
        unet.context.createUnet({
          sample: unet.contract.sampleName,
          timestep: unet.contract.timestepName,
          hidden: unet.contract.contextName,
          out: unet.contract.outputName,
          timestepLayout: unet.contract.timestepLayout,
          hiddenSize: manifest.model.hiddenSize,
          ...(sdxlInfo ? { textEmbeds: sdxlInfo.textEmbedsName, timeIds: sdxlInfo.timeIdsName } : {}),
        }),
      );
      disposables.push(unetEngine);
      const denoiser = await Denoiser.create({ unet: unetEngine, device });
      return new TensorRtBackend({
        trt,
        folder,
        variantDir,
        manifest,
        warnings,
        scratch,
        models: { text, unet, decoder, ...(encoder ? { encoder } : {}) },
        sdxl,
        unetEngine,
        denoiser,
        useGraphs: options.useGraphs ?? true,
      });
    } catch (error) {
      for (const d of disposables.reverse()) d.dispose();
      for (const e of engines) e.dispose();
      throw error;
    }
  }

  get disposed(): boolean {
    return this.#life.disposed;
  }

  /** How the last denoise call ran (graph capture, GPU time). */
  get lastDenoise(): TensorRtDenoiseStats | undefined {
    return this.#lastDenoise;
  }

  /**
   * GPU milliseconds of the last call of each stage, from CUDA events: `textEncoder`, `unet` (the
   * whole denoise loop), `vaeDecoder`, `vaeEncoder`. For `sd-trt bench`.
   */
  get lastTimings(): TensorRtStageTimings {
    return { ...this.#timings };
  }

  /**
   * Each engine's layers as TensorRT's IEngineInspector reports them (JSON text; what `trtexec
   * --dumpLayerInfo` prints): tactics, formats and fused ops for engines built with
   * `detailedProfiling`, layer names otherwise. For the GPU self-test's report, e.g. whether the
   * UNet's attention ran as one fused kernel.
   */
  inspectEngines(): Partial<Record<EngineRole, { verbosity: string; layers: string }>> {
    if (this.#life.disposed) throw new DisposedError("TensorRT backend");
    const out: Partial<Record<EngineRole, { verbosity: string; layers: string }>> = {};
    const models: Array<[EngineRole, LoadedModel<ModelIo> | null | undefined]> = [
      ["text_encoder", this.#text],
      ["text_encoder_2", this.#sdxl?.text2],
      ["unet", this.#unet],
      ["vae_decoder", this.#decoder],
      ["vae_encoder", this.#encoder],
    ];
    for (const [role, model] of models) if (model) out[role] = callNative(() => model.engine.inspect());
    return out;
  }

  /**
   * A whole batch on the GPU: text encoder (each distinct prompt row once), the VAE encoder for
   * img2img, the denoise loop under CUDA graphs, the VAE decoder. One generation at a time: the
   * contexts share one scratch buffer.
   */
  generate(job: GenerationJob): Promise<GenerationOutput> {
    if (job.onLatents) return Promise.reject(new InvalidOptionError("onLatents", "onLatents needs the CPU backend (the TensorRT backend keeps latents on the GPU)"));
    return this.#life.exclusive(async () => {
      throwIfAborted(job.signal);
      const { batch } = job;
      const t = performance.now();
      // Prompt editing: every text of every schedule is encoded once and the denoise loop switches
      // rows on the device (embedding-rows.ts). SDXL pipelines refuse schedules before this
      // (limits.sdxlPromptEditingUnavailable); this guards a job built some other way.
      const edited = [job.cond, job.uncond, job.sdxl?.cond2, job.sdxl?.uncond2].some((p) => p?.schedules !== undefined);
      if (edited) {
        // SDXL's pooled text_embeds would have to switch with the states.
        if (this.#sdxl) throw new InvalidOptionError("prompt", `prompt editing and alternation ([from:to:when], [a|b]) on SDXL: ${this.limits.sdxlPromptEditingUnavailable}`);
      }
      if (this.#sdxl) return this.#generateSdxl(job, this.#sdxl.info);
      const text = { emphasis: job.emphasis, clipSkip: job.clipSkip ?? 1, ...(job.tokenVectors ? { tokenVectors: job.tokenVectors } : {}) };
      // With prompt editing the embeddings are a bank: one row per distinct text, not per image.
      const encode = (prompts: PromptBatch) => (edited ? this.#encodeText(everyText(prompts), prompts.prompts, text) : this.#encodeText(prompts, batch, text));
      const encodingCond = encode(job.cond);
      const { noise, ms: stepNoise } = await drawStepNoiseDuring(job, encodingCond, (embeddings) => embeddings.dispose());
      const cond = await encodingCond;
      let uncond: DeviceEmbeddings | null = null;
      try {
        if (job.uncond) uncond = await encode(job.uncond);
        const textEncode = performance.now() - t;
        job.onStage?.("encode-text");
        throwIfAborted(job.signal);
        return await this.#denoiseAndDecode(job, noise, { cond, uncond }, { textEncode, stepNoise });
      } finally {
        cond.dispose();
        uncond?.dispose();
      }
    });
  }

  /**
   * An SDXL batch (sdxl.ts): both encoders, their states joined on the host, then the same loop
   * and decoder as SD with text_embeds and time_ids as extra UNet inputs. Runs inside generate's
   * exclusive section.
   */
  async #generateSdxl(job: GenerationJob, info: SdxlEngineInfo): Promise<GenerationOutput> {
    // Zero uncond embeddings take the cond side's shape.
    const { batch, latentHeight, latentWidth } = job;
    const t = performance.now();
    const duplicateCond = job.uncond === null && !unetAccepts(this.#unet.shapes, batch, latentHeight, latentWidth);
    const conditioning = sdxlConditioning(job, info, (encoder, prompts) => this.#encodeRows(encoder, prompts, batch, job.emphasis), duplicateCond);
    const { noise, ms: stepNoise } = await drawStepNoiseDuring(job, conditioning, () => undefined);
    const inputs = await conditioning;
    const textEncode = performance.now() - t;
    job.onStage?.("encode-text");
    throwIfAborted(job.signal);
    return this.#denoiseAndDecode(job, noise, { sdxl: inputs, duplicateCond }, { textEncode, stepNoise });
  }

  /**
   * From the text conditioning on: img2img's VAE encoder, the whole loop and the VAE decoder. The
   * latents stay on the device from the loop to the VAE; only the pixels come back.
   */
  async #denoiseAndDecode(job: GenerationJob, noise: Float32Array[], text: DenoiseText, timings: { textEncode: number; stepNoise: number }): Promise<GenerationOutput> {
    const { batch, latentHeight, latentWidth } = job;
    const imageEncode: number[] = [];
    const latents = await startLatents(job, (pixels, height, width) => this.#encodeImage(pixels, 1, height, width), this.scalingFactor, imageEncode);
    if (imageEncode.length > 0) job.onStage?.("encode-image");
    let t = performance.now();
    const final = await this.#denoise(job, latents, noise, text);
    try {
      const denoise = performance.now() - t;
      throwIfAborted(job.signal);
      t = performance.now();
      const images = await this.#decode(final, batch, latentHeight, latentWidth);
      job.onStage?.("decode");
      const output: GenerationOutput = { images, timings: { ...timings, imageEncode, denoise, decode: performance.now() - t } };
      if (job.returnLatents) output.latents = (await final.toHost()) as Float32Array;
      return output;
    } finally {
      final.dispose();
    }
  }

  /** SDXL: one encoder's states per image row, on the host as float32 (and text_encoder_2's pooled rows). */
  async #encodeRows(encoder: 1 | 2, prompts: PromptBatch, rows: number, emphasis: Emphasis): Promise<EncodedRows> {
    const sdxl = this.#sdxl!;
    // A refiner's one encoder (#text) is text_encoder_2.
    const model = encoder === 1 ? this.#text : (sdxl.text2 ?? this.#text);
    const embeddings = await this.#encodeText(prompts, rows, { emphasis, clipSkip: 1 }, model, encoder === 2 ? sdxl.info.pooledName : undefined);
    try {
      const host = await embeddings.device.toHost();
      const states = host instanceof Uint16Array ? float16ArrayToFloat32(host) : (host as Float32Array);
      return embeddings.pooled ? { states, pooled: embeddings.pooled } : { states };
    } finally {
      embeddings.dispose();
    }
  }

  /**
   * A prompt list → embeddings [rows, 77 · chunks, hidden] on the device: every chunk of every
   * distinct prompt encoded once (rows padded up to a count the engine's profiles take), each
   * chunk weighted by the emphasis on the device, then gathered per image.
   */
  async #encodeText(prompts: PromptBatch, rows: number, text: { emphasis: Emphasis; clipSkip: number; tokenVectors?: Float32Array }, model: LoadedModel<TextEncoderIo> = this.#text, pooledOutput?: string): Promise<DeviceEmbeddings> {
    const { emphasis } = text;
    // Clip skip and the textual-inversion vectors: inputs of the (edited) first text encoder only.
    const extraInputs = model === this.#text ? this.#textEncoderInputs(text.clipSkip, text.tokenVectors) : undefined;
    const { chunks } = prompts;
    const chunkRows = prompts.prompts * chunks;
    if (prompts.ids.length !== chunkRows * TOKENS || prompts.multipliers.length !== chunkRows * TOKENS || prompts.rowOf.length !== rows) {
      throw new InvalidArgumentError(`generate needs [${prompts.prompts}, ${chunks}, ${TOKENS}] token ids and multipliers and one prompt per image (${rows})`);
    }
    const computed = textRowsFor(model.shapes, chunkRows);
    if (computed === undefined) {
      throw new InvalidOptionError(
        "batch",
        `the text encoder engine takes at most ${this.limits.maxBatch * 2 * this.limits.maxPromptChunks} chunk rows per call, got ${chunkRows} (${prompts.prompts} distinct prompts of ${chunks} chunks); rebuild the engines for a larger --batch`,
      );
    }
    // Rows past the real ones repeat the last chunk (their output is never read).
    const ids = new Int32Array(computed * TOKENS);
    const multipliers = new Float32Array(computed * TOKENS).fill(1);
    ids.set(prompts.ids);
    multipliers.set(prompts.multipliers);
    for (let r = chunkRows; r < computed; r++) ids.copyWithin(r * TOKENS, (chunkRows - 1) * TOKENS, chunkRows * TOKENS);
    // Image r's row is its prompt's chunks in order: chunk rows p · chunks … (p + 1) · chunks − 1.
    const outputRows = new Int32Array(rows * chunks);
    prompts.rowOf.forEach((p, r) => {
      for (let c = 0; c < chunks; c++) outputRows[r * chunks + c] = p * chunks + c;
    });
    const weighted = emphasisScales(emphasis) && prompts.multipliers.some((m) => m !== 1);
    // "original" over a prompt's schedule: its texts share one mean per chunk index (emphasisGroupIds).
    const emphasisGroups = weighted && emphasis === "original" ? emphasisGroupIds(prompts, computed) : undefined;
    const { embeddings, gpuMs, pooled } = await callNativeAsync(() =>
      model.context.encodeText({
        ids,
        rows: computed,
        input: model.contract.idsName,
        output: model.contract.hiddenName,
        ...(pooledOutput !== undefined ? { pooledOutput } : {}),
        outputRows,
        chunks,
        // A chunk without weights is left as it is (lib/prompt/emphasis.ts does the same).
        ...(weighted ? { multipliers, emphasis: emphasis as "original" | "no-norm" } : {}),
        ...(emphasisGroups ? { emphasisGroups } : {}),
        ...(extraInputs && extraInputs.length > 0 ? { extraInputs } : {}),
      }),
    );
    this.#timings.textEncoder = gpuMs;
    return new DeviceEmbeddings(rows, embeddings, pooled);
  }

  /**
   * The edited text encoder's other inputs: clip skip (checked against the layers by the
   * pipeline) and the textual-inversion vectors (one zero row when there are none).
   */
  #textEncoderInputs(clipSkip: number, tokenVectors: Float32Array | undefined): { name: string; dims: number[]; data: Int32Array | Float32Array }[] {
    const io = this.#text.contract;
    if (clipSkip !== 1 && (!io.clipSkipName || clipSkip > (io.layers ?? 1))) {
      throw new InvalidOptionError("clipSkip", `clipSkip ${clipSkip} needs text-encoder engines built from the edited graph with at least ${clipSkip} layers; rebuild with sd-trt build --force`);
    }
    if (tokenVectors && !io.extraVectorsName) throw new InvalidOptionError("embeddingsDir", "the text-encoder engine takes no embedding vectors; rebuild the engines with sd-trt build --force");
    const inputs: { name: string; dims: number[]; data: Int32Array | Float32Array }[] = [];
    if (io.clipSkipName) inputs.push({ name: io.clipSkipName, dims: [1], data: Int32Array.of(clipSkip) });
    if (io.extraVectorsName) {
      const vectors = tokenVectors && tokenVectors.length > 0 ? tokenVectors : new Float32Array(this.hiddenSize);
      const rows = vectors.length / this.hiddenSize;
      if (rows > MAX_TOKEN_VECTOR_ROWS) {
        throw new InvalidOptionError("embeddingsDir", `the embeddings have ${rows} vectors in all; the text-encoder engine takes at most ${MAX_TOKEN_VECTOR_ROWS}`);
      }
      inputs.push({ name: io.extraVectorsName, dims: [rows, this.hiddenSize], data: vectors });
    }
    return inputs;
  }

  /** The whole sampler program on the device; returns x_M, still on the device (the caller disposes it). */
  async #denoise(
    job: GenerationJob,
    latents: Float32Array,
    noise: Float32Array[],
    text: DenoiseText,
  ): Promise<NativeDeviceTensor> {
    const { batch, latentHeight, latentWidth } = job;
    const edited = !("sdxl" in text) && (job.cond.schedules !== undefined || job.uncond?.schedules !== undefined);
    let guidance: Float64Array | null = null;
    let parts: NativeDeviceTensor[] | Float32Array;
    let added: { textEmbeds: Float32Array; timeIds: Float32Array } | undefined;
    let splitCalls: NativeSplitCalls | undefined;
    // Prompt editing (SD only): parts are the bank, each text once, and `halves` says which rows
    // each evaluation reads (embedding-rows.ts).
    let halves: EmbeddingHalf[] = [];
    if ("sdxl" in text) {
      // Already [uncond; cond] (or cond twice for engines built for the guidance batch only; see below).
      parts = text.sdxl.context;
      added = { textEmbeds: text.sdxl.textEmbeds, timeIds: text.sdxl.timeIds };
      if (job.uncond) guidance = job.guidance;
      else if (text.duplicateCond) guidance = new Float64Array(batch).fill(0);
      // A1111's default for a prompt and negative prompt of different lengths: two UNet calls (no padding).
      if (job.uncond && job.uncond.chunks !== job.cond.chunks) splitCalls = this.#splitCalls(job, job.uncond.chunks);
    } else if (text.uncond !== null) {
      const { cond, uncond } = text;
      parts = [uncond.device, cond.device];
      guidance = job.guidance;
      // A1111's default for a prompt and negative prompt of different lengths: two UNet calls (no padding).
      if (job.uncond && job.uncond.chunks !== job.cond.chunks) splitCalls = this.#splitCalls(job, job.uncond.chunks);
      if (job.uncond) {
        halves = [
          { prompts: job.uncond, bankOffset: 0 },
          { prompts: job.cond, bankOffset: uncond.rows },
        ];
      }
    } else if (unetAccepts(this.#unet.shapes, batch, latentHeight, latentWidth)) {
      parts = [text.cond.device];
      halves = [{ prompts: job.cond, bankOffset: 0 }];
    } else {
      // The engines were built for the guidance batch (2B) only: both halves get the cond
      // embeddings and the scale is 0, so m = u + 0·(c − u) = u exactly (the kernel's float32
      // arithmetic adds ±0), the UNet's unguided output for these prompts. A scale of 1 would give
      // u + (c − u), which equals c only when the two rows round identically: not guaranteed.
      // It costs a second UNet row per image; a --batch build with unguided shapes avoids that.
      parts = edited ? [text.cond.device] : [text.cond.device, text.cond.device];
      guidance = new Float64Array(batch).fill(0);
      halves = [
        { prompts: job.cond, bankOffset: 0 },
        { prompts: job.cond, bankOffset: 0 },
      ];
    }

    // The denoiser joins the parts into its own embedding buffer: no concat, stream or allocation here.
    const result = await this.#denoiser.run({
      program: packProgram(job.program),
      ...(edited ? { embeddingRows: embeddingRowTable(halves, job.program.evals.length) } : {}),
      latents,
      noise,
      batch,
      latentHeight,
      latentWidth,
      guidance,
      embeddings: parts,
      ...(added ?? {}),
      sequenceLength: TOKENS * job.cond.chunks,
      ...(splitCalls ? { splitCalls } : {}),
      useGraphs: this.#useGraphs,
      output: "device",
      ...(job.signal ? { signal: job.signal } : {}),
      ...(job.onStep ? { onStep: job.onStep } : {}),
    });
    this.#lastDenoise = {
      graph: result.graph,
      ...(result.graphFallbackReason ? { graphFallbackReason: result.graphFallbackReason } : {}),
      evaluations: result.evaluations,
      gpuMs: result.gpuMs,
      hostMs: result.hostMs,
    };
    this.#timings.unet = result.gpuMs;
    return result.latents;
  }

  /**
   * The uncond call of a prompt and negative prompt of different lengths: its text length, and the
   * rows of each call (the batch, or twice it for engines built for the guidance batch only).
   * @throws InvalidOptionError when no UNet profile takes either row count at both lengths.
   */
  #splitCalls(job: GenerationJob, uncondChunks: number): NativeSplitCalls {
    const { batch, latentHeight, latentWidth } = job;
    const lengths = [TOKENS * uncondChunks, TOKENS * job.cond.chunks];
    const callRows = splitCallRows(this.#unet.shapes, batch, latentHeight, latentWidth, lengths);
    if (callRows === undefined) {
      const chunks = this.manifest.shapes.promptChunks;
      const rebuild = rebuildCommand({ ...this.manifest, shapes: { ...this.manifest.shapes, promptChunks: { ...chunks, max: Math.max(chunks.max, job.cond.chunks, uncondChunks) } } }, this.variantDir);
      throw new InvalidOptionError(
        "padCondUncond",
        `the prompt and negative prompt have ${job.cond.chunks} and ${uncondChunks} chunks of 75 tokens, which run as two UNet calls (A1111's default), but no optimization profile of the UNet engine in ${this.variantDir} takes ${batch} or ${2 * batch} rows at both ${lengths[1]} and ${lengths[0]} tokens (built for prompts of at most ${chunks.max} chunks, ${shapeArguments(this.manifest.shapes)}): set padCondUncond (A1111's pad_cond_uncond), or rebuild with\n  ${rebuild} --force`,
      );
    }
    return { uncondSequenceLength: lengths[0]!, callRows };
  }

  /** x_M / scaling_factor (divided on the device, float32 as diffusers rounds it) through the VAE decoder and the uint8 kernel. */
  async #decode(latents: NativeDeviceTensor, batch: number, latentHeight: number, latentWidth: number): Promise<Uint8Array[]> {
    {
      let out: { pixels: Buffer; width: number; height: number; gpuMs: number };
      try {
        out = await callNativeAsync(() =>
          this.#decoder.context.decodeImage({
            latents,
            scalingFactor: this.scalingFactor,
            batch,
            height: latentHeight,
            width: latentWidth,
            input: this.#decoder.contract.latentName,
            output: this.#decoder.contract.imageName,
          }),
        );
      } catch (error) {
        if (error instanceof NativeError && error.code === "ERR_VAE_NAN") {
          throw new VaeOverflowError(error.message.replace(/ — rebuild.*$/s, ""), rebuildCommand(this.manifest, this.variantDir, { fp32Vae: true }));
        }
        throw error;
      }
      this.#timings.vaeDecoder = out.gpuMs;
      const size = out.width * out.height * 3;
      return Array.from({ length: batch }, (_, b) => out.pixels.subarray(b * size, (b + 1) * size));
    }
  }

  /** The VAE encoder on images [batch, 3, H, W]: the posterior mean (and std when the engine returns latent parameters). */
  async #encodeImage(pixels: Float32Array, batch: number, height: number, width: number): Promise<{ mean: Float32Array; std?: Float32Array }> {
    {
      const encoder = this.#encoder;
      if (!encoder) {
        throw new ModelFileError(this.variantDir, `the engines in ${this.variantDir} have no VAE encoder, which img2img needs (the model folder had no vae_encoder when they were built)`);
      }
      const out = await callNativeAsync(() =>
        encoder.context.encodeImage({ pixels, batch, height, width, input: encoder.contract.imageName, output: encoder.contract.outputName }),
      );
      this.#timings.vaeEncoder = out.gpuMs;
      if (encoder.contract.outputKind === "sample") return { mean: out.data };
      return splitPosterior(out.data, batch, out.shape[2]!, out.shape[3]!);
    }
  }

  /** Waits for a running generation, then releases the native objects: denoiser, UNet runner, contexts, engines, scratch. Idempotent. */
  dispose(): Promise<void> {
    return this.#life.dispose(async () => {
      await this.#denoiser.dispose();
      this.#unetEngine.dispose();
      for (const m of [this.#text, this.#sdxl?.text2, this.#unet, this.#decoder, this.#encoder]) {
        m?.context.dispose();
        m?.engine.dispose();
      }
      this.#scratch?.dispose();
      this.#scratch = undefined;
    });
  }

  async [Symbol.asyncDispose](): Promise<void> {
    await this.dispose();
  }
}

/** What the loop conditions on: SD's embeddings on the device, or SDXL's joined inputs. */
type DenoiseText = { cond: DeviceEmbeddings; uncond: DeviceEmbeddings | null } | { sdxl: SdxlUnetInputs; duplicateCond: boolean };

/**
 * The job's step noise, drawn on this thread while the GPU works on `pending` (the prompts); it is
 * uploaded later with the loop. When drawing fails, `pending` is awaited and `release`d first.
 */
async function drawStepNoiseDuring<T>(job: GenerationJob, pending: Promise<T>, release: (value: T) => void): Promise<{ noise: Float32Array[]; ms: number }> {
  const start = performance.now();
  try {
    return { noise: drawAllStepNoise(stepNoiseOf(job.noise)), ms: performance.now() - start };
  } catch (error) {
    await pending.then(release, () => undefined);
    throw error;
  }
}
