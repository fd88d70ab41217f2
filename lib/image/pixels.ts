/**
 * Conversions between the VAE's float tensors and 8-bit RGB, with diffusers' exact rounding
 * (`VaeImageProcessor`): every float operation is rounded to float32 as torch/numpy do.
 */
import { InvalidArgumentError, VaeOverflowError } from "../errors.js";

/**
 * Decoded images [B, 3, H, W] (VAE output, about −1…1) → one uint8 RGB HWC array per image:
 * `(x·0.5 + 0.5).clamp(0, 1)`, then `round(x·255)` half to even, as diffusers' `postprocess`
 * + `numpy_to_pil`.
 *
 * The clamp and the rounding are the store into a Uint8ClampedArray: ECMAScript's ToUint8Clamp
 * clamps to 0…255 and rounds half to even, which equals clamping to [0, 1] before the float32
 * product with 255 (both ends are exact) and numpy's `round`. One pass, three channels at a time,
 * writing the output in order.
 * @param source names the model in the error raised for NaN.
 * @throws SdTrtError if any value is NaN (an fp16 VAE overflow): never a silent black image.
 */
export function decodedToRgb(decoded: Float32Array, batch: number, height: number, width: number, source = "the VAE decoder", firstImage = 0): Uint8Array[] {
  const plane = height * width;
  const images: Uint8Array[] = [];
  for (let b = 0; b < batch; b++) {
    const rgb = new Uint8ClampedArray(plane * 3);
    const red = b * 3 * plane;
    if (planesToRgb(decoded, red, plane, rgb)) {
      for (let c = 0; c < 3; c++) {
        const i = decoded.subarray(red + c * plane, red + (c + 1) * plane).findIndex(Number.isNaN);
        if (i >= 0) throw new VaeOverflowError(`${source} produced NaN in image ${firstImage + b} (at channel ${c}, pixel ${i}); the image would be black`);
      }
    }
    images.push(new Uint8Array(rgb.buffer));
  }
  return images;
}

/**
 * One image's three planes from `red` on → interleaved `rgb`; true when any value is NaN. Only the
 * loop, in its own function: V8 optimizes it within the first calls and keeps it optimized (with
 * the loop inside `decodedToRgb`, code after it that had not run yet deoptimized the loop again
 * for the first several images, each costing ~15× the optimized time).
 */
function planesToRgb(decoded: Float32Array, red: number, plane: number, rgb: Uint8ClampedArray): boolean {
  const f32 = Math.fround;
  const green = red + plane;
  const blue = green + plane;
  let nan = false;
  for (let i = 0, o = 0; i < plane; i++, o += 3) {
    const r = decoded[red + i]!;
    const g = decoded[green + i]!;
    const bl = decoded[blue + i]!;
    if (Number.isNaN(r) || Number.isNaN(g) || Number.isNaN(bl)) nan = true;
    rgb[o] = f32(f32(r * 0.5 + 0.5) * 255);
    rgb[o + 1] = f32(f32(g * 0.5 + 0.5) * 255);
    rgb[o + 2] = f32(f32(bl * 0.5 + 0.5) * 255);
  }
  return nan;
}

/**
 * uint8 RGB HWC → float32 [1, 3, H, W] in [−1, 1], as diffusers' `preprocess`:
 * `float32(u8) / 255`, then `2x − 1`.
 */
export function rgbToPixels(rgb: Uint8Array, height: number, width: number): Float32Array {
  const plane = height * width;
  if (rgb.length !== plane * 3) {
    throw new InvalidArgumentError(`rgbToPixels: ${rgb.length} bytes is not ${width}×${height} RGB`);
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
