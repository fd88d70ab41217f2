/**
 * Conversions between the VAE's float tensors and 8-bit RGB, with diffusers' exact rounding
 * (`VaeImageProcessor`): every float operation is rounded to float32 as torch/numpy do.
 */
import { SdTrtError } from "../errors.js";

/** numpy's `round` (half to even) for a non-negative value. */
function roundHalfEven(value: number): number {
  const floor = Math.floor(value);
  const fraction = value - floor;
  if (fraction > 0.5) return floor + 1;
  if (fraction < 0.5) return floor;
  return floor % 2 === 0 ? floor : floor + 1;
}

/**
 * Decoded images [B, 3, H, W] (VAE output, about −1…1) → one uint8 RGB HWC array per image:
 * `(x·0.5 + 0.5).clamp(0, 1)`, then `round(x·255)` half to even, as diffusers' `postprocess`
 * + `numpy_to_pil`.
 * @param source names the model in the error raised for NaN.
 * @throws SdTrtError if any value is NaN (an fp16 VAE overflow): never a silent black image.
 */
export function decodedToRgb(decoded: Float32Array, batch: number, height: number, width: number, source = "the VAE decoder"): Uint8Array[] {
  const plane = height * width;
  const images: Uint8Array[] = [];
  for (let b = 0; b < batch; b++) {
    const rgb = new Uint8Array(plane * 3);
    const base = b * 3 * plane;
    for (let c = 0; c < 3; c++) {
      const channel = base + c * plane;
      for (let i = 0; i < plane; i++) {
        const x = decoded[channel + i]!;
        if (Number.isNaN(x)) {
          throw new SdTrtError("ERR_NAN_IMAGE", `${source} produced NaN in image ${b} (at channel ${c}, pixel ${i}); the image would be black`);
        }
        const unit = Math.min(1, Math.max(0, Math.fround(x * 0.5 + 0.5)));
        rgb[i * 3 + c] = roundHalfEven(Math.fround(unit * 255));
      }
    }
    images.push(rgb);
  }
  return images;
}

/**
 * uint8 RGB HWC → float32 [1, 3, H, W] in [−1, 1], as diffusers' `preprocess`:
 * `float32(u8) / 255`, then `2x − 1`.
 */
export function rgbToPixels(rgb: Uint8Array, height: number, width: number): Float32Array {
  const plane = height * width;
  if (rgb.length !== plane * 3) {
    throw new SdTrtError("ERR_INVALID_ARGUMENT", `rgbToPixels: ${rgb.length} bytes is not ${width}×${height} RGB`);
  }
  const out = new Float32Array(3 * plane);
  for (let i = 0; i < plane; i++) {
    for (let c = 0; c < 3; c++) {
      const unit = Math.fround(rgb[i * 3 + c]! / 255);
      out[c * plane + i] = 2 * unit - 1; // 2·unit is exact; the store rounds the difference
    }
  }
  return out;
}
