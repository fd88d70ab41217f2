/**
 * How much memory a generation needs on the CPU backend, estimated before it runs, so a size
 * that would fail after minutes with ONNX Runtime's "Failed to allocate" is refused at once.
 *
 * Two terms dominate, both quadratic in the latent area:
 * - the attention scores of the UNet's highest-resolution self-attention:
 *   unet batch (×2 with classifier-free guidance) · heads · tokens² floats, tokens being the
 *   latent pixels at that level (h·w / 4^level);
 * - the VAE decoder: its mid-block self-attention over the latent pixels (one head,
 *   batch · (h·w)² floats) and its full-resolution activations (batch · channels · H · W floats,
 *   a few alive at once).
 * Weights and the rest are small next to these at the sizes where memory runs out. From the
 * UNet and VAE configs where they say it (diffusers `down_block_types`, `attention_head_dim`,
 * `num_attention_heads`, `block_out_channels`); where they do not, the worst case: attention at
 * full latent resolution with 8 heads (SD 1.x's count).
 */
import { totalmem } from "node:os";

const FLOAT = 4;
const DEFAULT_HEADS = 8;

export interface MemoryEstimate {
  bytes: number;
  /** The terms, for the message: "UNet attention 8 heads × 4096² × 2 …". */
  detail: string;
}

function numbers(value: unknown): number[] | undefined {
  return Array.isArray(value) && value.every((v) => typeof v === "number" && v > 0) ? (value as number[]) : undefined;
}

/** The level (0 = full latent resolution) and head count of the UNet's first self-attention. */
export function unetAttention(config: Record<string, unknown> | undefined): { level: number; heads: number } {
  const types = Array.isArray(config?.["down_block_types"]) ? (config!["down_block_types"] as unknown[]) : undefined;
  const found = types?.findIndex((t) => typeof t === "string" && t.includes("Attn")) ?? -1;
  const level = Math.max(found , 0);
  const channels = numbers(config?.["block_out_channels"]);
  const headsOption = config?.["num_attention_heads"] ?? undefined;
  const headDim = config?.["attention_head_dim"];
  let heads = DEFAULT_HEADS;
  if (typeof headsOption === "number" && headsOption > 0) heads = headsOption;
  else if (numbers(headsOption)) heads = numbers(headsOption)![level] ?? DEFAULT_HEADS;
  // diffusers' SD 1.x configs give the head count as attention_head_dim (a number); SD 2.x gives
  // the per-level head size (a list), the count being channels / head size.
  else if (typeof headDim === "number" && headDim > 0) heads = headDim;
  else if (numbers(headDim) && channels?.[level]) heads = Math.max(1, Math.round(channels[level]! / numbers(headDim)![level]!));
  return { level, heads };
}

export function estimateCpuMemory(
  configs: { unet?: Record<string, unknown>; vae?: Record<string, unknown> },
  request: { batch: number; width: number; height: number; guidance: boolean },
): MemoryEstimate {
  const { level, heads } = unetAttention(configs.unet);
  const unetBatch = request.batch * (request.guidance ? 2 : 1);
  const latentPixels = (request.width / 8) * (request.height / 8);
  const tokens = latentPixels / 4 ** level;
  const attention = unetBatch * heads * tokens * tokens * FLOAT;
  const vaeChannels = numbers(configs.vae?.["block_out_channels"])?.[0] ?? 128;
  const vaeAttention = request.batch * latentPixels * latentPixels * FLOAT;
  const vaeActivations = 3 * request.batch * vaeChannels * request.width * request.height * FLOAT;
  const vae = Math.max(vaeAttention, vaeActivations);
  // The UNet's scores and the decoder run one after the other: the larger of the two is needed.
  return {
    bytes: Math.max(attention, vae),
    detail: `UNet attention scores ${unetBatch} × ${heads} heads × ${tokens}² floats = ${formatBytes(attention)}, VAE decoder ${formatBytes(vae)}`,
  };
}

/** The default limit: this machine's memory. */
export function defaultMemoryLimit(): number {
  return totalmem();
}

export function formatBytes(bytes: number): string {
  const units = ["B", "KiB", "MiB", "GiB", "TiB", "PiB"];
  let value = bytes;
  let unit = 0;
  while (value >= 1024 && unit < units.length - 1) {
    value /= 1024;
    unit++;
  }
  return `${value.toFixed(value < 10 && unit > 0 ? 1 : 0)} ${units[unit]}`;
}
