/**
 * Engine shapes: what `sd-trt build --batch 1-4 --size 512x512 [--dynamic]` asks for, turned into
 * TensorRT optimization profiles (min/opt/max per input) for each model.
 *
 * - **Static** (the default): every profile has min = opt = max, which gives TensorRT's best
 *   kernels and what CUDA graphs like. A batch range gives one static profile per batch size
 *   (`--batch 1-4` → 4 profiles); the image size must be one size.
 * - **Dynamic** (`--dynamic`): one profile spanning the batch range and the size range. TensorRT
 *   optimises for the opt shape: the largest batch, and the first size of the range.
 *
 * Per model (B = images, h×w = latent size = image size / 8):
 * | model        | input                  | shape                    |
 * | ------------ | ---------------------- | ------------------------ |
 * | text encoder | input_ids              | [2B … 2B·K, 77] (every 77-token chunk of the prompts and negative prompts in one call) |
 * | UNet         | sample                 | [2B, 4, h, w] (classifier-free guidance doubles the batch) |
 * |              | timestep               | [] / [1] / [2B] (the graph's layout) |
 * |              | encoder_hidden_states  | [2B, 77 … 77·K, hidden] (A1111's long prompts: K chunks of 77) |
 * |              | text_embeds (SDXL)     | [2B, P] (text_encoder_2's pooled projection) |
 * |              | time_ids (SDXL)        | [2B, 6] (5 for the refiner's aesthetic-score ids) |
 * | VAE decoder  | latent_sample          | [B, 4, h, w]             |
 * | VAE encoder  | sample                 | [B, 3, H, W]             |
 *
 * K is `--max-prompt-chunks` (default 3, 225 prompt tokens): the text length is a dynamic axis even
 * of static engines, optimised for one chunk. In dynamic mode the text encoder and UNet batch ranges start at B_min (without guidance a
 * UNet batch is B). Axes the ONNX export fixed must match what is asked, or the option that
 * conflicts is named.
 */
import { InvalidOptionError } from "../../errors.js";
import { invalidOption } from "../../validate.js";
import type { ModelIo } from "../../model/graph-io.js";

/** Latent = image / 8 (the SD VAE's factor). */
export const VAE_FACTOR = 8;
/** CLIP's token count. */
export const TOKENS = 77;
/** Image sides accepted by `--size` (pixels; must be multiples of `VAE_FACTOR`). */
export const SIZE_LIMITS = { min: 64, max: 4096 } as const;
/** Largest batch accepted by `--batch`. */
export const MAX_BATCH = 64;
/** Most optimization profiles a static build may make (each multiplies the build time). */
export const MAX_STATIC_PROFILES = 8;
/** `--max-prompt-chunks` when not given: prompts up to 3 × 75 tokens. */
export const DEFAULT_MAX_PROMPT_CHUNKS = 3;
/** Largest `--max-prompt-chunks` (2400 prompt tokens). */
export const MAX_PROMPT_CHUNKS = 32;

export interface Range {
  min: number;
  opt: number;
  max: number;
}

/** The shapes an engine set is built for (images, pixels). */
export interface EngineShapes {
  batch: Range;
  width: Range;
  height: Range;
  /** false: static profiles (min = opt = max); true: one dynamic profile. */
  dynamic: boolean;
  /** 77-token chunks per prompt (the text length is 77 · chunks): min 1, opt 1, max `--max-prompt-chunks`. */
  promptChunks: Range;
}

/** The shape options of `sd-trt build` as given on the command line. */
export interface ShapeOptions {
  /** "4" or "1-4". Defaults to "1". */
  batch?: string | number;
  /** "512x512" or "512x512-768x768" (width × height). Defaults to "512x512" unless width/height are given. */
  size?: string;
  /** "512" or "512-768". */
  width?: string | number;
  height?: string | number;
  dynamic?: boolean;
  /** Most 77-token chunks a prompt may have (A1111's long prompts), 1 … 32. Defaults to 3. */
  maxPromptChunks?: string | number;
}

export interface TensorProfile {
  min: number[];
  opt: number[];
  max: number[];
}

/** One TensorRT optimization profile: a shape range per dynamic input. */
export type OptimizationProfile = Record<string, TensorProfile>;

function parseIntegerRange(option: string, text: string, min: number, max: number, what: string): { min: number; max: number } {
  const m = /^\s*(\d+)\s*(?:-\s*(\d+)\s*)?$/.exec(text);
  if (!m) throw invalidOption(option, `${what} like "4" or a range like "1-4"`, text);
  const lo = Number(m[1]);
  const hi = m[2] === undefined ? lo : Number(m[2]);
  if (lo < min || hi > max) throw invalidOption(option, `between ${min} and ${max}`, text);
  if (hi < lo) throw invalidOption(option, `a range from low to high ("${hi}-${lo}", not "${lo}-${hi}")`, text);
  return { min: lo, max: hi };
}

function checkSide(option: string, value: number, text: string): void {
  if (value < SIZE_LIMITS.min || value > SIZE_LIMITS.max || value % VAE_FACTOR !== 0) {
    throw invalidOption(option, `image sides that are multiples of ${VAE_FACTOR} from ${SIZE_LIMITS.min} to ${SIZE_LIMITS.max} pixels`, text);
  }
}

function parseSide(option: string, value: string | number): { min: number; max: number } {
  const text = String(value);
  const r = parseIntegerRange(option, text, 1, Number.MAX_SAFE_INTEGER, "a size in pixels");
  checkSide(option, r.min, text);
  checkSide(option, r.max, text);
  return r;
}

function parseSize(text: string): { width: { min: number; max: number }; height: { min: number; max: number } } {
  const m = /^\s*(\d+)\s*[xX×]\s*(\d+)\s*(?:-\s*(\d+)\s*[xX×]\s*(\d+)\s*)?$/.exec(text);
  if (!m) throw invalidOption("--size", `WIDTHxHEIGHT like "512x512", or a range like "512x512-768x768"`, text);
  const w0 = Number(m[1]);
  const h0 = Number(m[2]);
  const w1 = m[3] === undefined ? w0 : Number(m[3]);
  const h1 = m[4] === undefined ? h0 : Number(m[4]);
  for (const v of [w0, h0, w1, h1]) checkSide("--size", v, text);
  if (w1 < w0 || h1 < h0) throw invalidOption("--size", "a range from the smaller size to the larger one", text);
  return { width: { min: w0, max: w1 }, height: { min: h0, max: h1 } };
}

/**
 * Validates the shape options and turns them into `EngineShapes`. Messages name the option.
 * @throws InvalidOptionError
 */
export function parseShapeOptions(options: ShapeOptions): EngineShapes {
  const dynamic = options.dynamic ?? false;
  const batch = parseIntegerRange("--batch", String(options.batch ?? "1"), 1, MAX_BATCH, "a batch size");
  if (options.size !== undefined && (options.width !== undefined || options.height !== undefined)) {
    throw new InvalidOptionError("--size", "--size cannot be combined with --width/--height: give either --size WxH or --width and --height");
  }
  let width: { min: number; max: number };
  let height: { min: number; max: number };
  if (options.width !== undefined || options.height !== undefined) {
    if (options.width === undefined) throw new InvalidOptionError("--width", "--width is needed with --height (or use --size WxH)");
    if (options.height === undefined) throw new InvalidOptionError("--height", "--height is needed with --width (or use --size WxH)");
    width = parseSide("--width", options.width);
    height = parseSide("--height", options.height);
  } else {
    ({ width, height } = parseSize(options.size ?? "512x512"));
  }
  if (!dynamic) {
    const sizeOption = options.size !== undefined || options.width === undefined ? "--size" : width.min !== width.max ? "--width" : "--height";
    if (width.min !== width.max || height.min !== height.max) {
      throw new InvalidOptionError(
        sizeOption,
        `${sizeOption} gives a range of sizes, but engines are static unless --dynamic is given: ` +
          `add --dynamic for one engine covering the range, or give a single size`,
      );
    }
    const profiles = batch.max - batch.min + 1;
    if (profiles > MAX_STATIC_PROFILES) {
      throw new InvalidOptionError(
        "--batch",
        `--batch ${batch.min}-${batch.max} would build ${profiles} static profiles (at most ${MAX_STATIC_PROFILES}): ` +
          `narrow the range or add --dynamic`,
      );
    }
  }
  const chunks = parseIntegerRange("--max-prompt-chunks", String(options.maxPromptChunks ?? DEFAULT_MAX_PROMPT_CHUNKS), 1, MAX_PROMPT_CHUNKS, "a chunk count");
  if (chunks.min !== chunks.max) throw invalidOption("--max-prompt-chunks", `one number from 1 to ${MAX_PROMPT_CHUNKS}`, String(options.maxPromptChunks));
  return {
    batch: { min: batch.min, opt: batch.max, max: batch.max },
    width: { min: width.min, opt: width.min, max: width.max },
    height: { min: height.min, opt: height.min, max: height.max },
    dynamic,
    promptChunks: { min: 1, opt: 1, max: chunks.max },
  };
}

/**
 * SDXL's default engine sizes when `--size`/`--width`/`--height` are not given: one dynamic
 * profile over 640 … 1536 pixels a side (multiples of 64 inside it at runtime), which holds 1024²
 * and SDXL's usual aspect-ratio buckets (1152×896, 1216×832, 1344×768, 1536×640 and their
 * transposes), optimised for 1024².
 */
export const SDXL_DEFAULT_SIZE = { min: 640, opt: 1024, max: 1536 } as const;

/**
 * `parseShapeOptions` for an SDXL model: without a size option, SDXL's default dynamic range
 * (`SDXL_DEFAULT_SIZE`) instead of 512×512; with one, what was asked. A dynamic range holding
 * 1024 is optimised for 1024 (SDXL's native size) rather than its smallest size, so the rebuild
 * command a manifest prints (`--size 640x640-1536x1536 --dynamic`) builds the same engines again.
 */
export function parseSdxlShapeOptions(options: ShapeOptions): EngineShapes {
  const sized = options.size !== undefined || options.width !== undefined || options.height !== undefined;
  const { min, max, opt } = SDXL_DEFAULT_SIZE;
  const shapes = parseShapeOptions(sized ? options : { ...options, size: `${min}x${min}-${max}x${max}`, dynamic: true });
  const native = (r: Range): Range => (shapes.dynamic && r.min <= opt && opt <= r.max ? { ...r, opt } : r);
  return { ...shapes, width: native(shapes.width), height: native(shapes.height) };
}

/** The shapes for a model folder: SDXL's defaults (`parseSdxlShapeOptions`) for an SDXL folder, else `parseShapeOptions`. */
export function shapesForModel(options: ShapeOptions, folder: { sdxl?: unknown }): EngineShapes {
  return folder.sdxl ? parseSdxlShapeOptions(options) : parseShapeOptions(options);
}

/** The command-line form of `shapes`, for rebuild commands in messages. */
export function shapeArguments(shapes: EngineShapes): string {
  const range = (r: { min: number; max: number }) => (r.min === r.max ? `${r.min}` : `${r.min}-${r.max}`);
  const size =
    shapes.width.min === shapes.width.max && shapes.height.min === shapes.height.max
      ? `${shapes.width.min}x${shapes.height.min}`
      : `${shapes.width.min}x${shapes.height.min}-${shapes.width.max}x${shapes.height.max}`;
  const chunks = shapes.promptChunks.max === DEFAULT_MAX_PROMPT_CHUNKS ? "" : ` --max-prompt-chunks ${shapes.promptChunks.max}`;
  return `--batch ${range(shapes.batch)} --size ${size}${shapes.dynamic ? " --dynamic" : ""}${chunks}`;
}

/** The graph's declared dims for one input, to check requested shapes against fixed axes. */
export type DeclaredShapes = Record<string, (number | string)[]>;

/** Which command-line option sets each axis, for conflict messages. */
type AxisOption = "--batch" | "--height" | "--width" | "--max-prompt-chunks" | null;

/** Most textual-inversion vectors (all embeddings of a folder together) a text-encoder engine takes. */
export const MAX_TOKEN_VECTOR_ROWS = 1024;

interface AxisRequest {
  min: number;
  opt: number;
  max: number;
  option: AxisOption;
  what: string;
}

function fixed(n: number, what: string): AxisRequest {
  return { min: n, opt: n, max: n, option: null, what };
}

function tensorProfile(file: string, input: string, declared: (number | string)[] | undefined, axes: AxisRequest[]): TensorProfile | null {
  if (declared !== undefined && declared.length !== axes.length) {
    throw new InvalidOptionError(
      "--model",
      `${file}: input ${input} has rank ${declared.length}, sd-trt builds it as [${axes.map((a) => a.what).join(", ")}]`,
    );
  }
  let dynamicInput = declared === undefined;
  axes.forEach((axis, i) => {
    const d = declared?.[i];
    if (typeof d === "number" && d > 0) {
      if (axis.min !== d || axis.max !== d) {
        const asked = axis.min === axis.max ? `${axis.min}` : `${axis.min}-${axis.max}`;
        const message =
          `${file}: input ${input} has a fixed ${axis.what} of ${d}, but the engine would need ${asked}` +
          (axis.option === "--height" || axis.option === "--width" ? ` (${VAE_FACTOR}× for pixels)` : "") +
          (axis.option ? `: change ${axis.option === "--height" || axis.option === "--width" ? `--size (or ${axis.option})` : axis.option} or export the model with a dynamic ${axis.what}` : "");
        throw new InvalidOptionError(axis.option ?? "--model", message);
      }
    } else dynamicInput = true;
  });
  // TensorRT needs (and accepts) profile dims only for inputs with a dynamic axis.
  if (!dynamicInput) return null;
  return { min: axes.map((a) => a.min), opt: axes.map((a) => a.opt), max: axes.map((a) => a.max) };
}

export interface ProfileContext {
  /** The ONNX file, for messages. */
  file: string;
  /** Declared dims of the graph's inputs. */
  declared: DeclaredShapes;
  /** Text-embedding size (768 for SD 1.x): the last axis of encoder_hidden_states. */
  hiddenSize: number;
  /** SDXL: the sizes of the UNet's `text_embeds` (P) and `time_ids` (6, or 5 for the refiner). */
  addedConditioning?: { textEmbedsSize: number; timeIdsSize: number };
}

/**
 * The optimization profiles of one model for `shapes`: one per batch size when static, one
 * spanning everything when dynamic. Inputs whose every axis the export fixed are left out.
 * @throws InvalidOptionError when a fixed axis of the export conflicts with the shapes asked for.
 */
export function profilesFor(io: ModelIo, shapes: EngineShapes, context: ProfileContext): OptimizationProfile[] {
  const batches = shapes.dynamic ? [null] : Array.from({ length: shapes.batch.max - shapes.batch.min + 1 }, (_, i) => shapes.batch.min + i);
  const lat = (r: Range) => ({ min: r.min / VAE_FACTOR, opt: r.opt / VAE_FACTOR, max: r.max / VAE_FACTOR });
  return batches.map((b) => {
    // Images, and the doubled batch of guidance (which may also run at B without guidance).
    const images: AxisRequest = b === null ? { ...shapes.batch, option: "--batch", what: "batch" } : { min: b, opt: b, max: b, option: "--batch", what: "batch" };
    const doubled: AxisRequest =
      b === null
        ? { min: shapes.batch.min, opt: 2 * shapes.batch.max, max: 2 * shapes.batch.max, option: "--batch", what: "batch" }
        : { min: 2 * b, opt: 2 * b, max: 2 * b, option: "--batch", what: "batch" };
    const h: AxisRequest = { ...lat(shapes.height), option: "--height", what: "latent height" };
    const w: AxisRequest = { ...lat(shapes.width), option: "--width", what: "latent width" };
    const H: AxisRequest = { ...shapes.height, option: "--height", what: "height" };
    const W: AxisRequest = { ...shapes.width, option: "--width", what: "width" };
    const K = shapes.promptChunks.max;
    const chunkRows: AxisRequest = { min: doubled.min, opt: doubled.opt, max: doubled.max * K, option: "--batch", what: "batch" };
    const text: AxisRequest = { min: TOKENS, opt: TOKENS, max: TOKENS * K, option: "--max-prompt-chunks", what: "sequence length" };
    const profile: OptimizationProfile = {};
    const add = (name: string, axes: AxisRequest[]) => {
      const p = tensorProfile(context.file, name, context.declared[name], axes);
      if (p) profile[name] = p;
    };
    switch (io.role) {
      case "text_encoder":
        add(io.idsName, [chunkRows, fixed(TOKENS, "sequence length")]);
        // The edited graph's inputs (lib/onnx/text-encoder-edit.ts): one clip skip, and the
        // textual-inversion vectors of whatever embeddings folder the pipeline loads.
        if (io.clipSkipName) add(io.clipSkipName, [fixed(1, "clip skip count")]);
        if (io.extraVectorsName) {
          add(io.extraVectorsName, [{ min: 1, opt: 1, max: MAX_TOKEN_VECTOR_ROWS, option: null, what: "textual-inversion vector count" }, fixed(context.hiddenSize, "hidden size")]);
        }
        break;
      case "unet":
        add(io.sampleName, [doubled, fixed(4, "channel count"), h, w]);
        if (io.timestepLayout === "single") add(io.timestepName, [fixed(1, "timestep count")]);
        else if (io.timestepLayout === "per-row") add(io.timestepName, [doubled]);
        add(io.contextName, [doubled, text, fixed(context.hiddenSize, "hidden size")]);
        if (io.addedConditioning) {
          const sizes = context.addedConditioning;
          if (!sizes) throw new InvalidOptionError("--model", `${context.file}: the UNet takes text_embeds and time_ids (SDXL), but their sizes are not known`);
          add(io.addedConditioning.textEmbedsName, [doubled, fixed(sizes.textEmbedsSize, "pooled embedding size")]);
          add(io.addedConditioning.timeIdsName, [doubled, fixed(sizes.timeIdsSize, "time id count")]);
        }
        break;
      case "vae_decoder":
        add(io.latentName, [images, fixed(4, "channel count"), h, w]);
        break;
      case "vae_encoder":
        add(io.imageName, [images, fixed(3, "channel count"), H, W]);
        break;
    }
    return profile;
  });
}
