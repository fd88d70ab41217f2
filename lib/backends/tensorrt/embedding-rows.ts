/**
 * Prompt editing on the TensorRT backend: the table that tells the native denoise loop which
 * embeddings row each UNet row reads at each evaluation (`embeddingRows`,
 * native/denoiser/embedding_rows.h). Every distinct text is encoded once into a bank on the device;
 * the table switches between them on the device, at the evaluation where the CPU backend switches
 * (`textsAt`, A1111's `reconstruct_cond_batch`).
 */
import { InvalidOptionError } from "../../errors.js";
import type { PromptBatch } from "../../prompt/conditioning.js";
import type { Emphasis } from "../../prompt/emphasis.js";
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
 * A1111 encodes the texts of one prompt's schedule in one call, so emphasis "original" restores the
 * mean over all of them (PromptBatch.groupOf); the device emphasis kernel restores it per text.
 * They agree unless a group of several texts has weighted tokens: that case is refused.
 */
export function refuseSharedEmphasisMeans(emphasis: Emphasis, ...batches: Array<PromptBatch | null>): void {
  if (emphasis !== "original") return;
  for (const prompts of batches) {
    if (!prompts?.multipliers.some((m) => m !== 1)) continue;
    if (new Set(prompts.groupOf).size < prompts.groupOf.length) {
      throw new InvalidOptionError(
        "emphasis",
        "prompt editing with weighted tokens and emphasis \"original\" restores one mean over all texts of a schedule, which the TensorRT backend does not do yet; use emphasis \"no-norm\", unweighted edited prompts, or the CPU backend",
      );
    }
  }
}
