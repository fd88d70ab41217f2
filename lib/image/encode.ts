/**
 * Encodes RGB pixels to PNG, JPEG or WebP with sharp, carrying the generation parameters the way
 * A1111 does: a PNG `parameters` text chunk, or the EXIF `UserComment` for JPEG/WebP.
 */
import { loadSharp } from "./sharp.js";
import { oneOf, integerInRange } from "../validate.js";
import { insertPngText } from "./png-text.js";

export const IMAGE_FORMATS = ["png", "jpeg", "webp"] as const;
export type ImageFormat = (typeof IMAGE_FORMATS)[number];

export interface EncodeOptions {
  /** Output format. Defaults to `"png"`. */
  format?: ImageFormat;
  /** JPEG/WebP quality, 1…100. Defaults to sharp's (80). Ignored for PNG. */
  quality?: number;
  /**
   * The A1111 infotext. PNG: a `parameters` tEXt chunk (iTXt when it is not Latin-1).
   * JPEG/WebP: the EXIF UserComment, when the text is plain ASCII (libvips writes UserComment as
   * ASCII and would mangle anything else, so non-ASCII text is left out rather than corrupted).
   */
  parameters?: string;
}

/** The format a file name implies (`.png`, `.jpg`/`.jpeg`, `.webp`), or undefined. */
export function formatFromExtension(path: string): ImageFormat | undefined {
  const match = /\.([a-z0-9]+)$/i.exec(path);
  const ext = match?.[1]?.toLowerCase();
  if (ext === "png") return "png";
  if (ext === "jpg" || ext === "jpeg") return "jpeg";
  if (ext === "webp") return "webp";
  return undefined;
}

/** Encodes one RGB uint8 HWC image. */
export async function encodeImage(rgb: Uint8Array, width: number, height: number, options: EncodeOptions = {}): Promise<Buffer> {
  const format = oneOf("format", options.format ?? "png", IMAGE_FORMATS);
  const quality = options.quality === undefined ? undefined : integerInRange("quality", options.quality, 1, 100);
  const sharp = await loadSharp();
  let image = sharp(rgb, { raw: { width, height, channels: 3 } });
  const exifText = options.parameters !== undefined && /^[\x00-\x7f]*$/.test(options.parameters) ? options.parameters : undefined;
  if (format === "png") {
    const png = await image.png().toBuffer();
    return options.parameters === undefined ? png : insertPngText(png, "parameters", options.parameters);
  }
  if (exifText !== undefined) image = image.withExif({ IFD2: { UserComment: exifText } });
  image = format === "jpeg" ? image.jpeg(quality === undefined ? {} : { quality }) : image.webp(quality === undefined ? {} : { quality });
  return image.toBuffer();
}
