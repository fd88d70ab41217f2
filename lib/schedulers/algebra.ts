/**
 * The vector type a scheduler's `step` is written over. Every supported scheduler only ever
 * forms linear combinations of latents, model outputs and noise with scalar coefficients, so one
 * operation is enough. Two implementations:
 *
 * - `symbolicAlgebra`: vectors are sparse maps from the basis {x_i, m_i, n_i, u_i} to coefficients.
 *   Running a scheduler on x_j = {x_j: 1}, m_j = {m_j: 1}, n_j = {n_j: 1} (and u_j = {u_j: 1}, the
 *   unconditional prediction, for samplers that read it) reads the sampler program's coefficient
 *   table off the result (compile.ts).
 * - `float64Algebra`: plain Float64Array vectors, to run the very same step code on real numbers
 *   (the tests check the compiled program against it).
 */

export type Term<V> = readonly [coefficient: number, vector: V];

export interface LinearAlgebra<V> {
  /** Σ coefficient · vector over the terms, as a new vector (at least one term). */
  combine(...terms: Term<V>[]): V;
}

/** What a symbolic basis element stands for. */
export type BasisKind = "x" | "m" | "n" | "u";
const KIND_CODES: Record<BasisKind, number> = { x: 0, m: 1, n: 2, u: 3 };
const KINDS: BasisKind[] = ["x", "m", "n", "u"];

/**
 * A sparse linear combination of basis elements x_i (latents), m_i (guided model outputs), n_i
 * (noise) and u_i (unconditional model outputs).
 */
export class SymbolicVector {
  /** key = 4·index + kind code. */
  readonly terms: ReadonlyMap<number, number>;

  constructor(terms: ReadonlyMap<number, number>) {
    this.terms = terms;
  }

  static basis(kind: BasisKind, index: number): SymbolicVector {
    return new SymbolicVector(new Map([[4 * index + KIND_CODES[kind], 1]]));
  }

  /** The coefficient of one basis element (0 when absent). */
  coefficient(kind: BasisKind, index: number): number {
    return this.terms.get(4 * index + KIND_CODES[kind]) ?? 0;
  }

  /** Every (kind, index, coefficient) with a non-zero coefficient. */
  *entries(): Generator<{ kind: BasisKind; index: number; coefficient: number }> {
    for (const [key, coefficient] of this.terms) {
      yield { kind: KINDS[key % 4]!, index: Math.floor(key / 4), coefficient };
    }
  }
}

export const symbolicAlgebra: LinearAlgebra<SymbolicVector> = {
  combine(...terms) {
    const out = new Map<number, number>();
    for (const [scale, vector] of terms) {
      if (scale === 0) continue;
      for (const [key, value] of vector.terms) out.set(key, (out.get(key) ?? 0) + scale * value);
    }
    // Exact cancellations (e.g. (x − (x − σm))/σ) leave zeros; dropping them keeps the history short.
    for (const [key, value] of out) if (value === 0) out.delete(key);
    return new SymbolicVector(out);
  },
};

export const float64Algebra: LinearAlgebra<Float64Array> = {
  combine(...terms) {
    const length = terms[0]![1].length;
    const out = new Float64Array(length);
    for (const [scale, vector] of terms) {
      if (vector.length !== length) throw new RangeError(`vector lengths differ: ${vector.length} vs ${length}`);
      // Same rule as the symbolic algebra: a zero coefficient drops the term entirely.
      if (scale === 0) continue;
      for (let i = 0; i < length; i++) out[i]! += scale * vector[i]!;
    }
    return out;
  },
};
