/**
 * Compiles a scheduler run into a SamplerProgram by running the scheduler's own `step` code on
 * symbolic vectors: evaluation j feeds x_j = {x_j: 1}, m_j = {m_j: 1} (and n_j = {n_j: 1} when the
 * step draws noise, u_j = {u_j: 1} the unconditional output), and the returned prev_sample, a sparse
 * combination of basis elements, is the row a_j[k]·x_{j−k} + b_j[k]·m_{j−k} + c_j·n_j + d_j·u_j.
 */
import { InvalidOptionError, InternalError } from "../errors.js";
import { SAMPLER_PROGRAM_FORMAT, type AddNoiseSpec, type SamplerEval, type SamplerProgram } from "../sampler/program.js";
import { SymbolicVector } from "./algebra.js";
import type { NoiseScales, SchedulePlan, SchedulerRun } from "./types.js";

export interface TraceInput {
  scheduler: string;
  steps: number;
  plan: SchedulePlan;
  startIndex: number;
  run: SchedulerRun<SymbolicVector>;
  /** add_noise scales when compiling for img2img. */
  addNoise: NoiseScales | undefined;
}

interface RawRow {
  t: number;
  cIn: number;
  drawsNoise: boolean;
  result: SymbolicVector;
}

/** Reads one evaluation's row off the symbolic prev_sample. */
function toEval(row: RawRow, j: number, depth: number, scheduler: string): SamplerEval {
  const a = new Array<number>(depth).fill(0);
  const b = new Array<number>(depth).fill(0);
  let c = 0;
  let d = 0;
  for (const { kind, index, coefficient } of row.result.entries()) {
    if (!Number.isFinite(coefficient)) {
      throw new InvalidOptionError(
        "scheduler",
        `${scheduler}: this config gives a non-finite coefficient at evaluation ${j} (diffusers would produce NaN/Inf latents); check the scheduler config and steps`,
      );
    }
    if (kind === "n") c = coefficient;
    else if (kind === "u") d = coefficient;
    else (kind === "x" ? a : b)[j - index] = coefficient;
  }
  const e: SamplerEval = { t: row.t, cIn: row.cIn, a, b, c, drawsNoise: row.drawsNoise };
  // Only samplers that read u_j carry `d`, so every other program stays as it was.
  if (d !== 0) e.d = d;
  return e;
}

/** How far back a row reaches (0 = only x_j / m_j), checking it only uses what the contract allows. */
function lagOf(row: RawRow, j: number): number {
  let lag = 0;
  for (const { kind, index } of row.result.entries()) {
    // Noise and the unconditional output exist for the current evaluation only.
    if (kind === "n" || kind === "u" ? index !== j : index > j) {
      throw new InternalError(`scheduler step ${j} referenced ${kind}_${index}, which a sampler program cannot express`);
    }
    if (kind === "x" || kind === "m") lag = Math.max(lag, j - index);
  }
  return lag;
}

export function traceProgram(input: TraceInput): SamplerProgram {
  const { plan, startIndex, run } = input;
  const rows: RawRow[] = [];
  for (let j = 0; j < plan.timesteps.length - startIndex; j++) {
    const cIn = run.inputScale();
    let drawsNoise = false;
    const result = run.step(SymbolicVector.basis("m", j), SymbolicVector.basis("x", j), () => {
      drawsNoise = true;
      return SymbolicVector.basis("n", j);
    }, SymbolicVector.basis("u", j));
    rows.push({ t: plan.timesteps[startIndex + j]!, cIn, drawsNoise, result });
  }
  const depth = 1 + Math.max(...rows.map((row, j) => lagOf(row, j)));
  const program: SamplerProgram = {
    format: SAMPLER_PROGRAM_FORMAT,
    scheduler: input.scheduler,
    steps: input.steps,
    startIndex,
    initNoiseSigma: plan.initNoiseSigma,
    timestepDtype: plan.timestepDtype,
    historyDepth: depth,
    evals: rows.map((row, j) => toEval(row, j, depth, input.scheduler)),
  };
  if (plan.brownian) program.brownian = plan.brownian;
  if (input.addNoise) {
    const addNoise: AddNoiseSpec = { t: plan.timesteps[startIndex]!, ...input.addNoise };
    program.addNoise = addNoise;
  }
  return program;
}
