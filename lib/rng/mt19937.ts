/**
 * MT19937, the 32-bit Mersenne Twister, as PyTorch's CPU generator runs it
 * (`aten/src/ATen/core/MT19937RNGEngine.h`): the textbook algorithm (same word stream as C++
 * `std::mt19937` and numpy's legacy `RandomState`) with the `init_genrand` seeding rule.
 */

const N = 624;
const M = 397;
const MATRIX_A = 0x9908b0df;
const UPPER_MASK = 0x80000000;
const LOWER_MASK = 0x7fffffff;
/** 2⁻²⁴: float32 uniforms use the low 24 bits of a word. */
const TWO_POW_MINUS_24 = 2 ** -24;
/** 2⁻⁵³: float64 uniforms use the low 53 bits of a 64-bit draw. */
const TWO_POW_MINUS_53 = 2 ** -53;

export class MT19937 {
  readonly #state = new Uint32Array(N);
  /** Index of the next state word to temper; N means "regenerate before the next draw". */
  #next = N;

  /** Seeds with `init_genrand(seed32)`; `seed32` is taken modulo 2³². */
  constructor(seed32: number) {
    const mt = this.#state;
    mt[0] = seed32 >>> 0;
    for (let i = 1; i < N; i++) {
      const prev = mt[i - 1]!;
      // 1812433253 · (prev ^ (prev >> 30)) + i, modulo 2³² (Math.imul keeps the low 32 bits).
      mt[i] = (Math.imul(1812433253, prev ^ (prev >>> 30)) + i) >>> 0;
    }
  }

  /** Regenerates the whole block in place, in increasing index order. */
  #twist(): void {
    const mt = this.#state;
    for (let i = 0; i < N; i++) {
      const y = (mt[i]! & UPPER_MASK) | (mt[(i + 1) % N]! & LOWER_MASK);
      mt[i] = mt[(i + M) % N]! ^ (y >>> 1) ^ (y & 1 ? MATRIX_A : 0);
    }
    this.#next = 0;
  }

  /** The next 32-bit word, tempered, as an unsigned integer. */
  nextUint32(): number {
    if (this.#next >= N) this.#twist();
    let y = this.#state[this.#next++]!;
    y ^= y >>> 11;
    y ^= (y << 7) & 0x9d2c5680;
    y ^= (y << 15) & 0xefc60000;
    y ^= y >>> 18;
    return y >>> 0;
  }

  /**
   * Fills `out[start … start + count)` with float32 uniforms `(w & 0xFFFFFF) · 2⁻²⁴`, one word
   * each (torch's `uniform_real_distribution<float>(0, 1)`). Every value is exact in float32.
   */
  fillUniform24(out: Float32Array, start: number, count: number): void {
    const mt = this.#state;
    const end = start + count;
    let k = start;
    while (k < end) {
      if (this.#next >= N) this.#twist();
      // Temper a run of words without re-checking the block boundary for each.
      const run = Math.min(end - k, N - this.#next);
      let next = this.#next;
      for (let stop = k + run; k < stop; k++) {
        let y = mt[next++]!;
        y ^= y >>> 11;
        y ^= (y << 7) & 0x9d2c5680;
        y ^= (y << 15) & 0xefc60000;
        y ^= y >>> 18;
        out[k] = (y & 0xffffff) * TWO_POW_MINUS_24;
      }
      this.#next = next;
    }
  }

  /**
   * A float64 uniform from one 64-bit draw (two words, the first is the high half):
   * `(w₆₄ mod 2⁵³) · 2⁻⁵³` (torch's `uniform_real_distribution<double>(0, 1)`).
   */
  nextDouble53(): number {
    const hi = this.nextUint32();
    const lo = this.nextUint32();
    return ((hi & 0x1fffff) * 4294967296 + lo) * TWO_POW_MINUS_53;
  }
}
