/**
 * A diffusers folder (`model_index.json`, `text_encoder/`, `unet/`, `vae/`, `scheduler/`, each with
 * its `config.json` and weights) as a CheckpointSource. Weights are `.safetensors` only, in the file
 * names diffusers and transformers write: the plain file, the `fp16` variant, or shards listed by a
 * `*.safetensors.index.json`. A folder holding only pickles (`.bin`) is refused with how to convert it.
 */
import { readdir } from "node:fs/promises";
import { join } from "node:path";
import { ModelFileError } from "../../errors.js";
import { isFile, readJson } from "../../model/folder.js";
import { refusePickle } from "../../model/pickle.js";
import { openSafetensors } from "../../model/safetensors.js";
import type { CheckpointSource, ComponentName, ComponentSource, ModelFamily, SourceTensor } from "../types.js";
import { clipKey } from "./ldm-keys.js";
import { sourceTensor, weightSourceOf } from "./tensors.js";

/** Each component's weight file stem (diffusers' models, transformers' CLIPTextModel). */
const WEIGHT_STEMS: Readonly<Record<"text_encoder" | "unet" | "vae", string>> = {
  text_encoder: "model",
  unet: "diffusion_pytorch_model",
  vae: "diffusion_pytorch_model",
};

export interface FolderComponentConfigs {
  readonly text_encoder: Record<string, unknown>;
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
  return {
    text_encoder: await config(join(folder, "text_encoder", "config.json")),
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
  if (modelIndex !== undefined && modelIndex["text_encoder_2"] !== undefined) return "sdxl";
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
async function componentWeights(component: "text_encoder" | "unet" | "vae", files: readonly string[]): Promise<Map<string, SourceTensor>> {
  const tensors = new Map<string, SourceTensor>();
  for (const file of files) {
    for (const [name, stored] of (await openSafetensors(file)).tensors) {
      const key = component === "text_encoder" ? clipKey(name) : name;
      if (tensors.has(key)) throw new ModelFileError(file, `${file}: weight ${JSON.stringify(key)} is also in another shard of ${component}`);
      tensors.set(key, sourceTensor(key, stored));
    }
  }
  return tensors;
}

/** Reads a diffusers folder. @throws ModelFileError naming the missing or bad file. */
export async function readDiffusersFolder(folder: string, overrides: { predictionType?: string; upcastAttention?: boolean }): Promise<CheckpointSource> {
  const indexPath = join(folder, "model_index.json");
  const modelIndex = (await isFile(indexPath)) ? await readJson(indexPath) : undefined;
  const configs = await readFolderConfigs(folder);
  const family = folderFamily(modelIndex, configs.text_encoder);
  if (family === "sdxl") throw sdxlRefusal(folder);
  const components: Partial<Record<ComponentName, ComponentSource>> = {};
  for (const component of ["text_encoder", "unet", "vae"] as const) {
    const files = await weightFiles(join(folder, component), WEIGHT_STEMS[component]);
    let config = configs[component];
    if (component === "unet" && overrides.upcastAttention !== undefined) config = { ...config, upcast_attention: overrides.upcastAttention };
    components[component] = { config, weights: weightSourceOf(await componentWeights(component, files)) };
  }
  const schedulerConfig = overrides.predictionType === undefined ? configs.scheduler : { ...configs.scheduler, prediction_type: overrides.predictionType };
  return { family, path: folder, components, schedulerConfig };
}

/** SDXL's slot: detected, refused until its converter lands. */
export function sdxlRefusal(path: string): ModelFileError {
  return new ModelFileError(path, `${path} is an SDXL checkpoint (two text encoders); sd-trt converts SD 1.x and SD 2.x checkpoints, SDXL is not supported yet`);
}
