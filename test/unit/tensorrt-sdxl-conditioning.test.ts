/**
 * The TensorRT backend's SDXL text stage (lib/backends/tensorrt/sdxl.ts): how the two encoders'
 * per-image outputs become the UNet's encoder_hidden_states, text_embeds and time_ids, [uncond;
 * cond], with diffusers' force_zeros_for_empty_prompt. The encoders themselves run on the GPU (the
 * GPU self-test compares the whole generation with the CPU backend); here each encoder's output is
 * a known array whose values say where they came from, so every placement is checked.
 */
import { describe, expect, test } from "@jest/globals";
import type { GenerationJob, PromptBatch } from "../../lib/backends/backend.js";
import { sdxlConditioning, type SdxlEngineInfo } from "../../lib/backends/tensorrt/sdxl.js";

const INFO: SdxlEngineInfo = { secondEncoderOnly: false, hidden1: 2, hidden2: 3, pooledName: "text_embeds", pooledSize: 2, timeIdsSize: 6, textEmbedsName: "text_embeds", timeIdsName: "time_ids" };
const TOKENS = 77;

/** A one-chunk prompt list of `prompts` distinct texts for `rowOf`. */
function batch(prompts: number, rowOf: number[], tag: number): PromptBatch {
  return { prompts, chunks: 1, ids: new Int32Array(prompts * TOKENS).fill(tag), multipliers: new Float32Array(prompts * TOKENS).fill(1), rowOf: Int32Array.from(rowOf) } as unknown as PromptBatch;
}

/** Encoder e's states for image row r, token t, channel c = 1000·e + 100·tag + 10·r + … (distinct per place). */
function encoder(encoderIndex: 1 | 2, prompts: PromptBatch, rows: number) {
  const hidden = encoderIndex === 1 ? INFO.hidden1 : INFO.hidden2;
  const tag = prompts.ids[0]!;
  const states = new Float32Array(rows * TOKENS * hidden).map((_, i) => encoderIndex * 1000 + tag * 100 + Math.floor(i / (TOKENS * hidden)) * 10 + (i % hidden));
  // Pooled rows of the computed chunk rows (prompt p's first chunk is row p): 1000·e + 100·tag + p.
  const pooled = encoderIndex === 2 ? new Float32Array(prompts.prompts * INFO.pooledSize).map((_, i) => 2000 + tag * 100 + Math.floor(i / INFO.pooledSize) + 0.5 * (i % INFO.pooledSize)) : undefined;
  return Promise.resolve(pooled ? { states, pooled } : { states });
}

function job(options: { uncond: boolean; zeroUncond: boolean }): GenerationJob {
  const timeIds = Float32Array.from([1024, 1024, 0, 0, 1024, 1024, 768, 768, 0, 0, 768, 768]);
  return {
    batch: 2,
    cond: batch(2, [1, 0], 1),
    uncond: options.uncond ? batch(1, [0, 0], 3) : null,
    sdxl: { cond2: batch(2, [0, 1], 2), uncond2: options.uncond && !options.zeroUncond ? batch(1, [0, 0], 4) : null, zeroUncond: options.zeroUncond, timeIds, negativeTimeIds: timeIds.map((v) => v + 1) },
  } as unknown as GenerationJob;
}

describe("SDXL conditioning on the TensorRT backend", () => {
  test("each token's text_encoder states come first, then text_encoder_2's; pooled is text_encoder_2's first chunk of each row's prompt_2", async () => {
    const inputs = await sdxlConditioning(job({ uncond: false, zeroUncond: false }), INFO, (e, p) => encoder(e, p, 2), false);
    const width = INFO.hidden1 + INFO.hidden2;
    expect(inputs.context).toHaveLength(2 * TOKENS * width);
    // Row 1, token 5: encoder 1 (tag 1, row 1) channels 0..1, then encoder 2 (tag 2, row 1) channels 0..2.
    const at = (1 * TOKENS + 5) * width;
    expect(Array.from(inputs.context.subarray(at, at + width))).toEqual([1110, 1111, 2210, 2211, 2212]);
    // prompt_2 rows are [0, 1]: row 0 pools prompt 0, row 1 prompt 1.
    expect(Array.from(inputs.textEmbeds)).toEqual([2200, 2200.5, 2201, 2201.5]);
    expect(inputs.timeIds).toEqual(job({ uncond: false, zeroUncond: false }).sdxl!.timeIds);
  });

  test("with guidance the uncond rows come first, from the negative prompts and the negative time ids", async () => {
    const j = job({ uncond: true, zeroUncond: false });
    const inputs = await sdxlConditioning(j, INFO, (e, p) => encoder(e, p, 2), false);
    const width = INFO.hidden1 + INFO.hidden2;
    expect(inputs.context).toHaveLength(4 * TOKENS * width);
    expect(Array.from(inputs.context.subarray(0, width))).toEqual([1300, 1301, 2400, 2401, 2402]);
    expect(Array.from(inputs.context.subarray(2 * TOKENS * width, 2 * TOKENS * width + width))).toEqual([1100, 1101, 2200, 2201, 2202]);
    expect(Array.from(inputs.textEmbeds)).toEqual([2400, 2400.5, 2400, 2400.5, 2200, 2200.5, 2201, 2201.5]);
    expect(Array.from(inputs.timeIds)).toEqual([...j.sdxl!.negativeTimeIds, ...j.sdxl!.timeIds]);
  });

  test("force_zeros_for_empty_prompt makes the uncond embeddings and pooled zeros without running the encoders on it", async () => {
    const seen: number[] = [];
    const inputs = await sdxlConditioning(job({ uncond: true, zeroUncond: true }), INFO, (e, p) => {
      seen.push(p.ids[0]!);
      return encoder(e, p, 2);
    }, false);
    const half = 2 * TOKENS * (INFO.hidden1 + INFO.hidden2);
    expect(inputs.context.subarray(0, half).every((v) => v === 0)).toBe(true);
    expect(inputs.context[half]).toBe(1100);
    expect(Array.from(inputs.textEmbeds.subarray(0, 4))).toEqual([0, 0, 0, 0]);
    expect(seen).toEqual([1, 2]); // the cond prompts only
  });

  test("engines built for the guidance batch only get an unguided batch's cond rows twice", async () => {
    const inputs = await sdxlConditioning(job({ uncond: false, zeroUncond: false }), INFO, (e, p) => encoder(e, p, 2), true);
    const half = 2 * TOKENS * (INFO.hidden1 + INFO.hidden2);
    expect(inputs.context.subarray(0, half)).toEqual(inputs.context.subarray(half));
    expect(Array.from(inputs.textEmbeds)).toEqual([2200, 2200.5, 2201, 2201.5, 2200, 2200.5, 2201, 2201.5]);
    expect(inputs.timeIds).toHaveLength(24);
  });

  test("a refiner runs text_encoder_2 alone, and time ids of the wrong width are refused", async () => {
    const refiner = { ...INFO, secondEncoderOnly: true, hidden1: 0, timeIdsSize: 5 };
    const called: number[] = [];
    const j = job({ uncond: false, zeroUncond: false });
    const five = { ...j, sdxl: { ...j.sdxl!, timeIds: new Float32Array(10), negativeTimeIds: new Float32Array(10) } };
    const inputs = await sdxlConditioning(five, refiner, (e, p) => {
      called.push(e);
      return encoder(e, p, 2);
    }, false);
    expect(called).toEqual([2]);
    expect(Array.from(inputs.context.subarray(0, 3))).toEqual([2200, 2201, 2202]);
    await expect(sdxlConditioning(j, refiner, (e, p) => encoder(e, p, 2), false)).rejects.toThrow(/sdxl.timeIds must be \[2, 5\], got 12 values/);
  });
});
