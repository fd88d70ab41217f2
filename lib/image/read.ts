/**
 * Reading an init image for img2img: any format sharp decodes (PNG, JPEG, WebP, AVIF, TIFF, GIF,
 * SVG, …) or raw RGB pixels, turned into 8-bit RGB.
 *
 * Like diffusers' `load_image`, the EXIF orientation is applied and an alpha channel is dropped
 * (PIL's `convert("RGB")`); greyscale becomes RGB.
 *
 * Size policy: with no target size the image keeps its size rounded **down** to a multiple of 8,
 * as diffusers' `VaeImageProcessor` does; with a target width × height the image is resized to
 * exactly that size (stretched, A1111's "Just resize"). Resizing uses Lanczos-3, so only images
 * that need no resize reproduce diffusers bit for bit (PIL's Lanczos differs in the last bits).
 */
import type { OutputInfo, Sharp } from "sharp";
import { loadSharp } from "./sharp.js";
import { InvalidOptionError, ModelFileError } from "../errors.js";

/** Raw 8-bit pixels, row-major, interleaved (HWC). */
export interface RawImage {
  data: Uint8Array;
  width: number;
  height: number;
  /** 3 (RGB) or 4 (RGBA: alpha is dropped). */
  channels: 3 | 4;
}

/** An init image: a file path, the bytes of an encoded image, or raw pixels. */
export type ImageSource = string | Uint8Array | RawImage;

export interface RgbImage {
  /** RGB uint8 HWC. */
  rgb: Uint8Array;
  width: number;
  height: number;
}

export interface ReadImageOptions {
  /** Target size in pixels; both or neither. Without them the size is rounded down to a multiple of `multiple`. */
  width?: number;
  height?: number;
  /** Defaults to 8. */
  multiple?: number;
  /** The option name used in messages. Defaults to `"initImage"`. */
  option?: string;
}

function isRawImage(source: unknown): source is RawImage {
  return typeof source === "object" && source !== null && !(source instanceof Uint8Array) && "data" in source;
}

function describeSource(source: ImageSource): string {
  if (typeof source === "string") return source;
  if (isRawImage(source)) return "raw pixels";
  return `${source.byteLength} bytes of image data`;
}

export async function readImage(source: ImageSource, options: ReadImageOptions = {}): Promise<RgbImage> {
  const option = options.option ?? "initImage";
  const multiple = options.multiple ?? 8;
  const sharp = await loadSharp();
  let input: Sharp;
  if (isRawImage(source)) {
    const { data, width, height, channels } = source;
    if (!(data instanceof Uint8Array) || !Number.isInteger(width) || !Number.isInteger(height) || width < 1 || height < 1 || (channels !== 3 && channels !== 4) || data.length !== width * height * channels) {
      throw new InvalidOptionError(option, `${option} raw pixels must be {data: Uint8Array of width·height·channels bytes, width, height, channels: 3 or 4}`);
    }
    input = sharp(data, { raw: { width, height, channels } });
  } else if (typeof source === "string" || source instanceof Uint8Array) {
    input = sharp(source, { failOn: "error" });
  } else {
    throw new InvalidOptionError(option, `${option} must be a file path, the bytes of an image file, or raw pixels {data, width, height, channels}`);
  }

  let decoded: { data: Buffer; info: OutputInfo };
  try {
    // EXIF orientation applied (diffusers' load_image does exif_transpose), alpha dropped,
    // greyscale/CMYK to sRGB, 16-bit to 8-bit.
    decoded = await input.rotate().removeAlpha().toColourspace("srgb").raw({ depth: "uchar" }).toBuffer({ resolveWithObject: true });
    const sourceWidth = decoded.info.width;
    const sourceHeight = decoded.info.height;
    let width = options.width;
    let height = options.height;
    if (width === undefined || height === undefined) {
      width = sourceWidth - (sourceWidth % multiple);
      height = sourceHeight - (sourceHeight % multiple);
      if (width < multiple || height < multiple) {
        throw new InvalidOptionError(option, `${option} (${describeSource(source)}) is ${sourceWidth}×${sourceHeight}; it must be at least ${multiple}×${multiple} pixels`);
      }
    }
    if (width !== sourceWidth || height !== sourceHeight) {
      decoded = await sharp(decoded.data, { raw: { width: sourceWidth, height: sourceHeight, channels: decoded.info.channels } })
        .resize(width, height, { fit: "fill", kernel: "lanczos3" })
        .raw({ depth: "uchar" })
        .toBuffer({ resolveWithObject: true });
    }
  } catch (error) {
    if (error instanceof InvalidOptionError) throw error;
    const message = `cannot read ${option} ${describeSource(source)}: ${(error as Error).message}`;
    if (typeof source === "string") throw new ModelFileError(source, message, { cause: error });
    throw new InvalidOptionError(option, message);
  }
  const { data, info } = decoded;
  if (info.channels !== 3) throw new InvalidOptionError(option, `${option} ${describeSource(source)} decoded to ${info.channels} channels, expected RGB`);
  return { rgb: new Uint8Array(data.buffer, data.byteOffset, data.byteLength), width: info.width, height: info.height };
}
