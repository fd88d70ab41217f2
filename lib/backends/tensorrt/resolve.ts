/**
 * Finds the engines a machine can run: given `engines/<model-id>` (or one variant folder), picks
 * the `<gpu-sm>-trt<version>` folder of this GPU and TensorRT, reads its manifest and checks it —
 * against the machine (TensorRT version, compute capability) and against the model folder the
 * pipeline uses (the ONNX files the engines were built from must still be the same size; a full
 * hash is `sd-trt build`'s job). Every refusal says how to rebuild.
 */
import { readdir, stat } from "node:fs/promises";
import { join, resolve } from "node:path";
import { ModelFileError, EngineMismatchError, type EngineDifference } from "../../errors.js";
import { isVariantName, MANIFEST_FILE, variantName, type EngineRole } from "./layout.js";
import { checkManifestTarget, readManifest, rebuildCommand, type EngineManifest, type RuntimeTarget } from "./manifest.js";

export interface ResolvedEngines {
  variantDir: string;
  manifest: EngineManifest;
  /** Usable, but worth knowing (another GPU model of the same architecture). */
  warnings: string[];
}

async function isFile(path: string): Promise<boolean> {
  try {
    return (await stat(path)).isFile();
  } catch {
    return false;
  }
}

async function isDirectory(path: string): Promise<boolean> {
  try {
    return (await stat(path)).isDirectory();
  } catch {
    return false;
  }
}

function buildHint(modelDir: string, enginesDir: string): string {
  return `sd-trt build --model ${modelDir} --out ${enginesDir} --batch 1 --size 512x512`;
}

/**
 * @param enginesDir `engines/<model-id>` or a variant folder holding manifest.json
 * @param modelDir the model folder the pipeline loads (for the rebuild hint and the file check)
 * @throws ModelFileError when there are no engines; EngineMismatchError when none fit this machine
 *   or the model files changed.
 */
export async function resolveEngines(enginesDir: string, modelDir: string, target: RuntimeTarget): Promise<ResolvedEngines> {
  const dir = resolve(enginesDir);
  let variantDir: string;
  if (await isFile(join(dir, MANIFEST_FILE))) {
    variantDir = dir;
  } else {
    if (!(await isDirectory(dir))) {
      throw new ModelFileError(dir, `no TensorRT engines at ${dir}: build them for this GPU with\n  ${buildHint(modelDir, dir)}`);
    }
    const wanted = variantName(target.gpu.computeCapability, target.tensorrtVersion);
    const variants = (await readdir(dir)).filter(isVariantName).sort();
    if (variants.includes(wanted) && (await isFile(join(dir, wanted, MANIFEST_FILE)))) {
      variantDir = join(dir, wanted);
    } else {
      const built: EngineManifest[] = [];
      for (const v of variants) {
        try {
          built.push(await readManifest(join(dir, v, MANIFEST_FILE)));
        } catch {
          // an unreadable variant is not a candidate
        }
      }
      if (built.length === 0) {
        throw new ModelFileError(dir, `no TensorRT engines in ${dir} (no <gpu-sm>-trt<version>/manifest.json): build them for this GPU with\n  ${buildHint(modelDir, dir)}`);
      }
      const differences: EngineDifference[] = [
        {
          field: "GPU and TensorRT",
          built: built.map((m) => `${variantName(m.gpu.computeCapability, m.tensorrt.version)} (${m.gpu.name}, TensorRT ${m.tensorrt.version})`).join(", "),
          current: `${wanted} (${target.gpu.name}, TensorRT ${target.tensorrtVersion})`,
        },
      ];
      throw new EngineMismatchError(dir, differences, rebuildCommand(built[built.length - 1]!, join(dir, wanted)), `the TensorRT engines in ${dir} were built for other GPUs or TensorRT versions`);
    }
  }
  const manifest = await readManifest(join(variantDir, MANIFEST_FILE));
  const { warnings } = checkManifestTarget(manifest, variantDir, target);
  await checkModelFiles(manifest, variantDir, resolve(modelDir));
  return { variantDir, manifest, warnings };
}

/** The model files each engine was built from must still be there with the same size. */
async function checkModelFiles(manifest: EngineManifest, variantDir: string, modelDir: string): Promise<void> {
  const differences: EngineDifference[] = [];
  for (const [role, entry] of Object.entries(manifest.engines) as [EngineRole, NonNullable<EngineManifest["engines"][EngineRole]>][]) {
    for (const file of entry.source.files) {
      const path = join(modelDir, file.path);
      let size: number | undefined;
      try {
        size = (await stat(path)).size;
      } catch {
        size = undefined;
      }
      if (size !== file.bytes) {
        differences.push({
          field: `${role} model file ${file.path}`,
          built: `${file.bytes} bytes (sha256 ${file.sha256.slice(0, 12)}…)`,
          current: size === undefined ? `missing in ${modelDir}` : `${size} bytes`,
        });
      }
    }
  }
  if (differences.length > 0) {
    const command = rebuildCommand({ ...manifest, model: { ...manifest.model, dir: modelDir } }, variantDir);
    throw new EngineMismatchError(variantDir, differences, command, `the TensorRT engines in ${variantDir} were built from other model files than ${modelDir}`);
  }
}
