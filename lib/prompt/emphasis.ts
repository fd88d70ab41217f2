/**
 * A1111's emphasis modes (modules/sd_emphasis.py at
 * AUTOMATIC1111/stable-diffusion-webui@82a973c04367123ae98bd9abdf80d9eda9b910e2): what the weights
 * of a prompt's tokens do to the text encoder output of one 77-token chunk.
 *
 * - "original" (A1111's default, `EmphasisOriginal`): z · m per token, then the whole chunk scaled
 *   so its mean is the mean before: `z · (mean(z) / mean(z · m))`;
 * - "no-norm" (`EmphasisOriginalNoNorm`): z · m only;
 * - "ignore": the prompt is parsed (brackets removed, BREAK works) but z is left as it is;
 * - "none": the prompt is not parsed at all and z is left as it is.
 *
 * The arithmetic is torch's on float32 tensors: `m = torch.asarray(multipliers)` is float32, every
 * product is rounded to float32, the two means are float32 scalars and so is their ratio.
 */

/** A1111's `emphasis` setting, in lower case ("Original" → "original", "No norm" → "no-norm"). */
export type Emphasis = "original" | "no-norm" | "ignore" | "none";

export const EMPHASIS_MODES: readonly Emphasis[] = ["original", "no-norm", "ignore", "none"];

/** A1111's spelling of each mode (its settings and infotext). */
export const A1111_EMPHASIS_NAMES: Readonly<Record<Emphasis, string>> = {
  original: "Original",
  "no-norm": "No norm",
  ignore: "Ignore",
  none: "None",
};

/** Whether the mode changes the encoder output (the others leave it as it is). */
export function emphasisScales(mode: Emphasis): boolean {
  return mode === "original" || mode === "no-norm";
}

/**
 * Applies emphasis in place to the encoder output of one group of chunks that A1111 encodes in one
 * call (`z` [rows, 77, hidden], `multipliers` [rows, 77]; one row for one prompt).
 * "original" takes its two means over the whole group, as `z.mean()` does.
 */
export function applyEmphasis(mode: Emphasis, z: Float32Array, multipliers: Float32Array, hidden: number): void {
  if (!emphasisScales(mode)) return;
  if (multipliers.length * hidden !== z.length) {
    throw new RangeError(`applyEmphasis: ${multipliers.length} multipliers for ${z.length / hidden} token vectors`);
  }
  // All ones: z · 1 = z and the two means are equal, so A1111's result is z itself (except that it
  // divides 0 by 0 into NaN when the mean is exactly 0; a chunk without weights is never changed here).
  if (multipliers.every((m) => m === 1)) return;
  const originalMean = mode === "original" ? meanFloat32(z) : 0;
  for (let token = 0; token < multipliers.length; token++) {
    const m = multipliers[token]!;
    const start = token * hidden;
    for (let i = start; i < start + hidden; i++) z[i] = z[i]! * m; // the store rounds to float32
  }
  if (mode !== "original") return;
  const ratio = Math.fround(originalMean / meanFloat32(z));
  for (let i = 0; i < z.length; i++) z[i] = z[i]! * ratio;
}

/**
 * `z.mean()` of a float32 tensor: summed in float64 and rounded once to float32. torch sums in
 * float32 pairwise, so the two can differ in the last bits (≤ 5e-7 relative on the goldens).
 */
function meanFloat32(z: Float32Array): number {
  let sum = 0;
  for (let i = 0; i < z.length; i++) sum += z[i]!;
  return Math.fround(sum / z.length);
}
