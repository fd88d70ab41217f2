/**
 * `torch.Generator().manual_seed(seed)` + `torch.randn(shape, generator=g)` on the CPU, bit for bit
 * (PyTorch's AVX2 kernel, which every x86-64 CPU with AVX2 + FMA runs). The algorithm is
 * described in `test/fixtures/goldens/torch_randn.md`; in short:
 *
 * - numel ≥ 16: one float32 uniform per element, then float32 Box–Muller over blocks of 16
 *   (`avx2NormalFill16`); a ragged tail is redone from 16 fresh uniforms written over the last
 *   16 outputs (`normal_fill_AVX2`).
 * - numel < 16: one element at a time from a float64 Box–Muller that caches its second value in
 *   the generator (`at::normal_distribution<double>`); block-path calls leave the cache alone.
 */
import { avx2NormalFill16 } from "./avx2-box-muller.js";
import { validateSeed, validateShape, type Generator } from "./generator.js";
import { MT19937 } from "./mt19937.js";

/** Below this element count torch uses the scalar float64 path. */
const BLOCK = 16;

export class TorchGenerator implements Generator {
  readonly #seed: bigint;
  readonly #engine: MT19937;
  /** torch's `next_double_normal_sample`: the sine half of the last float64 Box–Muller pair. */
  #cachedNormal = 0;
  #hasCachedNormal = false;

  /**
   * @param seed 0 … 2⁶⁴ − 1 (number or bigint), as `torch.manual_seed(seed)`. Only the low 32
   *   bits seed the Mersenne Twister, so seeds equal modulo 2³² give the same stream (as in torch).
   */
  constructor(seed: number | bigint) {
    this.#seed = validateSeed("seed", seed);
    this.#engine = new MT19937(Number(this.#seed & 0xffff_ffffn));
  }

  /** The seed as given (all 64 bits, like torch's `initial_seed()`). */
  get seed(): bigint {
    return this.#seed;
  }

  randn(shape: readonly number[]): Float32Array {
    const numel = validateShape(shape);
    return numel >= BLOCK ? this.#randnBlocks(numel) : this.#randnScalar(numel);
  }

  #randnBlocks(numel: number): Float32Array {
    const out = new Float32Array(numel);
    this.#engine.fillUniform24(out, 0, numel);
    const full = numel - (numel % BLOCK);
    for (let start = 0; start < full; start += BLOCK) avx2NormalFill16(out, start);
    if (full !== numel) {
      // torch draws 16 more words and recomputes the last 16 outputs from them.
      const tail = out.subarray(numel - BLOCK);
      this.#engine.fillUniform24(tail, 0, BLOCK);
      avx2NormalFill16(tail, 0);
    }
    return out;
  }

  #randnScalar(numel: number): Float32Array {
    const out = new Float32Array(numel);
    for (let i = 0; i < numel; i++) out[i] = this.#nextNormalDouble(); // f32 rounding on store
    return out;
  }

  /** `at::normal_distribution<double>` with mean 0, std 1 (the result is a double). */
  #nextNormalDouble(): number {
    if (this.#hasCachedNormal) {
      this.#hasCachedNormal = false;
      return this.#cachedNormal;
    }
    const u1 = this.#engine.nextDouble53();
    const u2 = this.#engine.nextDouble53();
    const r = Math.sqrt(-2 * Math.log1p(-u2));
    const theta = 2 * Math.PI * u1;
    this.#cachedNormal = r * Math.sin(theta);
    this.#hasCachedNormal = true;
    return r * Math.cos(theta);
  }
}
