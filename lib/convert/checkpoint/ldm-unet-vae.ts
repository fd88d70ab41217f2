/**
 * The steps the SD and SDXL single-file readers (single-file.ts, sdxl-single-file.ts) share: the
 * UNet and VAE renamed to diffusers keys, and the error when a config cannot be derived from the
 * shapes. The renames need two layout numbers (UNet layers per block, VAE levels), taken from the
 * diffusers folder's configs when one is given (so they agree with the configs used), else read
 * off the shapes.
 */
import { ModelFileError } from "../../errors.js";
import type { StreamedSafetensorsTensor } from "../../model/safetensors.js";
import type { SourceTensor } from "../types.js";
import { type FolderComponentConfigs, readFolderConfigs } from "./diffusers-folder.js";
import { unetLayersPerBlock, vaeLevels } from "./ldm-configs.js";
import { type MappedKey, mapVaeKey } from "./ldm-keys.js";
import { mapComponent, shapesOf } from "./tensors.js";

export interface MappedUnetAndVae {
  /** The configs of `configFolder`, when given. */
  readonly folder: FolderComponentConfigs | undefined;
  readonly unet: Map<string, SourceTensor>;
  readonly vae: Map<string, SourceTensor>;
}

/**
 * `unetStored`/`vaeStored`: the file's tensors under the UNet and VAE prefixes (prefix removed);
 * `mapUnetKey`: the family's UNet rename (undefined drops the tensor).
 */
export async function mapLdmUnetAndVae(
  path: string,
  unetStored: ReadonlyMap<string, StreamedSafetensorsTensor>,
  vaeStored: ReadonlyMap<string, StreamedSafetensorsTensor>,
  configFolder: string | undefined,
  mapUnetKey: (key: string, layersPerBlock: number) => MappedKey | undefined,
): Promise<MappedUnetAndVae> {
  const folder = configFolder === undefined ? undefined : await readFolderConfigs(configFolder);
  const layersPerBlock = typeof folder?.unet["layers_per_block"] === "number" ? (folder.unet["layers_per_block"] as number) : unetLayersPerBlock(shapesOf(unetStored));
  const upBlocks = Array.isArray(folder?.vae["up_block_types"]) ? (folder.vae["up_block_types"] as unknown[]).length : vaeLevels(shapesOf(vaeStored));
  const unet = mapComponent(path, "UNet", unetStored, (key) => {
    const mapped = mapUnetKey(key, layersPerBlock);
    return mapped === undefined ? [] : [mapped];
  });
  const vae = mapComponent(path, "VAE", vaeStored, (key, tensor) => {
    const mapped = mapVaeKey(key, upBlocks, tensor.shape);
    return mapped === undefined ? [] : [mapped];
  });
  return { folder, unet, vae };
}

/**
 * Runs `make` (a config derived from the shapes); when the shapes do not tell, the error names
 * the file and `what`, and points to the way out (a diffusers folder with the configs).
 * @throws ModelFileError
 */
export function deriveFromShapes<T>(path: string, what: string, make: () => T): T {
  try {
    return make();
  } catch (error) {
    throw new ModelFileError(path, `${path}: cannot tell the shape of ${what} (${(error as Error).message}); pass a diffusers folder with its configs`, { cause: error });
  }
}
