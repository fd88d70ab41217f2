/**
 * AUTOMATIC1111's "NV" random source (`modules/rng_philox.py`): a CPU imitation of
 * `torch.randn(shape, device="cuda")` after `torch.manual_seed(seed)`, so seeds give the same
 * pictures as on NVIDIA GPUs. Element i of call number o is Philox4x32-10 on counter
 * (o, 0, i, 0) with the 64-bit seed as key, then one float64 Box–Muller output (the sine).
 * See `test/fixtures/goldens/nv_randn.md`.
 */
import { validateSeed, validateShape, type Generator } from "./generator.js";
import { philox4x32, philoxOut } from "./philox.js";

/** f32(2.3283064e−10), the module's `two_pow32_inv`: exactly 2⁻³². */
const TWO_POW32_INV = Math.fround(2.3283064e-10);
/** f32(2.3283064e−10 × 6.2831855), `two_pow32_inv_2pi`: f32(2π)·2⁻³² (bits 0x30C90FDB). */
const TWO_POW32_INV_2PI = Math.fround(2.3283064e-10 * 6.2831855);

export class NvGenerator implements Generator {
  readonly #seed: bigint;
  readonly #key0: number;
  readonly #key1: number;
  #offset = 0;

  /**
   * @param seed 0 … 2⁶⁴ − 1 (number or bigint). All 64 bits form the Philox key, so, unlike
   *   torch's CPU generator, seed 2³² + 5 differs from seed 5.
   */
  constructor(seed: number | bigint) {
    this.#seed = validateSeed("seed", seed);
    this.#key0 = Number(this.#seed & 0xffff_ffffn);
    this.#key1 = Number(this.#seed >> 32n);
  }

  get seed(): bigint {
    return this.#seed;
  }

  /** Counter word 0 of the next call: the number of `randn` calls made so far. */
  get offset(): number {
    return this.#offset;
  }

  randn(shape: readonly number[]): Float32Array {
    const numel = validateShape(shape);
    const out = new Float32Array(numel);
    const offset = this.#offset >>> 0;
    const k0 = this.#key0;
    const k1 = this.#key1;
    for (let i = 0; i < numel; i++) {
      philox4x32(offset, 0, i, 0, k0, k1);
      // Box–Muller in float64, as numpy evaluates it (uint32 × float32 promotes to float64).
      const u = philoxOut[0]! * TWO_POW32_INV + TWO_POW32_INV / 2;
      const v = philoxOut[1]! * TWO_POW32_INV_2PI + TWO_POW32_INV_2PI / 2;
      out[i] = Math.sqrt(-2 * Math.log(u)) * Math.sin(v); // rounded to float32 on store
    }
    this.#offset++;
    return out;
  }
}
