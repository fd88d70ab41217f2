/**
 * `manifest.json` of an engine folder (docs/architecture.md, "Models, engines and the cache"): everything
 * that changes a plan — the hashes of the model files it was built from, the precision, the
 * optimization profiles, the TensorRT version, the GPU (name and compute capability) and its
 * driver — so that engines are only loaded where they are valid, and `sd-trt build` knows when
 * they are out of date. Its JSON Schema is `engines/manifest.schema.json`.
 */
import { readFile } from "node:fs/promises";
import { ModelFileError, EngineMismatchError, type EngineDifference } from "../../errors.js";
import type { ModelIo, ModelRole } from "../../model/graph-io.js";
import type { FileDigest } from "./hash.js";
import { contractRole, ENGINE_ROLES, modelIdDirOf, type EngineRole } from "./layout.js";
import { shapeArguments, type EngineShapes, type OptimizationProfile } from "./profiles.js";

export const MANIFEST_FORMAT = "sd-trt-engines/1" as const;

export type EnginePrecision = "fp16" | "fp32";

/** One I/O tensor of a built engine, as TensorRT reports it (-1 for a dynamic axis). */
export interface EngineTensor {
  name: string;
  mode: "input" | "output";
  dtype: string;
  shape: number[];
}

export interface EngineEntry {
  /** Plan file name inside the manifest's folder ("unet.plan"). */
  plan: string;
  planSha256: string;
  planBytes: number;
  /** The ONNX file (relative to the model folder) and every file it was built from, hashed. */
  source: { onnx: string; files: FileDigest[] };
  /** What the network computes in. */
  precision: EnginePrecision;
  /** How the precision was obtained: the export as it was, sd-trt's fp32 → fp16 conversion, or
   *  that conversion with the attention scores kept fp32 (a UNet with diffusers' upcast_attention). */
  conversion: "none" | "fp32-to-fp16" | "fp32-to-fp16-fp32-attention";
  profiles: OptimizationProfile[];
  io: EngineTensor[];
  /** The graph's I/O contract as read from the ONNX (tensor names, timestep layout, …). */
  contract: ModelIo;
}

export interface EngineGpu {
  name: string;
  /** "8.9" */
  computeCapability: string;
  /** "580.65" style when known, else CUDA's integer driver version as a string ("13000"). */
  driverVersion: string;
}

export interface EngineManifest {
  format: typeof MANIFEST_FORMAT;
  sdTrtVersion: string;
  /** ISO 8601 */
  createdAt: string;
  tensorrt: { version: string };
  gpu: EngineGpu;
  shapes: EngineShapes;
  /** Build options that are not shapes. */
  /** `refittable`: the text encoder(s) and UNet were built with TensorRT's refit flag, so LoRA sets
   *  are applied by refitting their weights (absent in manifests from before LoRAs: false). */
  options: { fp32Vae: boolean; refittable?: boolean };
  /** The model folder the engines were built from (absolute, as given to `sd-trt build`). */
  model: { dir: string; hiddenSize: number; scalingFactor: number };
  /** SDXL sets add `text_encoder_2`. */
  engines: Partial<Record<EngineRole, EngineEntry>>;
}

/** What the machine loading the engines has. */
export interface RuntimeTarget {
  tensorrtVersion: string;
  gpu: { name: string; computeCapability: string };
}

// ---------------------------------------------------------------------------------------------
// Structural validation (the same rules as engines/manifest.schema.json, with messages that say
// which field is wrong).

class ManifestShapeError extends Error {}

function at(path: string, message: string): never {
  throw new ManifestShapeError(`${path}: ${message}`);
}

function obj(v: unknown, path: string): Record<string, unknown> {
  if (typeof v !== "object" || v === null || Array.isArray(v)) at(path, "must be an object");
  return v as Record<string, unknown>;
}

function str(v: unknown, path: string, pattern?: RegExp): string {
  if (typeof v !== "string" || v.length === 0) at(path, "must be a non-empty string");
  if (pattern && !pattern.test(v)) at(path, `must match ${pattern}`);
  return v;
}

function int(v: unknown, path: string, min = 0): number {
  if (typeof v !== "number" || !Number.isInteger(v) || v < min) at(path, `must be an integer ≥ ${min}`);
  return v;
}

function ints(v: unknown, path: string, min: number): number[] {
  if (!Array.isArray(v)) at(path, "must be an array of integers");
  return v.map((x, i) => int(x, `${path}[${i}]`, min));
}

function range(v: unknown, path: string): { min: number; opt: number; max: number } {
  const r = obj(v, path);
  const out = { min: int(r.min, `${path}.min`, 1), opt: int(r.opt, `${path}.opt`, 1), max: int(r.max, `${path}.max`, 1) };
  if (!(out.min <= out.opt && out.opt <= out.max)) at(path, "must have min ≤ opt ≤ max");
  return out;
}

const ROLES = ENGINE_ROLES;
const SHA256 = /^[0-9a-f]{64}$/;
const VERSION = /^\d+\.\d+\.\d+$/;
const CC = /^\d+\.\d+$/;

const CONTRACT_NAMES: Record<ModelRole, readonly string[]> = {
  text_encoder: ["idsName", "hiddenName"],
  unet: ["sampleName", "timestepName", "contextName", "outputName", "timestepLayout", "timestepType"],
  vae_decoder: ["latentName", "imageName"],
  vae_encoder: ["imageName", "outputName", "outputKind"],
};

function contract(v: unknown, path: string, role: ModelRole): ModelIo {
  const c = obj(v, path);
  if (c.role !== role) at(`${path}.role`, `must be "${role}"`);
  for (const key of CONTRACT_NAMES[role]) str(c[key], `${path}.${key}`);
  if (role === "unet" && !["scalar", "single", "per-row"].includes(c.timestepLayout as string)) {
    at(`${path}.timestepLayout`, 'must be "scalar", "single" or "per-row"');
  }
  if (role === "vae_encoder" && !["sample", "parameters"].includes(c.outputKind as string)) {
    at(`${path}.outputKind`, 'must be "sample" or "parameters"');
  }
  return c as unknown as ModelIo;
}

function entry(v: unknown, path: string, role: EngineRole): EngineEntry {
  const e = obj(v, path);
  const source = obj(e.source, `${path}.source`);
  if (!Array.isArray(source.files) || source.files.length === 0) at(`${path}.source.files`, "must be a non-empty array");
  if (!Array.isArray(e.profiles) || e.profiles.length === 0) at(`${path}.profiles`, "must be a non-empty array");
  if (!Array.isArray(e.io)) at(`${path}.io`, "must be an array");
  const precision = e.precision;
  if (precision !== "fp16" && precision !== "fp32") at(`${path}.precision`, 'must be "fp16" or "fp32"');
  const conversion = e.conversion;
  if (conversion !== "none" && conversion !== "fp32-to-fp16" && conversion !== "fp32-to-fp16-fp32-attention") {
    at(`${path}.conversion`, 'must be "none", "fp32-to-fp16" or "fp32-to-fp16-fp32-attention"');
  }
  return {
    plan: str(e.plan, `${path}.plan`, /^[A-Za-z0-9_.-]+\.plan$/),
    planSha256: str(e.planSha256, `${path}.planSha256`, SHA256),
    planBytes: int(e.planBytes, `${path}.planBytes`, 1),
    source: {
      onnx: str(source.onnx, `${path}.source.onnx`),
      files: source.files.map((f, i) => {
        const p = `${path}.source.files[${i}]`;
        const o = obj(f, p);
        return { path: str(o.path, `${p}.path`), sha256: str(o.sha256, `${p}.sha256`, SHA256), bytes: int(o.bytes, `${p}.bytes`) };
      }),
    },
    precision,
    conversion,
    profiles: e.profiles.map((p, i) => {
      const po = obj(p, `${path}.profiles[${i}]`);
      const out: OptimizationProfile = {};
      for (const [name, t] of Object.entries(po)) {
        const tp = `${path}.profiles[${i}].${name}`;
        const to = obj(t, tp);
        const min = ints(to.min, `${tp}.min`, 0);
        const opt = ints(to.opt, `${tp}.opt`, 0);
        const max = ints(to.max, `${tp}.max`, 0);
        if (opt.length !== min.length || max.length !== min.length) at(tp, "min, opt and max must have the same rank");
        out[name] = { min, opt, max };
      }
      return out;
    }),
    contract: contract(e.contract, `${path}.contract`, contractRole(role)),
    io: e.io.map((t, i) => {
      const p = `${path}.io[${i}]`;
      const o = obj(t, p);
      if (o.mode !== "input" && o.mode !== "output") at(`${p}.mode`, 'must be "input" or "output"');
      return { name: str(o.name, `${p}.name`), mode: o.mode, dtype: str(o.dtype, `${p}.dtype`), shape: ints(o.shape, `${p}.shape`, -1) };
    }),
  };
}

/** Checks the structure of a parsed manifest. @throws ModelFileError naming the bad field. */
export function validateManifest(value: unknown, file: string): EngineManifest {
  try {
    const m = obj(value, "manifest");
    if (m.format !== MANIFEST_FORMAT) at("format", `must be "${MANIFEST_FORMAT}" (this sd-trt reads that format), got ${JSON.stringify(m.format)}`);
    const trt = obj(m.tensorrt, "tensorrt");
    const gpu = obj(m.gpu, "gpu");
    const shapes = obj(m.shapes, "shapes");
    const options = obj(m.options, "options");
    const model = obj(m.model, "model");
    const engines = obj(m.engines, "engines");
    const out: EngineManifest = {
      format: MANIFEST_FORMAT,
      sdTrtVersion: str(m.sdTrtVersion, "sdTrtVersion"),
      createdAt: str(m.createdAt, "createdAt"),
      tensorrt: { version: str(trt.version, "tensorrt.version", VERSION) },
      gpu: {
        name: str(gpu.name, "gpu.name"),
        computeCapability: str(gpu.computeCapability, "gpu.computeCapability", CC),
        driverVersion: str(gpu.driverVersion, "gpu.driverVersion"),
      },
      shapes: {
        batch: range(shapes.batch, "shapes.batch"),
        width: range(shapes.width, "shapes.width"),
        height: range(shapes.height, "shapes.height"),
        dynamic: typeof shapes.dynamic === "boolean" ? shapes.dynamic : at("shapes.dynamic", "must be true or false"),
        // Manifests from before long prompts have none: their engines take one chunk.
        promptChunks: shapes.promptChunks === undefined ? { min: 1, opt: 1, max: 1 } : range(shapes.promptChunks, "shapes.promptChunks"),
      },
      options: {
        fp32Vae: typeof options.fp32Vae === "boolean" ? options.fp32Vae : at("options.fp32Vae", "must be true or false"),
        ...(options.refittable === undefined ? {} : { refittable: typeof options.refittable === "boolean" ? options.refittable : at("options.refittable", "must be true or false") }),
      },
      model: {
        dir: str(model.dir, "model.dir"),
        hiddenSize: int(model.hiddenSize, "model.hiddenSize", 1),
        scalingFactor: typeof model.scalingFactor === "number" && model.scalingFactor > 0 ? model.scalingFactor : at("model.scalingFactor", "must be a positive number"),
      },
      engines: {},
    };
    if (Number.isNaN(Date.parse(out.createdAt))) at("createdAt", "must be an ISO 8601 date");
    for (const [role, e] of Object.entries(engines)) {
      if (!(ROLES as readonly string[]).includes(role)) at(`engines.${role}`, `is not a model role (${ROLES.join(", ")})`);
      out.engines[role as EngineRole] = entry(e, `engines.${role}`, role as EngineRole);
    }
    for (const role of ["text_encoder", "unet", "vae_decoder"] as const) {
      if (!out.engines[role]) at(`engines.${role}`, "is missing (every engine set has a text encoder, a UNet and a VAE decoder)");
    }
    return out;
  } catch (error) {
    if (error instanceof ManifestShapeError) {
      throw new ModelFileError(file, `${file} is not a valid sd-trt engine manifest: ${error.message}`, { cause: error });
    }
    throw error;
  }
}

export async function readManifest(file: string): Promise<EngineManifest> {
  let text: string;
  try {
    text = await readFile(file, "utf8");
  } catch (cause) {
    const code = (cause as NodeJS.ErrnoException).code;
    const why = code === "ENOENT" ? "it does not exist (build the engines with `sd-trt build`)" : (cause as Error).message;
    throw new ModelFileError(file, `cannot read the engine manifest ${file}: ${why}`, { cause });
  }
  let json: unknown;
  try {
    json = JSON.parse(text);
  } catch (cause) {
    throw new ModelFileError(file, `${file} is not valid JSON: ${(cause as Error).message}`, { cause });
  }
  return validateManifest(json, file);
}

/** JSON text of a manifest (stable key order, as built). */
export function serializeManifest(manifest: EngineManifest): string {
  return `${JSON.stringify(manifest, null, 2)}\n`;
}

/** The command that rebuilds the engines a manifest describes. */
export function rebuildCommand(manifest: EngineManifest, variantDir: string, overrides: { fp32Vae?: boolean } = {}): string {
  const fp32Vae = overrides.fp32Vae ?? manifest.options.fp32Vae;
  return `sd-trt build --model ${quote(manifest.model.dir)} --out ${quote(modelIdDirOf(variantDir))} ${shapeArguments(manifest.shapes)}${fp32Vae ? " --fp32-vae" : ""}`;
}

function quote(path: string): string {
  return /^[A-Za-z0-9_./@:+-]+$/.test(path) ? path : `'${path.replace(/'/g, "'\\''")}'`;
}

/** "11.1.0.106" or "11.1.0" → "11.1.0" */
export function normalizeTensorRtVersion(version: string): string {
  const m = /^(\d+)\.(\d+)\.(\d+)/.exec(version);
  return m ? `${m[1]}.${m[2]}.${m[3]}` : version;
}

/**
 * Compares a manifest with the machine that wants to run its engines. A different TensorRT
 * version or compute capability makes the plans unusable (TensorRT refuses them); a different
 * GPU model of the same architecture works but may be slower (a warning).
 * @throws EngineMismatchError listing every difference and the rebuild command.
 */
export function checkManifestTarget(manifest: EngineManifest, variantDir: string, target: RuntimeTarget): { warnings: string[] } {
  const differences: EngineDifference[] = [];
  const builtTrt = normalizeTensorRtVersion(manifest.tensorrt.version);
  const hereTrt = normalizeTensorRtVersion(target.tensorrtVersion);
  if (builtTrt !== hereTrt) differences.push({ field: "TensorRT version", built: builtTrt, current: hereTrt });
  if (manifest.gpu.computeCapability !== target.gpu.computeCapability) {
    differences.push({
      field: "GPU compute capability",
      built: `${manifest.gpu.computeCapability} (${manifest.gpu.name})`,
      current: `${target.gpu.computeCapability} (${target.gpu.name})`,
    });
  }
  if (differences.length > 0) throw new EngineMismatchError(variantDir, differences, rebuildCommand(manifest, variantDir));
  const warnings: string[] = [];
  if (manifest.gpu.name !== target.gpu.name) {
    warnings.push(
      `the engines in ${variantDir} were built on a ${manifest.gpu.name} and run on a ${target.gpu.name} (same compute capability ` +
        `${target.gpu.computeCapability}); they work, but rebuilding on this GPU picks its fastest kernels: ${rebuildCommand(manifest, variantDir)}`,
    );
  }
  return { warnings };
}

/**
 * Differences between what a manifest was built from and what a new build would use (model
 * files, shapes, options): empty when the engines are up to date.
 */
export function sourceDifferences(
  manifest: EngineManifest,
  wanted: { sources: Partial<Record<EngineRole, FileDigest[]>>; shapes: EngineShapes; fp32Vae: boolean },
): EngineDifference[] {
  const out: EngineDifference[] = [];
  for (const role of ROLES) {
    const built = manifest.engines[role]?.source.files;
    const now = wanted.sources[role];
    const key = (files: FileDigest[] | undefined) => (files ? files.map((f) => `${f.path}:${f.sha256}`).join(",") : "none");
    if (key(built) !== key(now)) {
      out.push({ field: `model files of the ${role.replaceAll("_", " ")}`, built: describeFiles(built), current: describeFiles(now) });
    }
  }
  if (shapeArguments(manifest.shapes) !== shapeArguments(wanted.shapes)) {
    out.push({ field: "shapes", built: shapeArguments(manifest.shapes), current: shapeArguments(wanted.shapes) });
  }
  if (manifest.options.fp32Vae !== wanted.fp32Vae) {
    out.push({ field: "VAE precision", built: manifest.options.fp32Vae ? "fp32" : "fp16", current: wanted.fp32Vae ? "fp32" : "fp16" });
  }
  return out;
}

function describeFiles(files: FileDigest[] | undefined): string {
  if (!files) return "no model";
  return files.map((f) => `${f.path} (sha256 ${f.sha256.slice(0, 12)}…)`).join(", ");
}
