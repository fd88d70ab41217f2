/**
 * A1111's latent upscalers for hires fix (shared.latent_upscale_modes, v1.10.1): each is
 * `torch.nn.functional.interpolate(latents, size, mode, antialias)` with align_corners False, and
 * this is torch's CPU arithmetic for those modes — the float32 source-index math of
 * UpSample.h (nearest, nearest-exact, bilinear, bicubic with A = −0.75) and, for antialias, the
 * separable PIL-style filters of UpSampleKernel.cpp (bilinear triangle, bicubic with a = −0.5,
 * weights normalised per output pixel). Weighted sums are formed in float64 and rounded once.
 */
import { InvalidArgumentError } from "../errors.js";

export const LATENT_UPSCALERS = [
  "Latent",
  "Latent (antialiased)",
  "Latent (bicubic)",
  "Latent (bicubic antialiased)",
  "Latent (nearest)",
  "Latent (nearest-exact)",
] as const;
export type LatentUpscaler = (typeof LATENT_UPSCALERS)[number];

const MODES: Record<LatentUpscaler, { mode: "bilinear" | "bicubic" | "nearest" | "nearest-exact"; antialias: boolean }> = {
  Latent: { mode: "bilinear", antialias: false },
  "Latent (antialiased)": { mode: "bilinear", antialias: true },
  "Latent (bicubic)": { mode: "bicubic", antialias: false },
  "Latent (bicubic antialiased)": { mode: "bicubic", antialias: true },
  "Latent (nearest)": { mode: "nearest", antialias: false },
  "Latent (nearest-exact)": { mode: "nearest-exact", antialias: false },
};

const f32 = Math.fround;

/** One output index's taps along one axis: input indices and weights. */
interface Taps {
  index: number[];
  weight: number[];
}

function nearestTaps(inSize: number, outSize: number, exact: boolean): Taps[] {
  const scale = f32(inSize / outSize);
  return Array.from({ length: outSize }, (_, i) => {
    let src: number;
    if (outSize === inSize) src = i;
    else if (!exact && outSize === 2 * inSize) src = i >> 1;
    else src = Math.min(Math.floor(f32((exact ? i + 0.5 : i) * scale)), inSize - 1);
    return { index: [src], weight: [1] };
  });
}

function linearTaps(inSize: number, outSize: number): Taps[] {
  const scale = f32(inSize / outSize);
  return Array.from({ length: outSize }, (_, i) => {
    const real = Math.max(f32(f32(scale * (i + 0.5)) - 0.5), 0);
    const i0 = Math.floor(real);
    const i1 = i0 + (i0 < inSize - 1 ? 1 : 0);
    const l1 = f32(real - i0);
    return { index: [i0, i1], weight: [f32(1 - l1), l1] };
  });
}

function cubicTaps(inSize: number, outSize: number): Taps[] {
  const A = -0.75;
  const scale = f32(inSize / outSize);
  const c1 = (x: number) => ((A + 2) * x - (A + 3)) * x * x + 1;
  const c2 = (x: number) => ((A * x - 5 * A) * x + 8 * A) * x - 4 * A;
  return Array.from({ length: outSize }, (_, i) => {
    const real = f32(f32(scale * (i + 0.5)) - 0.5);
    const x0 = Math.floor(real);
    const t = f32(real - x0);
    const weight = [f32(c2(t + 1)), f32(c1(t)), f32(c1(1 - t)), f32(c2(2 - t))];
    const index = [-1, 0, 1, 2].map((k) => Math.min(Math.max(x0 + k, 0), inSize - 1));
    return { index, weight };
  });
}

/** torch's antialiased (PIL-style) taps: the filter stretched by the scale when downsampling. */
function antialiasTaps(inSize: number, outSize: number, cubic: boolean): Taps[] {
  const scale = f32(inSize / outSize);
  const interpSize = cubic ? 4 : 2;
  const support = (interpSize / 2) * (Math.max(scale , 1));
  const invScale = scale >= 1 ? 1 / scale : 1;
  const a = -0.5;
  const filter = cubic
    ? (x: number) => {
        const ax = Math.abs(x);
        if (ax < 1) return ((a + 2) * ax - (a + 3)) * ax * ax + 1;
        if (ax < 2) return ((ax - 5) * ax + 8) * ax * a - 4 * a;
        return 0;
      }
    : (x: number) => (Math.abs(x) < 1 ? 1 - Math.abs(x) : 0);
  return Array.from({ length: outSize }, (_, i) => {
    const center = scale * (i + 0.5);
    const xmin = Math.max(Math.trunc(center - support + 0.5), 0);
    const xsize = Math.min(Math.trunc(center + support + 0.5), inSize) - xmin;
    const raw = Array.from({ length: xsize }, (_, j) => filter((j + xmin - center + 0.5) * invScale));
    const total = raw.reduce((s, w) => s + w, 0);
    return { index: raw.map((_, j) => xmin + j), weight: raw.map((w) => (total !== 0 ? w / total : 0)) };
  });
}

function tapsFor(upscaler: LatentUpscaler, inSize: number, outSize: number): Taps[] {
  const { mode, antialias } = MODES[upscaler];
  if (mode === "nearest" || mode === "nearest-exact") return nearestTaps(inSize, outSize, mode === "nearest-exact");
  if (antialias) return antialiasTaps(inSize, outSize, mode === "bicubic");
  return mode === "bilinear" ? linearTaps(inSize, outSize) : cubicTaps(inSize, outSize);
}

/**
 * Upscales latents [batch, channels, height, width] to [batch, channels, outHeight, outWidth]
 * with one of A1111's latent upscalers.
 */
export function upscaleLatents(
  latents: Float32Array,
  shape: readonly [number, number, number, number],
  outHeight: number,
  outWidth: number,
  upscaler: LatentUpscaler,
): Float32Array {
  const [b, c, h, w] = shape;
  if (latents.length !== b * c * h * w) throw new InvalidArgumentError(`latents has ${latents.length} values, not ${b}·${c}·${h}·${w}`);
  const rows = tapsFor(upscaler, h, outHeight);
  const cols = tapsFor(upscaler, w, outWidth);
  const out = new Float32Array(b * c * outHeight * outWidth);
  for (let plane = 0; plane < b * c; plane++) {
    const src = plane * h * w;
    const dst = plane * outHeight * outWidth;
    for (let y = 0; y < outHeight; y++) {
      const row = rows[y]!;
      for (let x = 0; x < outWidth; x++) {
        const col = cols[x]!;
        let sum = 0;
        for (let i = 0; i < row.index.length; i++) {
          let inner = 0;
          for (let j = 0; j < col.index.length; j++) inner += col.weight[j]! * latents[src + row.index[i]! * w + col.index[j]!]!;
          sum += row.weight[i]! * inner;
        }
        out[dst + y * outWidth + x] = sum;
      }
    }
  }
  return out;
}
