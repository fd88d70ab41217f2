/** Typed errors of the engine builder and the TensorRT backend. */
import { SdTrtError } from "../../errors.js";

/** One way in which built engines do not fit this machine (or their model). */
export interface EngineDifference {
  /** What differs: "tensorrt", "computeCapability", "gpu", "model:unet", "shapes", … */
  field: string;
  /** What the engines were built with / for. */
  built: string;
  /** What this machine or model folder has now. */
  current: string;
}

/**
 * Engines that cannot be used here: built for another GPU or TensorRT version, or from other
 * model files. The message lists every difference and the command that rebuilds them.
 */
export class EngineMismatchError extends SdTrtError {
  readonly enginesDir: string;
  readonly differences: EngineDifference[];
  readonly rebuildCommand: string;
  constructor(enginesDir: string, differences: EngineDifference[], rebuildCommand: string, lead?: string) {
    const lines = differences.map((d) => `  - ${d.field}: built for ${d.built}; here: ${d.current}`);
    super(
      "ERR_ENGINE_MISMATCH",
      `${lead ?? `the TensorRT engines in ${enginesDir} do not match this machine`}:\n${lines.join("\n")}\n` +
        `Rebuild them with:\n  ${rebuildCommand}`,
    );
    this.enginesDir = enginesDir;
    this.differences = differences;
    this.rebuildCommand = rebuildCommand;
  }
}

/**
 * TensorRT cannot be used: the addon is missing or was built without TensorRT, libnvinfer is
 * not installed, or there is no GPU. `problems` says what is missing and `fixes` what to do
 * (the same diagnosis `sd-trt doctor` prints).
 */
export class TensorRtUnavailableError extends SdTrtError {
  readonly problems: string[];
  readonly fixes: string[];
  constructor(what: string, problems: string[], fixes: string[]) {
    const body = [`${what}: TensorRT is not usable on this machine`, ...problems.map((p) => `  - ${p}`)];
    if (fixes.length > 0) body.push("What to do:", ...fixes.map((f) => `  - ${f}`));
    super("ERR_TENSORRT_UNAVAILABLE", body.join("\n"));
    this.problems = problems;
    this.fixes = fixes;
  }
}

/** An engine build failed (ONNX parse error, TensorRT builder error). */
export class EngineBuildError extends SdTrtError {
  readonly model: string;
  constructor(model: string, message: string, options?: { cause?: unknown }) {
    super("ERR_ENGINE_BUILD", message, options);
    this.model = model;
  }
}

/** The fp16 VAE produced NaN/Inf: the decoded image would be black or garbage. */
export class VaeOverflowError extends SdTrtError {
  readonly rebuildCommand: string;
  constructor(message: string, rebuildCommand: string) {
    super("ERR_VAE_NAN", `${message}. Rebuild the VAE engine in fp32:\n  ${rebuildCommand}`);
    this.rebuildCommand = rebuildCommand;
  }
}
