/**
 * Writes a whole converted model folder in the optimum layout the pipeline reads
 * (lib/model/folder.ts): model_index.json, scheduler/, tokenizer/, text_encoder/, unet/,
 * vae_decoder/, vae_encoder/, each graph as model.onnx + model.onnx_data with its component's
 * config.json. SDXL adds tokenizer_2/ and text_encoder_2/, both text encoders return their hidden
 * states (`hidden_states.0…N`, of which the pipeline takes the penultimate) as optimum's SDXL export
 * does, and the UNet takes `text_embeds` and `time_ids`. SDXL's refiner has text_encoder_2 and
 * tokenizer_2 alone (no text_encoder/, tokenizer/), as optimum exports it, and model_index.json's
 * `requires_aesthetics_score` says its time ids.
 *
 * Everything is written into a temporary sibling of `outDir` and renamed into place only when
 * complete, so `outDir` either does not exist or holds a whole model; a failure removes the
 * temporary folder.
 */
import { access, copyFile, mkdir, rename, rm } from "node:fs/promises";
import { join } from "node:path";
import { ModelFileError, OutputFileError } from "../../errors.js";
import { temporaryPathFor, writeFileAtomic } from "../../fs/atomic.js";
import type { GraphBuilder } from "../../onnx/builder.js";
import { DEFAULT_VOCABULARY_DIR } from "../../tokenizer/clip-tokenizer.js";
import type { CheckpointSource, ComponentName, ComponentSource, ModelFamily } from "../types.js";
import { buildClipTextGraph } from "./clip.js";
import { type GraphFileSizes, writeGraphFile } from "./graph-file.js";
import type { GraphDtype } from "./layers.js";
import { buildUnetGraph } from "./unet.js";
import { buildVaeDecoderGraph, buildVaeEncoderGraph } from "./vae.js";

export type ConvertedGraph = "text_encoder" | "text_encoder_2" | "unet" | "vae_decoder" | "vae_encoder";

export interface ConvertProgress {
  /** The graph about to be written. */
  graph: ConvertedGraph;
  /** 0-based position of this graph, and how many there are. */
  index: number;
  count: number;
}

export interface WriteConvertedModelOptions {
  dtype: GraphDtype;
  onProgress?: (progress: ConvertProgress) => void;
}

export interface ConvertedModelReport {
  dir: string;
  /** Every graph written (text_encoder_2 for SDXL only). */
  graphs: Partial<Record<ConvertedGraph, GraphFileSizes>>;
}

type GraphBuild = (g: GraphBuilder, source: ComponentSource, options: { dtype: GraphDtype; origin: string }) => Promise<void>;

interface GraphPlan {
  graph: ConvertedGraph;
  component: ComponentName;
  build: GraphBuild;
}

const VAE_GRAPHS: readonly GraphPlan[] = [
  { graph: "vae_decoder", component: "vae", build: buildVaeDecoderGraph },
  { graph: "vae_encoder", component: "vae", build: buildVaeEncoderGraph },
];

/** The graphs of a family's folder. */
function graphsOf(source: CheckpointSource): readonly GraphPlan[] {
  if (source.family !== "sdxl") {
    return [{ graph: "text_encoder", component: "text_encoder", build: buildClipTextGraph }, { graph: "unet", component: "unet", build: buildUnetGraph }, ...VAE_GRAPHS];
  }
  const withHiddenStates: GraphBuild = (g, s, o) => buildClipTextGraph(g, s, { ...o, hiddenStates: true });
  // The UNet's text_embeds width is text_encoder_2's projection (static in optimum's export).
  const pooled = source.components.text_encoder_2?.config["projection_dim"];
  const unet: GraphBuild = (g, s, o) => buildUnetGraph(g, s, { ...o, textEmbedsWidth: typeof pooled === "number" ? pooled : undefined });
  return [
    ...(source.refiner ? [] : [{ graph: "text_encoder", component: "text_encoder", build: withHiddenStates } as const]),
    { graph: "text_encoder_2", component: "text_encoder_2", build: withHiddenStates },
    { graph: "unet", component: "unet", build: unet },
    ...VAE_GRAPHS,
  ];
}

/**
 * The tokenizer's pad token per family, as the diffusers folders' tokenizer configs name it:
 * SD 1.x (openai/clip-vit-large-patch14) pads with <|endoftext|>, SD 2.x (OpenCLIP) with "!";
 * SDXL's tokenizer is SD 1.x's and its tokenizer_2 (OpenCLIP bigG's) pads with "!".
 */
const PAD_TOKEN: Readonly<Record<ModelFamily, string>> = { sd1: "<|endoftext|>", sd2: "!", sdxl: "<|endoftext|>" };
const SDXL_TOKENIZER_2_PAD = "!";

/**
 * SDXL's VAE overflows in fp16: diffusers' StableDiffusionXLPipeline runs it in float32 when its config
 * sets `force_upcast` (`needs_upcasting`), so an fp16 conversion keeps the VAE graphs fp32. (SD 1.x/2.x
 * pipelines ignore the flag, which diffusers writes into every AutoencoderKL config.)
 */
function vaeNeedsFp32(source: CheckpointSource): boolean {
  return source.family === "sdxl" && source.components.vae?.config["force_upcast"] !== false;
}

async function writeJson(path: string, value: unknown): Promise<void> {
  await writeFileAtomic(path, `${JSON.stringify(value, null, 2)}\n`);
}

async function writeTokenizer(dir: string, padToken: string): Promise<void> {
  await mkdir(dir);
  for (const name of ["vocab.json", "merges.txt"]) await copyFile(join(DEFAULT_VOCABULARY_DIR, name), join(dir, name));
  const special = { bos_token: "<|startoftext|>", eos_token: "<|endoftext|>", pad_token: padToken, unk_token: "<|endoftext|>" };
  await writeJson(join(dir, "special_tokens_map.json"), special);
  await writeJson(join(dir, "tokenizer_config.json"), {
    add_prefix_space: false,
    do_lower_case: true,
    errors: "replace",
    model_max_length: 77,
    tokenizer_class: "CLIPTokenizer",
    ...special,
  });
}

function modelIndex(source: CheckpointSource): Record<string, unknown> {
  const scheduler = source.schedulerConfig["_class_name"];
  if (source.family === "sdxl") {
    // As optimum's ORTStableDiffusionXL(Img2Img)Pipeline folders name it (test/fixtures/sdxl), with the published flags.
    const refiner = source.refiner === true;
    return {
      _class_name: refiner ? "ORTStableDiffusionXLImg2ImgPipeline" : "ORTStableDiffusionXLPipeline",
      // The refiner's time ids carry an aesthetic score, and its empty negative prompt is encoded, not zeroed.
      force_zeros_for_empty_prompt: !refiner,
      requires_aesthetics_score: refiner,
      scheduler: ["diffusers", typeof scheduler === "string" ? scheduler : "EulerDiscreteScheduler"],
      text_encoder: refiner ? [null, null] : ["transformers", "CLIPTextModel"],
      text_encoder_2: ["transformers", "CLIPTextModelWithProjection"],
      tokenizer: refiner ? [null, null] : ["transformers", "CLIPTokenizer"],
      tokenizer_2: ["transformers", "CLIPTokenizer"],
      unet: ["diffusers", "UNet2DConditionModel"],
      vae: ["diffusers", "AutoencoderKL"],
    };
  }
  return {
    _class_name: "OnnxStableDiffusionPipeline",
    feature_extractor: [null, null],
    requires_safety_checker: false,
    safety_checker: [null, null],
    scheduler: ["diffusers", typeof scheduler === "string" ? scheduler : "PNDMScheduler"],
    text_encoder: ["diffusers", "OnnxRuntimeModel"],
    tokenizer: ["transformers", "CLIPTokenizer"],
    unet: ["diffusers", "OnnxRuntimeModel"],
    vae_decoder: ["diffusers", "OnnxRuntimeModel"],
    vae_encoder: ["diffusers", "OnnxRuntimeModel"],
  };
}

/**
 * Converts `source` into an ONNX model folder at `outDir` (which must not exist yet).
 *
 * @throws OutputFileError when `outDir` exists or cannot be written; ModelFileError when a
 *   component is missing or its config/weights are not what the graphs implement.
 */
export async function writeConvertedModel(source: CheckpointSource, outDir: string, options: WriteConvertedModelOptions): Promise<ConvertedModelReport> {
  const exists = await access(outDir).then(
    () => true,
    () => false,
  );
  if (exists) throw new OutputFileError(outDir, `${outDir} already exists; choose a new folder for the converted model or remove it first`);
  const plan = graphsOf(source);
  for (const { component } of plan) {
    if (!source.components[component]) throw new ModelFileError(source.path, `${source.path}: the checkpoint has no ${component}, which a converted model needs`);
  }

  const tmp = temporaryPathFor(outDir);
  const graphs: Partial<Record<ConvertedGraph, GraphFileSizes>> = {};
  try {
    await mkdir(tmp, { recursive: true });
    await writeJson(join(tmp, "model_index.json"), modelIndex(source));
    await mkdir(join(tmp, "scheduler"));
    await writeJson(join(tmp, "scheduler", "scheduler_config.json"), source.schedulerConfig);
    if (!source.refiner) await writeTokenizer(join(tmp, "tokenizer"), PAD_TOKEN[source.family]);
    if (source.family === "sdxl") await writeTokenizer(join(tmp, "tokenizer_2"), SDXL_TOKENIZER_2_PAD);
    for (const [index, { graph, component, build }] of plan.entries()) {
      options.onProgress?.({ graph, index, count: plan.length });
      const componentSource = source.components[component]!;
      const dir = join(tmp, graph);
      await mkdir(dir);
      await writeJson(join(dir, "config.json"), componentSource.config);
      const origin = `${source.path} ${component}`;
      const dtype = component === "vae" && vaeNeedsFp32(source) ? "fp32" : options.dtype;
      graphs[graph] = await writeGraphFile(join(dir, "model.onnx"), graph, (g) => build(g, componentSource, { dtype, origin }));
    }
    await rename(tmp, outDir);
  } catch (error) {
    await rm(tmp, { recursive: true, force: true });
    // File-system failures (disk full, no permission) are about the output; model errors pass as they are.
    if (error instanceof Error && (error as NodeJS.ErrnoException).syscall !== undefined) {
      throw new OutputFileError(outDir, `cannot write the converted model to ${outDir}: ${error.message}`, { cause: error });
    }
    throw error;
  }
  return { dir: outDir, graphs };
}
