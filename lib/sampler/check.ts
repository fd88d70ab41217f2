/**
 * Structural checks of a SamplerProgram before an executor trusts it (programs are plain data and
 * may come from JSON). Throws SdTrtError code ERR_INVALID_PROGRAM, like the native unpacker.
 */
import { InvalidProgramError } from "../errors.js";
import { SAMPLER_PROGRAM_FORMAT, type SamplerProgram } from "./program.js";

function invalid(what: string): never {
  throw new InvalidProgramError(`invalid sampler program: ${what}`);
}

function isFiniteNumber(v: unknown): v is number {
  return typeof v === "number" && Number.isFinite(v);
}

export function checkProgram(program: SamplerProgram): void {
  if (typeof program !== "object" || program === null) invalid("not an object");
  if (program.format !== SAMPLER_PROGRAM_FORMAT) invalid(`format must be "${SAMPLER_PROGRAM_FORMAT}", got ${JSON.stringify(program.format)}`);
  const K = program.historyDepth;
  if (!Number.isInteger(K) || K < 1) invalid(`historyDepth must be an integer ≥ 1, got ${K}`);
  if (!Array.isArray(program.evals) || program.evals.length === 0) invalid("evals must be a non-empty array");
  if (!isFiniteNumber(program.initNoiseSigma)) invalid("initNoiseSigma must be a finite number");
  if (program.timestepDtype !== "float32" && program.timestepDtype !== "int64") invalid(`timestepDtype must be "float32" or "int64"`);
  if (!Number.isInteger(program.steps) || program.steps < 1) invalid(`steps must be an integer ≥ 1, got ${program.steps}`);
  if (!Number.isInteger(program.startIndex) || program.startIndex < 0) invalid(`startIndex must be an integer ≥ 0, got ${program.startIndex}`);
  program.evals.forEach((e, j) => {
    if (!isFiniteNumber(e.t) || !isFiniteNumber(e.cIn) || !isFiniteNumber(e.c)) invalid(`evaluation ${j}: t, cIn and c must be finite numbers`);
    if (typeof e.drawsNoise !== "boolean") invalid(`evaluation ${j}: drawsNoise must be a boolean`);
    if (!e.drawsNoise && e.c !== 0) invalid(`evaluation ${j} has a noise coefficient but draws no noise`);
    if (e.d !== undefined && !isFiniteNumber(e.d)) invalid(`evaluation ${j}: d (the coefficient on the unconditional output) must be a finite number when given, got ${JSON.stringify(e.d)}`);
    for (const [name, list] of [["a", e.a], ["b", e.b]] as const) {
      if (!Array.isArray(list) || list.length !== K || !list.every(isFiniteNumber)) {
        invalid(`evaluation ${j}: ${name} must hold historyDepth (${K}) finite numbers`);
      }
    }
  });
  const brownian = program.brownian;
  if (brownian !== undefined) {
    const draws = program.evals.filter((e) => e.drawsNoise).length;
    if (!isFiniteNumber(brownian.sigmaMin) || !isFiniteNumber(brownian.sigmaMax) || !(brownian.sigmaMin <= brownian.sigmaMax)) invalid("brownian: sigmaMin and sigmaMax must be finite, sigmaMin ≤ sigmaMax");
    if (!Array.isArray(brownian.draws) || brownian.draws.length !== draws || !brownian.draws.every((d) => Array.isArray(d) && d.length === 2 && d.every(isFiniteNumber))) {
      invalid(`brownian: draws must hold one (σ, σ_next) pair of finite numbers per evaluation that draws noise (${draws})`);
    }
  }
}
