/**
 * Finds the parts of a Stable Diffusion ONNX model folder and reads its small config files.
 *
 * Two layouts are recognised:
 * - **optimum / diffusers** (`optimum-cli export onnx`, diffusers' convert script):
 *   `model_index.json`, `text_encoder/model.onnx`, `unet/model.onnx`, `vae_decoder/model.onnx`,
 *   optional `vae_encoder/model.onnx`, `tokenizer/{vocab.json,merges.txt}`,
 *   `scheduler/scheduler_config.json`, per-component `config.json`.
 * - **TensorRT demo** (`demo/Diffusion` ONNX export dir): `clip`, `unet`, `vae`, `vae_encoder`
 *   as `<name>.opt/model.onnx`, `<name>/model.onnx`, `<name>/model_optimized.onnx` or
 *   `<name>.onnx`. It has no tokenizer or scheduler files: the bundled CLIP vocabulary and the
 *   SD 1.x scheduler config are used.
 *
 * Which graph does what is then checked from the graph itself (`graph-io.ts`); this module only
 * finds files, follows their external-data entries, and fails with the file's name.
 */
import { readFile, stat } from "node:fs/promises";
import { join, relative, resolve, dirname, isAbsolute, sep } from "node:path";
import { ModelFileError } from "../errors.js";
import { readExternalTensorRefs } from "../onnx/external-refs.js";
import type { ModelRole } from "./graph-io.js";
import { SD1_SCHEDULER_CONFIG } from "../schedulers/index.js";

export type ModelLayout = "optimum" | "tensorrt-demo";

/** SD 1.x/2.x latent scaling factor, used when the VAE config does not give one. */
export const DEFAULT_SCALING_FACTOR = 0.18215;

export interface ModelFile {
  role: ModelRole;
  /** Absolute path of the .onnx file. */
  path: string;
  /** Path relative to the model folder, for messages. */
  name: string;
  /** External weight files the graph refers to (absolute paths, each checked to exist). */
  externalData: string[];
}

export interface ModelFolder {
  /** Absolute path of the folder. */
  dir: string;
  layout: ModelLayout;
  textEncoder: ModelFile;
  unet: ModelFile;
  vaeDecoder: ModelFile;
  /** Absent when the folder has no VAE encoder (img2img is then unavailable). */
  vaeEncoder?: ModelFile;
  /** The folder's CLIP vocabulary, or null to use the one bundled with sd-trt. */
  tokenizer: { vocab: string; merges: string } | null;
  /** The scheduler config (`scheduler_config.json` verbatim, or SD 1.x's) and where it came from. */
  schedulerConfig: Record<string, unknown>;
  schedulerConfigFile: string | null;
  /** The diffusers class named by the scheduler config (`_class_name`), e.g. "PNDMScheduler". */
  schedulerClass: string;
  /** VAE `scaling_factor` from the VAE config, or 0.18215. */
  scalingFactor: number;
  /** The image size the model was trained at: UNet config `sample_size` × 8, or 512 when there is no config. */
  nativeSize: number;
  /**
   * Image widths and heights must be multiples of this: the VAE's factor 8 times 2 per UNet
   * downsampling, so that every skip connection meets an upsampled map of its own size
   * (an exported UNet fails in a Concat otherwise). From the UNet config's `block_out_channels`
   * (n entries, n − 1 downsamplings): 8 · 2^(n−1), e.g. 64 for SD 1.x; 8 without a config.
   */
  sizeMultiple: number;
  /** The UNet's and the VAE's `config.json`, when the folder has them (for the memory estimate). */
  unetConfig?: Record<string, unknown>;
  vaeConfig?: Record<string, unknown>;
  /** The checkpoint the folder was converted from (`SOURCE_CHECKPOINT_FILE`), when sd-trt converted it. */
  sourceCheckpoint?: SourceCheckpoint;
}

/**
 * Written by `sd-trt convert` next to the graphs: which checkpoint they came from, so that images
 * carry A1111's `Model hash` and `Model` of that checkpoint rather than of the converted files.
 */
export const SOURCE_CHECKPOINT_FILE = "source_checkpoint.json";

export interface SourceCheckpoint {
  /** A1111's model name: the checkpoint file's name without its extension (the folder's name for a diffusers folder). */
  name: string;
  /** The checkpoint file's SHA-256 (hex); absent for a diffusers folder, which A1111 has no hash for. */
  sha256?: string;
}

async function readSourceCheckpoint(path: string): Promise<SourceCheckpoint> {
  const value = await readJson(path);
  const { name, sha256 } = value;
  if (typeof name !== "string" || name.length === 0) throw new ModelFileError(path, `${path}: "name" must be a non-empty string, got ${JSON.stringify(name)}`);
  if (sha256 !== undefined && (typeof sha256 !== "string" || !/^[0-9a-f]{64}$/.test(sha256))) throw new ModelFileError(path, `${path}: "sha256" must be 64 lowercase hex digits, got ${JSON.stringify(sha256)}`);
  return sha256 === undefined ? { name } : { name, sha256 };
}

/** The size multiple of a UNet config (see `ModelFolder.sizeMultiple`). */
export function unetSizeMultiple(config: Record<string, unknown>, path: string): number {
  const blocks = config["block_out_channels"];
  if (blocks === undefined) return 8;
  if (!Array.isArray(blocks) || blocks.length === 0 || blocks.length > 8 || !blocks.every((c) => Number.isInteger(c) && (c as number) > 0)) {
    throw new ModelFileError(path, `${path}: block_out_channels must be a list of 1 to 8 positive integers, got ${JSON.stringify(blocks)}`);
  }
  return 8 * 2 ** (blocks.length - 1);
}

interface Candidates {
  optimum: string[];
  demo: string[];
}

/** Where each role's graph may be, most specific first. */
const CANDIDATES: Record<ModelRole, Candidates> = {
  text_encoder: {
    optimum: ["text_encoder/model.onnx"],
    demo: ["clip.opt/model.onnx", "clip/model_optimized.onnx", "clip/model.onnx", "clip.opt.onnx", "clip.onnx"],
  },
  unet: {
    optimum: ["unet/model.onnx"],
    demo: ["unet.opt/model.onnx", "unet/model_optimized.onnx", "unet.opt.onnx", "unet.onnx"],
  },
  vae_decoder: {
    optimum: ["vae_decoder/model.onnx"],
    demo: ["vae.opt/model.onnx", "vae/model_optimized.onnx", "vae/model.onnx", "vae.opt.onnx", "vae.onnx"],
  },
  vae_encoder: {
    optimum: ["vae_encoder/model.onnx"],
    demo: ["vae_encoder.opt/model.onnx", "vae_encoder/model_optimized.onnx", "vae_encoder.opt.onnx", "vae_encoder.onnx"],
  },
};

export async function isFile(path: string): Promise<boolean> {
  try {
    return (await stat(path)).isFile();
  } catch {
    return false;
  }
}

/** A JSON object from `path`. @throws ModelFileError naming the file (unreadable, not JSON, not an object). */
export async function readJson(path: string): Promise<Record<string, unknown>> {
  let text: string;
  try {
    text = await readFile(path, "utf8");
  } catch (error) {
    throw new ModelFileError(path, `cannot read ${path}: ${(error as Error).message}`, { cause: error });
  }
  let value: unknown;
  try {
    value = JSON.parse(text);
  } catch (error) {
    throw new ModelFileError(path, `${path} is not valid JSON: ${(error as Error).message}`, { cause: error });
  }
  if (typeof value !== "object" || value === null || Array.isArray(value)) {
    throw new ModelFileError(path, `${path} must hold a JSON object`);
  }
  return value as Record<string, unknown>;
}

async function findFirst(dir: string, names: readonly string[]): Promise<string | undefined> {
  for (const name of names) if (await isFile(join(dir, name))) return name;
  return undefined;
}

/** Checks that every external-data file a graph names exists beside it. */
async function externalDataOf(path: string, dir: string): Promise<string[]> {
  const refs = await readExternalTensorRefs(path);
  const base = dirname(path);
  const files = [...new Set(refs.map((r) => r.location))];
  const resolved: string[] = [];
  for (const location of files) {
    const full = resolve(base, location);
    // ONNX forbids locations outside the model's folder; ORT refuses them too.
    if (isAbsolute(location) || relative(base, full).startsWith("..")) {
      throw new ModelFileError(path, `${relative(dir, path)} names external data outside its folder: ${JSON.stringify(location)}`);
    }
    if (!(await isFile(full))) {
      const tensors = refs.filter((r) => r.location === location).length;
      throw new ModelFileError(
        full,
        `${relative(dir, path)} keeps ${tensors} weight tensor${tensors === 1 ? "" : "s"} in ${JSON.stringify(location)}, ` +
          `but ${full} does not exist (copy it next to the .onnx file)`,
      );
    }
    resolved.push(full);
  }
  return resolved;
}

async function modelFile(dir: string, role: ModelRole, name: string): Promise<ModelFile> {
  const path = join(dir, name);
  return { role, path, name: name.split("/").join(sep), externalData: await externalDataOf(path, dir) };
}

function describeCandidates(role: ModelRole): string {
  const c = CANDIDATES[role];
  return `${c.optimum.join(", ")} (optimum layout) or ${c.demo.join(", ")} (TensorRT demo layout)`;
}

/**
 * Locates the graphs and configs of a model folder.
 * @throws ModelFileError naming the folder or file that is missing or malformed.
 */
export async function locateModelFolder(dirInput: string): Promise<ModelFolder> {
  const dir = resolve(dirInput);
  const info = await stat(dir).catch(() => {
    throw new ModelFileError(dir, `model folder ${dir} does not exist`);
  });
  if (!info.isDirectory()) throw new ModelFileError(dir, `model folder ${dir} is not a directory`);

  const modelIndexPath = join(dir, "model_index.json");
  const hasModelIndex = await isFile(modelIndexPath);
  if (hasModelIndex) await readJson(modelIndexPath); // a corrupt index is an error even though we only need its siblings

  const found: Partial<Record<ModelRole, { name: string; layout: ModelLayout }>> = {};
  for (const role of Object.keys(CANDIDATES) as ModelRole[]) {
    const optimum = await findFirst(dir, CANDIDATES[role].optimum);
    if (optimum) {
      found[role] = { name: optimum, layout: "optimum" };
      continue;
    }
    const demo = await findFirst(dir, CANDIDATES[role].demo);
    if (demo) found[role] = { name: demo, layout: "tensorrt-demo" };
  }
  for (const role of ["text_encoder", "unet", "vae_decoder"] as const) {
    if (!found[role]) {
      const expected = join(dir, CANDIDATES[role].optimum[0]!);
      throw new ModelFileError(
        expected,
        `model folder ${dir} has no ${role.replace("_", " ")} model: expected ${describeCandidates(role)}`,
      );
    }
  }
  const layout: ModelLayout = found.unet!.layout;

  const tokenizerDir = join(dir, "tokenizer");
  let tokenizer: ModelFolder["tokenizer"] = null;
  const vocab = join(tokenizerDir, "vocab.json");
  const merges = join(tokenizerDir, "merges.txt");
  const [hasVocab, hasMerges] = [await isFile(vocab), await isFile(merges)];
  if (hasVocab && hasMerges) tokenizer = { vocab, merges };
  else if (hasVocab || hasMerges || layout === "optimum") {
    const missing = hasVocab ? merges : vocab;
    throw new ModelFileError(missing, `model folder ${dir} is missing the tokenizer file ${missing}`);
  }

  const schedulerPath = join(dir, "scheduler", "scheduler_config.json");
  let schedulerConfig: Record<string, unknown>;
  let schedulerConfigFile: string | null = null;
  if (await isFile(schedulerPath)) {
    schedulerConfig = await readJson(schedulerPath);
    schedulerConfigFile = schedulerPath;
  } else if (layout === "optimum") {
    throw new ModelFileError(schedulerPath, `model folder ${dir} is missing ${schedulerPath}`);
  } else {
    schedulerConfig = { ...SD1_SCHEDULER_CONFIG };
  }
  const schedulerClass = schedulerConfig["_class_name"];
  if (typeof schedulerClass !== "string" || schedulerClass.length === 0) {
    throw new ModelFileError(schedulerPath, `${schedulerPath} has no "_class_name" naming the scheduler class`);
  }

  let scalingFactor = DEFAULT_SCALING_FACTOR;
  let vaeConfig: Record<string, unknown> | undefined;
  let unetConfig: Record<string, unknown> | undefined;
  for (const configName of ["vae_decoder/config.json", "vae/config.json"]) {
    const configPath = join(dir, configName);
    if (!(await isFile(configPath))) continue;
    const config = await readJson(configPath);
    vaeConfig = config;
    const value = config["scaling_factor"];
    if (value !== undefined) {
      if (typeof value !== "number" || !Number.isFinite(value) || value <= 0) {
        throw new ModelFileError(configPath, `${configPath}: scaling_factor must be a positive number, got ${JSON.stringify(value)}`);
      }
      scalingFactor = value;
    }
    break;
  }

  let nativeSize = 512;
  let sizeMultiple = 8;
  const unetConfigPath = join(dir, "unet", "config.json");
  if (await isFile(unetConfigPath)) {
    unetConfig = await readJson(unetConfigPath);
    const sampleSize = unetConfig["sample_size"];
    if (typeof sampleSize === "number" && Number.isInteger(sampleSize) && sampleSize > 0) nativeSize = sampleSize * 8;
    // A list [h, w] (some SD 2.x configs) or no value keeps 512: the size is a default, not a limit.
    sizeMultiple = unetSizeMultiple(unetConfig, unetConfigPath);
  }

  const folder: ModelFolder = {
    dir,
    layout,
    textEncoder: await modelFile(dir, "text_encoder", found.text_encoder!.name),
    unet: await modelFile(dir, "unet", found.unet!.name),
    vaeDecoder: await modelFile(dir, "vae_decoder", found.vae_decoder!.name),
    tokenizer,
    schedulerConfig,
    schedulerConfigFile,
    schedulerClass,
    scalingFactor,
    nativeSize,
    sizeMultiple,
    ...(unetConfig ? { unetConfig } : {}),
    ...(vaeConfig ? { vaeConfig } : {}),
  };
  if (found.vae_encoder) folder.vaeEncoder = await modelFile(dir, "vae_encoder", found.vae_encoder.name);
  const sourcePath = join(dir, SOURCE_CHECKPOINT_FILE);
  if (await isFile(sourcePath)) folder.sourceCheckpoint = await readSourceCheckpoint(sourcePath);
  return folder;
}
