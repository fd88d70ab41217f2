/**
 * LoRA layers → weight deltas on a model's diffusers keys (the `WeightDelta`s of ../types.ts).
 *
 * Finding a layer's weight: kohya names a module by its diffusers path with "_" for "." (A1111
 * builds the same table from the model's modules: `network_layer_mapping`), so the model's keys
 * are written that way and looked up; PEFT names the dotted path itself. kohya's SDXL LoRAs name
 * UNet modules by the original (SGM) layout instead, renamed to diffusers' first (sgm-names.ts), and
 * their two text encoders `lora_te1_`/`lora_te2_` (read.ts). Text-encoder paths are compared without
 * a leading `text_model.`: kohya's names (and checkpoints saved by transformers 4) keep that level,
 * transformers 5's CLIPTextModel does not, and both name the same weight.
 *
 * Every layer must land on a weight of the right shape, or the whole LoRA is refused: layers that
 * match nothing (listed, a few by name) or the wrong shapes mean a LoRA for another model, and a
 * LoRA applied in part would quietly give another image. So does kohya's own note of the base
 * model in the file's metadata when it names another family, and keys only one generation has
 * (SDXL's second text encoder and SGM block names; SD 1.x/2.x's single `lora_te_`): an SD LoRA on
 * SDXL, or the reverse, is refused naming the file before any layer is matched.
 *
 * The arithmetic is PEFT's `get_delta_weight`, which diffusers' `fuse_lora` runs:
 * delta = (up · down) × scale in float32, with scale = alpha / rank × the user's weight; a conv's
 * factors are flattened to [out, r] · [r, in·kh·kw] first (equal to PEFT's conv2d of the factors).
 */
import { ModelFileError } from "../../errors.js";
import type { ComponentName, ModelFamily, WeightDelta } from "../types.js";
import type { LoraFile, LoraLayer } from "./read.js";
import { isSgmModule, sgmModuleToDiffusersFlat } from "./sgm-names.js";

/** What a LoRA is applied to: the model family (when known) and, per component, each weight's key and torch-layout shape. */
export interface LoraTarget {
  readonly family?: ModelFamily;
  readonly weights: Readonly<Partial<Record<ComponentName, ReadonlyMap<string, readonly number[]>>>>;
}

const FAMILY_TITLES: Record<ModelFamily, string> = { sd1: "SD 1.x", sd2: "SD 2.x", sdxl: "SDXL" };

/** The family kohya's trainer (or the modelspec header) recorded, with the field that says so. */
export function loraFamilyOf(metadata: Readonly<Record<string, string>>): { family: ModelFamily; evidence: string } | undefined {
  const base = metadata.ss_base_model_version;
  if (base !== undefined) {
    if (base.startsWith("sdxl")) return { family: "sdxl", evidence: `ss_base_model_version = ${base}` };
    if (base.startsWith("sd_v2") || base.startsWith("sd_2")) return { family: "sd2", evidence: `ss_base_model_version = ${base}` };
    if (base.startsWith("sd_v1") || base.startsWith("sd_1")) return { family: "sd1", evidence: `ss_base_model_version = ${base}` };
  }
  if (metadata.ss_v2 === "True") return { family: "sd2", evidence: "ss_v2 = True" };
  const arch = metadata["modelspec.architecture"];
  if (arch !== undefined) {
    if (arch.startsWith("stable-diffusion-xl")) return { family: "sdxl", evidence: `modelspec.architecture = ${arch}` };
    if (arch.startsWith("stable-diffusion-v2")) return { family: "sd2", evidence: `modelspec.architecture = ${arch}` };
    if (arch.startsWith("stable-diffusion-v1")) return { family: "sd1", evidence: `modelspec.architecture = ${arch}` };
  }
  return undefined;
}

/**
 * Whether a LoRA's keys show an SDXL LoRA (a layer of the second text encoder, kohya's
 * `lora_te1_`/`lora_te2_`, SGM UNet block names) or an SD 1.x/2.x one (kohya's single `lora_te_`),
 * with the layer that shows it; undefined when they show neither (a UNet-only diffusers-named LoRA).
 */
export function loraGenerationOfKeys(lora: LoraFile): { sdxl: boolean; evidence: string } | undefined {
  for (const layer of lora.layers) {
    const sdxl =
      layer.component === "text_encoder_2" || layer.name.startsWith("lora_te1_") || (lora.format === "kohya" && layer.component === "unet" && isSgmModule(layer.module));
    if (sdxl) return { sdxl: true, evidence: `its layer ${layer.name}` };
    if (layer.name.startsWith("lora_te_")) return { sdxl: false, evidence: `its layer ${layer.name} (one text encoder)` };
  }
  return undefined;
}

/** A module path as both naming schemes can be compared (text encoders without `text_model.`). */
function canonicalModule(component: ComponentName, path: string): string {
  return component.startsWith("text_encoder") && path.startsWith("text_model.") ? path.slice("text_model.".length) : path;
}

/** Per component: how the file's module names find the model's `.weight` keys. */
interface KeyIndex {
  dotted: Map<string, string>;
  /** kohya's spelling → key; null when two keys would read the same (never in SD's models). */
  flattened: Map<string, string | null>;
  /** The UNet's layers_per_block (resnets in its first down block), for SGM block numbers. */
  layersPerBlock: number;
}

function indexKeys(target: LoraTarget): Map<ComponentName, KeyIndex> {
  const indexes = new Map<ComponentName, KeyIndex>();
  for (const [component, weights] of Object.entries(target.weights) as [ComponentName, ReadonlyMap<string, readonly number[]>][]) {
    const index: KeyIndex = { dotted: new Map(), flattened: new Map(), layersPerBlock: 0 };
    const firstLevelResnets = new Set<string>();
    for (const key of weights.keys()) {
      if (!key.endsWith(".weight")) continue;
      const module = canonicalModule(component, key.slice(0, -".weight".length));
      index.dotted.set(module, key);
      const flat = module.replaceAll(".", "_");
      index.flattened.set(flat, index.flattened.has(flat) ? null : key);
      const resnet = /^down_blocks\.0\.resnets\.(\d+)\./.exec(key);
      if (resnet) firstLevelResnets.add(resnet[1]!);
    }
    index.layersPerBlock = firstLevelResnets.size;
    indexes.set(component, index);
  }
  return indexes;
}

function findKey(layer: LoraLayer, format: LoraFile["format"], indexes: Map<ComponentName, KeyIndex>): string | undefined {
  const index = indexes.get(layer.component);
  if (!index) return undefined;
  if (format === "peft") return index.dotted.get(canonicalModule(layer.component, layer.module));
  // kohya's flattened name, with `text_model_` dropped as canonicalModule drops `text_model.`.
  const isText = layer.component.startsWith("text_encoder") && layer.module.startsWith("text_model_");
  if (isText) return index.flattened.get(layer.module.slice("text_model_".length)) ?? undefined;
  const sgm = layer.component === "unet" && isSgmModule(layer.module) ? sgmModuleToDiffusersFlat(layer.module, index.layersPerBlock) : undefined;
  return index.flattened.get(sgm ?? layer.module) ?? undefined;
}

/**
 * The deltas a LoRA file makes to a model at the user's `scale` (A1111's `<lora:name:scale>`,
 * diffusers' adapter weight × `lora_scale`).
 * @throws ModelFileError naming the file when it is for another model family, when layers match
 *   no weight of the model (a few listed), or when a layer's shape does not fit its weight.
 */
export function loraDeltas(lora: LoraFile, target: LoraTarget, scale: number): WeightDelta[] {
  const noted = loraFamilyOf(lora.metadata);
  const model = target.family ? `this ${FAMILY_TITLES[target.family]} model` : "this model";
  if (noted && target.family && noted.family !== target.family) {
    throw new ModelFileError(
      lora.path,
      `${lora.path} is a LoRA for ${FAMILY_TITLES[noted.family]} (its metadata says ${noted.evidence}); the model is ${FAMILY_TITLES[target.family]}`,
    );
  }
  const byKeys = loraGenerationOfKeys(lora);
  if (byKeys && target.family && byKeys.sdxl !== (target.family === "sdxl")) {
    throw new ModelFileError(
      lora.path,
      `${lora.path} is a LoRA for ${byKeys.sdxl ? "SDXL" : "SD 1.x/2.x"} (${byKeys.evidence}); the model is ${FAMILY_TITLES[target.family]}`,
    );
  }
  const indexes = indexKeys(target);
  const unmatched: string[] = [];
  const matched: { layer: LoraLayer; key: string; shape: readonly number[] }[] = [];
  for (const layer of lora.layers) {
    const key = findKey(layer, lora.format, indexes);
    if (key === undefined) unmatched.push(layer.name);
    else matched.push({ layer, key, shape: target.weights[layer.component]!.get(key)! });
  }
  if (unmatched.length > 0) {
    const shown = unmatched.slice(0, 5).join(", ");
    const more = unmatched.length > 5 ? ` and ${unmatched.length - 5} more` : "";
    throw new ModelFileError(
      lora.path,
      `${lora.path} does not fit ${model}: ${unmatched.length} of its ${lora.layers.length} layers match no weight of the model (${shown}${more}); is it a LoRA for another model?`,
    );
  }
  return matched.map(({ layer, key, shape }) => {
    const expected = deltaShape(layer);
    if (expected.length !== shape.length || expected.some((d, i) => d !== shape[i])) {
      throw new ModelFileError(
        lora.path,
        `${lora.path} does not fit ${model}: layer ${layer.name} changes ${layer.component} weight ${key} of shape [${shape.join(", ")}] by [${expected.join(", ")}]; is it a LoRA for another model?`,
      );
    }
    return { component: layer.component, key, shape, values: lowRankProduct(layer, layer.scale * scale) };
  });
}

/** The weight shape a layer changes: [out, in] or [out, in, kh, kw]. */
function deltaShape(layer: LoraLayer): number[] {
  const [, ...inner] = layer.down.shape;
  return [layer.up.shape[0]!, ...inner];
}

/** (up · down) × factor, each product element rounded to float32 before the factor, as torch computes it. */
function lowRankProduct(layer: LoraLayer, factor: number): Float32Array {
  const up = layer.up.toFloat32();
  const down = layer.down.toFloat32();
  const rank = layer.down.shape[0]!;
  const out = layer.up.shape[0]!;
  const cols = down.length / rank;
  const f = Math.fround(factor);
  const delta = new Float32Array(out * cols);
  const row = new Float64Array(cols);
  for (let o = 0; o < out; o++) {
    row.fill(0);
    for (let r = 0; r < rank; r++) {
      const a = up[o * rank + r]!;
      if (a === 0) continue;
      const base = r * cols;
      for (let j = 0; j < cols; j++) row[j]! += a * down[base + j]!;
    }
    const at = o * cols;
    for (let j = 0; j < cols; j++) delta[at + j] = Math.fround(row[j]!) * f;
  }
  return delta;
}
