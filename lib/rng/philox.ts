/**
 * Philox4x32-10 (Salmon et al., "Parallel random numbers: as easy as 1, 2, 3", SC 2011), the
 * counter-based generator behind curand and torch's CUDA generator, in exact 32-bit integer
 * arithmetic on JS numbers.
 *
 * Words are carried as int32 (the bit pattern of the uint32 word) so V8 keeps them in integer
 * registers: `^`, `Math.imul` and `| 0` are all exact modulo 2³². The high half of each 32×32
 * product is assembled from 16-bit pieces whose partial sums stay below 2³² (exact in a double).
 */

/** Philox multipliers. */
const M0 = 0xd2511f53;
const M1 = 0xcd9e8d57;
const M0_HI = M0 >>> 16;
const M0_LO = M0 & 0xffff;
const M1_HI = M1 >>> 16;
const M1_LO = M1 & 0xffff;
/** Key bumps (Weyl sequence): the golden ratio and √3 − 1 as 32-bit fractions, as int32. */
const W0 = 0x9e3779b9 | 0;
const W1 = 0xbb67ae85 | 0;

/** Output of {@link philox4x32}: module scratch, so callers in hot loops allocate nothing. */
export const philoxOut = new Uint32Array(4);

/**
 * Philox4x32 with 10 rounds on counter (c0, c1, c2, c3) and key (k0, k1), 32-bit words given as
 * uint32 or int32. The four output words are written to {@link philoxOut}.
 */
export function philox4x32(c0: number, c1: number, c2: number, c3: number, k0: number, k1: number): void {
  c0 |= 0;
  c1 |= 0;
  c2 |= 0;
  c3 |= 0;
  k0 |= 0;
  k1 |= 0;
  for (let round = 0; round < 10; round++) {
    if (round > 0) {
      k0 = (k0 + W0) | 0;
      k1 = (k1 + W1) | 0;
    }
    // hi0 = ⌊c0·M0 / 2³²⌋ from a·m = ah·mh·2³² + (ah·ml + al·mh)·2¹⁶ + al·ml (16-bit halves).
    const a0 = c0 & 0xffff;
    const b0 = c0 >>> 16;
    const mid0 = b0 * M0_LO + ((a0 * M0_LO) >>> 16);
    const hi0 = (b0 * M0_HI + (mid0 >>> 16) + ((a0 * M0_HI + (mid0 & 0xffff)) >>> 16)) | 0;
    const a1 = c2 & 0xffff;
    const b1 = c2 >>> 16;
    const mid1 = b1 * M1_LO + ((a1 * M1_LO) >>> 16);
    const hi1 = (b1 * M1_HI + (mid1 >>> 16) + ((a1 * M1_HI + (mid1 & 0xffff)) >>> 16)) | 0;
    const lo0 = Math.imul(c0, M0);
    const lo1 = Math.imul(c2, M1);
    c0 = hi1 ^ c1 ^ k0;
    c1 = lo1;
    c2 = hi0 ^ c3 ^ k1;
    c3 = lo0;
  }
  philoxOut[0] = c0;
  philoxOut[1] = c1;
  philoxOut[2] = c2;
  philoxOut[3] = c3;
}
