/**
 * The CPU denoise loop: a sampler program driven by the UNet with classifier-free guidance, the
 * way diffusers feeds an ONNX UNet. It runs on the ONNX Runtime worker thread, next to the UNet
 * session (`ort-worker.ts`), so a generation crosses the thread boundary once for the whole loop
 * instead of once per model evaluation.
 *
 * Per evaluation j (diffusers `StableDiffusionPipeline.__call__` / `OnnxStableDiffusionPipeline`):
 * - `sample = cat([x, x])` with guidance, `x` without, where x = cIn_j · x_j;
 * - `timestep` = t_j cast to the graph's type in the graph's layout (`timestepTensor`);
 * - `encoder_hidden_states = cat([uncond, cond])`, uncond first (prepared by the caller); when
 *   the two have different lengths (prompts of different chunk counts, A1111's long prompts) the
 *   UNet runs the uncond half and the cond half separately, as A1111 does by default;
 * - SDXL: `text_embeds` and `time_ids` (`job.added`), [uncond; cond] like the embeddings;
 * - m_j = u + g·(c − u) per image in float32 (`combineGuidance`), or the raw output; u itself
 *   goes to the executor too (programs with a `d` coefficient, A1111's DDIM CFG++, renoise with it);
 * - the program's update (`ProgramExecution`, the same CPU executor the tests check against
 *   diffusers and the CUDA kernel).
 *
 * Nothing here knows about threads or ONNX Runtime objects: the UNet is a function, and a stop
 * request is a function polled before every evaluation.
 */
import { InvalidArgumentError, AbortError, OnnxRuntimeError, UnetOverflowError } from "../../errors.js";
import { ProgramExecution } from "../../sampler/execute.js";
import { noiseDrawCount } from "../../sampler/step-noise.js";
import type { UnetIo } from "../../model/graph-io.js";
import type { CpuDenoiseJob, HostTensor } from "./ort-protocol.js";

export type { CpuDenoiseJob, UnetFeedIo } from "./ort-protocol.js";

/** CLIP's token count: one chunk of a prompt. */
export const TOKENS = 77;

/**
 * Runs the UNet once on these feeds and returns its output [unetBatch, 4, h, w]. Every call gets
 * the same feed objects, their arrays updated in place.
 */
export type UnetRunner = (feeds: Record<string, HostTensor>) => Promise<Float32Array>;

/** The loop's k-th noise draw (k counts the evaluations with `drawsNoise`), possibly still on its way. */
export type NoiseFeed = (draw: number) => Float32Array | Promise<Float32Array>;

export interface CpuDenoiseHooks {
  /** Polled before each evaluation; when true the loop stops with an AbortError. */
  stopRequested?: () => boolean;
  /** After evaluation `evalIndex` with x_{evalIndex+1} (a view valid only during the call). */
  onStep?: (evalIndex: number, latents: Float32Array) => void;
  /**
   * Prompt editing: the encoder_hidden_states of evaluation `evalIndex` (laid out as `job.context`),
   * asked before every evaluation; the same array while the conditioning holds.
   */
  contextAt?: (evalIndex: number) => Float32Array;
  /**
   * SDXL prompt editing: the pooled text_embeds of evaluation `evalIndex` (laid out as
   * `job.added.textEmbeds`), asked with `contextAt`; the same array while the conditioning holds.
   */
  textEmbedsAt?: (evalIndex: number) => Float32Array;
  /**
   * Where the noise draws come from when they arrive during the loop (the CPU backend draws them
   * on the main thread meanwhile); `job.noise` must then be empty. Each draw is asked for after
   * the UNet call of its evaluation, so it has had that call's time to arrive.
   */
  noise?: NoiseFeed;
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
export function checkDenoiseJob(job: CpuDenoiseJob, streamedNoise = false): void {
  const { program, latents, noise, batch, latentHeight, latentWidth, context, hiddenSize, guidance, condTokens, uncondTokens } = job;
  const perImage = 4 * latentHeight * latentWidth;
  if (latents.length !== batch * perImage) {
    throw new InvalidArgumentError(`denoise: latents hold ${latents.length} values, expected [${batch}, 4, ${latentHeight}, ${latentWidth}]`);
  }
  for (const [name, tokens] of [["condTokens", condTokens], ["uncondTokens", uncondTokens]] as const) {
    if (!Number.isInteger(tokens) || tokens < TOKENS || tokens % TOKENS !== 0) throw new InvalidArgumentError(`denoise: ${name} must be a multiple of ${TOKENS}, got ${tokens}`);
  }
  const expected = batch * ((guidance ? uncondTokens : 0) + condTokens) * hiddenSize;
  if (context.length !== expected) {
    const shape = guidance ? `[${batch}, ${uncondTokens}, ${hiddenSize}] + [${batch}, ${condTokens}, ${hiddenSize}]` : `[${batch}, ${condTokens}, ${hiddenSize}]`;
    throw new InvalidArgumentError(`denoise: encoder_hidden_states hold ${context.length} values, expected ${shape}`);
  }
  if (job.added) {
    const rows = guidance ? 2 * batch : batch;
    const { textEmbeds, timeIds, textEmbedsSize, timeIdsSize } = job.added;
    if (textEmbeds.length !== rows * textEmbedsSize || timeIds.length !== rows * timeIdsSize) {
      throw new InvalidArgumentError(`denoise: text_embeds hold ${textEmbeds.length} values and time_ids ${timeIds.length}, expected [${rows}, ${textEmbedsSize}] and [${rows}, ${timeIdsSize}]`);
    }
  }
  if (guidance && guidance.length !== batch) {
    throw new InvalidArgumentError(`denoise: ${guidance.length} guidance scales for a batch of ${batch}`);
  }
  const draws = noiseDrawCount(program);
  if (streamedNoise && noise.length !== 0) throw new InvalidArgumentError(`denoise: the noise draws arrive during the loop, but the job also holds ${noise.length}`);
  if (!streamedNoise && (draws !== noise.length || noise.some((n) => n.length !== latents.length))) {
    throw new InvalidArgumentError(`denoise: the program draws noise ${draws} times, got ${noise.length} arrays (each must match the latents)`);
  }
}

/**
 * Runs the whole program: x_0 → x_M (a new array; the job's arrays are not modified).
 * @throws AbortError when `hooks.stopRequested()` turns true before an evaluation.
 */
export async function runCpuDenoise(job: CpuDenoiseJob, runUnet: UnetRunner, hooks: CpuDenoiseHooks = {}): Promise<Float32Array> {
  checkDenoiseJob(job, hooks.noise !== undefined);
  const { program, latents, batch, latentHeight, latentWidth, context, hiddenSize, guidance, io, condTokens, uncondTokens } = job;
  const perImage = 4 * latentHeight * latentWidth;
  const half = batch * perImage;
  // One UNet call over [uncond; cond] when both have the same length, else one call per half.
  const together = !guidance || condTokens === uncondTokens;
  const callBatch = guidance && together ? 2 * batch : batch;
  // The feeds are made once per call shape and passed every time: only the sample's and the
  // timestep's values change, in place (so a runner may keep whatever it builds around each feed object).
  const sample = new Float32Array(callBatch * perImage);
  const timestep = timestepTensor(io, program.evals[0]!.t, callBatch);
  const { added } = job;
  /** SDXL's added inputs for the rows from `firstRow` on (0: all, or the uncond half; batch: the cond half). */
  const addedFeeds = (firstRow: number): Record<string, HostTensor> => {
    if (!added) return {};
    const rows = (size: number, data: Float32Array): HostTensor => ({ type: "float32", dims: [callBatch, size], data: data.subarray(firstRow * size, (firstRow + callBatch) * size) });
    return { [added.textEmbedsName]: rows(added.textEmbedsSize, added.textEmbeds), [added.timeIdsName]: rows(added.timeIdsSize, added.timeIds) };
  };
  const feedsWith = (data: Float32Array, tokens: number, firstRow: number): Record<string, HostTensor> => ({
    [io.sampleName]: { type: "float32", dims: [callBatch, 4, latentHeight, latentWidth], data: sample },
    [io.timestepName]: timestep,
    [io.contextName]: { type: "float32", dims: [callBatch, tokens, hiddenSize], data },
    ...addedFeeds(firstRow),
  });
  const uncondSize = guidance ? batch * uncondTokens * hiddenSize : 0;
  const calls = together
    ? [feedsWith(context, condTokens, 0)]
    : [feedsWith(context.subarray(0, uncondSize), uncondTokens, 0), feedsWith(context.subarray(uncondSize), condTokens, batch)];
  let current = context;
  /** Points the context feeds at another conditioning of the same shape (prompt editing). */
  const useContext = (next: Float32Array): void => {
    if (next === current) return;
    if (next.length !== context.length) throw new InvalidArgumentError(`denoise: contextAt returned ${next.length} values, expected ${context.length}`);
    current = next;
    const parts = together ? [next] : [next.subarray(0, uncondSize), next.subarray(uncondSize)];
    calls.forEach((feeds, i) => {
      feeds[io.contextName]!.data = parts[i]!;
    });
  };
  let currentTextEmbeds = added?.textEmbeds;
  /** Points the text_embeds feeds at another pooled conditioning of the same shape (SDXL prompt editing). */
  const useTextEmbeds = (next: Float32Array): void => {
    if (next === currentTextEmbeds || !added) return;
    if (next.length !== added.textEmbeds.length) throw new InvalidArgumentError(`denoise: textEmbedsAt returned ${next.length} values, expected ${added.textEmbeds.length}`);
    currentTextEmbeds = next;
    const size = added.textEmbedsSize;
    calls.forEach((feeds, i) => {
      const firstRow = together ? 0 : i * batch;
      feeds[added.textEmbedsName]!.data = next.subarray(firstRow * size, (firstRow + callBatch) * size);
    });
  };
  const joined = new Float32Array(together ? 0 : 2 * half);
  const checkedOutput = (out: Float32Array): Float32Array => {
    if (out.length !== callBatch * perImage) {
      throw new OnnxRuntimeError(`the UNet returned ${out.length} values, expected [${callBatch}, 4, ${latentHeight}, ${latentWidth}]`);
    }
    return out;
  };

  // The k-th evaluation that draws noise gets the k-th draw.
  const noiseAt: NoiseFeed = hooks.noise ?? ((k) => job.noise[k]!);
  let drawn = 0;

  const run = new ProgramExecution(program, latents);
  while (!run.done) {
    if (hooks.stopRequested?.()) throw new AbortError("the denoise loop was stopped");
    const j = run.evalIndex;
    const { t, cIn } = program.evals[j]!;
    // sample = cIn · x_j, twice when one call takes both halves (diffusers' cat([x] * 2)), in one pass.
    const x = run.latents;
    if (callBatch !== batch) {
      for (let i = 0; i < half; i++) sample[i] = sample[half + i] = cIn * x[i]!;
    } else {
      for (let i = 0; i < half; i++) sample[i] = cIn * x[i]!;
    }
    setTimestep(io, timestep, t);
    if (hooks.contextAt) useContext(hooks.contextAt(j));
    if (hooks.textEmbedsAt) useTextEmbeds(hooks.textEmbedsAt(j));
    let output: Float32Array;
    if (calls.length === 1) {
      output = checkedOutput(await runUnet(calls[0]!));
    } else {
      // [uncond; cond], as one call would have returned them.
      output = joined;
      output.set(checkedOutput(await runUnet(calls[0]!)));
      output.set(checkedOutput(await runUnet(calls[1]!)), half);
    }
    // An fp16 UNet that overflowed: fail here, naming the UNet, rather than let the NaN reach the
    // VAE and be reported as a VAE overflow (whose fix cannot help). Stops at the first such
    // evaluation; the GPU loop, which does not synchronise, counts to the end.
    const bad = countNonFinite(output, half, guidance !== null);
    if (bad > 0) throw new UnetOverflowError(UnetOverflowError.describe(bad, j, program.evals.length), { evaluation: j, count: bad });
    // With guidance, m_j is computed straight into the executor's history (no extra copy).
    let noise: Float32Array | undefined;
    if (program.evals[j]!.drawsNoise) {
      noise = await noiseAt(drawn++);
      if (noise.length !== latents.length) throw new InvalidArgumentError(`denoise: noise draw ${drawn - 1} holds ${noise.length} values, expected ${latents.length}`);
    }
    // u_j (the uncond half) for the programs that renoise with it (DDIM CFG++); without guidance u_j = m_j.
    if (guidance) run.advance(combineGuidance(output, batch, guidance, run.modelOutputBuffer()), noise, output.subarray(0, half));
    else run.advance(output, noise);
    hooks.onStep?.(j, run.latents);
  }
  return run.result();
}
