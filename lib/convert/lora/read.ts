/**
 * Reads a LoRA file into its layers: for each adapted module, the two low-rank factors and the
 * file's own scale for it. Two layouts are read:
 *
 * - **kohya / A1111** (`lora_unet_<module>`, `lora_te_<module>` — `lora_te1_`/`lora_te2_` for
 *   SDXL's two text encoders — each with `.lora_down.weight`, `.lora_up.weight` and optionally
 *   `.alpha`): the module is the diffusers module path written with "_" for "." (kohya trains
 *   SD 1.x/2.x on diffusers' UNet and transformers' CLIP), so it is matched against the model's
 *   keys written the same way (`deltas.ts`). Scale = alpha / rank, 1 without an alpha (kohya's
 *   and A1111's `calc_scale`). Conv layers: `lora_down` [r, in, kh, kw] (a 3×3 kernel is LoCon),
 *   `lora_up` [out, r, 1, 1].
 * - **diffusers / PEFT** (`unet.<module>.lora_A.weight`, `.lora_B.weight`, `text_encoder.…`, as
 *   `save_lora_weights` writes them): scale = lora_alpha / r from the `lora_adapter_metadata` the
 *   file carries (PEFT's `rank_pattern`/`alpha_pattern` per module, alpha/√r with `use_rslora`), or
 *   a `<module>.alpha` tensor, or 1 (diffusers' default: alpha = rank).
 *
 * Anything else — LyCORIS LoHa/LoKr/(IA)³/full-diff layers, DoRA, LoRA biases, unknown keys — is
 * refused with the key that shows it, never skipped: a LoRA half applied is a different image.
 * Pickled LoRAs (`.pt`, `.ckpt`, `.bin`) are refused before they are opened.
 */
import { ModelFileError } from "../../errors.js";
import { refusePickle } from "../../model/pickle.js";
import { readSafetensors, type SafetensorsTensor } from "../../model/safetensors.js";
import type { ComponentName } from "../types.js";

export type LoraFormat = "kohya" | "peft";

/** One adapted module: delta = scale · up · down (reshaped to the module's weight). */
export interface LoraLayer {
  /** The layer as the file names it, for messages (`lora_unet_down_blocks_0_…`, `unet.down_blocks.0.….to_q`). */
  readonly name: string;
  readonly component: ComponentName;
  /** kohya: the module path with "_" for "."; PEFT: the dotted module path. */
  readonly module: string;
  /** [rank, in] or [rank, in, kh, kw]. */
  readonly down: SafetensorsTensor;
  /** [out, rank] or [out, rank, 1, 1]. */
  readonly up: SafetensorsTensor;
  /** The file's own factor for this layer (alpha / rank), before the user's scale. */
  readonly scale: number;
}

export interface LoraFile {
  readonly path: string;
  readonly format: LoraFormat;
  /** The safetensors `__metadata__` (kohya's `ss_*` training notes, diffusers' adapter config). */
  readonly metadata: Readonly<Record<string, string>>;
  readonly layers: readonly LoraLayer[];
}

const KOHYA_PREFIXES: readonly (readonly [string, ComponentName])[] = [
  ["lora_unet_", "unet"],
  ["lora_te1_", "text_encoder"],
  ["lora_te2_", "text_encoder_2"],
  ["lora_te_", "text_encoder"],
];
const PEFT_COMPONENTS: readonly ComponentName[] = ["unet", "text_encoder", "text_encoder_2"];

/** Key parts that name a network type sd-trt does not apply, with what to call it in the message. */
const UNSUPPORTED_PARTS: readonly (readonly [RegExp, string])[] = [
  [/\.hada_/, "LyCORIS LoHa"],
  [/\.lokr_/, "LyCORIS LoKr"],
  [/\.on_input$/, "LyCORIS (IA)³"],
  [/\.(diff|diff_b)$/, "a full weight difference"],
  [/\.lora_mid\./, "LoCon with CP decomposition (lora_mid)"],
  [/dora_scale|lora_magnitude_vector/, "DoRA"],
  [/\.(oft_|lora_embedding_)/, "an adapter type sd-trt does not apply"],
  [/\.lora_B\.bias$|\.lora_up\.bias$/, "LoRA biases"],
];

/**
 * Reads and checks a LoRA file (its layers' tensors are decoded later, on demand).
 * @throws ModelFileError naming the file: a pickle, not a valid safetensors file, no LoRA layers,
 *   a layer missing its up/down half, a network type sd-trt does not apply, bad adapter metadata.
 */
export async function readLoraFile(path: string): Promise<LoraFile> {
  await refusePickle(path);
  const file = await readSafetensors(path);
  const keys = [...file.tensors.keys()];
  const fail = (what: string): never => {
    throw new ModelFileError(path, `${path} is not a LoRA sd-trt can apply: ${what}`);
  };
  if (keys.length === 0) fail("it holds no tensors");
  for (const key of keys) {
    for (const [pattern, what] of UNSUPPORTED_PARTS) {
      if (pattern.test(key)) fail(`it uses ${what} (key ${key})`);
    }
  }
  const format: LoraFormat | undefined = keys.every((k) => KOHYA_PREFIXES.some(([p]) => k.startsWith(p)))
    ? "kohya"
    : keys.every((k) => PEFT_COMPONENTS.some((c) => k.startsWith(`${c}.`)))
      ? "peft"
      : undefined;
  if (format === undefined) {
    const odd = keys.find((k) => !KOHYA_PREFIXES.some(([p]) => k.startsWith(p)) && !PEFT_COMPONENTS.some((c) => k.startsWith(`${c}.`)));
    fail(`key ${odd} is neither kohya's (lora_unet_…, lora_te_…) nor diffusers/PEFT's (unet.…, text_encoder.…)`);
  }
  const layers = format === "kohya" ? kohyaLayers(file.tensors, fail) : peftLayers(file.tensors, file.metadata, fail);
  return { path, format: format!, metadata: file.metadata, layers };
}

type Fail = (what: string) => never;

function kohyaLayers(tensors: ReadonlyMap<string, SafetensorsTensor>, fail: Fail): LoraLayer[] {
  const groups = new Map<string, Map<string, SafetensorsTensor>>();
  for (const [key, tensor] of tensors) {
    const dot = key.indexOf(".");
    const name = dot < 0 ? key : key.slice(0, dot);
    const part = dot < 0 ? "" : key.slice(dot + 1);
    if (!["lora_down.weight", "lora_up.weight", "alpha"].includes(part)) fail(`key ${key} is not a kohya LoRA part (.lora_down.weight, .lora_up.weight, .alpha)`);
    let group = groups.get(name);
    if (!group) {
      group = new Map();
      groups.set(name, group);
    }
    group.set(part, tensor);
  }
  const layers: LoraLayer[] = [];
  for (const [name, parts] of groups) {
    const down = parts.get("lora_down.weight");
    const up = parts.get("lora_up.weight");
    if (!down || !up) fail(`layer ${name} has no ${down ? "lora_up" : "lora_down"}.weight`);
    const rank = checkFactors(name, down!, up!, fail);
    const alphaTensor = parts.get("alpha");
    let scale = 1;
    if (alphaTensor) {
      const alpha = alphaTensor.toFloat32();
      if (alpha.length !== 1 || !Number.isFinite(alpha[0])) fail(`layer ${name}'s alpha is not one finite number`);
      scale = alpha[0]! / rank;
    }
    const [prefix, component] = KOHYA_PREFIXES.find(([p]) => name.startsWith(p))!;
    layers.push({ name, component, module: name.slice(prefix.length), down: down!, up: up!, scale });
  }
  return layers;
}

/** PEFT's LoraConfig fields sd-trt reads from `lora_adapter_metadata`, per component. */
interface AdapterConfig {
  r?: number;
  lora_alpha?: number;
  rank_pattern?: Record<string, number>;
  alpha_pattern?: Record<string, number>;
  use_rslora?: boolean;
  use_dora?: boolean;
}

function peftLayers(tensors: ReadonlyMap<string, SafetensorsTensor>, metadata: Readonly<Record<string, string>>, fail: Fail): LoraLayer[] {
  const configs = adapterConfigs(metadata, fail);
  const groups = new Map<string, Map<string, SafetensorsTensor>>();
  for (const [key, tensor] of tensors) {
    const match = /^(.*)\.(lora_A\.weight|lora_B\.weight|alpha)$/.exec(key);
    if (!match) fail(`key ${key} is not a PEFT LoRA part (.lora_A.weight, .lora_B.weight, .alpha)`);
    const [, name, part] = match!;
    let group = groups.get(name!);
    if (!group) {
      group = new Map();
      groups.set(name!, group);
    }
    group.set(part!, tensor);
  }
  const layers: LoraLayer[] = [];
  for (const [name, parts] of groups) {
    const down = parts.get("lora_A.weight");
    const up = parts.get("lora_B.weight");
    if (!down || !up) fail(`layer ${name} has no ${down ? "lora_B" : "lora_A"}.weight`);
    const rank = checkFactors(name, down!, up!, fail);
    const component = PEFT_COMPONENTS.find((c) => name.startsWith(`${c}.`))!;
    const module = name.slice(component.length + 1);
    const config = configs.get(component);
    let alpha = rank;
    let r = rank;
    const alphaTensor = parts.get("alpha");
    if (alphaTensor) {
      const value = alphaTensor.toFloat32();
      if (value.length !== 1 || !Number.isFinite(value[0])) fail(`layer ${name}'s alpha is not one finite number`);
      alpha = value[0]!;
    } else if (config) {
      if (config.use_dora) fail(`its ${component} adapter uses DoRA (lora_adapter_metadata use_dora)`);
      r = patternValue(config.rank_pattern, module) ?? config.r ?? rank;
      alpha = patternValue(config.alpha_pattern, module) ?? config.lora_alpha ?? r;
      if (r !== rank) fail(`layer ${name} has rank ${rank}, its lora_adapter_metadata says ${r}`);
    }
    const scale = config?.use_rslora ? alpha / Math.sqrt(r) : alpha / r;
    layers.push({ name, component, module, down: down!, up: up!, scale });
  }
  return layers;
}

/** diffusers' `lora_adapter_metadata`: one JSON object with PEFT's LoraConfig fields as `<component>.<field>`. */
function adapterConfigs(metadata: Readonly<Record<string, string>>, fail: Fail): Map<ComponentName, AdapterConfig> {
  const configs = new Map<ComponentName, AdapterConfig>();
  const raw = metadata.lora_adapter_metadata;
  if (raw === undefined) return configs;
  let parsed: unknown;
  try {
    parsed = JSON.parse(raw);
  } catch (error) {
    fail(`its lora_adapter_metadata is not JSON (${(error as Error).message})`);
  }
  if (parsed === null || typeof parsed !== "object" || Array.isArray(parsed)) fail("its lora_adapter_metadata is not a JSON object");
  for (const [key, value] of Object.entries(parsed as Record<string, unknown>)) {
    const component = PEFT_COMPONENTS.find((c) => key.startsWith(`${c}.`));
    if (!component) continue;
    const field = key.slice(component.length + 1) as keyof AdapterConfig;
    let config = configs.get(component);
    if (!config) {
      config = {};
      configs.set(component, config);
    }
    const isNumber = (v: unknown): v is number => typeof v === "number" && Number.isFinite(v) && v > 0;
    const bad = () => fail(`its lora_adapter_metadata ${key} is ${JSON.stringify(value)}`);
    switch (field) {
      case "r":
      case "lora_alpha":
        if (!isNumber(value)) bad();
        config[field] = value as number;
        break;
      case "rank_pattern":
      case "alpha_pattern":
        if (value === null || typeof value !== "object" || Array.isArray(value) || !Object.values(value).every(isNumber)) bad();
        config[field] = value as Record<string, number>;
        break;
      case "use_rslora":
      case "use_dora":
        config[field] = value === true;
        break;
    }
  }
  return configs;
}

/** PEFT's `get_pattern_key`: the first pattern that matches the module path or a dotted suffix of it. */
function patternValue(patterns: Record<string, number> | undefined, module: string): number | undefined {
  if (!patterns) return undefined;
  for (const [pattern, value] of Object.entries(patterns)) {
    let re: RegExp;
    try {
      re = new RegExp(`^(.*\\.)?(${pattern})$`);
    } catch {
      continue; // not a pattern JavaScript reads: PEFT would not match it against this name either
    }
    if (re.test(module)) return value;
  }
  return undefined;
}

/** Checks the two factors fit together; returns the rank. */
function checkFactors(name: string, down: SafetensorsTensor, up: SafetensorsTensor, fail: Fail): number {
  const d = down.shape;
  const u = up.shape;
  const conv = d.length === 4;
  if (!(d.length === 2 || conv) || u.length !== d.length || (conv && (u[2] !== 1 || u[3] !== 1))) {
    fail(`layer ${name} has factors of shapes [${d.join(", ")}] and [${u.join(", ")}], not a Linear ([r, in], [out, r]) or conv ([r, in, kh, kw], [out, r, 1, 1]) pair`);
  }
  if (d[0] !== u[1] || d[0] === 0) fail(`layer ${name}'s factors disagree on the rank: [${d.join(", ")}] and [${u.join(", ")}]`);
  return d[0]!;
}
