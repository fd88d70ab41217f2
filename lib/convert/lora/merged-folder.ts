/**
 * The CPU backend's merged weights: a LoRA set merged into a converted model folder's text
 * encoder(s) and UNet graphs (SDXL: text_encoder, text_encoder_2 and unet), written once into a
 * cache folder and reused.
 *
 * ONNX Runtime's Node binding cannot swap a session's initializers and SD 1.5's fp32 UNet (3.4 GB)
 * is past protobuf's 2 GB limit for a model held in memory, so the merged graphs are files:
 * `<cacheDir>/<id>/{text_encoder,text_encoder_2,unet}/model.onnx(+_data)`, `id` = sha256 of the base graphs'
 * identity (path, size and modification time of each graph and weight file) and the set's id
 * (each LoRA file's sha256 and scale, in order). The same set on the same model finds its folder
 * and computes nothing; the folder appears by one rename when complete, so an interrupted merge
 * leaves no entry, only a temporary folder that is removed on failure. The base graphs are never
 * written to, so going back to the base model is loading them again, bit for bit.
 */
import { createHash } from "node:crypto";
import { access, mkdir, rename, rm, stat } from "node:fs/promises";
import { homedir } from "node:os";
import { join } from "node:path";
import { temporaryPathFor } from "../../fs/atomic.js";
import type { ModelFile, ModelFolder } from "../../model/folder.js";
import { OnnxModel } from "../../onnx/model.js";
import type { ComponentName, ModelFamily } from "../types.js";
import type { LoraTarget } from "./deltas.js";
import { writeMergedGraph, graphWeightShapes } from "./graph.js";
import { loraSetDeltas, loraSetId, type LoraSpec } from "./set.js";

/** Where merged graphs are cached when no folder is given: `$XDG_CACHE_HOME/sd-trt/lora` or `~/.cache/sd-trt/lora`. */
export function defaultLoraCacheDir(): string {
  return join(process.env.XDG_CACHE_HOME || join(homedir(), ".cache"), "sd-trt", "lora");
}

/** The graphs a LoRA set changes, by component: SD's text encoder and UNet; SDXL's two text encoders and UNet. */
export function loraGraphs(folder: ModelFolder): (readonly [ComponentName, ModelFile])[] {
  const sdxl = folder.sdxl;
  // An SDXL refiner's only encoder is text_encoder_2, standing in as folder.textEncoder.
  if (sdxl?.secondEncoderOnly) return [["text_encoder_2", folder.textEncoder], ["unet", folder.unet]];
  if (sdxl) return [["text_encoder", folder.textEncoder], ["text_encoder_2", sdxl.textEncoder2], ["unet", folder.unet]];
  return [["text_encoder", folder.textEncoder], ["unet", folder.unet]];
}

/** The model family a folder's UNet config shows (undefined when it does not say, e.g. a tiny test model). */
export function familyOfFolder(folder: ModelFolder): ModelFamily | undefined {
  const config = folder.unetConfig;
  if (!config) return undefined;
  if (config.addition_embed_type === "text_time") return "sdxl";
  if (config.cross_attention_dim === 1024) return "sd2";
  if (config.cross_attention_dim === 768) return "sd1";
  return undefined;
}

/** A converted folder's text encoder(s) and UNet graphs as a LoRA target (their weights by name, torch layout). */
export async function folderLoraTarget(folder: ModelFolder): Promise<LoraTarget> {
  const weights: Partial<Record<ComponentName, ReadonlyMap<string, readonly number[]>>> = {};
  for (const [component, file] of loraGraphs(folder)) weights[component] = graphWeightShapes(await OnnxModel.read(file.path));
  const family = familyOfFolder(folder);
  return family === undefined ? { weights } : { family, weights };
}

export interface MergedGraphs {
  /** The cache entry's name (model identity × LoRA set). */
  readonly id: string;
  /** The merged graph of each component the set can change (`loraGraphs`). */
  readonly graphs: Readonly<Partial<Record<ComponentName, string>>>;
  /** Whether this call wrote the entry (false: found in the cache). */
  readonly written: boolean;
}

/**
 * The text encoder(s) and UNet of `folder` with `set` merged in, from the cache or written now.
 * @throws ModelFileError naming a LoRA file that does not fit the model (nothing is written then).
 */
export async function mergedLoraGraphs(folder: ModelFolder, set: readonly LoraSpec[], cacheDir: string = defaultLoraCacheDir()): Promise<MergedGraphs> {
  const identity = createHash("sha256");
  const graphs = loraGraphs(folder);
  for (const [, file] of graphs) {
    for (const path of [file.path, ...file.externalData]) {
      const s = await stat(path);
      identity.update(`${path}\0${s.size}\0${s.mtimeMs}\0`);
    }
  }
  identity.update(await loraSetId(set));
  const id = identity.digest("hex").slice(0, 32);
  const dir = join(cacheDir, id);
  const paths = Object.fromEntries(graphs.map(([component]) => [component, join(dir, component, "model.onnx")]));
  const cached = await access(join(dir, "unet", "model.onnx")).then(
    () => true,
    () => false,
  );
  if (cached) return { id, graphs: paths, written: false };

  const target = await folderLoraTarget(folder);
  const deltas = await loraSetDeltas(set, target); // every file is checked before anything is written

  await mkdir(cacheDir, { recursive: true });
  const tmp = temporaryPathFor(dir);
  try {
    for (const [component, file] of graphs) {
      const out = join(tmp, component, "model.onnx");
      await mkdir(join(tmp, component), { recursive: true });
      await writeMergedGraph(file.path, out, deltas.get(component) ?? new Map());
    }
    await rename(tmp, dir);
  } catch (error) {
    await rm(tmp, { recursive: true, force: true });
    // Another process may have written the same entry meanwhile: theirs is as good as ours.
    const raced = await access(join(dir, "unet", "model.onnx")).then(
      () => true,
      () => false,
    );
    if (!raced) throw error;
  }
  return { id, graphs: paths, written: true };
}
