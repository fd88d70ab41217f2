/**
 * The tiered public API as a consumer sees it: a project with sd-trt in its node_modules imports
 * the root and each subpath as ESM (node resolves them through the package's `exports` map) and
 * type-checks against their declarations (tsc, NodeNext resolution). Runs on the built dist/.
 */
import { afterAll, beforeAll, describe, expect, test } from "@jest/globals";
import { spawnSync } from "node:child_process";
import { mkdir, mkdtemp, rm, symlink, writeFile } from "node:fs/promises";
import { tmpdir } from "node:os";
import { join, resolve } from "node:path";

const repo = resolve(process.cwd());
let project: string;

beforeAll(async () => {
  project = await mkdtemp(join(tmpdir(), "sd-trt-consumer-"));
  await mkdir(join(project, "node_modules"));
  await symlink(repo, join(project, "node_modules", "sd-trt"), "dir");
  await writeFile(join(project, "package.json"), JSON.stringify({ name: "consumer", type: "module", private: true }));
});

afterAll(async () => {
  await rm(project, { recursive: true, force: true });
});

describe("sd-trt's public tiers from a consumer project", () => {
  test("the root and each subpath resolve as ESM and export their documented names; internals stay private", () => {
    const script = `
      const root = await import("sd-trt");
      const numerics = await import("sd-trt/numerics");
      const engines = await import("sd-trt/engines");
      const native = await import("sd-trt/native");
      const fleet = await import("sd-trt/fleet");
      let internal = "resolved";
      try { await import("sd-trt/dist/pipeline/generation.js"); } catch (e) { internal = e.code; }
      console.log(JSON.stringify({
        root: Object.keys(root).sort(),
        numerics: ["ClipTokenizer", "TorchGenerator", "createScheduler", "runProgram", "packProgram"].filter((n) => typeof numerics[n] !== "function"),
        engines: ["CpuBackend", "TensorRtBackend", "buildEngines", "locateModelFolder", "readManifest"].filter((n) => typeof engines[n] !== "function"),
        native: ["loadNativeBinding", "Denoiser", "collectDoctorReport"].filter((n) => typeof native[n] !== "function"),
        fleet: ["createWorker", "RedisQueueClient", "listWorkers"].filter((n) => typeof fleet[n] !== "function"),
        internal,
      }));`;
    const run = spawnSync(process.execPath, ["--input-type=module", "-e", script], { cwd: project, encoding: "utf8" });
    expect(run.stderr).toBe("");
    const out = JSON.parse(run.stdout) as { root: string[]; numerics: string[]; engines: string[]; native: string[]; fleet: string[]; internal: string };
    expect(out.root).toEqual(
      expect.arrayContaining(["Pipeline", "PipelineService", "SdServer", "SdTrtError", "InvalidOptionError", "VaeOverflowError", "encodeImage", "SCHEDULER_NAMES"]),
    );
    // The root is the service author's surface: the numerics and the native layer live in their tiers.
    expect(out.root).not.toContain("createScheduler");
    expect(out.root).not.toContain("Denoiser");
    expect(out.root.length).toBeLessThan(40);
    // BullMQ stays out of the root: only sd-trt/fleet loads it.
    expect(out.root).not.toContain("RedisQueueClient");
    expect(out).toMatchObject({ numerics: [], engines: [], native: [], fleet: [], internal: "ERR_PACKAGE_PATH_NOT_EXPORTED" });
  });

  test("each tier's types check in a strict NodeNext project", async () => {
    await writeFile(
      join(project, "consumer.ts"),
      `import { Pipeline, PipelineService, InvalidOptionError, type GenerateOptions, type GenerateResult } from "sd-trt";
import { createScheduler, type SamplerProgram, ClipTokenizer } from "sd-trt/numerics";
import { CpuBackend, type Backend, type GenerationJob } from "sd-trt/engines";
import { loadNativeBinding, type DoctorReport } from "sd-trt/native";
import { createWorker, RedisQueueClient, type RedisQueueClientOptions, type FleetWorker } from "sd-trt/fleet";

const options: GenerateOptions = { prompt: "a lighthouse", steps: 4, seed: 1 };
const program: SamplerProgram = createScheduler("euler_a").compile(4);
export async function use(): Promise<GenerateResult> {
  const pipe = await Pipeline.load(undefined, { backend: "cpu" });
  const service = await PipelineService.create(pipe, { ownPipeline: true });
  const backend: Backend = await CpuBackend.load(pipe.modelDir);
  const job: Partial<GenerationJob> = { program };
  void job; void backend; void ClipTokenizer; void loadNativeBinding; void InvalidOptionError;
  const report: DoctorReport | undefined = undefined;
  void report;
  const fleetOptions: RedisQueueClientOptions = { redis: "redis://127.0.0.1:6379", maxQueue: 8 };
  const worker: FleetWorker | undefined = undefined;
  void fleetOptions; void worker; void createWorker; void RedisQueueClient;
  return service.generate(options);
}
`,
    );
    await writeFile(
      join(project, "tsconfig.json"),
      JSON.stringify({
        compilerOptions: {
          module: "NodeNext",
          moduleResolution: "NodeNext",
          target: "ES2022",
          strict: true,
          noEmit: true,
          skipLibCheck: true,
          types: ["node"],
          typeRoots: [join(repo, "node_modules", "@types")],
        },
        files: ["consumer.ts"],
      }),
    );
    const tsc = spawnSync(process.execPath, [join(repo, "node_modules", "typescript", "bin", "tsc"), "-p", "tsconfig.json"], { cwd: project, encoding: "utf8" });
    expect(tsc.stdout + tsc.stderr).toBe("");
    expect(tsc.status).toBe(0);
  });
});
