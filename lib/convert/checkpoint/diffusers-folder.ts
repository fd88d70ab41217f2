/**
 * A diffusers folder (`model_index.json`, `text_encoder/`, `unet/`, `vae/`, `scheduler/`, each with
 * its `config.json` and weights; SDXL also `text_encoder_2/`, SDXL's refiner `text_encoder_2/` in place
 * of `text_encoder/`) as a CheckpointSource. Weights are `.safetensors` only, in the file
 * names diffusers and transformers write: the plain file, the `fp16` variant, or shards listed by a
 * `*.safetensors.index.json`. A folder holding only pickles (`.bin`) is refused with how to convert it.
 */
import { readdir } from "node:fs/promises";
import { join } from "node:path";
import { ModelFileError } from "../../errors.js";
import { isFile, readJson } from "../../model/folder.js";
import { refusePickle } from "../../model/pickle.js";
import { openSafetensors } from "../../model/safetensors.js";
import type { CheckpointSource, ComponentName, ComponentSource, ModelFamily, SourceTensor, WeightSource } from "../types.js";
import { clipKey } from "./ldm-keys.js";
import { sourceTensor, weightSourceOf } from "./tensors.js";

export type FolderComponent = "text_encoder" | "text_encoder_2" | "unet" | "vae";

/** Each component's weight file stem (diffusers' models, transformers' CLIPTextModel). */
const WEIGHT_STEMS: Readonly<Record<FolderComponent, string>> = {
  text_encoder: "model",
  text_encoder_2: "model",
  unet: "diffusion_pytorch_model",
  vae: "diffusion_pytorch_model",
};

export interface FolderComponentConfigs {
  /** Absent in an SDXL refiner's folder (text_encoder_2 alone). */
  readonly text_encoder?: Record<string, unknown>;
  /** SDXL's second text encoder, when the folder has one. */
  readonly text_encoder_2?: Record<string, unknown>;
  readonly unet: Record<string, unknown>;
  readonly vae: Record<string, unknown>;
  readonly scheduler: Record<string, unknown>;
}

/** The configs of a diffusers folder's components. @throws ModelFileError naming a missing or bad file. */
export async function readFolderConfigs(folder: string): Promise<FolderComponentConfigs> {
  const config = async (path: string) => {
    if (!(await isFile(path))) throw new ModelFileError(path, `diffusers folder ${folder} has no ${path}`);
    return readJson(path);
  };
  const secondEncoder = join(folder, "text_encoder_2", "config.json");
  const hasSecondEncoder = await isFile(secondEncoder);
  const firstEncoder = join(folder, "text_encoder", "config.json");
  // Only SDXL's refiner goes without the first encoder, and it has the second.
  const hasFirstEncoder = !hasSecondEncoder || (await isFile(firstEncoder));
  return {
    ...(hasFirstEncoder ? { text_encoder: await config(firstEncoder) } : {}),
    ...(hasSecondEncoder ? { text_encoder_2: await readJson(secondEncoder) } : {}),
    unet: await config(join(folder, "unet", "config.json")),
    vae: await config(join(folder, "vae", "config.json")),
    scheduler: await config(join(folder, "scheduler", "scheduler_config.json")),
  };
}

/**
 * The family of a diffusers folder: a second text encoder is SDXL; OpenCLIP's text tower (GELU,
 * SD 2.x) or CLIP ViT-L's (quick GELU, SD 1.x) tells the other two apart.
 */
export function folderFamily(modelIndex: Record<string, unknown> | undefined, textEncoder: Record<string, unknown>): ModelFamily {
  if (modelIndex !== undefined && namesComponent(modelIndex["text_encoder_2"])) return "sdxl";
  return textEncoder["hidden_act"] === "gelu" ? "sd2" : "sd1";
}

/** The `.safetensors` files holding a component's weights, in the order diffusers prefers them. */
async function weightFiles(dir: string, stem: string): Promise<string[]> {
  for (const variant of ["", ".fp16"]) {
    const single = join(dir, `${stem}${variant}.safetensors`);
    if (await isFile(single)) return [single];
    const index = join(dir, `${stem}.safetensors.index${variant}.json`);
    if (await isFile(index)) {
      const weightMap = (await readJson(index))["weight_map"];
      if (weightMap === null || typeof weightMap !== "object" || Array.isArray(weightMap)) {
        throw new ModelFileError(index, `${index} has no "weight_map" object naming the shard of each weight`);
      }
      const shards = [...new Set(Object.values(weightMap as Record<string, unknown>))];
      if (!shards.every((s): s is string => typeof s === "string" && !s.includes("/") && !s.includes("\\"))) {
        throw new ModelFileError(index, `${index}: "weight_map" must name shard files in the same folder`);
      }
      return shards.map((s) => join(dir, s));
    }
  }
  const present = await readdir(dir).catch(() => [] as string[]);
  const pickle = present.find((name) => /\.(bin|pt|pth|ckpt)$/.test(name));
  if (pickle !== undefined) await refusePickle(join(dir, pickle)); // throws, saying why and how to convert it
  throw new ModelFileError(dir, `${dir} has no ${stem}.safetensors (nor its fp16 variant or a sharded ${stem}.safetensors.index.json)`);
}

/** A component's tensors from its files (text-encoder keys with the `text_model.` prefix, see ldm-keys.ts `clipKey`). */
async function componentWeights(component: FolderComponent, files: readonly string[]): Promise<Map<string, SourceTensor>> {
  const tensors = new Map<string, SourceTensor>();
  for (const file of files) {
    for (const [name, stored] of (await openSafetensors(file)).tensors) {
      const key = component === "text_encoder" || component === "text_encoder_2" ? clipKey(name) : name;
      if (tensors.has(key)) throw new ModelFileError(file, `${file}: weight ${JSON.stringify(key)} is also in another shard of ${component}`);
      tensors.set(key, sourceTensor(key, stored));
    }
  }
  return tensors;
}

/** The weights of one component's folder (`<model>/unet`, …), under the keys the whole-folder reader gives them. @throws ModelFileError naming the missing or bad file. */
export async function readComponentWeights(dir: string, component: FolderComponent): Promise<WeightSource> {
  return weightSourceOf(await componentWeights(component, await weightFiles(dir, WEIGHT_STEMS[component])));
}

/** Whether a model_index.json entry names a component: diffusers writes [null, null] (or null) for one the pipeline lacks. */
function namesComponent(entry: unknown): boolean {
  return Array.isArray(entry) ? entry.some((part) => part != null) : entry != null;
}

/** Reads a diffusers folder. @throws ModelFileError naming the missing or bad file. */
export async function readDiffusersFolder(folder: string, overrides: { predictionType?: string; upcastAttention?: boolean }): Promise<CheckpointSource> {
  const indexPath = join(folder, "model_index.json");
  const modelIndex = (await isFile(indexPath)) ? await readJson(indexPath) : undefined;
  const configs = await readFolderConfigs(folder);
  // SDXL's refiner has text_encoder_2 alone (model_index.json names text_encoder [null, null]).
  const refiner = configs.text_encoder === undefined || (modelIndex !== undefined && namesComponent(modelIndex["text_encoder_2"]) && !namesComponent(modelIndex["text_encoder"]));
  const family = refiner ? "sdxl" : folderFamily(modelIndex, configs.text_encoder!);
  if (family === "sdxl" && configs.text_encoder_2 === undefined) throw new ModelFileError(folder, `diffusers folder ${folder} names text_encoder_2 (SDXL) in model_index.json but has no ${join(folder, "text_encoder_2", "config.json")}`);
  const components: Partial<Record<ComponentName, ComponentSource>> = {};
  const names: readonly FolderComponent[] = refiner ? ["text_encoder_2", "unet", "vae"] : family === "sdxl" ? ["text_encoder", "text_encoder_2", "unet", "vae"] : ["text_encoder", "unet", "vae"];
  for (const component of names) {
    let config = configs[component]!;
    if (component === "unet" && overrides.upcastAttention !== undefined) config = { ...config, upcast_attention: overrides.upcastAttention };
    components[component] = { config, weights: await readComponentWeights(join(folder, component), component) };
  }
  const schedulerConfig = overrides.predictionType === undefined ? configs.scheduler : { ...configs.scheduler, prediction_type: overrides.predictionType };
  return { family, ...(refiner ? { refiner } : {}), path: folder, components, schedulerConfig };
}
