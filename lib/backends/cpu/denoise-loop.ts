/**
 * The CPU denoise loop: a sampler program driven by the UNet with classifier-free guidance, the
 * way diffusers feeds an ONNX UNet. It runs on the ONNX Runtime worker thread, next to the UNet
 * session (`ort-worker.ts`), so a generation crosses the thread boundary once for the whole loop
 * instead of once per model evaluation.
 *
 * Per evaluation j (diffusers `StableDiffusionPipeline.__call__` / `OnnxStableDiffusionPipeline`):
 * - `sample = cat([x, x])` with guidance, `x` without, where x = cIn_j · x_j;
 * - `timestep` = t_j cast to the graph's type in the graph's layout (`timestepTensor`);
 * - `encoder_hidden_states = cat([uncond, cond])`, uncond first (prepared by the caller);
 * - m_j = u + g·(c − u) per image in float32 (`combineGuidance`), or the raw output;
 * - the program's update (`ProgramExecution`, the same CPU executor the tests check against
 *   diffusers and the CUDA kernel).
 *
 * Nothing here knows about threads or ONNX Runtime objects: the UNet is a function, and a stop
 * request is a function polled before every evaluation.
 */
import { InvalidArgumentError, AbortError, OnnxRuntimeError, UnetOverflowError } from "../../errors.js";
import { ProgramExecution } from "../../sampler/execute.js";
import type { UnetIo } from "../../model/graph-io.js";
import type { CpuDenoiseJob, HostTensor, } from "./ort-protocol.js";

export type { CpuDenoiseJob, UnetFeedIo } from "./ort-protocol.js";

/** CLIP's token count. */
export const TOKENS = 77;


/**
 * Runs the UNet once on these feeds and returns its output [unetBatch, 4, h, w]. Every call gets
 * the same feed objects, their arrays updated in place.
 */
export type UnetRunner = (feeds: Record<string, HostTensor>) => Promise<Float32Array>;

export interface CpuDenoiseHooks {
  /** Polled before each evaluation; when true the loop stops with an AbortError. */
  stopRequested?: () => boolean;
  /** After evaluation `evalIndex` with x_{evalIndex+1} (a view valid only during the call). */
  onStep?: (evalIndex: number, latents: Float32Array) => void;
}

/** Tensor for the UNet timestep, in the graph's dtype and layout. */
export function timestepTensor(io: Pick<UnetIo, "timestepType" | "timestepLayout">, t: number, unetBatch: number): HostTensor {
  const count = io.timestepLayout === "per-row" ? unetBatch : 1;
  const dims = io.timestepLayout === "scalar" ? [] : [count];
  switch (io.timestepType) {
    case "float32":
      return { type: "float32", dims, data: new Float32Array(count).fill(t) };
    case "float64":
      return { type: "float64", dims, data: new Float64Array(count).fill(t) };
    case "int32":
      return { type: "int32", dims, data: new Int32Array(count).fill(Math.trunc(t)) };
    case "int64":
      return { type: "int64", dims, data: new BigInt64Array(count).fill(BigInt(Math.trunc(t))) };
  }
}

/** Writes t into a tensor made by `timestepTensor` for the same graph (its array is reused). */
export function setTimestep(io: Pick<UnetIo, "timestepType">, tensor: HostTensor, t: number): void {
  const data = tensor.data;
  if (io.timestepType === "int64") (data as BigInt64Array).fill(BigInt(Math.trunc(t)));
  else if (io.timestepType === "int32") (data as Int32Array).fill(Math.trunc(t));
  else (data as Float32Array | Float64Array).fill(t);
}

/**
 * Classifier-free guidance on a UNet output [2B, …] laid out uncond rows first:
 * m = u + g·(c − u), each operation rounded to float32 as torch does.
 * @param out where to write [B, …]; a new array when omitted.
 */
export function combineGuidance(output: Float32Array, batch: number, guidance: Float64Array, out?: Float32Array): Float32Array {
  const perImage = output.length / (2 * batch);
  const guided = out ?? new Float32Array(batch * perImage);
  const condOffset = batch * perImage;
  for (let image = 0; image < batch; image++) {
    const g = Math.fround(guidance[image]!);
    const start = image * perImage;
    for (let i = start; i < start + perImage; i++) {
      const u = output[i]!;
      const diff = Math.fround(output[condOffset + i]! - u);
      guided[i] = u + Math.fround(g * diff); // the Float32Array store rounds the sum
    }
  }
  return guided;
}

/**
 * How many latent elements have a NaN/±Inf UNet output (either CFG half): the count the CUDA fused
 * kernel keeps (native/denoiser/loop_math.h fusedElement), so both backends fail alike.
 */
export function countNonFinite(output: Float32Array, n: number, cfg: boolean): number {
  let bad = 0;
  for (let i = 0; i < n; i++) {
    const u = output[i]!;
    // x − x is 0 exactly for finite x (NaN for ±Inf and NaN), as in the kernel.
    if (u - u !== 0 || (cfg && output[n + i]! - output[n + i]! !== 0)) bad++;
  }
  return bad;
}

/** Checks a job's shapes; throws SdTrtError ERR_INVALID_ARGUMENT naming what is off. */
export function checkDenoiseJob(job: CpuDenoiseJob): void {
  const { program, latents, noise, batch, latentHeight, latentWidth, context, hiddenSize, guidance } = job;
  const perImage = 4 * latentHeight * latentWidth;
  if (latents.length !== batch * perImage) {
    throw new InvalidArgumentError(`denoise: latents hold ${latents.length} values, expected [${batch}, 4, ${latentHeight}, ${latentWidth}]`);
  }
  const unetBatch = guidance ? 2 * batch : batch;
  if (context.length !== unetBatch * TOKENS * hiddenSize) {
    throw new InvalidArgumentError(`denoise: encoder_hidden_states hold ${context.length} values, expected [${unetBatch}, ${TOKENS}, ${hiddenSize}]`);
  }
  if (guidance && guidance.length !== batch) {
    throw new InvalidArgumentError(`denoise: ${guidance.length} guidance scales for a batch of ${batch}`);
  }
  const draws = program.evals.filter((e) => e.drawsNoise).length;
  if (draws !== noise.length || noise.some((n) => n.length !== latents.length)) {
    throw new InvalidArgumentError(`denoise: the program draws noise ${draws} times, got ${noise.length} arrays (each must match the latents)`);
  }
}

/**
 * Runs the whole program: x_0 → x_M (a new array; the job's arrays are not modified).
 * @throws AbortError when `hooks.stopRequested()` turns true before an evaluation.
 */
export async function runCpuDenoise(job: CpuDenoiseJob, runUnet: UnetRunner, hooks: CpuDenoiseHooks = {}): Promise<Float32Array> {
  checkDenoiseJob(job);
  const { program, latents, batch, latentHeight, latentWidth, context, hiddenSize, guidance, io } = job;
  const perImage = 4 * latentHeight * latentWidth;
  const unetBatch = guidance ? 2 * batch : batch;
  // The feeds are made once and passed every time: only the sample's and the timestep's values
  // change, in place (so a runner may keep whatever it builds around each feed object).
  const sample = new Float32Array(unetBatch * perImage);
  const timestep = timestepTensor(io, program.evals[0]!.t, unetBatch);
  const feeds: Record<string, HostTensor> = {
    [io.sampleName]: { type: "float32", dims: [unetBatch, 4, latentHeight, latentWidth], data: sample },
    [io.timestepName]: timestep,
    [io.contextName]: { type: "float32", dims: [unetBatch, TOKENS, hiddenSize], data: context },
  };

  // The k-th evaluation that draws noise gets the k-th pre-drawn array.
  const noiseFor = new Map<number, Float32Array>();
  let drawn = 0;
  program.evals.forEach((e, j) => {
    if (e.drawsNoise) noiseFor.set(j, job.noise[drawn++]!);
  });

  const run = new ProgramExecution(program, latents);
  const half = batch * perImage;
  while (!run.done) {
    if (hooks.stopRequested?.()) throw new AbortError("the denoise loop was stopped");
    const j = run.evalIndex;
    const { t, cIn } = program.evals[j]!;
    // sample = cIn · x_j, twice with guidance (diffusers' cat([x] * 2)), in one pass.
    const x = run.latents;
    if (guidance) {
      for (let i = 0; i < half; i++) sample[i] = sample[half + i] = cIn * x[i]!;
    } else {
      for (let i = 0; i < half; i++) sample[i] = cIn * x[i]!;
    }
    setTimestep(io, timestep, t);
    const output = await runUnet(feeds);
    if (output.length !== unetBatch * perImage) {
      throw new OnnxRuntimeError(`the UNet returned ${output.length} values, expected [${unetBatch}, 4, ${latentHeight}, ${latentWidth}]`);
    }
    // An fp16 UNet that overflowed: fail here, naming the UNet, rather than let the NaN reach the
    // VAE and be reported as a VAE overflow (whose fix cannot help). Stops at the first such
    // evaluation; the GPU loop, which does not synchronise, counts to the end.
    const bad = countNonFinite(output, half, guidance !== null);
    if (bad > 0) throw new UnetOverflowError(UnetOverflowError.describe(bad, j, program.evals.length), { evaluation: j, count: bad });
    // With guidance, m_j is computed straight into the executor's history (no extra copy).
    run.advance(guidance ? combineGuidance(output, batch, guidance, run.modelOutputBuffer()) : output, noiseFor.get(j));
    hooks.onStep?.(j, run.latents);
  }
  return run.result();
}
