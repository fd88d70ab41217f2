import { describe, expect, test, beforeAll, afterAll } from "@jest/globals";
import { mkdir, mkdtemp, readFile, rm, writeFile } from "node:fs/promises";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { ModelFileError, EngineMismatchError } from "../../lib/errors.js";
import { digestFiles } from "../../lib/backends/tensorrt/hash.js";
import { engineLocation, variantName } from "../../lib/backends/tensorrt/layout.js";
import {
  checkManifestTarget,
  rebuildCommand,
  serializeManifest,
  sourceDifferences,
  validateManifest,
  type EngineManifest,
} from "../../lib/backends/tensorrt/manifest.js";
import { parseShapeOptions } from "../../lib/backends/tensorrt/profiles.js";
import { resolveEngines } from "../../lib/backends/tensorrt/resolve.js";

const FIXTURE = join(process.cwd(), "test", "fixtures", "engines", "sd15-sm89-trt10.13.0.manifest.json");
const SCHEMA = join(process.cwd(), "engines", "manifest.schema.json");
const TINY = join(process.cwd(), "models", "tiny-sd");
const RTX4090 = { tensorrtVersion: "10.13.0", gpu: { name: "NVIDIA GeForce RTX 4090", computeCapability: "8.9" } };

async function fixture(): Promise<EngineManifest> {
  return validateManifest(JSON.parse(await readFile(FIXTURE, "utf8")), FIXTURE);
}

function mismatch(fn: () => unknown): EngineMismatchError {
  try {
    fn();
  } catch (error) {
    expect(error).toBeInstanceOf(EngineMismatchError);
    return error as EngineMismatchError;
  }
  throw new Error("expected an EngineMismatchError");
}

describe("manifest validation", () => {
  test("the example manifest is valid and survives serialization", async () => {
    const manifest = await fixture();
    expect(manifest.engines.unet!.profiles).toHaveLength(4);
    expect(validateManifest(JSON.parse(serializeManifest(manifest)), "again.json")).toEqual(manifest);
  });

  test("a manifest from before long prompts (no shapes.promptChunks) describes engines of one 77-token chunk, which the rebuild command keeps", async () => {
    const legacy = JSON.parse(await readFile(FIXTURE, "utf8"));
    delete legacy.shapes.promptChunks;
    const manifest = validateManifest(legacy, "old.json");
    expect(manifest.shapes.promptChunks).toEqual({ min: 1, opt: 1, max: 1 });
    expect(rebuildCommand(manifest, "/e/sd15/sm89-trt10.13.0")).toMatch(/ --max-prompt-chunks 1$/);
  });

  test("the JSON schema requires exactly the fields the validator requires", async () => {
    const schema = JSON.parse(await readFile(SCHEMA, "utf8"));
    const manifest = JSON.parse(await readFile(FIXTURE, "utf8"));
    expect([...schema.required].sort()).toEqual(Object.keys(manifest).sort());
    expect([...schema.$defs.engine.required].sort()).toEqual(Object.keys(manifest.engines.unet).sort());
    expect(schema.properties.format.const).toBe("sd-trt-engines/1");
    // Dropping any required field (top level or engine entry) fails validation, naming the field.
    for (const key of schema.required as string[]) {
      const broken = structuredClone(manifest);
      delete broken[key];
      expect(() => validateManifest(broken, "m.json")).toThrow(new RegExp(`m\\.json is not a valid sd-trt engine manifest: ${key}`));
    }
    for (const key of schema.$defs.engine.required as string[]) {
      const broken = structuredClone(manifest);
      delete broken.engines.unet[key];
      expect(() => validateManifest(broken, "m.json")).toThrow(new RegExp(`engines\\.unet\\.${key}`));
    }
  });

  test("wrong values are named with their path", async () => {
    const manifest = JSON.parse(await readFile(FIXTURE, "utf8"));
    // biome-ignore lint/suspicious/noExplicitAny: each case breaks the raw JSON in its own way.
    const cases: Array<[(m: any) => void, RegExp]> = [
      [(m) => (m.format = "sd-trt-engines/0"), /format: must be "sd-trt-engines\/1"/],
      [(m) => (m.tensorrt.version = "10.13"), /tensorrt\.version: must match/],
      [(m) => (m.gpu.computeCapability = "sm89"), /gpu\.computeCapability: must match/],
      [(m) => (m.shapes.batch = { min: 4, opt: 1, max: 4 }), /shapes\.batch: must have min ≤ opt ≤ max/],
      [(m) => (m.engines.unet.planSha256 = "xyz"), /engines\.unet\.planSha256: must match/],
      [(m) => (m.engines.unet.precision = "int8"), /engines\.unet\.precision: must be "fp16" or "fp32"/],
      [(m) => (m.engines.unet.contract.timestepLayout = "vector"), /engines\.unet\.contract\.timestepLayout/],
      [(m) => (m.engines.unet.profiles[0].sample.max = [2, 4]), /profiles\[0\]\.sample: min, opt and max must have the same rank/],
      [(m) => delete m.engines.vae_decoder, /engines\.vae_decoder: is missing/],
      [(m) => (m.engines.clip = m.engines.unet), /engines\.clip: is not a model role/],
      [(m) => (m.createdAt = "yesterday"), /createdAt: must be an ISO 8601 date/],
    ];
    for (const [edit, message] of cases) {
      const broken = structuredClone(manifest);
      edit(broken);
      expect(() => validateManifest(broken, "m.json")).toThrow(ModelFileError);
      expect(() => validateManifest(broken, "m.json")).toThrow(message);
    }
  });
});

describe("manifest against this machine", () => {
  test("the same GPU and TensorRT load without warnings", async () => {
    expect(checkManifestTarget(await fixture(), "/e/sd15/sm89-trt10.13.0", RTX4090)).toEqual({ warnings: [] });
  });

  test("TensorRT build numbers do not matter, versions do", async () => {
    const manifest = await fixture();
    expect(checkManifestTarget(manifest, "/e/sd15/sm89-trt10.13.0", { ...RTX4090, tensorrtVersion: "10.13.0.35" }).warnings).toEqual([]);
    const error = mismatch(() => checkManifestTarget(manifest, "/e/sd15/sm89-trt10.13.0", { ...RTX4090, tensorrtVersion: "10.13.3" }));
    expect(error.differences).toEqual([{ field: "TensorRT version", built: "10.13.0", current: "10.13.3" }]);
  });

  test("another GPU architecture and TensorRT: every difference and the rebuild command", async () => {
    const manifest = await fixture();
    const e = mismatch(() =>
      checkManifestTarget(manifest, "/e/sd15/sm89-trt10.13.0", { tensorrtVersion: "11.1.0", gpu: { name: "NVIDIA H100 80GB HBM3", computeCapability: "9.0" } }),
    );
    expect(e.code).toBe("ERR_ENGINE_MISMATCH");
    expect(e.differences.map((d) => d.field)).toEqual(["TensorRT version", "GPU compute capability"]);
    expect(e.message).toContain("TensorRT version: built for 10.13.0; here: 11.1.0");
    expect(e.message).toContain("GPU compute capability: built for 8.9 (NVIDIA GeForce RTX 4090); here: 9.0 (NVIDIA H100 80GB HBM3)");
    expect(e.rebuildCommand).toBe("sd-trt build --model /models/stable-diffusion-v1-5 --out /e/sd15 --batch 1-4 --size 512x512");
    expect(e.message.endsWith(`Rebuild them with:\n  ${e.rebuildCommand}`)).toBe(true);
  });

  test("another GPU model of the same architecture loads with a warning", async () => {
    const { warnings } = checkManifestTarget(await fixture(), "/e/sd15/sm89-trt10.13.0", { ...RTX4090, gpu: { name: "NVIDIA L40S", computeCapability: "8.9" } });
    expect(warnings).toHaveLength(1);
    expect(warnings[0]).toMatch(/built on a NVIDIA GeForce RTX 4090 and run on a NVIDIA L40S/);
  });

  test("rebuild commands quote odd paths and carry --dynamic / --fp32-vae", async () => {
    const manifest = await fixture();
    manifest.model.dir = "/my models/sd 1.5";
    manifest.shapes = parseShapeOptions({ batch: "1-2", size: "512x512-768x768", dynamic: true });
    expect(rebuildCommand(manifest, "/e/sd15/sm89-trt10.13.0", { fp32Vae: true })).toBe(
      "sd-trt build --model '/my models/sd 1.5' --out /e/sd15 --batch 1-2 --size 512x512-768x768 --dynamic --fp32-vae",
    );
  });

  test("source differences name the changed file, the shapes and the VAE precision", async () => {
    const manifest = await fixture();
    const sources = Object.fromEntries(Object.entries(manifest.engines).map(([role, e]) => [role, e.source.files]));
    expect(sourceDifferences(manifest, { sources, shapes: manifest.shapes, fp32Vae: false })).toEqual([]);
    const changed = structuredClone(sources);
    changed.unet![1] = { ...changed.unet![1]!, sha256: "f".repeat(64) };
    const diffs = sourceDifferences(manifest, { sources: changed, shapes: parseShapeOptions({ batch: "1-2" }), fp32Vae: true });
    expect(diffs.map((d) => d.field)).toEqual(["model files of the unet", "shapes", "VAE precision"]);
    expect(diffs[0]!.current).toContain("unet/weights.pb (sha256 ffffffffffff…)");
  });
});

describe("finding the engines of a model", () => {
  let root: string;
  let tinyManifest: EngineManifest;
  beforeAll(async () => {
    root = await mkdtemp(join(tmpdir(), "sd-trt-resolve-"));
    // A manifest of the real tiny-sd files (hashes computed here), as `sd-trt build` writes it.
    const base = await fixture();
    const files = async (role: string) => digestFiles(TINY, [join(TINY, role, "model.onnx")]);
    tinyManifest = {
      ...base,
      model: { dir: TINY, hiddenSize: 32, scalingFactor: 0.18215 },
      engines: {
        text_encoder: { ...base.engines.text_encoder!, source: { onnx: "text_encoder/model.onnx", files: await files("text_encoder") } },
        unet: { ...base.engines.unet!, source: { onnx: "unet/model.onnx", files: await files("unet") } },
        vae_decoder: { ...base.engines.vae_decoder!, source: { onnx: "vae_decoder/model.onnx", files: await files("vae_decoder") } },
      },
    };
    const location = engineLocation(join(root, "tiny-sd"), "8.9", "10.13.0");
    await mkdir(location.variantDir, { recursive: true });
    await writeFile(location.manifest, serializeManifest(tinyManifest));
  });
  afterAll(async () => {
    await rm(root, { recursive: true, force: true });
  });

  test("picks this GPU's variant folder under engines/<model-id>", async () => {
    const found = await resolveEngines(join(root, "tiny-sd"), TINY, RTX4090);
    expect(found.variantDir).toBe(join(root, "tiny-sd", variantName("8.9", "10.13.0")));
    expect(found.variantDir.endsWith("sm89-trt10.13.0")).toBe(true);
    expect(found.manifest.model.hiddenSize).toBe(32);
    // A variant folder can also be named directly.
    expect((await resolveEngines(found.variantDir, TINY, RTX4090)).variantDir).toBe(found.variantDir);
  });

  test("engines for other GPUs only: lists them and says how to build for this one", async () => {
    let error: unknown;
    try {
      await resolveEngines(join(root, "tiny-sd"), TINY, { tensorrtVersion: "11.1.0", gpu: { name: "NVIDIA H100", computeCapability: "9.0" } });
    } catch (e) {
      error = e;
    }
    expect(error).toBeInstanceOf(EngineMismatchError);
    const message = (error as Error).message;
    expect(message).toContain("were built for other GPUs or TensorRT versions");
    expect(message).toContain("built for sm89-trt10.13.0 (NVIDIA GeForce RTX 4090, TensorRT 10.13.0); here: sm90-trt11.1.0 (NVIDIA H100, TensorRT 11.1.0)");
    expect((error as EngineMismatchError).rebuildCommand).toBe(`sd-trt build --model ${TINY} --out ${join(root, "tiny-sd")} --batch 1-4 --size 512x512`);
  });

  test("no engines at all: a ModelFileError with the build command", async () => {
    await expect(resolveEngines(join(root, "nothing-here"), TINY, RTX4090)).rejects.toThrow(ModelFileError);
    await expect(resolveEngines(join(root, "nothing-here"), TINY, RTX4090)).rejects.toThrow(
      new RegExp(`no TensorRT engines at .*nothing-here: build them for this GPU with\\n  sd-trt build --model ${TINY}`),
    );
    await mkdir(join(root, "empty"), { recursive: true });
    await expect(resolveEngines(join(root, "empty"), TINY, RTX4090)).rejects.toThrow(/no <gpu-sm>-trt<version>\/manifest\.json/);
  });

  test("engines built from other model files are refused, naming the file", async () => {
    const other = await mkdtemp(join(tmpdir(), "sd-trt-other-model-"));
    try {
      for (const role of ["text_encoder", "unet", "vae_decoder"]) {
        await mkdir(join(other, role), { recursive: true });
        await writeFile(join(other, role, "model.onnx"), await readFile(join(TINY, role, "model.onnx")));
      }
      await writeFile(join(other, "unet", "model.onnx"), new Uint8Array(10));
      let error: unknown;
      try {
        await resolveEngines(join(root, "tiny-sd"), other, RTX4090);
      } catch (e) {
        error = e;
      }
      expect(error).toBeInstanceOf(EngineMismatchError);
      expect((error as EngineMismatchError).differences).toEqual([
        { field: "unet model file unet/model.onnx", built: expect.stringMatching(/^352780 bytes \(sha256 216e7aeb1979…\)$/), current: "10 bytes" },
      ]);
      expect((error as EngineMismatchError).rebuildCommand).toContain(`--model ${other}`);
    } finally {
      await rm(other, { recursive: true, force: true });
    }
  });
});
