/**
 * The TensorRT backend without a GPU: whether TensorRT is usable and why not (every branch of the
 * diagnosis, from the loader's result and the addon's info()), what engines' profiles allow, and
 * the real load on this machine failing with the diagnosis.
 */
import { describe, expect, test } from "@jest/globals";
import { join } from "node:path";
import { TensorRtBackend, defaultEnginesDir } from "../../lib/backends/tensorrt/backend.js";
import { loadBackend } from "../../lib/backends/select.js";
import { assessTensorRt, checkTensorRt } from "../../lib/backends/tensorrt/availability.js";
import { TensorRtUnavailableError } from "../../lib/errors.js";
import { limitsFromEngines, smallestBatch, splitCallRows, textRowsFor, unetAccepts, type EngineShapeInfo } from "../../lib/backends/tensorrt/limits.js";
import { parseShapeOptions, profilesFor, type EngineShapes } from "../../lib/backends/tensorrt/profiles.js";
import { locateModelFolder } from "../../lib/model/folder.js";
import type { NativeLoadResult } from "../../lib/native/load.js";
import type { NativeBinding } from "../../lib/native/types.js";
import type { ModelIo } from "../../lib/model/graph-io.js";
import { healthyNativeInfo } from "../fixtures/native/info.js";

const TINY = join(process.cwd(), "models", "tiny-sd");

/** A loader result around a binding object with (or without) the TensorRT module. */
function loaded(withTensorRt = true): NativeLoadResult {
  const binding = { info: () => healthyNativeInfo(), Denoiser: function Denoiser() {} } as unknown as NativeBinding & { tensorrt?: unknown };
  if (withTensorRt) binding.tensorrt = { buildEngine: () => undefined, loadEngine: () => undefined };
  return { loaded: true, binding, path: "/x/sd_trt.node" };
}

describe("is TensorRT usable here, and why not", () => {
  test("everything present: usable for running and for building", () => {
    const run = assessTensorRt(loaded(), healthyNativeInfo(), "run");
    expect(run.usable).toBe(true);
    expect(run.problems).toEqual([]);
    expect(run.reason).toContain("libnvinfer.so.11 11.1.0 loaded");
    expect(run.binding).toBeDefined();
    expect(assessTensorRt(loaded(), healthyNativeInfo(), "build").usable).toBe(true);
  });

  test("no addon: the loader's diagnosis", () => {
    const failure: NativeLoadResult = {
      loaded: false,
      attempts: [{ source: "node-gyp-build", error: "No native build was found for platform=linux" }],
      solutions: ["Build the addon: `npm run build:native`"],
      message: "",
    };
    const a = assessTensorRt(failure, undefined, "run");
    expect(a.usable).toBe(false);
    expect(a.problems).toEqual(["addon: not loaded: No native build was found for platform=linux"]);
    expect(a.fixes[0]).toContain("npm run build:native");
  });

  test("built without TensorRT headers", () => {
    const a = assessTensorRt(loaded(false), healthyNativeInfo({ tensorrtCompiledIn: false, tensorrt: null, tensorrtError: "TensorRT support was not compiled in (the addon was built without TensorRT headers)" }), "run");
    expect(a.usable).toBe(false);
    expect(a.problems).toEqual(["tensorrt: TensorRT support was not compiled in (the addon was built without TensorRT headers)"]);
    expect(a.fixes).toEqual([expect.stringContaining("TENSORRT_ROOT=/path/to/TensorRT npm run build:native")]);
  });

  test("compiled in, but libnvinfer is not installed", () => {
    const a = assessTensorRt(
      loaded(),
      healthyNativeInfo({
        tensorrt: {
          compiledVersion: "11.1.0",
          infer: { loaded: false, error: "libnvinfer.so.11: cannot open shared object file: No such file or directory", attempts: ["libnvinfer.so.11", "libnvinfer.so"] },
          parser: { loaded: false, error: "libnvonnxparser.so.11: cannot open shared object file", attempts: ["libnvonnxparser.so.11"] },
        },
      }),
      "run",
    );
    expect(a.usable).toBe(false);
    expect(a.problems).toEqual(["tensorrt-runtime: libnvinfer could not be loaded: libnvinfer.so.11: cannot open shared object file: No such file or directory"]);
    expect(a.fixes[0]).toMatch(/Install the TensorRT 11\.x runtime and make libnvinfer\.so\.11 visible/);
  });

  test("the ONNX parser is needed to build, not to run", () => {
    const noParser = healthyNativeInfo({
      tensorrt: {
        compiledVersion: "11.1.0",
        infer: { loaded: true, library: "libnvinfer.so.11", version: "11.1.0" },
        parser: { loaded: false, error: "libnvonnxparser.so.11: cannot open shared object file" },
      },
    });
    expect(assessTensorRt(loaded(), noParser, "run").usable).toBe(true);
    const build = assessTensorRt(loaded(), noParser, "build");
    expect(build.usable).toBe(false);
    expect(build.problems).toEqual(["onnx-parser: libnvonnxparser could not be loaded: libnvonnxparser.so.11: cannot open shared object file"]);
  });

  test("no driver, no GPU, or a GPU older than Ampere", () => {
    const noDriver = assessTensorRt(loaded(), healthyNativeInfo({ cudaDriverVersion: 0, cudaDriverError: "CUDA driver version is insufficient", devices: [], deviceError: "no CUDA-capable device" }), "run");
    expect(noDriver.problems.map((p) => p.split(":")[0])).toEqual(["driver", "gpu"]);
    const old = assessTensorRt(loaded(), healthyNativeInfo({ devices: [{ index: 0, name: "Tesla T4", computeCapability: "7.5", totalMemory: 16e9, freeMemory: null, multiprocessors: 40 }] }), "run");
    expect(old.usable).toBe(false);
    expect(old.problems[0]).toMatch(/^gpu: Tesla T4 \(sm 7\.5\): no kernels for sm_75/);
  });

  test("an addon claiming TensorRT without its module is not usable", () => {
    const a = assessTensorRt(loaded(false), healthyNativeInfo(), "run");
    expect(a.usable).toBe(false);
    expect(a.problems).toEqual(["tensorrt: the addon reports TensorRT but has no `tensorrt` module"]);
  });
});

describe("on this machine (no GPU, no TensorRT)", () => {
  test("isUsable says no, and why", async () => {
    const { usable, reason } = await TensorRtBackend.isUsable();
    expect(usable).toBe(false);
    expect(reason).toMatch(/(addon|cuda|driver|gpu|tensorrt|tensorrt-runtime): /);
    expect(checkTensorRt("run").problems.length).toBeGreaterThan(0);
  });

  test("loading the backend fails with the diagnosis", async () => {
    let error: unknown;
    try {
      await TensorRtBackend.load(TINY);
    } catch (e) {
      error = e;
    }
    expect(error).toBeInstanceOf(TensorRtUnavailableError);
    expect((error as TensorRtUnavailableError).code).toBe("ERR_TENSORRT_UNAVAILABLE");
    expect((error as Error).message).toMatch(/^cannot load TensorRT engines: TensorRT is not usable on this machine\n {2}- /);
    expect((error as TensorRtUnavailableError).fixes.length).toBeGreaterThan(0);
  });

  test("backend auto-selection falls back to the CPU and says why TensorRT was not used", async () => {
    const folder = await locateModelFolder(TINY);
    const auto = await loadBackend(folder, "auto");
    try {
      expect(auto.backend.name).toBe("cpu");
      expect(auto.reason).toMatch(/^auto: TensorRT is not usable \(.+\); using the CPU$/);
    } finally {
      await auto.backend.dispose();
    }
    await expect(loadBackend(folder, "tensorrt")).rejects.toThrow(/the TensorRT backend cannot run here: /);
  });

  test("the default engine folder is engines/<model folder name>", () => {
    expect(defaultEnginesDir("/models/sd15")).toBe(join(process.cwd(), "engines", "sd15"));
  });
});

/** Engine shape info as a built engine would report it, from the tiny-sd contracts. */
function engineShapes(shapes: EngineShapes): Record<"text_encoder" | "unet" | "vae_decoder", EngineShapeInfo> {
  const contracts: Record<"text_encoder" | "unet" | "vae_decoder", ModelIo> = {
    text_encoder: { role: "text_encoder", idsName: "input_ids", idsType: "int32", hiddenName: "last_hidden_state", hiddenSize: 32 },
    unet: { role: "unet", sampleName: "sample", timestepName: "timestep", timestepType: "float32", timestepLayout: "single", contextName: "encoder_hidden_states", outputName: "out_sample", contextSize: 32 },
    vae_decoder: { role: "vae_decoder", latentName: "latent_sample", imageName: "sample" },
  };
  const declared = {
    input_ids: ["batch_size", "sequence_length"],
    sample: ["batch_size", 4, "height", "width"],
    timestep: ["steps"],
    encoder_hidden_states: ["batch_size", "sequence_length", 32],
    latent_sample: ["batch_size", 4, "latent_height", "latent_width"],
  };
  const io = (names: string[]) => names.map((name) => ({ name, mode: "input" as const, dtype: "float32", shape: declared[name as keyof typeof declared].map((d) => (typeof d === "number" ? d : -1)) }));
  const make = (role: "text_encoder" | "unet" | "vae_decoder", inputs: string[]): EngineShapeInfo => ({
    contract: contracts[role],
    profiles: profilesFor(contracts[role], shapes, { file: role, declared, hiddenSize: 32 }),
    io: io(inputs),
  });
  return {
    text_encoder: make("text_encoder", ["input_ids"]),
    unet: make("unet", ["sample", "timestep", "encoder_hidden_states"]),
    vae_decoder: make("vae_decoder", ["latent_sample"]),
  };
}

describe("limits from the engines' profiles", () => {
  test("static batch 1-4 at 512x512", () => {
    expect(limitsFromEngines(engineShapes(parseShapeOptions({ batch: "1-4", size: "512x512" })))).toEqual({
      maxBatch: 4,
      minWidth: 512,
      maxWidth: 512,
      minHeight: 512,
      maxHeight: 512,
      sizeMultiple: 8,
      canEncodeImages: false,
      canObserveLatents: false,
      fractionalTimesteps: true,
      maxPromptChunks: 3,
    });
    expect(limitsFromEngines(engineShapes(parseShapeOptions({ size: "512x512", maxPromptChunks: 1 }))).maxPromptChunks).toBe(1);
  });

  test("dynamic sizes become ranges; a batch range may start above 1", () => {
    const dynamic = limitsFromEngines(engineShapes(parseShapeOptions({ batch: "1-2", size: "512x512-768x1024", dynamic: true })));
    expect(dynamic).toMatchObject({ maxBatch: 2, minWidth: 512, maxWidth: 768, minHeight: 512, maxHeight: 1024 });
    const from2 = engineShapes(parseShapeOptions({ batch: "2-4", size: "512x512" }));
    expect(limitsFromEngines(from2).maxBatch).toBe(4);
    expect(smallestBatch(from2)).toBe(2);
    expect(smallestBatch(engineShapes(parseShapeOptions({ batch: "1-4", size: "512x512" })))).toBe(1);
  });

  test("the UNet batch without guidance and the text-encoder rows", () => {
    const statics = engineShapes(parseShapeOptions({ batch: "1-2", size: "512x512" }));
    expect(unetAccepts(statics.unet, 2, 64, 64)).toBe(true); // CFG batch of one image
    expect(unetAccepts(statics.unet, 1, 64, 64)).toBe(false); // no guidance: runs as [cond; cond]
    expect(unetAccepts(statics.unet, 2, 96, 64)).toBe(false);
    // Rows are prompt chunks: from 2B up to 2B · 3 chunks per profile.
    expect(textRowsFor(statics.text_encoder, 1)).toBe(2); // padded to a profile's row count
    expect(textRowsFor(statics.text_encoder, 5)).toBe(5);
    expect(textRowsFor(statics.text_encoder, 12)).toBe(12);
    expect(textRowsFor(statics.text_encoder, 13)).toBeUndefined();
    const dynamic = engineShapes(parseShapeOptions({ batch: "1-2", size: "512x512", dynamic: true }));
    expect(unetAccepts(dynamic.unet, 1, 64, 64)).toBe(true);
    expect(textRowsFor(dynamic.text_encoder, 3)).toBe(3);
  });

  test("a prompt and negative prompt of different lengths: each UNet call takes the batch where a profile does, else the guidance batch", () => {
    // Static --batch 1-2: profiles of UNet batch 2 and 4, text lengths 77 … 231.
    const statics = engineShapes(parseShapeOptions({ batch: "1-2", size: "512x512" }));
    expect(splitCallRows(statics.unet, 1, 64, 64, [77, 154])).toBe(2); // batch 1 is not a profile: each call computes its rows twice
    expect(splitCallRows(statics.unet, 2, 64, 64, [77, 231])).toBe(2); // the batch-1 profile's 2 rows hold both images
    expect(splitCallRows(statics.unet, 2, 64, 64, [77, 308])).toBeUndefined(); // longer than --max-prompt-chunks 3
    expect(splitCallRows(statics.unet, 1, 96, 64, [77, 154])).toBeUndefined(); // a size no profile has
    const dynamic = engineShapes(parseShapeOptions({ batch: "1-2", size: "512x512", dynamic: true, maxPromptChunks: 4 }));
    expect(splitCallRows(dynamic.unet, 1, 64, 64, [77, 308])).toBe(1);
  });
});
