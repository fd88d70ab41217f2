/**
 * The addon's TensorRT module on a machine without TensorRT or a GPU: it loads, reports what it
 * was compiled against and why libnvinfer is missing, and every entry point fails with a typed
 * error instead of crashing. Runs when the loaded addon was built with TensorRT headers
 * (`TENSORRT_ROOT=… npm run build:native`, or SDTRT_ADDON pointing at such a build); otherwise the
 * tests are skipped with the reason.
 */
import { describe, expect, test, beforeAll, afterAll } from "@jest/globals";
import { execFileSync, spawnSync } from "node:child_process";
import { mkdtemp, rm, writeFile } from "node:fs/promises";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { loadNativeBinding, callNativeAsync } from "../../lib/native/load.js";
import { tensorRtBindingOf, type TensorRtBinding } from "../../lib/native/tensorrt-types.js";
import { NativeError } from "../../lib/errors.js";

const load = loadNativeBinding();
const trt: TensorRtBinding | undefined = load.loaded ? tensorRtBindingOf(load.binding) : undefined;
const why = !load.loaded ? "the native addon is not built" : "the native addon was built without TensorRT headers (TENSORRT_ROOT)";
const withTrt = trt ? describe : describe.skip;

withTrt(`TensorRT module of the addon, without TensorRT installed${trt ? "" : ` (skipped: ${why})`}`, () => {
  // Evaluated only when the suite runs (describe bodies run even when skipped).
  const binding = trt as TensorRtBinding;
  const runtime = trt ? binding.runtimeInfo() : {};
  const libnvinferMissing = runtime.infer?.loaded !== true;

  test("reports the headers it was compiled with and each library it tried", () => {
    expect(runtime.compiledVersion).toMatch(/^\d+\.\d+\.\d+$/);
    const major = runtime.compiledVersion!.split(".")[0];
    expect(runtime.infer?.attempts?.[0]).toBe(`libnvinfer.so.${major}`);
    expect(runtime.parser?.attempts?.[0]).toBe(`libnvonnxparser.so.${major}`);
    if (libnvinferMissing) expect(runtime.infer?.error).toMatch(/libnvinfer\.so\.\d+: cannot open shared object file/);
    // The same object is what info() hands to `sd-trt doctor`.
    if (load.loaded) expect(load.binding.info().tensorrt).toEqual(runtime);
  });

  (libnvinferMissing ? test : test.skip)("building and loading engines reject with ERR_TENSORRT_MISSING and what to install", async () => {
    const job = binding.buildEngine({ onnxPath: join(process.cwd(), "models", "tiny-sd", "unet", "model.onnx"), profiles: [{}] });
    expect(typeof job.cancel).toBe("function");
    job.cancel(); // harmless after the fact too
    let error: unknown;
    try {
      await callNativeAsync(() => job.promise);
    } catch (e) {
      error = e;
    }
    // Cancelled before it started, or TensorRT missing: either way a typed error, not a crash.
    expect(error).toBeInstanceOf(Error);
    const second = binding.buildEngine({ onnxPath: "/nonexistent.onnx", profiles: [{}] });
    await expect(callNativeAsync(() => second.promise)).rejects.toMatchObject({ code: "ERR_TENSORRT_MISSING", stage: "engine-build" });
    await expect(callNativeAsync(() => second.promise)).rejects.toThrow(/could not be loaded: .*Install TensorRT \d+\.x/);
    await expect(callNativeAsync(() => binding.loadEngine(new Uint8Array([1, 2, 3]), { name: "unet" }))).rejects.toBeInstanceOf(NativeError);
    await expect(callNativeAsync(() => binding.loadEngine(new Uint8Array([1, 2, 3]), { name: "unet" }))).rejects.toMatchObject({
      code: "ERR_TENSORRT_MISSING",
      stage: "engine-load",
    });
  });

  test("argument types are checked with TypeErrors naming the option", () => {
    expect(() => binding.buildEngine({ onnxPath: 3 } as never)).toThrow(/options\.onnxPath must be a string, got 3 \(number\)/);
    expect(() => binding.buildEngine({ onnxPath: "x.onnx", profiles: [] })).toThrow(/options\.profiles must be a non-empty array/);
    expect(() => binding.buildEngine({ onnxPath: "x.onnx", profiles: [{ sample: { min: [1], opt: [1, 2], max: [1] } }] })).toThrow(
      /options\.profiles\[0\]\.sample: min, opt and max must have the same rank/,
    );
    expect(() => binding.buildEngine({ onnxPath: "x.onnx", profiles: [{}], optimizationLevel: 9 })).toThrow(/options\.optimizationLevel must be an integer from 0 to 5, got 9/);
    expect(() => binding.loadEngine("plan" as never, { name: "x" })).toThrow(/plan must be a Uint8Array or Buffer/);
    expect(() => binding.concatEmbeddings([{} as never], { dtype: "float32" })).toThrow(/parts\[0\] must be a DeviceTensor/);
    expect(() => binding.concatEmbeddings([], { dtype: "float32" })).toThrow(/parts must be a non-empty array of DeviceTensor/);
  });

  test("engine, context and UNet objects cannot be made from JS", () => {
    const ctors = binding as unknown as Record<string, new (...args: unknown[]) => unknown>;
    expect(() => new ctors.TrtEngine!()).toThrow(/created by tensorrt\.loadEngine\(\), not with new/);
    expect(() => new ctors.TrtContext!()).toThrow(/created by engine\.createContext\(\), not with new/);
    expect(() => new ctors.TrtUnet!()).toThrow(/created by context\.createUnet\(\), not with new/);
    expect(() => new binding.DeviceScratch("big" as never)).toThrow(/bytes must be a number/);
  });

  test("a Denoiser refuses an object that is not a TensorRT UNet", () => {
    if (!load.loaded) return;
    expect(() => new load.binding.Denoiser({ unet: {} })).toThrow(/options\.unet must be "analytic" or a TensorRT UNet engine object/);
  });
});

/**
 * The dlopen loader against real shared objects standing in for libnvinfer / libnvonnxparser: they
 * export the entry points the loader looks up (getInferLibVersion, the *_INTERNAL factories), so
 * the version check and the factory failures are exercised for real, in a child process (the
 * loader runs once per process and LD_LIBRARY_PATH is read at start-up).
 */
const compiler = ["cc", "gcc"].find((c) => spawnSync(c, ["--version"]).status === 0);
const withLibraries = trt && load.loaded && compiler ? describe : describe.skip;

withLibraries("libnvinfer found at run time", () => {
  const major = Number((trt?.runtimeInfo().compiledVersion ?? "0").split(".")[0]);
  let dir: string;

  async function fakeLibraries(version: number): Promise<string> {
    const libs = await mkdtemp(join(dir, "libs-"));
    const source = join(libs, "fake.c");
    await writeFile(
      source,
      [
        `int getInferLibVersion(void) { return ${version}; }`,
        "void* createInferRuntime_INTERNAL(void* logger, int version) { (void)logger; (void)version; return 0; }",
        "void* createInferBuilder_INTERNAL(void* logger, int version) { (void)logger; (void)version; return 0; }",
        `int getNvOnnxParserVersion(void) { return ${version}; }`,
        "void* createNvOnnxParser_INTERNAL(void* n, void* l, int v) { (void)n; (void)l; (void)v; return 0; }",
      ].join("\n"),
    );
    for (const name of [`libnvinfer.so.${major}`, `libnvonnxparser.so.${major}`]) {
      execFileSync(compiler!, ["-shared", "-fPIC", "-o", join(libs, name), source]);
    }
    return libs;
  }

  function inChild(libs: string, script: string): Record<string, unknown> {
    const addon = (load as { path: string }).path;
    const run = spawnSync(process.execPath, ["-e", `const b = require(${JSON.stringify(addon)}); (async () => { ${script} })().then((r) => console.log(JSON.stringify(r)), (e) => { console.error(e); process.exit(1); });`], {
      env: { ...process.env, LD_LIBRARY_PATH: libs },
      encoding: "utf8",
    });
    expect(run.stderr).toBe("");
    return JSON.parse(run.stdout) as Record<string, unknown>;
  }

  beforeAll(async () => {
    dir = await mkdtemp(join(tmpdir(), "sd-trt-fake-trt-"));
  });
  afterAll(async () => {
    await rm(dir, { recursive: true, force: true });
  });

  test("a library of another major version is refused, saying which versions", async () => {
    const libs = await fakeLibraries((major - 1) * 10000 + 5 * 100 + 1);
    const info = inChild(libs, "return b.tensorrt.runtimeInfo();") as { infer: { loaded: boolean; error: string; library: string; version: string } };
    expect(info.infer.loaded).toBe(false);
    expect(info.infer.library).toBe(`libnvinfer.so.${major}`);
    expect(info.infer.version).toBe(`${major - 1}.5.1`);
    expect(info.infer.error).toBe(
      `libnvinfer.so.${major} is TensorRT ${major - 1}.5.1, but this addon was compiled for TensorRT ${major}.x (headers ${trt!.runtimeInfo().compiledVersion})`,
    );
  });

  test("a library of the right major version loads; the builder then needs a GPU", async () => {
    const libs = await fakeLibraries(major * 10000 + 100);
    const result = inChild(
      libs,
      `const info = b.tensorrt.runtimeInfo();
       const build = await b.tensorrt.buildEngine({ onnxPath: "x.onnx", profiles: [{}] }).promise.catch((e) => ({ code: e.code, stage: e.stage, message: e.message }));
       const load = await b.tensorrt.loadEngine(new Uint8Array(4), { name: "unet" }).catch((e) => ({ code: e.code, stage: e.stage }));
       return { info, build, load };`,
    ) as { info: { infer: { loaded: boolean; version: string }; parser: { loaded: boolean } }; build: { code: string; stage: string; message: string }; load: { code: string; stage: string } };
    expect(result.info.infer).toMatchObject({ loaded: true, version: `${major}.1.0` });
    expect(result.info.parser.loaded).toBe(true);
    // No GPU here: past the TensorRT checks, CUDA is the next thing to fail, with its status name.
    expect(result.build).toMatchObject({ code: "ERR_CUDA", stage: "engine-build" });
    expect(result.build.message).toMatch(/\(cuda\w+\)$/);
    expect(result.load).toMatchObject({ code: "ERR_CUDA", stage: "engine-load" });
  });
});
