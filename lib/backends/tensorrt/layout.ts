/**
 * The engine cache layout (engines/README.md):
 *
 * ```
 * engines/
 *   <model-id>/                     what `sd-trt build --out engines/<model-id>` names
 *     <gpu-sm>-trt<version>/        one folder per GPU architecture and TensorRT version
 *       text_encoder.plan
 *       text_encoder_2.plan         (SDXL: OpenCLIP ViT-bigG with its pooled projection)
 *       unet.plan
 *       vae_decoder.plan
 *       vae_encoder.plan            (when the model has a VAE encoder)
 *       manifest.json               written last: a folder without it is not an engine set
 *   timing-<gpu-sm>-trt<version>.cache   TensorRT timing cache shared by every model
 * ```
 *
 * e.g. `engines/sd15/sm89-trt10.13.0/unet.plan`. Plans only run on the GPU architecture and
 * TensorRT version they were built with, so both are in the folder name and a machine finds
 * its own variant next to others'.
 */
import { basename, dirname, join, resolve } from "node:path";
import { ROLE_TITLES, type ModelRole } from "../../model/graph-io.js";

export const MANIFEST_FILE = "manifest.json";

/**
 * An engine of an engine set: a model role, or SDXL's second text encoder (whose graph contract is
 * a text encoder's, `contractRole`).
 */
export type EngineRole = ModelRole | "text_encoder_2";

/** Every engine in build order (the UNet, the longest build, is second so errors come early). */
export const ENGINE_ROLES: readonly EngineRole[] = ["text_encoder", "unet", "text_encoder_2", "vae_decoder", "vae_encoder"];

/** The engines `--refittable` builds refittable: those whose weights a LoRA changes (SDXL's second text encoder too). */
export const REFITTABLE_ROLES: readonly EngineRole[] = ["text_encoder", "text_encoder_2", "unet"];

/** The graph-io role whose contract an engine's graph follows. */
export function contractRole(role: EngineRole): ModelRole {
  return role === "text_encoder_2" ? "text_encoder" : role;
}

/** "the second text encoder", "the UNet", … for messages. */
export function engineTitle(role: EngineRole): string {
  return role === "text_encoder_2" ? "second text encoder (text_encoder_2)" : ROLE_TITLES[role];
}

/** "8.9" → "sm89". */
export function smName(computeCapability: string): string {
  return `sm${computeCapability.replace(".", "")}`;
}

/** "sm89-trt10.13.0": the variant folder for a GPU architecture and TensorRT version. */
export function variantName(computeCapability: string, tensorrtVersion: string): string {
  return `${smName(computeCapability)}-trt${tensorrtVersion}`;
}

export function planFileName(role: EngineRole): string {
  return `${role}.plan`;
}

export interface EngineLocation {
  /** engines/<model-id> */
  modelDir: string;
  /** engines/<model-id>/<variant> */
  variantDir: string;
  manifest: string;
  /** engines/timing-<variant>.cache (next to the model-id folders). */
  timingCache: string;
}

/** Where the engines of `outDir` (engines/<model-id>) go for this GPU and TensorRT. */
export function engineLocation(outDir: string, computeCapability: string, tensorrtVersion: string): EngineLocation {
  const modelDir = resolve(outDir);
  const variant = variantName(computeCapability, tensorrtVersion);
  const variantDir = join(modelDir, variant);
  return {
    modelDir,
    variantDir,
    manifest: join(variantDir, MANIFEST_FILE),
    timingCache: join(dirname(modelDir), `timing-${variant}.cache`),
  };
}

/** The model-id folder of a variant folder (for rebuild commands). */
export function modelIdDirOf(variantDir: string): string {
  return dirname(resolve(variantDir));
}

export function isVariantName(name: string): boolean {
  return /^sm\d+-trt\d+\.\d+\.\d+$/.test(basename(name));
}
