/**
 * The checks Denoiser.run applies to `embeddingRows` (prompt editing: the bank row each UNet row
 * reads at each evaluation; native/denoiser/embedding_rows.h), through the addon's host export:
 * every entry is checked, and each error names the entry and the limit.
 */
import { describe, expect, test } from "@jest/globals";
import { builtAddon } from "./support.js";

const addon = builtAddon();

describe("embeddingRows: evaluations × unetBatch bank rows, every entry checked", () => {
  const check = (table: Int32Array, evaluations: number, unetBatch: number, bankRows: number) => () =>
    addon.hostCheckEmbeddingRows({ table, evaluations, unetBatch, bankRows });

  test("a table that names rows of the bank for every evaluation and UNet row is accepted", () => {
    // 3 evaluations, [uncond, cond] for one image, bank [uncond, barn, lighthouse]: the cond switches at j = 2.
    expect(check(Int32Array.from([0, 1, 0, 1, 0, 2]), 3, 2, 3)).not.toThrow();
  });

  test("a table of the wrong length names the expected count", () => {
    expect(check(new Int32Array(5), 3, 2, 3)).toThrow(
      expect.objectContaining({ code: "ERR_INVALID_PROGRAM", message: expect.stringContaining("expected 6 entries (3 evaluations × 2 UNet rows), got 5") }),
    );
    expect(check(new Int32Array(7), 3, 2, 3)).toThrow(/expected 6 entries/);
  });

  test("a row past the bank or a negative row names the evaluation, the UNet row and the bank's rows", () => {
    expect(check(Int32Array.from([0, 1, 0, 1, 0, 3]), 3, 2, 3)).toThrow(
      expect.objectContaining({
        code: "ERR_INVALID_PROGRAM",
        message: expect.stringContaining("evaluation 2, UNet row 1 reads embeddings row 3; the embeddings hold rows 0 to 2"),
      }),
    );
    expect(check(Int32Array.from([0, -1, 0, 1, 0, 2]), 3, 2, 3)).toThrow(/evaluation 0, UNet row 1 reads embeddings row -1/);
  });

  test("an empty bank is refused", () => {
    expect(check(new Int32Array(2), 1, 2, 0)).toThrow(/the embeddings hold 0 rows; expected 1 to 65536/);
  });

  test("the table must be an Int32Array", () => {
    expect(() => addon.hostCheckEmbeddingRows({ table: new Float64Array(6) as unknown as Int32Array, evaluations: 3, unetBatch: 2, bankRows: 3 })).toThrow(
      /options\.table must be a Int32Array, got a typed array/,
    );
  });

  test("with uncond and cond as two calls of different text lengths, uncond rows read the bank's uncond block and cond rows the cond block", () => {
    // 2 evaluations, 2 images: UNet rows [u0, u1, c0, c1]; bank [uncond "" | barn, lighthouse] (1 uncond row).
    const halves = { uncondUnetRows: 2, uncondBankRows: 1 };
    const split = (table: number[]) => () => addon.hostCheckEmbeddingRows({ table: Int32Array.from(table), evaluations: 2, unetBatch: 4, bankRows: 3, ...halves });
    expect(split([0, 0, 1, 2, 0, 0, 2, 2])).not.toThrow();
    expect(split([0, 0, 1, 2, 0, 0, 0, 2])).toThrow(
      expect.objectContaining({
        code: "ERR_INVALID_PROGRAM",
        message: expect.stringContaining("evaluation 1, UNet row 2 (cond) reads embeddings row 0; with uncond and cond of different text lengths the cond rows read rows 1 to 2"),
      }),
    );
    expect(split([0, 1, 1, 2, 0, 0, 2, 2])).toThrow(/evaluation 0, UNet row 1 \(uncond\) reads embeddings row 1; .* the uncond rows read rows 0 to 0/);
    expect(() => addon.hostCheckEmbeddingRows({ table: new Int32Array(8), evaluations: 2, unetBatch: 4, bankRows: 3, uncondUnetRows: 2, uncondBankRows: 3 })).toThrow(
      /the uncond rows \(2 of 4 UNet rows, 3 of 3 embeddings rows\) leave no cond rows/,
    );
  });
});
