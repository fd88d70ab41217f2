/**
 * Encode each distinct prompt once: a batch repeats one prompt for every image, and the negative
 * prompt is often the empty one, so the text encoder's rows are mostly repeats. The result maps
 * every row back to its distinct one — exactly the rows diffusers would have computed, repeated.
 */

/** The distinct rows of a [rows, width] token-id matrix. */
export interface DistinctRows {
  /** For each distinct content, the first row that holds it, in row order. */
  unique: number[];
  /** For each row, the index in `unique` of its content. */
  rowOf: Int32Array;
}

export function distinctRows(ids: Int32Array, rows: number, width: number): DistinctRows {
  const keys = new Map<string, number>();
  const unique: number[] = [];
  const rowOf = new Int32Array(rows);
  for (let r = 0; r < rows; r++) {
    const key = ids.subarray(r * width, (r + 1) * width).join(",");
    let index = keys.get(key);
    if (index === undefined) {
      index = unique.length;
      keys.set(key, index);
      unique.push(r);
    }
    rowOf[r] = index;
  }
  return { unique, rowOf };
}
