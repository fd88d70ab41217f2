/**
 * Prompt editing on the TensorRT backend: the table that tells the native denoise loop which
 * embeddings row each UNet row reads at each evaluation (`embeddingRows`,
 * native/denoiser/embedding_rows.h). Every distinct text is encoded once into a bank on the device;
 * the table switches between them on the device, at the evaluation where the CPU backend switches
 * (`textsAt`, A1111's `reconstruct_cond_batch`). The texts of one schedule also share emphasis
 * "original"'s mean, as in A1111's one encoder call per schedule (`emphasisGroupIds`).
 */
import type { PromptBatch } from "../../prompt/conditioning.js";
import { textsAt } from "../../prompt/schedule.js";

/** One half of the UNet batch (uncond, then cond with guidance): its prompts and where their texts start in the bank. */
export interface EmbeddingHalf {
  prompts: Pick<PromptBatch, "rowOf" | "schedules">;
  bankOffset: number;
}

/**
 * Int32Array [evaluations][unetBatch]: for evaluation j, the halves' rows in order, each image's
 * text at j plus its half's bank offset.
 */
export function embeddingRowTable(halves: readonly EmbeddingHalf[], evaluations: number): Int32Array {
  const unetBatch = halves.reduce((sum, half) => sum + half.prompts.rowOf.length, 0);
  const table = new Int32Array(evaluations * unetBatch);
  for (let j = 0; j < evaluations; j++) {
    let at = j * unetBatch;
    for (const { prompts, bankOffset } of halves) {
      for (const text of Array.from(textsAt(prompts, j))) table[at++] = bankOffset + text;
    }
  }
  return table;
}

/** The same prompts with each distinct text as its own row (`rowOf` = 0 … prompts − 1): what the bank holds. */
export function everyText(prompts: PromptBatch): PromptBatch {
  const { schedules: _schedules, ...rest } = prompts;
  return { ...rest, rowOf: Int32Array.from({ length: prompts.prompts }, (_, p) => p) };
}

/**
 * The emphasis group of each computed text-encoder row (`encodeText`'s `emphasisGroups`), or
 * undefined when every row is its own group. A1111 encodes the texts of one prompt's schedule in one
 * call, so emphasis "original" restores one mean over all of them for each chunk index
 * (modules/sd_hijack_clip.py: `process_tokens` per chunk over the batch of texts; sd_emphasis.py:
 * `z.mean()`): row p · chunks + c belongs to group (groupOf[p], c). Rows past the real ones (padding
 * up to a profile's row count) are groups of their own, so they never change a mean.
 */
export function emphasisGroupIds(prompts: Pick<PromptBatch, "groupOf" | "chunks" | "prompts">, computedRows: number): Int32Array | undefined {
  const { groupOf, chunks } = prompts;
  if (new Set(groupOf).size === groupOf.length) return undefined;
  const ids = new Int32Array(computedRows);
  const groups = Math.max(-1, ...groupOf) + 1;
  for (let r = 0; r < computedRows; r++) {
    const p = Math.floor(r / chunks);
    ids[r] = p < prompts.prompts ? groupOf[p]! * chunks + (r % chunks) : groups * chunks + r;
  }
  return ids;
}
