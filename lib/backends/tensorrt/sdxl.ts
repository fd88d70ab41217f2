/**
 * SDXL on the TensorRT backend: what an SDXL engine set must hold, and the text stage's joining.
 *
 * - `sdxlEngineInfo` checks, when the engines load, that the set has SDXL's parts (text_encoder_2
 *   with its pooled `text_embeds` output, a UNet with `text_embeds`/`time_ids` inputs) and reads
 *   their sizes off the engines' I/O, so a mismatch is a clear error naming the rebuild, not a
 *   failed binding mid-generation.
 * - `sdxlConditioning` builds the UNet's inputs from the encoders' outputs exactly as the CPU
 *   backend does (`../sdxl-conditioning.ts`, diffusers' `encode_prompt`): both penultimate states
 *   joined per token, text_encoder_2's pooled output of each row's first chunk, zeros for the
 *   uncond side with `force_zeros_for_empty_prompt` (and A1111's empty negative rows), and the
 *   time ids, all [uncond; cond]. Prompt editing is refused on this backend (backend.ts).
 *   The per-token join happens on the host (the encoders' outputs come down once per generation,
 *   a few MiB at 1024² batch 4); the denoiser uploads the result once and binds text_embeds and
 *   time_ids as UNet inputs in its captured loop.
 */
import { InvalidArgumentError, ModelFileError } from "../../errors.js";
import type { ModelFolder } from "../../model/folder.js";
import type { SdxlTextEncoderIo, UnetIo } from "../../model/graph-io.js";
import type { GenerationJob, PromptBatch } from "../backend.js";
import { joinEncoderStates, pooledOfRows, uncondThenCond, zeroRows } from "../sdxl-conditioning.js";
import { rebuildCommand, type EngineEntry, type EngineManifest } from "./manifest.js";

/** What the TensorRT backend needs to know of an SDXL engine set. */
export interface SdxlEngineInfo {
  /** A refiner: its one encoder (the `text_encoder` engine) is text_encoder_2. */
  secondEncoderOnly: boolean;
  /** Hidden sizes of text_encoder's and text_encoder_2's penultimate states (h1 = 0 for a refiner). */
  hidden1: number;
  hidden2: number;
  /** text_encoder_2's `text_embeds` output. */
  pooledName: string;
  /** Widths of the UNet's text_embeds and time_ids. */
  pooledSize: number;
  timeIdsSize: number;
  textEmbedsName: string;
  timeIdsName: string;
}

function lastAxis(entry: EngineEntry, name: string): number | undefined {
  const shape = entry.io.find((t) => t.name === name)?.shape;
  const n = shape?.[shape.length - 1];
  return n !== undefined && n > 0 ? n : undefined;
}

/**
 * The SDXL parts of an engine set, or null for an SD 1.x/2.x folder.
 * @throws ModelFileError when the folder is SDXL and the engines lack or contradict its parts.
 */
export function sdxlEngineInfo(folder: ModelFolder, manifest: EngineManifest, variantDir: string): SdxlEngineInfo | null {
  if (!folder.sdxl) return null;
  const secondEncoderOnly = folder.sdxl.secondEncoderOnly;
  const fail = (problem: string): never => {
    throw new ModelFileError(variantDir, `the engines in ${variantDir} do not fit the SDXL model ${folder.dir}: ${problem}; rebuild them with\n  ${rebuildCommand(manifest, variantDir)} --force`);
  };
  const unet = manifest.engines.unet!;
  const added = (unet.contract as UnetIo).addedConditioning;
  if (!added) return fail("the UNet engine has no text_embeds and time_ids inputs");
  const first = manifest.engines.text_encoder!;
  const second = secondEncoderOnly ? first : manifest.engines.text_encoder_2;
  if (!second) return fail("there is no text_encoder_2 engine");
  const pooledName = (second.contract as SdxlTextEncoderIo).pooledName;
  if (pooledName === undefined) return fail("the text_encoder_2 engine does not return its pooled text_embeds");
  const hidden2 = lastAxis(second, second.contract.role === "text_encoder" ? second.contract.hiddenName : "");
  const hidden1 = secondEncoderOnly ? 0 : lastAxis(first, first.contract.role === "text_encoder" ? first.contract.hiddenName : "");
  const pooled = lastAxis(second, pooledName);
  const pooledSize = lastAxis(unet, added.textEmbedsName);
  const timeIdsSize = lastAxis(unet, added.timeIdsName);
  if (hidden1 === undefined || hidden2 === undefined || pooledSize === undefined || timeIdsSize === undefined) {
    return fail("a text encoder's hidden size or the UNet's text_embeds/time_ids width is dynamic in the engines");
  }
  if (hidden1 + hidden2 !== manifest.model.hiddenSize) return fail(`the text encoders give ${hidden1} + ${hidden2} values per token, the UNet takes ${manifest.model.hiddenSize}`);
  if (pooled !== pooledSize) return fail(`text_encoder_2's text_embeds has ${pooled ?? "a dynamic number of"} values, the UNet's text_embeds ${pooledSize}`);
  const expectedIds = folder.sdxl.requiresAestheticsScore ? 5 : 6;
  if (timeIdsSize !== expectedIds) return fail(`the UNet takes ${timeIdsSize} time ids, the model's pipeline makes ${expectedIds}`);
  return { secondEncoderOnly, hidden1, hidden2, pooledName, pooledSize, timeIdsSize, textEmbedsName: added.textEmbedsName, timeIdsName: added.timeIdsName };
}

/** One encoder's output for one prompt list, per image row: states [rows, 77 · chunks, hidden] and (text_encoder_2) pooled [computed chunk rows, P]. */
export interface EncodedRows {
  states: Float32Array;
  pooled?: Float32Array;
}

/** Runs encoder 1 (text_encoder) or 2 (text_encoder_2) on a prompt list; rows = images. */
export type EncodeRows = (encoder: 1 | 2, prompts: PromptBatch) => Promise<EncodedRows>;

/** The UNet's inputs for a batch, [uncond; cond] with guidance (host float32). */
export interface SdxlUnetInputs {
  context: Float32Array;
  textEmbeds: Float32Array;
  timeIds: Float32Array;
}

/**
 * SDXL's conditioning for `job` (see the module comment). `duplicateCond`: the engines take the
 * guidance batch only, so an unguided batch runs its cond rows twice (the backend's scale-0 rule).
 */
export async function sdxlConditioning(job: GenerationJob, info: SdxlEngineInfo, encode: EncodeRows, duplicateCond: boolean): Promise<SdxlUnetInputs> {
  const x = job.sdxl;
  if (!x) throw new InvalidArgumentError("generate: an SDXL model needs the job's sdxl conditioning (second prompts, time ids)");
  const { batch } = job;
  const identity = Array.from({ length: batch }, (_, i) => i);
  const side = async (first: PromptBatch, second: PromptBatch) => {
    if (second.chunks !== first.chunks) throw new InvalidArgumentError(`generate: sdxl prompts have ${second.chunks} chunks, the first encoder's ${first.chunks}; they must match`);
    const e1 = info.secondEncoderOnly ? null : await encode(1, first);
    const e2 = await encode(2, second);
    if (!e2.pooled) throw new InvalidArgumentError("generate: text_encoder_2 returned no pooled text_embeds");
    return {
      // The encoders' rows are already per image (gathered on the device), hence the identity row map.
      context: joinEncoderStates(e1 && { states: e1.states, hidden: info.hidden1, rowOf: identity }, { states: e2.states, hidden: info.hidden2, rowOf: identity }, second.chunks, batch),
      pooled: pooledOfRows(e2.pooled, info.pooledSize, second.chunks, second.rowOf),
    };
  };
  const cond = await side(job.cond, x.cond2);
  for (const [name, ids] of [
    ["timeIds", x.timeIds],
    ["negativeTimeIds", x.negativeTimeIds],
  ] as const) {
    if (ids.length !== batch * info.timeIdsSize) throw new InvalidArgumentError(`generate: sdxl.${name} must be [${batch}, ${info.timeIdsSize}], got ${ids.length} values`);
  }
  if (!job.uncond) {
    return duplicateCond
      ? { context: uncondThenCond(cond.context, cond.context), textEmbeds: uncondThenCond(cond.pooled, cond.pooled), timeIds: uncondThenCond(x.timeIds, x.timeIds) }
      : { context: cond.context, textEmbeds: cond.pooled, timeIds: x.timeIds };
  }
  let uncond: { context: Float32Array; pooled: Float32Array };
  if (x.zeroUncond) {
    // force_zeros_for_empty_prompt: torch.zeros_like(prompt_embeds), zeros_like(pooled_prompt_embeds).
    uncond = { context: new Float32Array(cond.context.length), pooled: new Float32Array(cond.pooled.length) };
  } else {
    if (!x.uncond2) throw new InvalidArgumentError("generate: guidance without zeroUncond needs sdxl.uncond2");
    uncond = await side(job.uncond, x.uncond2);
    // A1111's empty negative prompts: those rows are zeros of the negative side's own length.
    if (x.zeroUncondRows) zeroRows(x.zeroUncondRows, uncond.context, uncond.pooled);
  }
  return { context: uncondThenCond(uncond.context, cond.context), textEmbeds: uncondThenCond(uncond.pooled, cond.pooled), timeIds: uncondThenCond(x.negativeTimeIds, x.timeIds) };
}
