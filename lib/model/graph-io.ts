/**
 * Reads each model's role and I/O contract off its graph signature (input/output names, element
 * types and shapes, as ONNX Runtime reports them), never from the file name alone. One
 * description per model, so the backends feed every export the way diffusers feeds it:
 *
 * | model        | accepted inputs                                   | outputs                          |
 * | ------------ | ------------------------------------------------- | -------------------------------- |
 * | text encoder | `input_ids` int32 or int64 [B, L]                 | `last_hidden_state` / `text_embeddings` [B, L, D] |
 * | UNet         | `sample` [B,4,h,w], `timestep` (rank 0, [1] or [B]; float or int), `encoder_hidden_states` [B,L,D] | `out_sample` / `latent` |
 * | VAE decoder  | `latent_sample` / `latent` / `z` [B,4,h,w]        | `sample` / `images` [B,3,8h,8w]   |
 * | VAE encoder  | `sample` / `images` [B,3,H,W]                     | `latent_sample` / `latent` (a sample or the mean) or `latent_parameters` [B,8,h,w] (mean and log-variance) |
 *
 * SDXL (optimum's SDXL export): each text encoder also returns `hidden_states.0…N`, of which the
 * pipeline takes the penultimate, and `text_encoder_2` returns the pooled `text_embeds`
 * (`describeSdxlTextEncoder`); the UNet takes `text_embeds` [B, P] and `time_ids` [B, 6] besides
 * the three inputs above (`UnetIo.addedConditioning`).
 *
 * Names follow optimum's export (both the ≤ 1.22 and the current conventions) and the TensorRT
 * demo's. Anything else is refused with a message naming the file and what it has.
 */
import { CLIP_SKIP_INPUT, EXTRA_VECTORS_INPUT } from "../onnx/text-encoder-edit.js";
import { ModelFileError } from "../errors.js";
import type { OnnxModel } from "../onnx/model.js";

/** A dimension: a number when static, the symbolic name when dynamic. */
export type Dim = number | string;

/** One graph input or output as ONNX Runtime describes it. */
export interface TensorSpec {
  name: string;
  /** ONNX Runtime's type name: "float32", "float16", "int32", "int64", … */
  type: string;
  shape: Dim[];
}

export interface GraphSignature {
  inputs: TensorSpec[];
  outputs: TensorSpec[];
}

const ORT_NAMES: Record<string, string> = { float: "float32", double: "float64", float16: "float16" };

/**
 * The graph signature of an ONNX model read with our codec, with ONNX Runtime's type names: what a
 * session would report, without making one (engine planning, and the CPU backend's text-encoder
 * edit before its one session is made).
 */
export function onnxSignature(model: OnnxModel): GraphSignature {
  const io = model.io();
  const spec = (v: { name: string; dtype: string; shape: (number | string)[] }): TensorSpec => ({
    name: v.name,
    type: ORT_NAMES[v.dtype] ?? v.dtype,
    shape: v.shape.map((d) => (typeof d === "number" && d < 0 ? "?" : d)),
  });
  return { inputs: io.inputs.map(spec), outputs: io.outputs.map(spec) };
}

export type ModelRole = "text_encoder" | "unet" | "vae_decoder" | "vae_encoder";

/** Human-readable name of each role, for messages. */
export const ROLE_TITLES: Record<ModelRole, string> = {
  text_encoder: "text encoder",
  unet: "UNet",
  vae_decoder: "VAE decoder",
  vae_encoder: "VAE encoder",
};

export interface TextEncoderIo {
  role: "text_encoder";
  idsName: string;
  idsType: "int32" | "int64";
  hiddenName: string;
  /** Static hidden size (768 for SD 1.x), when the graph declares it. */
  hiddenSize?: number;
  /** Static token count, when declared (77 for CLIP). */
  sequenceLength?: number;
  /** The inputs sd-trt's text-encoder edit adds (lib/onnx/text-encoder-edit.ts), when the graph (an engine built from the edited graph) has them. */
  clipSkipName?: string;
  extraVectorsName?: string;
  /** Transformer layers, as the edit found them (recorded by `sd-trt build` in the engine manifest): the largest clip skip. */
  layers?: number;
}

/** How the UNet wants its timestep: a scalar, a [1] tensor broadcast over the batch, or one per row. */
export type TimestepLayout = "scalar" | "single" | "per-row";

/** SDXL's extra UNet inputs (`added_cond_kwargs`): the pooled text embedding and the size/crop time ids. */
export interface AddedConditioningIo {
  textEmbedsName: string;
  timeIdsName: string;
  /** Static size of the pooled embedding (text_encoder_2's projection_dim), when declared. */
  textEmbedsSize?: number;
  /** Static number of time ids, when declared: 6 (original size, crop, target size), 5 with an aesthetic score (refiner). */
  timeIdsSize?: number;
}

export interface UnetIo {
  role: "unet";
  sampleName: string;
  timestepName: string;
  timestepType: "float32" | "float64" | "int32" | "int64";
  timestepLayout: TimestepLayout;
  contextName: string;
  outputName: string;
  /** Static batch of `sample`, when the export fixed it. */
  staticBatch?: number;
  /** Static latent height/width of `sample`, when fixed. */
  staticHeight?: number;
  staticWidth?: number;
  /** Static size of the last axis of `encoder_hidden_states`, when declared. */
  contextSize?: number;
  /** SDXL UNets: the `text_embeds` and `time_ids` inputs. */
  addedConditioning?: AddedConditioningIo;
}

export interface VaeDecoderIo {
  role: "vae_decoder";
  latentName: string;
  imageName: string;
}

/**
 * What the VAE encoder graph returns: `sample` (a latent: the posterior sample drawn inside the
 * graph, or its mean), or `parameters` (mean and log-variance stacked on the channel axis, as
 * current optimum exports `latent_parameters`).
 */
export type EncoderOutputKind = "sample" | "parameters";

export interface VaeEncoderIo {
  role: "vae_encoder";
  imageName: string;
  outputName: string;
  outputKind: EncoderOutputKind;
}

export type ModelIo = TextEncoderIo | UnetIo | VaeDecoderIo | VaeEncoderIo;

function listNames(specs: TensorSpec[]): string {
  return specs.length === 0 ? "none" : specs.map((s) => `${s.name} (${s.type} [${s.shape.join(", ")}])`).join(", ");
}

class IoChecker {
  readonly used = new Set<string>();
  constructor(
    readonly file: string,
    readonly role: ModelRole,
    readonly signature: GraphSignature,
  ) {}

  fail(problem: string): never {
    throw new ModelFileError(
      this.file,
      `${this.file}: unsupported ${ROLE_TITLES[this.role]} graph: ${problem} ` +
        `(inputs: ${listNames(this.signature.inputs)}; outputs: ${listNames(this.signature.outputs)})`,
    );
  }

  /** The input with one of `names` (first match wins), checked for rank and element type. */
  input(what: string, names: readonly string[], ranks: readonly number[], types: readonly string[]): TensorSpec {
    const spec = names.map((n) => this.signature.inputs.find((i) => i.name === n)).find((s) => s !== undefined);
    if (!spec) {
      const expected = names.map((n) => JSON.stringify(n)).join(" or ");
      this.fail(`no ${what} input (expected an input named ${expected})`);
    }
    this.checkSpec(spec, "input", ranks, types);
    this.used.add(spec.name);
    return spec;
  }

  output(what: string, names: readonly string[], ranks: readonly number[], types: readonly string[]): TensorSpec {
    let spec = names.map((n) => this.signature.outputs.find((o) => o.name === n)).find((s) => s !== undefined);
    // Exports that name their outputs differently ("output_0", "last_hidden_state.1", …): take the
    // first output of the right rank, it is the one diffusers reads (`outputs[0]`).
    spec ??= this.signature.outputs.find((o) => ranks.includes(o.shape.length));
    if (!spec) this.fail(`no ${what} output (expected ${names.map((n) => JSON.stringify(n)).join(" or ")})`);
    this.checkSpec(spec, "output", ranks, types);
    return spec;
  }

  checkSpec(spec: TensorSpec, kind: string, ranks: readonly number[], types: readonly string[]): void {
    if (!ranks.includes(spec.shape.length)) {
      this.fail(`${kind} ${JSON.stringify(spec.name)} has rank ${spec.shape.length}, expected ${ranks.join(" or ")}`);
    }
    if (!types.includes(spec.type)) {
      const hint = spec.type === "float16" ? " (float16 exports are for the TensorRT backend; the CPU backend needs a float32 export)" : "";
      this.fail(`${kind} ${JSON.stringify(spec.name)} is ${spec.type}, expected ${types.join(" or ")}${hint}`);
    }
  }

  /** Refuses inputs this pipeline would not feed (an SDXL `text_embeds`, an `attention_mask`, …). */
  noOtherInputs(): void {
    const extra = this.signature.inputs.filter((i) => !this.used.has(i.name));
    if (extra.length > 0) {
      this.fail(`input${extra.length > 1 ? "s" : ""} ${extra.map((e) => JSON.stringify(e.name)).join(", ")} not used by a SD 1.x/2.x pipeline`);
    }
  }

  channelsMustBe(spec: TensorSpec, kind: string, allowed: readonly number[]): number | undefined {
    const channels = spec.shape[1];
    if (typeof channels === "number" && !allowed.includes(channels)) {
      this.fail(`${kind} ${JSON.stringify(spec.name)} has ${channels} channels, expected ${allowed.join(" or ")}`);
    }
    return typeof channels === "number" ? channels : undefined;
  }
}

const FLOAT = ["float32"] as const;
const staticDim = (d: Dim | undefined): number | undefined => (typeof d === "number" && d > 0 ? d : undefined);

export function describeTextEncoder(signature: GraphSignature, file: string): TextEncoderIo {
  const c = new IoChecker(file, "text_encoder", signature);
  const ids = c.input("token ids", ["input_ids"], [2], ["int32", "int64"]);
  const has = (name: string) => signature.inputs.some((i) => i.name === name);
  const clipSkip = has(CLIP_SKIP_INPUT) ? c.input("clip skip", [CLIP_SKIP_INPUT], [1], ["int32"]) : undefined;
  const extraVectors = has(EXTRA_VECTORS_INPUT) ? c.input("textual-inversion vectors", [EXTRA_VECTORS_INPUT], [2], ["float32"]) : undefined;
  c.noOtherInputs();
  const hidden = c.output("hidden state", ["last_hidden_state", "text_embeddings"], [3], FLOAT);
  const io: TextEncoderIo = {
    role: "text_encoder",
    idsName: ids.name,
    idsType: ids.type as "int32" | "int64",
    hiddenName: hidden.name,
  };
  const hiddenSize = staticDim(hidden.shape[2]);
  if (hiddenSize !== undefined) io.hiddenSize = hiddenSize;
  const sequenceLength = staticDim(ids.shape[1]);
  if (sequenceLength !== undefined) io.sequenceLength = sequenceLength;
  if (clipSkip) io.clipSkipName = clipSkip.name;
  if (extraVectors) io.extraVectorsName = extraVectors.name;
  return io;
}

/** An SDXL text encoder: what `describeTextEncoder` reads, with `hiddenName` the penultimate hidden state. */
export interface SdxlTextEncoderIo extends TextEncoderIo {
  /** `text_embeds` [B, P] (text_encoder_2's pooled, projected output), when asked for. */
  pooledName?: string;
}

/**
 * An SDXL text encoder graph as optimum exports it: `input_ids` → `hidden_states.0…N` (N layers),
 * plus `text_embeds` for `text_encoder_2`. `hiddenName` is `hidden_states.{N−1}`, the penultimate
 * layer diffusers' `encode_prompt` takes (`hidden_states[-2]`).
 */
export function describeSdxlTextEncoder(signature: GraphSignature, file: string, pooled: boolean): SdxlTextEncoderIo {
  const base = describeTextEncoder(signature, file);
  const c = new IoChecker(file, "text_encoder", signature);
  const layers = signature.outputs
    .map((o) => /^hidden_states\.(\d+)$/.exec(o.name))
    .filter((m): m is RegExpExecArray => m !== null)
    .map((m) => Number(m[1]));
  const last = Math.max(-1, ...layers);
  if (last < 1 || !layers.includes(last - 1)) {
    c.fail("an SDXL text encoder must return its hidden states (outputs hidden_states.0 … hidden_states.N, N ≥ 1; optimum exports them for SDXL)");
  }
  const penultimate = c.output("penultimate hidden state", [`hidden_states.${last - 1}`], [3], FLOAT);
  const io: SdxlTextEncoderIo = { ...base, hiddenName: penultimate.name };
  const hiddenSize = staticDim(penultimate.shape[2]);
  if (hiddenSize !== undefined) io.hiddenSize = hiddenSize;
  else delete io.hiddenSize;
  if (pooled) {
    const spec = signature.outputs.find((o) => o.name === "text_embeds");
    if (!spec) return c.fail("text_encoder_2 must return the pooled, projected embedding \"text_embeds\" (CLIPTextModelWithProjection)");
    c.checkSpec(spec, "output", [2], FLOAT);
    io.pooledName = spec.name;
  }
  return io;
}

export function describeUnet(signature: GraphSignature, file: string): UnetIo {
  const c = new IoChecker(file, "unet", signature);
  const sample = c.input("latent sample", ["sample"], [4], FLOAT);
  c.channelsMustBe(sample, "input", [4]);
  const timestep = c.input("timestep", ["timestep", "timesteps", "t"], [0, 1], ["float32", "float64", "int32", "int64"]);
  const context = c.input("text embeddings", ["encoder_hidden_states"], [3], FLOAT);
  // SDXL: both extra inputs or neither (one alone is no pipeline's contract; noOtherInputs names it).
  const has = (name: string) => signature.inputs.some((i) => i.name === name);
  let added: AddedConditioningIo | undefined;
  if (has("text_embeds") && has("time_ids")) {
    const textEmbeds = c.input("pooled text embedding", ["text_embeds"], [2], FLOAT);
    const timeIds = c.input("time ids", ["time_ids"], [2], FLOAT);
    added = { textEmbedsName: textEmbeds.name, timeIdsName: timeIds.name };
    const p = staticDim(textEmbeds.shape[1]);
    const n = staticDim(timeIds.shape[1]);
    if (p !== undefined) added.textEmbedsSize = p;
    if (n !== undefined) added.timeIdsSize = n;
  }
  c.noOtherInputs();
  const output = c.output("noise prediction", ["out_sample", "latent", "noise_pred"], [4], FLOAT);

  let timestepLayout: TimestepLayout = "scalar";
  if (timestep.shape.length === 1) {
    const dim = timestep.shape[0]!;
    const batch = sample.shape[0]!;
    // A timestep axis that is the sample's own batch axis (same symbol, or the same static size
    // above 1) wants one value per row; any other (a separate symbol like "steps", or 1) is fed [t]
    // and broadcast, as diffusers' ONNX pipeline does.
    const sameAxis = typeof dim === "string" ? dim === batch : dim > 1 && dim === batch;
    timestepLayout = sameAxis ? "per-row" : "single";
  }
  const io: UnetIo = {
    role: "unet",
    sampleName: sample.name,
    timestepName: timestep.name,
    timestepType: timestep.type as UnetIo["timestepType"],
    timestepLayout,
    contextName: context.name,
    outputName: output.name,
  };
  const b = staticDim(sample.shape[0]);
  const h = staticDim(sample.shape[2]);
  const w = staticDim(sample.shape[3]);
  const d = staticDim(context.shape[2]);
  if (b !== undefined) io.staticBatch = b;
  if (h !== undefined) io.staticHeight = h;
  if (w !== undefined) io.staticWidth = w;
  if (d !== undefined) io.contextSize = d;
  if (added) io.addedConditioning = added;
  return io;
}

export function describeVaeDecoder(signature: GraphSignature, file: string): VaeDecoderIo {
  const c = new IoChecker(file, "vae_decoder", signature);
  const latent = c.input("latent", ["latent_sample", "latent", "z"], [4], FLOAT);
  c.channelsMustBe(latent, "input", [4]);
  c.noOtherInputs();
  const image = c.output("image", ["sample", "images"], [4], FLOAT);
  c.channelsMustBe(image, "output", [3]);
  return { role: "vae_decoder", latentName: latent.name, imageName: image.name };
}

export function describeVaeEncoder(signature: GraphSignature, file: string): VaeEncoderIo {
  const c = new IoChecker(file, "vae_encoder", signature);
  const image = c.input("image", ["sample", "images"], [4], FLOAT);
  c.channelsMustBe(image, "input", [3]);
  c.noOtherInputs();
  const output = c.output("latent", ["latent_sample", "latent", "latent_parameters"], [4], FLOAT);
  const channels = c.channelsMustBe(output, "output", [4, 8]);
  const outputKind: EncoderOutputKind = output.name === "latent_parameters" || channels === 8 ? "parameters" : "sample";
  return { role: "vae_encoder", imageName: image.name, outputName: output.name, outputKind };
}

/** Describes a graph in the role it was found for; throws ModelFileError naming the file if it does not fit. */
export function describeModel(role: ModelRole, signature: GraphSignature, file: string): ModelIo {
  switch (role) {
    case "text_encoder":
      return describeTextEncoder(signature, file);
    case "unet":
      return describeUnet(signature, file);
    case "vae_decoder":
      return describeVaeDecoder(signature, file);
    case "vae_encoder":
      return describeVaeEncoder(signature, file);
  }
}
