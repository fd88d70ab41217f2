/**
 * Helpers for bit-for-bit comparisons of float32 / float16 arrays (test/native/scale-cast.test.ts,
 * test/gpu/device-latents.test.ts). Not a test file.
 */

/** float32 bits per element, NaN as one token (payloads are not part of the contract). */
export function floatBits(values: Float32Array): string[] {
  const bits = new Uint32Array(values.buffer, values.byteOffset, values.length);
  return Array.from(values, (v, i) => (Number.isNaN(v) ? "NaN" : bits[i]!.toString(16)));
}

/** float16 bits per element, NaN as one token. */
export function halfBits(bits: Uint16Array): string[] {
  return Array.from(bits, (b) => ((b & 0x7c00) === 0x7c00 && (b & 0x03ff) !== 0 ? "NaN" : b.toString(16)));
}

/** Latent-like values over many binades, plus the awkward ones (±0, subnormals, huge, ±Inf, NaN). */
export function scaleCastInputs(): Float32Array {
  const out: number[] = [0, -0, 1e-45, -1e-45, 1e-40, 1.1754942e-38, 3.4028235e38, -3.4028235e38, Infinity, -Infinity, NaN, 1, -1, 0.18215];
  let state = 12345;
  const uniform = () => {
    state = (Math.imul(state, 1664525) + 1013904223) >>> 0;
    return (state + 1) / 4294967297;
  };
  for (let i = 0; i < 20000; i++) {
    const normal = Math.sqrt(-2 * Math.log(uniform())) * Math.cos(2 * Math.PI * uniform());
    out.push(normal * 2 ** ((i % 40) - 20));
  }
  return Float32Array.from(out);
}

/** The TypeScript path: diffusers' `latents / scaling_factor` in float32. */
export function divideInTs(values: Float32Array, factor: number): Float32Array {
  const d = Math.fround(factor);
  return Float32Array.from(values, (x) => x / d);
}
