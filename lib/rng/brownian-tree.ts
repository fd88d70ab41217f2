/**
 * The Brownian noise of A1111's SDE samplers (DPM++ SDE, 2M SDE, 2M SDE Heun, 3M SDE), bit for bit.
 *
 * A1111 v1.10.1 (sd_samplers_common.Sampler.create_noise_sampler) hands k-diffusion a
 * BrownianTreeNoiseSampler(x, σ_min, σ_max, seed=<the batch's image seeds>): one
 * torchsde.BrownianTree per image (k-diffusion's BatchedBrownianTree, ab527a9), each a torchsde
 * 0.2.6 BrownianInterval with halfway_tree=True, tol=1e-6, pool_size=24 and no Lévy area. Its
 * normals come from A1111's patched `_randn` (replace_torchsde_browinan): devices.randn_local(seed,
 * size), the first draw of a fresh CPU torch generator or "NV" Philox source seeded with a node's
 * seed; the node seeds are numpy SeedSequence words (seed-sequence.ts).
 *
 * The tree: the root [round(σ_min, 6), round(σ_max, 6)] holds W = randn(root seed)·√(σ_max − σ_min).
 * Every node splits at its rounded halfway point, and a child's increment is the Brownian bridge of
 * its parent's: left = (l/h)·W + √(l·r/h)·randn(parent's seed), right = W − left (l, r the parts, h
 * the whole). A query [a, b] (clamped into the root, rounded to 6 decimals) is the sum, left to
 * right, of the fewest tree nodes that tile it. Everything torch computes in float32 is done here
 * in float32, op by op in torch's order (Python scalars cast to float32 first, as torch does).
 * The value of a node depends only on where it sits in the tree, so the order of queries and
 * torchsde's caches change nothing.
 *
 * The increments are torchsde's bit for bit. The last step, dividing by √|σ_next − σ|, can differ
 * by one float32 ulp from what a given A1111 install computes: the square root of that 0-d CPU
 * tensor goes through MKL's vsSqrt, which is not correctly rounded on every CPU (on the machine
 * that made the goldens, an AMD EPYC with MKL 2024.2, it is one ulp low for ~18% of inputs), and
 * on a CUDA device torch divides by a CPU scalar as a multiplication by its float32 reciprocal.
 * Here the root is correctly rounded and the division a true division, as torch does without MKL.
 */
import { InternalError, InvalidOptionError } from "../errors.js";
import type { RngSource } from "./index.js";
import { NvGenerator } from "./nv-generator.js";
import { seedSequenceState } from "./seed-sequence.js";
import { TorchGenerator } from "./torch-generator.js";

/** torchsde.BrownianTree's defaults, as k-diffusion builds it. */
const POOL_SIZE = 24;
/** tol = 1e-6: every time is rounded to 6 decimals (ndigits = −int(log10(tol))). */
const DECIMALS = 6;
/** Node values kept for reuse (each is one image's latent; a query walks ~25 levels). */
const CACHE_SIZE = 96;

/**
 * Python's `round(x, 6)`: the double nearest the decimal correctly rounded to 6 places, ties to even
 * (toFixed rounds ties up; a tie needs x = k/128 with k odd, checked exactly).
 */
export function roundToTolerance(x: number): number {
  const scaled = x * 128;
  if (Number.isInteger(scaled) && scaled % 2 !== 0) {
    const n = Math.floor(x * 10 ** DECIMALS); // exact: x·10⁶ = n + ½ is a double
    return (n % 2 === 0 ? n : n + 1) / 10 ** DECIMALS;
  }
  return Number(x.toFixed(DECIMALS));
}

interface TreeNode {
  readonly start: number;
  readonly end: number;
  readonly parent: TreeNode | null;
  readonly spawnKey: number;
  readonly depth: number;
  midway?: number;
  /** The seed of the normals that split this node (its SeedSequence's first word). */
  splitSeed?: number;
  left?: TreeNode;
  right?: TreeNode;
}

/** One torchsde.BrownianTree (BrownianInterval, halfway tree) of one image. */
export class BrownianTree {
  readonly #rng: RngSource;
  readonly #entropy: bigint;
  readonly #shape: readonly number[];
  readonly #root: TreeNode;
  readonly #rootW: Float32Array;
  readonly #cache = new Map<TreeNode, Float32Array>();

  /**
   * @param entropy the image's seed (torchsde's `entropy`).
   * @param t0 the lower end (a float32 value), below t1.
   * @param shape one image's latent shape, e.g. [4, h, w].
   */
  constructor(rng: RngSource, entropy: bigint, t0: number, t1: number, shape: readonly number[]) {
    this.#rng = rng;
    this.#entropy = entropy;
    this.#shape = shape;
    this.#root = { start: roundToTolerance(t0), end: roundToTolerance(t1), parent: null, spawnKey: 0, depth: 0 };
    const [wSeed] = seedSequenceState(entropy, [], POOL_SIZE, 3);
    // W = _randn(initial_W_seed) · math.sqrt(t1 − t0), from the unrounded ends.
    this.#rootW = this.#randn(wSeed!);
    const scale = Math.fround(Math.sqrt(t1 - t0));
    for (let i = 0; i < this.#rootW.length; i++) this.#rootW[i] = Math.fround(this.#rootW[i]! * scale);
  }

  /** BrownianInterval.__call__(ta, tb) for ta ≤ tb: the increment over [ta, tb] (clamped into the tree). */
  increment(ta: number, tb: number): Float32Array {
    const root = this.#root;
    ta = Math.min(Math.max(ta, root.start), root.end);
    tb = Math.min(Math.max(tb, root.start), root.end);
    if (ta > tb) throw new InternalError(`Brownian tree query [${ta}, ${tb}] is reversed`);
    const size = this.#rootW.length;
    if (ta === tb) return new Float32Array(size);
    ta = roundToTolerance(ta);
    tb = roundToTolerance(tb);
    if (ta === tb) {
      // torchsde recurses without end here (RecursionError in A1111).
      throw new InvalidOptionError("steps", `two noise levels of the schedule (${ta} … ${tb}) are closer than torchsde's 1e-6 tolerance, where A1111's SDE samplers fail; use other steps or another schedule type`);
    }
    const nodes: TreeNode[] = [];
    this.#locate(root, ta, tb, nodes);
    const out = Float32Array.from(this.#valueOf(nodes[0]!));
    for (const node of nodes.slice(1)) {
      const w = this.#valueOf(node);
      for (let i = 0; i < size; i++) out[i] = Math.fround(out[i]! + w[i]!);
    }
    return out;
  }

  /** _loc_inner: the nodes that tile [ta, tb] inside `node`, left to right, splitting where needed. */
  #locate(node: TreeNode, ta: number, tb: number, out: TreeNode[]): void {
    for (;;) {
      if (ta === node.start && tb === node.end) {
        out.push(node);
        return;
      }
      if (node.midway === undefined) this.#split(node);
      const midway = node.midway!;
      if (tb <= midway) node = node.left!;
      else if (ta >= midway) node = node.right!;
      else {
        this.#locate(node.left!, ta, midway, out);
        node = node.right!;
        ta = midway;
      }
      if (node.depth > 1000) throw new InternalError("Brownian tree: the split search did not converge");
    }
  }

  /** _split_exact at the rounded halfway point, with the node's SeedSequence(entropy, spawn_key=(key, depth)). */
  #split(node: TreeNode): void {
    const midway = roundToTolerance(0.5 * (node.end + node.start));
    node.midway = midway;
    node.splitSeed = seedSequenceState(this.#entropy, [node.spawnKey, node.depth], POOL_SIZE, 4)[0]!;
    const depth = node.depth + 1;
    node.left = { start: node.start, end: midway, parent: node, spawnKey: 2 * node.spawnKey, depth };
    node.right = { start: midway, end: node.end, parent: node, spawnKey: 2 * node.spawnKey + 1, depth };
  }

  /** A node's increment: the root's W, or the bridge of its parent's (both children made at once). */
  #valueOf(node: TreeNode): Float32Array {
    const parent = node.parent;
    if (parent === null) return this.#rootW;
    const cached = this.#cache.get(node);
    if (cached) {
      this.#cache.delete(node);
      this.#cache.set(node, cached);
      return cached;
    }
    const w = this.#valueOf(parent);
    const midway = parent.midway!;
    const hReciprocal = 1 / (parent.end - parent.start);
    const leftDiff = midway - parent.start;
    const rightDiff = parent.end - midway;
    // mean = left_diff · W · h_reciprocal; left_W = mean + math.sqrt(var) · noise (float32 tensors, scalars cast to float32).
    const a = Math.fround(leftDiff);
    const b = Math.fround(hReciprocal);
    const s = Math.fround(Math.sqrt(leftDiff * rightDiff * hReciprocal));
    const noise = this.#randn(parent.splitSeed!);
    const left = new Float32Array(w.length);
    const right = new Float32Array(w.length);
    for (let i = 0; i < w.length; i++) {
      const leftW = Math.fround(Math.fround(Math.fround(a * w[i]!) * b) + Math.fround(s * noise[i]!));
      left[i] = leftW;
      right[i] = Math.fround(w[i]! - leftW);
    }
    this.#remember(parent.left!, left);
    this.#remember(parent.right!, right);
    return node === parent.left ? left : right;
  }

  #remember(node: TreeNode, value: Float32Array): void {
    this.#cache.set(node, value);
    if (this.#cache.size > CACHE_SIZE) this.#cache.delete(this.#cache.keys().next().value!);
  }

  /** A1111's torchsde `_randn`: devices.randn_local(seed, size), a fresh generator's first draw. */
  #randn(seed: number): Float32Array {
    const generator = this.#rng === "cpu" ? new TorchGenerator(seed) : new NvGenerator(seed);
    return generator.randn(this.#shape);
  }
}

/**
 * k-diffusion's BrownianTreeNoiseSampler over a batch (BatchedBrownianTree, one tree per image
 * seed), as A1111's create_noise_sampler makes it: noise(σ, σ_next) = tree(σ, σ_next) / √|σ_next − σ|.
 */
export class BrownianNoiseSampler {
  readonly #trees: BrownianTree[];
  readonly #sign: number;
  readonly #size: number;

  /**
   * @param seeds one per image (A1111's p.all_seeds of the batch).
   * @param shape one image's latent shape [4, h, w].
   * @param sigmaMin the smallest non-zero sigma of the schedule, sigmaMax the largest (float32 values).
   */
  constructor(rng: RngSource, seeds: readonly bigint[], shape: readonly number[], sigmaMin: number, sigmaMax: number) {
    const [t0, t1, sign] = sorted(sigmaMin, sigmaMax);
    this.#sign = sign;
    this.#trees = seeds.map((seed) => new BrownianTree(rng, seed, t0, t1, shape));
    this.#size = shape.reduce((n, d) => n * d, 1);
  }

  /** BatchedBrownianTree(σ, σ_next): each image's tree increment between them, negated when σ > σ_next. */
  increment(sigma: number, sigmaNext: number): Float32Array {
    const [t0, t1, sign] = sorted(sigma, sigmaNext);
    const negate = this.#sign * sign < 0;
    const out = new Float32Array(this.#trees.length * this.#size);
    for (const [k, tree] of this.#trees.entries()) {
      const w = tree.increment(t0, t1);
      if (negate) for (let i = 0; i < w.length; i++) w[i] = -w[i]!;
      out.set(w, k * this.#size);
    }
    return out;
  }

  /**
   * The normalised increment from σ to σ_next: [batch, …shape], image i from seed i.
   * The divisor √|σ_next − σ| is the correctly rounded float32 square root; torch's CPU float32 sqrt
   * goes through MKL, which on some CPUs is one ulp off for some inputs (see the goldens' test).
   */
  noise(sigma: number, sigmaNext: number): Float32Array {
    const out = this.increment(sigma, sigmaNext);
    const divisor = Math.fround(Math.sqrt(Math.abs(Math.fround(sigmaNext - sigma))));
    for (let i = 0; i < out.length; i++) out[i] = Math.fround(out[i]! / divisor);
    return out;
  }
}

/** BatchedBrownianTree.sort: (a, b, 1) if a < b else (b, a, −1). */
function sorted(a: number, b: number): [number, number, 1 | -1] {
  return a < b ? [a, b, 1] : [b, a, -1];
}
