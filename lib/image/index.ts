/** Image output and input: PNG/JPEG/WebP with A1111 parameters, init images, pixel conversions. */
export { encodeImage, formatFromExtension, IMAGE_FORMATS, type EncodeOptions, type ImageFormat } from "./encode.js";
export { formatInfotext, type InfotextParameters } from "./infotext.js";
export { insertPngText, readPngChunks, readPngText, textChunk, type PngChunk, type PngText } from "./png-text.js";
export { readImage, type ImageSource, type RawImage, type ReadImageOptions, type RgbImage } from "./read.js";
export { decodedToRgb, rgbToPixels } from "./pixels.js";
