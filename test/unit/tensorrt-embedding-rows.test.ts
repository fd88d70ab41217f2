/**
 * The TensorRT backend's prompt-editing table (lib/backends/tensorrt/embedding-rows.ts): which bank
 * row each UNet row reads at each evaluation, switching where the CPU backend switches (A1111's
 * schedules through scheduleIndexAt), with the bank holding each distinct text once; and the rows
 * whose emphasis "original" shares one mean (the texts of one schedule).
 */
import { describe, expect, test } from "@jest/globals";
import { embeddingRowTable, emphasisGroupIds, everyText } from "../../lib/backends/tensorrt/embedding-rows.js";
import type { PromptBatch } from "../../lib/prompt/conditioning.js";
import { promptSchedule, scheduleIndexAt } from "../../lib/prompt/schedule.js";

/** A batch whose prompt texts are the schedules' texts in order (token ids do not matter to the table). */
function batchOf(schedules: Array<Array<[number, number]>> | undefined, rowOf: number[], prompts: number): PromptBatch {
  return {
    chunks: 1,
    prompts,
    ids: new Int32Array(prompts * 77),
    multipliers: new Float32Array(prompts * 77).fill(1),
    rowOf: Int32Array.from(rowOf),
    groupOf: new Int32Array(prompts),
    ...(schedules ? { schedules } : {}),
  };
}

describe("embeddingRowTable: [evaluations][unetBatch] bank rows, uncond half first", () => {
  test("[a red barn:a lighthouse:2] for 4 steps: the cond row reads the barn for j ≤ 2 and the lighthouse after; the uncond row stays", () => {
    const schedule = promptSchedule("[a red barn:a lighthouse:2]", 4);
    expect(schedule.map(([, text]) => text)).toEqual(["a red barn", "a lighthouse"]);
    const cond = batchOf([schedule.map(([end], text) => [end, text] as [number, number])], [0], 2);
    const uncond = batchOf(undefined, [0], 1);
    // Bank: [uncond text 0, cond text 0 (barn), cond text 1 (lighthouse)].
    const table = embeddingRowTable([{ prompts: uncond, bankOffset: 0 }, { prompts: cond, bankOffset: 1 }], 4);
    expect(Array.from(table)).toEqual([0, 1, 0, 1, 0, 1, 0, 2]);
    const condSchedule = cond.schedules![0]!;
    for (let j = 0; j < 4; j++) expect(table[2 * j + 1]).toBe(1 + scheduleIndexAt(condSchedule, j));
  });

  test("two images with their own schedules and an edited negative prompt: each half reads its own texts, offset into the bank", () => {
    // Image 0 alternates texts 0/1 each evaluation; image 1 keeps text 2. Negative: text 0 until j = 1, then text 1, for both images.
    const cond = batchOf([[[0, 0], [1, 1], [2, 0], [3, 1]], [[3, 2]]], [0, 2], 3);
    const uncond = batchOf([[[1, 0], [3, 1]], [[1, 0], [3, 1]]], [0, 0], 2);
    const table = embeddingRowTable([{ prompts: uncond, bankOffset: 0 }, { prompts: cond, bankOffset: 2 }], 4);
    expect(Array.from(table)).toEqual([0, 0, 2, 4, 0, 0, 3, 4, 1, 1, 2, 4, 1, 1, 3, 4]);
  });

  test("guidance folded to scale 0 (engines built for 2B only): both halves read the cond texts from one bank", () => {
    const cond = batchOf([[[1, 0], [2, 1]]], [0], 2);
    const half = { prompts: cond, bankOffset: 0 };
    expect(Array.from(embeddingRowTable([half, half], 3))).toEqual([0, 0, 0, 0, 1, 1]);
  });
});

describe("everyText: the bank's prompts, each distinct text once", () => {
  test("rowOf lists every text and the schedules are dropped; tokens and emphasis groups are kept", () => {
    const cond = batchOf([[[1, 0], [3, 1]], [[3, 2]]], [0, 2], 3);
    const bank = everyText(cond);
    expect(Array.from(bank.rowOf)).toEqual([0, 1, 2]);
    expect(bank.schedules).toBeUndefined();
    expect(bank.ids).toBe(cond.ids);
    expect(bank.groupOf).toBe(cond.groupOf);
  });
});

describe("emphasisGroupIds: the rows whose emphasis \"original\" restores one mean together, as A1111's one call per schedule does", () => {
  test("the texts of one schedule share a group per chunk index; other prompts and padding rows are their own", () => {
    // Texts 0 and 1: one prompt's schedule ([(a cat:1.5):a dog:1]); text 2: another prompt. Two chunks each, 8 computed rows.
    const batch = { ...batchOf([[[1, 0], [3, 1]], [[3, 2]]], [0, 1], 3), chunks: 2, groupOf: Int32Array.from([0, 0, 1]) };
    const ids = emphasisGroupIds(batch, 8)!;
    // Rows p · 2 + c: (text 0, c 0), (0, 1), (1, 0), (1, 1), (2, 0), (2, 1), then two padding rows.
    expect(ids[0]).toBe(ids[2]);
    expect(ids[1]).toBe(ids[3]);
    expect(ids[0]).not.toBe(ids[1]);
    expect(new Set(ids).size).toBe(6);
    expect(new Set([ids[4], ids[5], ids[6], ids[7]]).size).toBe(4);
    expect([ids[0], ids[1]]).not.toContain(ids[4]);
  });

  test("one text per group (no prompt editing) needs no groups: every row restores its own mean", () => {
    expect(emphasisGroupIds({ ...batchOf(undefined, [0, 1], 2), groupOf: Int32Array.from([0, 1]) }, 4)).toBeUndefined();
  });
});
