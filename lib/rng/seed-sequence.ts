/**
 * numpy's `SeedSequence` (numpy/random/bit_generator.pyx, stream-stable since numpy 1.19), the part
 * torchsde's Brownian tree uses: `SeedSequence(entropy, spawn_key=…, pool_size=…).generate_state(n)`
 * with uint32 words. The pool is filled by hashing the assembled entropy words, every word is
 * mixed into every other, and the state words are the pool cycled through a second hash.
 */

const INIT_A = 0x43b0d7e5;
const MULT_A = 0x931e8875;
const INIT_B = 0x8b51f9dd;
const MULT_B = 0x58f38ded;
const MIX_MULT_L = 0xca01f9dd;
const MIX_MULT_R = 0x4973f715;
const XSHIFT = 16;

/** `_int_to_uint32_array`: a non-negative integer as little-endian uint32 words ([0] for 0). */
function intToWords(value: bigint | number): number[] {
  let n = BigInt(value);
  if (n < 0n) throw new RangeError(`SeedSequence entropy must be non-negative, got ${n}`);
  if (n === 0n) return [0];
  const words: number[] = [];
  while (n > 0n) {
    words.push(Number(n & 0xffff_ffffn));
    n >>= 32n;
  }
  return words;
}

function mix(x: number, y: number): number {
  let result = (Math.imul(MIX_MULT_L, x) - Math.imul(MIX_MULT_R, y)) >>> 0;
  result = (result ^ (result >>> XSHIFT)) >>> 0;
  return result;
}

/**
 * The state words of `SeedSequence(entropy, spawn_key=spawnKey, pool_size=poolSize).generate_state(count)`.
 * @param spawnKey integers (each may take several words); empty for a root sequence.
 */
export function seedSequenceState(entropy: bigint | number, spawnKey: readonly (bigint | number)[], poolSize: number, count: number): Uint32Array {
  // get_assembled_entropy: with a spawn key, the run entropy is zero-padded to the pool size (numpy gh-16539).
  let run = intToWords(entropy);
  const spawn = spawnKey.flatMap(intToWords);
  if (spawn.length > 0 && run.length < poolSize) run = [...run, ...new Array<number>(poolSize - run.length).fill(0)];
  const entropyWords = [...run, ...spawn];

  // mix_entropy
  let hashConst = INIT_A;
  const hashmix = (value: number): number => {
    let v = (value ^ hashConst) >>> 0;
    hashConst = Math.imul(hashConst, MULT_A) >>> 0;
    v = Math.imul(v, hashConst) >>> 0;
    return (v ^ (v >>> XSHIFT)) >>> 0;
  };
  const pool = new Uint32Array(poolSize);
  for (let i = 0; i < poolSize; i++) pool[i] = hashmix(i < entropyWords.length ? entropyWords[i]! : 0);
  for (let src = 0; src < poolSize; src++) {
    for (let dst = 0; dst < poolSize; dst++) {
      if (src !== dst) pool[dst] = mix(pool[dst]!, hashmix(pool[src]!));
    }
  }
  for (let src = poolSize; src < entropyWords.length; src++) {
    for (let dst = 0; dst < poolSize; dst++) pool[dst] = mix(pool[dst]!, hashmix(entropyWords[src]!));
  }

  // generate_state
  const state = new Uint32Array(count);
  let stateConst = INIT_B;
  for (let i = 0; i < count; i++) {
    let v = (pool[i % poolSize]! ^ stateConst) >>> 0;
    stateConst = Math.imul(stateConst, MULT_B) >>> 0;
    v = Math.imul(v, stateConst) >>> 0;
    state[i] = (v ^ (v >>> XSHIFT)) >>> 0;
  }
  return state;
}
