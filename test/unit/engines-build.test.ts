/**
 * `sd-trt build`. Without TensorRT (this machine) the real command must give the doctor-style
 * diagnosis and write nothing. The orchestration around TensorRT — fp16 conversion, profiles,
 * staging and the atomic swap, the timing cache, up-to-date checks, failure and cancellation — is
 * exercised with a scripted stand-in for `binding.tensorrt.buildEngine` (the real builder needs a
 * GPU): it reads the ONNX it is given like TensorRT would, reports progress, and returns bytes.
 */
import { describe, expect, test, beforeEach, afterEach } from "@jest/globals";
import { cp, mkdtemp, readdir, readFile, rm, stat, writeFile } from "node:fs/promises";
import { tmpdir } from "node:os";
import { basename, dirname, join } from "node:path";
import buildCommand, { BuildReporter } from "../../lib/cli/commands/build.js";
import { AbortError, EngineBuildError } from "../../lib/errors.js";
import { buildEngines, type BuildEvent } from "../../lib/backends/tensorrt/build.js";
import { readManifest, sourceDifferences } from "../../lib/backends/tensorrt/manifest.js";
import { writeConvertedModel } from "../../lib/convert/graphs/folder.js";
import { OnnxModel } from "../../lib/onnx/model.js";
import { ModelField } from "../../lib/onnx/schema.js";
import { ATTENTION_SCORES_KEY, modelMetadata } from "../../lib/onnx/sd-trt-metadata.js";
import { parseShapeOptions, shapesForModel } from "../../lib/backends/tensorrt/profiles.js";
import { TINY_SDXL_DIR } from "../fixtures/sdxl/reference.js";
import { sdxlEngineInfo } from "../../lib/backends/tensorrt/sdxl.js";
import { locateModelFolder } from "../../lib/model/folder.js";
import { exportPrecision } from "../../lib/backends/tensorrt/roles.js";
import type { TensorRtBinding, TrtBuildOptions, TrtBuildProgress, TrtBuildResult } from "../../lib/native/tensorrt-types.js";
import { runCommand } from "../support/run-cli.js";
import { tinyCheckpoint } from "../support/checkpoint-fixtures.js";

const TINY = join(process.cwd(), "models", "tiny-sd");
const GPU = { name: "NVIDIA GeForce RTX 4090", computeCapability: "8.9" };

interface BuilderCall {
  role: string;
  onnxPath: string;
  precision: string;
  profiles: TrtBuildOptions["profiles"];
  timingCache: string | undefined;
  keepOutputs: string[] | undefined;
  refittable: boolean | undefined;
}

/** A scripted TensorRT builder: behaves like binding.tensorrt.buildEngine at its interface. */
function scriptedBuilder(options: { failOn?: string; holdOn?: string } = {}) {
  const calls: BuilderCall[] = [];
  let cacheVersion = 0;
  const binding = {
    buildEngine(build: TrtBuildOptions, onProgress?: (p: TrtBuildProgress) => void) {
      // Like the native BuildControl: cancel() sets a flag the builder checks at its next step.
      let cancelled = false;
      let cancel = () => {
        cancelled = true;
      };
      const promise = (async (): Promise<TrtBuildResult> => {
        const model = await OnnxModel.read(build.onnxPath); // what TensorRT's parser would read
        const role = basename(build.onnxPath) === "model.onnx" ? basename(join(build.onnxPath, "..")) : "?";
        calls.push({
          role,
          onnxPath: build.onnxPath,
          precision: exportPrecision(model),
          profiles: build.profiles,
          timingCache: build.timingCache ? Buffer.from(build.timingCache).toString() : undefined,
          keepOutputs: build.keepOutputs,
          refittable: build.refittable,
        });
        onProgress?.({ kind: "start", phase: "Building engine", parent: null, step: 0, steps: 2 });
        onProgress?.({ kind: "step", phase: "Building engine", parent: null, step: 1, steps: 0 });
        if (role === options.failOn) {
          throw Object.assign(new Error(`onnx-parse: TensorRT's ONNX parser rejected ${build.onnxPath}\n  node 3 "/up/Resize" (Resize): kUNSUPPORTED_NODE: bad mode`), {
            code: "ERR_ONNX_PARSE",
            stage: "onnx-parse",
            status: "kUNSUPPORTED_NODE",
          });
        }
        if (role === options.holdOn) {
          await new Promise<void>((_, reject) => {
            const abort = () => reject(Object.assign(new Error("engine-build: the engine build was cancelled"), { code: "ABORT_ERR", stage: "engine-build" }));
            if (cancelled) abort();
            cancel = abort;
          });
        }
        cacheVersion++;
        return {
          plan: Buffer.from(`plan of ${role}`),
          timingCache: Buffer.from(`timing cache ${cacheVersion}`),
          timingCacheReset: false,
          io: [
            ...model.io().inputs.map((i) => ({ ...i, mode: "input" as const })),
            ...model
              .io()
              .outputs.filter((o) => !build.keepOutputs || build.keepOutputs.includes(o.name))
              .map((o) => ({ ...o, mode: "output" as const })),
          ].map((t) => ({
            name: t.name,
            mode: t.mode,
            dtype: "float32" as const,
            shape: t.shape.map((d) => (typeof d === "number" ? d : -1)),
          })),
          log: [{ severity: "warning", message: "scripted warning" }],
          gpu: { device: 0, ...GPU, driverVersion: "580.65.06", totalMemory: 24e9 },
          tensorrtVersion: "10.13.0",
        };
      })();
      return { promise, cancel: () => cancel() };
    },
  } as unknown as TensorRtBinding;
  return { calls, injected: { binding, gpu: GPU, tensorrtVersion: "10.13.0" } };
}

describe("sd-trt build orchestration", () => {
  let root: string;
  beforeEach(async () => {
    root = await mkdtemp(join(tmpdir(), "sd-trt-build-"));
  });
  afterEach(async () => {
    await rm(root, { recursive: true, force: true });
  });

  test("the text encoder is built from its edited graph: clip_skip and extra_token_vectors inputs with profiles, its layer count in the manifest", async () => {
    const { calls, injected } = scriptedBuilder();
    const result = await buildEngines({ model: TINY, out: join(root, "tiny-sd"), shapes: parseShapeOptions({ batch: "1", size: "64x64" }) }, injected);
    expect(calls[0]!.role).toBe("text_encoder");
    // clip_skip is declared [1]: a static input needs no profile.
    expect(calls[0]!.profiles[0]).toMatchObject({ extra_token_vectors: { min: [1, 32], opt: [1, 32], max: [1024, 32] } });
    expect(calls[0]!.profiles[0]!.clip_skip).toBeUndefined();
    expect(result.manifest.engines.text_encoder!.contract).toMatchObject({ role: "text_encoder", clipSkipName: "clip_skip", extraVectorsName: "extra_token_vectors", layers: 2 });
    expect(result.manifest.engines.text_encoder!.precision).toBe("fp16");
  });

  test("converts, builds every model and writes plans, manifest and timing cache in the cache layout", async () => {
    const { calls, injected } = scriptedBuilder();
    const events: BuildEvent[] = [];
    const out = join(root, "tiny-sd");
    const result = await buildEngines({ model: TINY, out, shapes: parseShapeOptions({ batch: "1-2", size: "64x64" }), onProgress: (e) => events.push(e) }, injected);

    expect(result.variantDir).toBe(join(out, "sm89-trt10.13.0"));
    expect(result.upToDate).toBe(false);
    expect((await readdir(result.variantDir)).sort()).toEqual(["manifest.json", "text_encoder.plan", "unet.plan", "vae_decoder.plan", "vae_encoder.plan"]);
    expect((await readdir(out)).sort()).toEqual(["sm89-trt10.13.0"]); // no staging or work folders left
    expect(await readFile(join(result.variantDir, "unet.plan"), "utf8")).toBe("plan of unet");
    expect(await readFile(join(root, "timing-sm89-trt10.13.0.cache"), "utf8")).toBe("timing cache 4");

    // TensorRT got fp16 graphs (converted in a temporary folder) with the profiles, and each build
    // the timing cache of the one before.
    expect(calls.map((c) => [c.role, c.precision])).toEqual([
      ["text_encoder", "fp16"],
      ["unet", "fp16"],
      ["vae_decoder", "fp16"],
      ["vae_encoder", "fp16"],
    ]);
    expect(calls.map((c) => c.timingCache)).toEqual([undefined, "timing cache 1", "timing cache 2", "timing cache 3"]);
    // The text encoder keeps only the embeddings the pipeline reads: TensorRT prunes pooler_output.
    expect(calls.map((c) => c.keepOutputs)).toEqual([["last_hidden_state"], undefined, undefined, undefined]);
    expect(calls[1]!.profiles.map((p) => p.sample!.min)).toEqual([
      [2, 4, 8, 8],
      [4, 4, 8, 8],
    ]);
    for (const c of calls) await expect(stat(c.onnxPath)).rejects.toThrow(/ENOENT/);

    const manifest = await readManifest(join(result.variantDir, "manifest.json"));
    expect(manifest).toEqual(result.manifest);
    expect(manifest.tensorrt.version).toBe("10.13.0");
    expect(manifest.gpu).toEqual({ ...GPU, driverVersion: "580.65.06" });
    expect(manifest.model).toEqual({ dir: TINY, hiddenSize: 32, scalingFactor: 0.18215 });
    expect(manifest.engines.unet!.source.files).toEqual([
      { path: "unet/model.onnx", sha256: "216e7aeb1979c870fb636b0b0a8159cbdf3bf6ab89e1c26cd4da4b929f23aefb", bytes: 352780 },
    ]);
    expect(manifest.engines.unet!.conversion).toBe("fp32-to-fp16");
    expect(manifest.engines.unet!.contract).toMatchObject({ role: "unet", timestepLayout: "single", timestepName: "timestep" });
    expect(manifest.engines.vae_encoder!.planBytes).toBe("plan of vae_encoder".length);

    expect(events.filter((e) => e.type === "model-start").map((e) => (e as { role: string }).role)).toEqual(["text_encoder", "unet", "vae_decoder", "vae_encoder"]);
    expect(events.filter((e) => e.type === "converted")).toHaveLength(4);
    expect(events.some((e) => e.type === "builder" && e.progress.kind === "step")).toBe(true);
  });

  test("--fp32-vae hands TensorRT the fp32 VAE graphs unconverted", async () => {
    const { calls, injected } = scriptedBuilder();
    const result = await buildEngines({ model: TINY, out: join(root, "tiny-sd"), shapes: parseShapeOptions({ size: "64x64" }), fp32Vae: true }, injected);
    expect(calls.map((c) => [c.role, c.precision])).toEqual([
      ["text_encoder", "fp16"],
      ["unet", "fp16"],
      ["vae_decoder", "fp32"],
      ["vae_encoder", "fp32"],
    ]);
    expect(calls[2]!.onnxPath).toBe(join(TINY, "vae_decoder", "model.onnx"));
    expect(result.manifest.engines.vae_decoder).toMatchObject({ precision: "fp32", conversion: "none" });
    expect(result.manifest.options.fp32Vae).toBe(true);
  });

  test("a UNet with upcast_attention gets fp32 attention scores, recorded in the manifest; engines built without them are rebuilt", async () => {
    const model = join(root, "upcast-sd");
    await cp(TINY, model, { recursive: true });
    const shapes = parseShapeOptions({ size: "64x64" });
    const out = join(root, "engines");
    const before = await buildEngines({ model, out, shapes }, scriptedBuilder().injected);
    expect(before.manifest.engines.unet!.conversion).toBe("fp32-to-fp16");

    const config = JSON.parse(await readFile(join(model, "unet", "config.json"), "utf8")) as Record<string, unknown>;
    await writeFile(join(model, "unet", "config.json"), JSON.stringify({ ...config, upcast_attention: true }));
    const { calls, injected } = scriptedBuilder();
    const events: BuildEvent[] = [];
    const after = await buildEngines({ model, out, shapes, onProgress: (e) => events.push(e) }, injected);
    expect(after.upToDate).toBe(false); // same ONNX files, but the conversion they need changed
    expect(calls.map((c) => c.role)).toContain("unet");
    expect(after.manifest.engines.unet!.conversion).toBe("fp32-to-fp16-fp32-attention");
    expect(after.manifest.engines.text_encoder!.conversion).toBe("fp32-to-fp16");
    const converted = events.filter((e): e is Extract<BuildEvent, { type: "converted" }> => e.type === "converted");
    expect(converted.map((e) => [e.role, e.report.attentionScoresFp32])).toEqual([
      ["text_encoder", 0],
      ["unet", 1],
      ["vae_decoder", 0],
      ["vae_encoder", 0],
    ]);
  });

  test("an fp16 graph from sd-trt's converter that records fp32 attention scores is accepted for an upcast_attention UNet; one without the record is warned about", async () => {
    // The tiny SD 2.x checkpoint sets upcast_attention; its fp16 conversion keeps Q·Kᵀ and softmax in fp32.
    const model = join(root, "sd2-fp16");
    await writeConvertedModel(await tinyCheckpoint("sd2"), model, { dtype: "fp16" });
    const unetPath = join(model, "unet", "model.onnx");
    const unet = await OnnxModel.read(unetPath);
    expect(modelMetadata(unet).get(ATTENTION_SCORES_KEY)).toBe("float32");
    const shapes = parseShapeOptions({ size: "64x64" });
    const warnings = async (out: string) => {
      const events: BuildEvent[] = [];
      const result = await buildEngines({ model, out: join(root, out), shapes, onProgress: (e) => events.push(e) }, scriptedBuilder().injected);
      expect(result.manifest.engines.unet).toMatchObject({ precision: "fp16", conversion: "none" });
      return events.flatMap((e) => (e.type === "warning" && e.message.includes("upcast_attention") ? [e.message] : []));
    };
    expect(await warnings("recorded")).toEqual([]);

    // The same graph without the record: the builder cannot tell its scores are fp32.
    unet.proto.remove(ModelField.metadataProps);
    await writeFile(unetPath, unet.encode());
    expect(await warnings("unrecorded")).toEqual([
      `${model}/unet/config.json sets upcast_attention, but ${unetPath} is an fp16 export: its attention scores are computed in fp16 and may overflow (UnetOverflowError). Export the UNet in fp32 and sd-trt keeps them in fp32`,
    ]);
  });

  test("an unchanged model, shapes, GPU and TensorRT are up to date; force rebuilds", async () => {
    const shapes = parseShapeOptions({ size: "64x64" });
    const first = scriptedBuilder();
    await buildEngines({ model: TINY, out: join(root, "tiny-sd"), shapes }, first.injected);
    const second = scriptedBuilder();
    const events: BuildEvent[] = [];
    const again = await buildEngines({ model: TINY, out: join(root, "tiny-sd"), shapes, onProgress: (e) => events.push(e) }, second.injected);
    expect(again.upToDate).toBe(true);
    expect(second.calls).toEqual([]);
    expect(events.map((e) => e.type)).toEqual(["up-to-date"]);
    const other = await buildEngines({ model: TINY, out: join(root, "tiny-sd"), shapes: parseShapeOptions({ batch: "1-2", size: "64x64" }) }, second.injected);
    expect(other.upToDate).toBe(false); // new shapes
    const forced = scriptedBuilder();
    expect((await buildEngines({ model: TINY, out: join(root, "tiny-sd"), shapes: parseShapeOptions({ batch: "1-2", size: "64x64" }), force: true }, forced.injected)).upToDate).toBe(false);
    expect(forced.calls).toHaveLength(4);
  });

  test("a parser error names the model and node and leaves the previous engines as they were", async () => {
    const shapes = parseShapeOptions({ size: "64x64" });
    const out = join(root, "tiny-sd");
    const good = await buildEngines({ model: TINY, out, shapes }, scriptedBuilder().injected);
    let error: unknown;
    try {
      await buildEngines({ model: TINY, out, shapes, force: true }, scriptedBuilder({ failOn: "unet" }).injected);
    } catch (e) {
      error = e;
    }
    expect(error).toBeInstanceOf(EngineBuildError);
    expect((error as EngineBuildError).model).toBe("unet");
    expect((error as Error).message).toMatch(/^building the UNet engine from unet\/model\.onnx failed: onnx-parse: TensorRT's ONNX parser rejected/);
    expect((error as Error).message).toContain('node 3 "/up/Resize" (Resize): kUNSUPPORTED_NODE');
    expect((await readManifest(join(good.variantDir, "manifest.json"))).createdAt).toBe(good.manifest.createdAt);
    expect((await readdir(out)).sort()).toEqual(["sm89-trt10.13.0"]);
  });

  test("aborting cancels the running TensorRT build and writes no engine folder", async () => {
    const controller = new AbortController();
    const { injected } = scriptedBuilder({ holdOn: "unet" });
    const out = join(root, "tiny-sd");
    const build = buildEngines(
      {
        model: TINY,
        out,
        shapes: parseShapeOptions({ size: "64x64" }),
        signal: controller.signal,
        onProgress: (e) => {
          if (e.type === "builder" && e.role === "unet" && e.progress.kind === "step") controller.abort();
        },
      },
      injected,
    );
    await expect(build).rejects.toBeInstanceOf(AbortError);
    expect(await readdir(out)).toEqual([]);
    // The tactics timed before the cancel are kept.
    expect(await readFile(join(root, "timing-sm89-trt10.13.0.cache"), "utf8")).toBe("timing cache 1");
  });
});

describe("sd-trt build command", () => {
  let root: string;
  beforeEach(async () => {
    root = await mkdtemp(join(tmpdir(), "sd-trt-build-cli-"));
  });
  afterEach(async () => {
    await rm(root, { recursive: true, force: true });
  });

  test("without TensorRT it says what is missing and what to do, exits 1 and writes nothing", async () => {
    const out = join(root, "engines", "tiny-sd");
    const run = await runCommand(buildCommand, ["build", "--model", TINY, "--out", out, "--batch", "1-2", "--size", "64x64"]);
    expect(run.code).toBe(1);
    expect(run.stderr).toMatch(/sd-trt: cannot build engines: TensorRT is not usable on this machine\n {2}- \w/);
    expect(run.stderr).toContain("What to do:");
    // Whatever is missing here (addon, CUDA, driver, GPU, TensorRT), each line names it.
    expect(run.stderr).toMatch(/ {2}- (addon|cuda|driver|gpu|tensorrt|tensorrt-runtime|onnx-parser): /);
    expect(await readdir(root)).toEqual([]);
  });

  test("an invalid shape option is a usage error naming the option, before anything else", async () => {
    const run = await runCommand(buildCommand, ["build", "--model", TINY, "--out", join(root, "x"), "--size", "512x512-768x768"]);
    expect(run.code).toBe(2);
    expect(run.stderr).toContain("--size gives a range of sizes, but engines are static unless --dynamic is given");
    expect(await readdir(root)).toEqual([]);
  });
});

describe("sd-trt build for SDXL", () => {
  let root: string;
  beforeEach(async () => {
    root = await mkdtemp(join(tmpdir(), "sd-trt-build-sdxl-"));
  });
  afterEach(async () => {
    await rm(root, { recursive: true, force: true });
  });

  test("builds both text encoders, the UNet with text_embeds and time_ids profiles, and the VAE in fp32 because its config sets force_upcast", async () => {
    const { calls, injected } = scriptedBuilder();
    const events: BuildEvent[] = [];
    const result = await buildEngines({ model: TINY_SDXL_DIR, out: join(root, "tiny-sdxl"), shapes: parseShapeOptions({ batch: "1-2", size: "64x64" }), onProgress: (e) => events.push(e) }, injected);

    expect((await readdir(result.variantDir)).sort()).toEqual(["manifest.json", "text_encoder.plan", "text_encoder_2.plan", "unet.plan", "vae_decoder.plan", "vae_encoder.plan"]);
    expect(calls.map((c) => [c.role, c.precision])).toEqual([
      ["text_encoder", "fp16"],
      ["unet", "fp16"],
      ["text_encoder_2", "fp16"],
      ["vae_decoder", "fp32"],
      ["vae_encoder", "fp32"],
    ]);
    // Each encoder computes the penultimate hidden state the UNet reads; text_encoder_2 also its pooled text_embeds.
    expect(calls.map((c) => c.keepOutputs)).toEqual([["hidden_states.1"], undefined, ["hidden_states.1", "text_embeds"], undefined, undefined]);
    // CFG doubles every UNet input's batch, text_embeds [2B, 16] and time_ids [2B, 6] included.
    const unet = calls[1]!.profiles;
    expect(unet.map((p) => [p.text_embeds!.min, p.time_ids!.max])).toEqual([
      [
        [2, 16],
        [2, 6],
      ],
      [
        [4, 16],
        [4, 6],
      ],
    ]);
    expect(unet[0]!.encoder_hidden_states!.max).toEqual([2, 77 * 3, 32]);

    const manifest = await readManifest(join(result.variantDir, "manifest.json"));
    expect(manifest).toEqual(result.manifest);
    expect(manifest.options.fp32Vae).toBe(true);
    expect([manifest.engines.vae_decoder!.precision, manifest.engines.vae_decoder!.conversion]).toEqual(["fp32", "none"]);
    expect(manifest.engines.text_encoder_2!.contract).toMatchObject({ role: "text_encoder", hiddenName: "hidden_states.1", pooledName: "text_embeds" });
    expect(manifest.engines.unet!.contract).toMatchObject({ addedConditioning: { textEmbedsName: "text_embeds", timeIdsName: "time_ids" } });
    expect(manifest.model.hiddenSize).toBe(32); // 16 + 16, both encoders' states joined per token

    const vaeStart = events.find((e) => e.type === "model-start" && e.role === "vae_decoder");
    expect(vaeStart).toMatchObject({ precision: "fp32", fp32Reason: "force_upcast in the VAE config" });
    const done = events.find((e) => e.type === "done");
    expect(done && done.type === "done" && done.engines.map((e) => e.role)).toEqual(["text_encoder", "unet", "text_encoder_2", "vae_decoder", "vae_encoder"]);

    // The same build again is up to date: the VAE precision compared is the one actually built.
    const again = await buildEngines({ model: TINY_SDXL_DIR, out: join(root, "tiny-sdxl"), shapes: parseShapeOptions({ batch: "1-2", size: "64x64" }) }, scriptedBuilder().injected);
    expect(again.upToDate).toBe(true);
    // Another text_encoder_2 file is a difference of its own, named after the engine.
    const sources = Object.fromEntries(Object.entries(manifest.engines).map(([role, e]) => [role, e!.source.files]));
    sources.text_encoder_2 = [{ ...sources.text_encoder_2![0]!, sha256: "0".repeat(64) }];
    expect(sourceDifferences(manifest, { sources, shapes: manifest.shapes, fp32Vae: true }).map((d) => d.field)).toEqual(["model files of the text encoder 2"]);
  });

  test("without a size option an SDXL folder gets one dynamic profile over 640…1536 pixels optimised for 1024², an SD folder 512²", async () => {
    const { calls, injected } = scriptedBuilder();
    const result = await buildEngines({ model: TINY_SDXL_DIR, out: join(root, "tiny-sdxl"), shapes: (folder) => shapesForModel({ batch: "1" }, folder) }, injected);
    expect(result.manifest.shapes).toMatchObject({ dynamic: true, width: { min: 640, opt: 1024, max: 1536 }, height: { min: 640, opt: 1024, max: 1536 } });
    expect(calls[1]!.profiles).toHaveLength(1);
    expect(calls[1]!.profiles[0]!.sample).toEqual({ min: [1, 4, 80, 80], opt: [2, 4, 128, 128], max: [2, 4, 192, 192] });
    expect(calls[3]!.profiles[0]!.latent_sample).toEqual({ min: [1, 4, 80, 80], opt: [1, 4, 128, 128], max: [1, 4, 192, 192] });
    // An explicit size wins; an SD 1.x folder keeps 512².
    expect(shapesForModel({ size: "1024x1024" }, { sdxl: {} }).width).toEqual({ min: 1024, opt: 1024, max: 1024 });
    // A dynamic range holding 1024 is optimised for it, so the manifest's rebuild command builds the same engines.
    expect(shapesForModel({ size: "640x640-1536x1536", dynamic: true }, { sdxl: {} })).toEqual(result.manifest.shapes);
    expect(shapesForModel({ size: "512x512-768x768", dynamic: true }, { sdxl: {} }).width).toEqual({ min: 512, opt: 512, max: 768 });
    expect(shapesForModel({}, {}).width).toEqual({ min: 512, opt: 512, max: 512 });
  });

  test("the refiner's one encoder (text_encoder_2) keeps its pooled output and its UNet gets 5 aesthetic-score time ids", async () => {
    const { calls, injected } = scriptedBuilder();
    const result = await buildEngines({ model: join(dirname(TINY_SDXL_DIR), "tiny-sdxl-refiner"), out: join(root, "refiner"), shapes: parseShapeOptions({ size: "64x64" }) }, injected);
    expect(calls.map((c) => [c.role, c.precision])).toEqual([
      ["text_encoder", "fp16"],
      ["unet", "fp16"],
      ["vae_decoder", "fp32"],
    ]);
    expect(calls[0]!.keepOutputs).toEqual(["hidden_states.1", "text_embeds"]);
    expect(calls[1]!.profiles[0]!.time_ids).toEqual({ min: [2, 5], opt: [2, 5], max: [2, 5] });
    expect(result.manifest.engines.text_encoder!.source.onnx).toBe("text_encoder_2/model.onnx");
    expect(result.manifest.model.hiddenSize).toBe(16);
  });

  test("--refittable builds both text encoders and the UNet refittable (the engines a LoRA changes), not the VAE", async () => {
    const { calls, injected } = scriptedBuilder();
    const result = await buildEngines({ model: TINY_SDXL_DIR, out: join(root, "refittable"), shapes: parseShapeOptions({ size: "64x64" }), refittable: true }, injected);
    expect(calls.map((c) => [c.role, c.refittable ?? false])).toEqual([
      ["text_encoder", true],
      ["unet", true],
      ["text_encoder_2", true],
      ["vae_decoder", false],
      ["vae_encoder", false],
    ]);
    expect(result.manifest.options.refittable).toBe(true);
  });

  test("the TensorRT backend reads an SDXL engine set's sizes off its manifest and refuses a set without text_encoder_2, naming the rebuild", async () => {
    const { injected } = scriptedBuilder();
    const out = join(root, "tiny-sdxl");
    const { manifest, variantDir } = await buildEngines({ model: TINY_SDXL_DIR, out, shapes: parseShapeOptions({ size: "64x64" }) }, injected);
    const folder = await locateModelFolder(TINY_SDXL_DIR);
    expect(sdxlEngineInfo(folder, manifest, variantDir)).toEqual({
      secondEncoderOnly: false,
      hidden1: 16,
      hidden2: 16,
      pooledName: "text_embeds",
      pooledSize: 16,
      timeIdsSize: 6,
      textEmbedsName: "text_embeds",
      timeIdsName: "time_ids",
    });
    const { text_encoder_2: _, ...withoutSecond } = manifest.engines;
    expect(() => sdxlEngineInfo(folder, { ...manifest, engines: withoutSecond }, variantDir)).toThrow(/do not fit the SDXL model .*there is no text_encoder_2 engine; rebuild them with\n {2}sd-trt build --model .* --force/s);
    // An SD 1.x folder has no SDXL parts to check.
    expect(sdxlEngineInfo(await locateModelFolder(TINY), manifest, variantDir)).toBeNull();
  });

  test("sd-trt build prints each SDXL engine it builds, the VAE's fp32 reason, and how long each part took", async () => {
    const lines: string[] = [];
    const stream = { isTTY: false, write: (text: string) => lines.push(...text.split("\n").filter((l) => l.length > 0)) } as unknown as NodeJS.WriteStream;
    const reporter = new BuildReporter(stream);
    await buildEngines({ model: TINY_SDXL_DIR, out: join(root, "tiny-sdxl"), shapes: parseShapeOptions({ size: "64x64" }), onProgress: (e) => reporter.event(e) }, scriptedBuilder().injected);
    reporter.finish();
    expect(lines.filter((l) => l.startsWith("["))).toEqual([
      "[1/5] text encoder: text_encoder/model.onnx, converting fp32 → fp16, 1 optimization profile",
      "[2/5] UNet: unet/model.onnx, converting fp32 → fp16, 1 optimization profile",
      "[3/5] second text encoder (text_encoder_2): text_encoder_2/model.onnx, converting fp32 → fp16, 1 optimization profile",
      "[4/5] VAE decoder: vae_decoder/model.onnx, fp32 (force_upcast in the VAE config), 1 optimization profile",
      "[5/5] VAE encoder: vae_encoder/model.onnx, fp32 (force_upcast in the VAE config), 1 optimization profile",
    ]);
    expect(lines.at(-1)).toMatch(/^Built in \d+\.\d s \(text encoder \d+\.\d s, UNet \d+\.\d s, second text encoder \(text_encoder_2\) \d+\.\d s, VAE decoder \d+\.\d s, VAE encoder \d+\.\d s\)$/);
  });

  test("an fp16-fixed SDXL VAE (force_upcast false) is converted to fp16 like the other models", async () => {
    const model = join(root, "fp16-vae-sdxl");
    await cp(TINY_SDXL_DIR, model, { recursive: true, dereference: true });
    for (const part of ["vae_decoder", "vae_encoder"]) {
      const config = join(model, part, "config.json");
      await writeFile(config, JSON.stringify({ ...JSON.parse(await readFile(config, "utf8")), force_upcast: false }));
    }
    const { calls, injected } = scriptedBuilder();
    const result = await buildEngines({ model, out: join(root, "engines"), shapes: parseShapeOptions({ size: "64x64" }) }, injected);
    expect(calls.filter((c) => c.role.startsWith("vae")).map((c) => c.precision)).toEqual(["fp16", "fp16"]);
    expect(result.manifest.options.fp32Vae).toBe(false);
    expect(result.manifest.engines.vae_decoder!.conversion).toBe("fp32-to-fp16");
  });
});
