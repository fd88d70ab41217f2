/**
 * The flat Float64Array form of a sampler program that the native addon reads
 * (native/denoiser/program_table.h). Layout (PACKED_LAYOUT_VERSION 2):
 *
 *   header, PACKED_HEADER_WORDS = 8 words:
 *     [0] layout version  [1] M = evals.length  [2] K = historyDepth  [3] initNoiseSigma
 *     [4] timestep dtype (0 = float32, 1 = int64)  [5] steps  [6] startIndex  [7] reserved (0)
 *   then M rows of 5 + 2K words:
 *     [t, cIn, c, drawsNoise (0/1), d (0 when absent), a[0..K−1], b[0..K−1]]
 *
 * The device needs nothing else: the scheduler name and img2img's `addNoise` (applied on the host
 * before the loop) are not packed, so `unpackProgram` takes them back as metadata.
 */
import { InvalidProgramError } from "../errors.js";
import { checkProgram } from "./check.js";
import {
  PACKED_HEADER_WORDS,
  PACKED_LAYOUT_VERSION,
  PACKED_ROW_FIXED_WORDS,
  SAMPLER_PROGRAM_FORMAT,
  type AddNoiseSpec,
  type BrownianNoiseSpec,
  type SamplerEval,
  type SamplerProgram,
} from "./program.js";

const DTYPE_CODES = { float32: 0, int64: 1 } as const;

export function packProgram(program: SamplerProgram): Float64Array {
  checkProgram(program);
  const K = program.historyDepth;
  const M = program.evals.length;
  const stride = PACKED_ROW_FIXED_WORDS + 2 * K;
  const words = new Float64Array(PACKED_HEADER_WORDS + M * stride);
  words.set([
    PACKED_LAYOUT_VERSION,
    M,
    K,
    program.initNoiseSigma,
    DTYPE_CODES[program.timestepDtype],
    program.steps,
    program.startIndex,
    0,
  ]);
  program.evals.forEach((e, j) => {
    const row = PACKED_HEADER_WORDS + j * stride;
    words.set([e.t, e.cIn, e.c, e.drawsNoise ? 1 : 0, e.d ?? 0, ...e.a, ...e.b], row);
  });
  return words;
}

/** What the flat layout does not carry. */
export interface UnpackMetadata {
  /** The canonical scheduler name to put back in `program.scheduler`. */
  scheduler: string;
  /** img2img's add_noise spec, if the program was compiled for img2img. */
  addNoise?: AddNoiseSpec;
  /** The Brownian step noise of A1111's SDE samplers, if the program has it. */
  brownian?: BrownianNoiseSpec;
}

function invalid(what: string): never {
  throw new InvalidProgramError(`invalid packed sampler program: ${what}`);
}

export function unpackProgram(words: Float64Array, metadata: UnpackMetadata): SamplerProgram {
  if (!(words instanceof Float64Array) || words.length < PACKED_HEADER_WORDS) invalid(`expected a Float64Array of at least ${PACKED_HEADER_WORDS} words`);
  if (words[0] !== PACKED_LAYOUT_VERSION) invalid(`layout version ${words[0]} is not ${PACKED_LAYOUT_VERSION}`);
  const M = words[1]!;
  const K = words[2]!;
  const dtype = words[4]!;
  if (!Number.isInteger(M) || M < 1 || !Number.isInteger(K) || K < 1) invalid(`bad evaluation count ${M} or history depth ${K}`);
  if (dtype !== 0 && dtype !== 1) invalid(`timestep dtype code must be 0 or 1, got ${dtype}`);
  const stride = PACKED_ROW_FIXED_WORDS + 2 * K;
  if (words.length !== PACKED_HEADER_WORDS + M * stride) {
    invalid(`expected ${PACKED_HEADER_WORDS + M * stride} words for ${M} evaluations of depth ${K}, got ${words.length}`);
  }
  const evals: SamplerEval[] = [];
  for (let j = 0; j < M; j++) {
    const row = words.subarray(PACKED_HEADER_WORDS + j * stride, PACKED_HEADER_WORDS + (j + 1) * stride);
    const e: SamplerEval = {
      t: row[0]!,
      cIn: row[1]!,
      c: row[2]!,
      drawsNoise: row[3] === 1,
      a: Array.from(row.subarray(PACKED_ROW_FIXED_WORDS, PACKED_ROW_FIXED_WORDS + K)),
      b: Array.from(row.subarray(PACKED_ROW_FIXED_WORDS + K, PACKED_ROW_FIXED_WORDS + 2 * K)),
    };
    // d = 0 is "absent", as the compiler writes it.
    if (row[4] !== 0) e.d = row[4]!;
    evals.push(e);
  }
  const program: SamplerProgram = {
    format: SAMPLER_PROGRAM_FORMAT,
    scheduler: metadata.scheduler,
    steps: words[5]!,
    startIndex: words[6]!,
    initNoiseSigma: words[3]!,
    timestepDtype: dtype === 0 ? "float32" : "int64",
    historyDepth: K,
    evals,
  };
  if (metadata.addNoise !== undefined) program.addNoise = { ...metadata.addNoise };
  if (metadata.brownian !== undefined) program.brownian = { ...metadata.brownian, draws: metadata.brownian.draws.map(([a, b]) => [a, b]) };
  checkProgram(program);
  return program;
}
