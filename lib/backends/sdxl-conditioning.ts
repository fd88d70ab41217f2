/**
 * SDXL's text conditioning from the two text encoders' outputs, as diffusers'
 * `StableDiffusionXLPipeline.encode_prompt` builds it:
 *
 * - encoder_hidden_states of a row = `concat([penultimate of text_encoder, penultimate of
 *   text_encoder_2], dim=-1)`: per token, text_encoder's values then text_encoder_2's (a refiner,
 *   without text_encoder: text_encoder_2's alone);
 * - text_embeds (pooled) of a row = text_encoder_2's `text_embeds` of its text's first chunk (the
 *   only chunk with diffusers' reading; A1111 takes the first chunk's too);
 * - `force_zeros_for_empty_prompt` with no negative prompt: the uncond side is zeros of the cond
 *   side's shape (`torch.zeros_like`), both embeddings and pooled;
 * - A1111's rule (`sd_models_xl.get_learned_conditioning`: `force_zero_embeddings=['txt']` when a
 *   negative prompt's texts are all empty): those uncond rows' embeddings and pooled are zeros of
 *   the negative side's own shape (`zeroRows`); their time ids stay.
 *
 * Pure functions over host arrays, shared by both backends: the CPU worker and the TensorRT backend
 * run the encoders and hand their outputs here.
 */
import { InvalidArgumentError } from "../errors.js";

/** One encoder's output for one prompt list: [texts · chunks, 77, hidden], a text's chunks consecutive. */
export interface EncoderStates {
  states: Float32Array;
  hidden: number;
  /** For each batch row, its text. */
  rowOf: ArrayLike<number>;
}

export const TOKENS_PER_CHUNK = 77;

/**
 * The rows' encoder_hidden_states [batch, 77 · chunks, h1 + h2], each token's two encoder states
 * side by side.
 */
export function joinEncoderStates(first: EncoderStates | null, second: EncoderStates, chunks: number, batch: number): Float32Array {
  const tokens = chunks * TOKENS_PER_CHUNK;
  // A refiner has no first encoder: its rows are text_encoder_2's states alone.
  const h1 = first?.hidden ?? 0;
  const h2 = second.hidden;
  const width = h1 + h2;
  const parts = first ? ([["text_encoder", first], ["text_encoder_2", second]] as const) : ([["text_encoder_2", second]] as const);
  for (const [name, e] of parts) {
    if (e.rowOf.length !== batch || e.states.length % (tokens * e.hidden) !== 0) {
      throw new InvalidArgumentError(`SDXL conditioning: ${name}'s states do not hold [texts, ${tokens}, ${e.hidden}] for ${batch} rows`);
    }
  }
  const out = new Float32Array(batch * tokens * width);
  for (let row = 0; row < batch; row++) {
    const b = second.rowOf[row]! * tokens * h2;
    if (!first) {
      out.set(second.states.subarray(b, b + tokens * h2), row * tokens * width);
      continue;
    }
    const a = first.rowOf[row]! * tokens * h1;
    for (let t = 0; t < tokens; t++) {
      const at = (row * tokens + t) * width;
      out.set(first.states.subarray(a + t * h1, a + (t + 1) * h1), at);
      out.set(second.states.subarray(b + t * h2, b + (t + 1) * h2), at + h1);
    }
  }
  return out;
}

/**
 * The rows' pooled embeddings [batch, size]: text_encoder_2's `text_embeds` [texts · chunks, size]
 * at each row's text's first chunk.
 */
export function pooledOfRows(pooled: Float32Array, size: number, chunks: number, rowOf: ArrayLike<number>): Float32Array {
  const out = new Float32Array(rowOf.length * size);
  for (let row = 0; row < rowOf.length; row++) {
    const at = rowOf[row]! * chunks * size;
    if (at + size > pooled.length) throw new InvalidArgumentError(`SDXL conditioning: no pooled embedding for row ${row}`);
    out.set(pooled.subarray(at, at + size), row * size);
  }
  return out;
}

/**
 * Zeros, in place, the rows flagged in `rows` of a side's embeddings [batch, tokens, width] and
 * pooled [batch, size] (A1111's empty negative prompt on SDXL).
 */
export function zeroRows(rows: ArrayLike<number>, context: Float32Array, pooled: Float32Array): void {
  const batch = rows.length;
  if (context.length % batch !== 0 || pooled.length % batch !== 0) throw new InvalidArgumentError(`SDXL conditioning: ${batch} zero-row flags for embeddings of ${context.length} and pooled of ${pooled.length} values`);
  const perRow = context.length / batch;
  const perPooled = pooled.length / batch;
  for (let row = 0; row < batch; row++) {
    if (!rows[row]) continue;
    context.fill(0, row * perRow, (row + 1) * perRow);
    pooled.fill(0, row * perPooled, (row + 1) * perPooled);
  }
}

/** [uncond; cond] along the batch axis (the layout of every UNet input with guidance). */
export function uncondThenCond(uncond: Float32Array | null, cond: Float32Array): Float32Array {
  if (!uncond) return cond;
  const out = new Float32Array(uncond.length + cond.length);
  out.set(uncond);
  out.set(cond, uncond.length);
  return out;
}
