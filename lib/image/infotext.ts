/**
 * The A1111 "infotext": the generation parameters A1111 writes into each image (PNG `parameters`
 * chunk) and reads back with "PNG Info" / "Send to txt2img". Format (A1111 `create_infotext`):
 *
 * ```
 * <prompt>
 * Negative prompt: <negative prompt>            (only when one was given)
 * Steps: 20, Sampler: Euler a, CFG scale: 7.5, Seed: 1, Size: 512x512, Model hash: 6ce0161689, Denoising strength: 0.6, RNG: CPU
 * ```
 *
 * Numbers are written as the web UI writes them (`7.5`, `1`, `0.6`); values that contain a
 * comma, colon or quote are JSON-quoted, as A1111's `quote()` does.
 */

export interface InfotextParameters {
  prompt: string;
  /** Omitted from the text when empty or undefined. */
  negativePrompt?: string;
  steps: number;
  /** A1111's sampler name ("PLMS", "Euler a", "DPM++ 2M Karras", …). */
  sampler: string;
  cfgScale: number;
  seed: bigint | number;
  width: number;
  height: number;
  /** First 10 hex digits of the model's SHA-256 (A1111's "Model hash"). */
  modelHash?: string;
  /** A1111's "Model": the checkpoint file's name without extension (written after the hash). */
  modelName?: string;
  /** img2img strength. */
  denoisingStrength?: number;
  /** "cpu" → `RNG: CPU` (torch's CPU generator), "nv" → `RNG: NV` (A1111's Philox source). */
  rng: "cpu" | "nv";
  /** A1111 ≥ 1.9 `Schedule type` (k-diffusion samplers). */
  scheduleType?: string;
  /** A1111's `Variation seed` / `Variation seed strength` (written when the strength is not 0). */
  variationSeed?: bigint;
  variationSeedStrength?: number;
  /** A1111's `Seed resize from` ("WxH"). */
  seedResizeFrom?: string;
  /** A1111's clip skip: written when above 1, as A1111 writes it. */
  clipSkip?: number;
  /** A1111's `ENSD` (eta_noise_seed_delta). */
  ensd?: number;
  /** A1111's hires fields (`Hires upscale`, `Hires steps`, `Hires upscaler`), written after `RNG`. */
  hires?: [string, string][];
  /** A1111's `Eta` (ancestral samplers, when not 1). */
  eta?: number;
  /**
   * What A1111 adds to the infotext while computing the conditioning, in the order it adds them:
   * `TI hashes` (textual-inversion embeddings used) and `Emphasis` (its name when not "Original"
   * and a prompt has "(" or "[").
   */
  conditioningParams?: [string, string][];
  /** A1111's `Lora hashes` value ("name: 0123456789ab, …", lib/convert/lora/hash.ts), set by the LoRA extension before the conditioning. */
  loraHashes?: string;
  /** A1111's `Eta DDIM` (its DDIM, when not 0). */
  etaDdim?: number;
}

/** A1111's `quote()`: JSON-quote a value that would break the comma-separated list. */
function quote(value: string): string {
  return /[,:\n"]/.test(value) ? JSON.stringify(value) : value;
}

export function formatInfotext(p: InfotextParameters): string {
  const fields: [string, string][] = [
    ["Steps", String(p.steps)],
    ["Sampler", p.sampler],
  ];
  // The order of A1111's create_infotext (v1.10).
  if (p.scheduleType !== undefined) fields.push(["Schedule type", p.scheduleType]);
  fields.push(["CFG scale", String(p.cfgScale)], ["Seed", String(p.seed)], ["Size", `${p.width}x${p.height}`]);
  if (p.modelHash) fields.push(["Model hash", p.modelHash]);
  if (p.modelName) fields.push(["Model", p.modelName]);
  if (p.variationSeed !== undefined) fields.push(["Variation seed", String(p.variationSeed)]);
  if (p.variationSeedStrength !== undefined) fields.push(["Variation seed strength", String(p.variationSeedStrength)]);
  if (p.seedResizeFrom !== undefined) fields.push(["Seed resize from", p.seedResizeFrom]);
  if (p.denoisingStrength !== undefined) fields.push(["Denoising strength", String(p.denoisingStrength)]);
  if (p.clipSkip !== undefined && p.clipSkip > 1) fields.push(["Clip skip", String(p.clipSkip)]);
  if (p.ensd !== undefined) fields.push(["ENSD", String(p.ensd)]);
  fields.push(["RNG", p.rng === "nv" ? "NV" : "CPU"]);
  if (p.hires) fields.push(...p.hires);
  // A1111 adds its extra generation parameters in the order it sets them: hires (at init), Lora hashes
  // (the LoRA extension, before the conditioning), TI hashes and Emphasis (with the conditioning), Eta (while sampling).
  if (p.loraHashes !== undefined) fields.push(["Lora hashes", p.loraHashes]);
  if (p.conditioningParams) fields.push(...p.conditioningParams);
  if (p.eta !== undefined) fields.push(["Eta", String(p.eta)]);
  if (p.etaDdim !== undefined) fields.push(["Eta DDIM", String(p.etaDdim)]);
  const lines = [p.prompt];
  if (p.negativePrompt) lines.push(`Negative prompt: ${p.negativePrompt}`);
  lines.push(fields.map(([k, v]) => `${k}: ${quote(v)}`).join(", "));
  return lines.join("\n");
}
