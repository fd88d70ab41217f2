import { afterAll, beforeAll, describe, expect, test } from "@jest/globals";
import { mkdtemp, rm, writeFile } from "node:fs/promises";
import { tmpdir } from "node:os";
import { join } from "node:path";
import sharp from "sharp";
import { InvalidOptionError, ModelFileError, SdTrtError } from "../../lib/errors.js";
import { decodedToRgb, rgbToPixels } from "../../lib/image/pixels.js";
import { insertPngText, readPngChunks, readPngText, textChunk } from "../../lib/image/png-text.js";
import { describe as describeBlock } from "@jest/globals";

describeBlock("PNG text with control characters", () => {
  test("NUL and other control characters are escaped as \\uXXXX; newlines stay; nothing raw reaches the chunk", () => {
    const chunk = textChunk("parameters", "a\u0000b\u0001c\td\ne\u007f");
    const type = chunk.subarray(4, 8).toString("latin1");
    const text = chunk.subarray(8 + "parameters".length + 1, chunk.length - 4);
    expect(type).toBe("tEXt");
    expect(text.toString("latin1")).toBe("a\\u0000b\\u0001c\\u0009d\ne\\u007f");
    expect([...text].filter((byte) => byte < 0x20 && byte !== 0x0a)).toEqual([]);
    // Non-Latin-1 text goes to iTXt, escaped the same way.
    const wide = textChunk("parameters", "猫\u0000");
    expect(wide.subarray(4, 8).toString("latin1")).toBe("iTXt");
    expect(wide.subarray(8 + "parameters".length + 5, wide.length - 4).toString("utf8")).toBe("猫\\u0000");
  });
});
import { encodeImage, formatFromExtension } from "../../lib/image/encode.js";
import { readImage } from "../../lib/image/read.js";
import { formatInfotext } from "../../lib/image/infotext.js";

/** The goldens' img2img init image: R = 4x + 2, G = 4y + 2, B = 255 − 2(x + y), 64×64. */
function gradient(size = 64): Uint8Array {
  const rgb = new Uint8Array(size * size * 3);
  for (let y = 0; y < size; y++) {
    for (let x = 0; x < size; x++) {
      const i = (y * size + x) * 3;
      rgb[i] = 4 * x + 2;
      rgb[i + 1] = 4 * y + 2;
      rgb[i + 2] = 255 - 2 * (x + y);
    }
  }
  return rgb;
}

describe("decodedToRgb: diffusers' postprocess rounding", () => {
  test("maps −1…1 to 0…255 with (x·0.5 + 0.5)·255 rounded half to even, clamping outside", () => {
    // x such that (x·0.5 + 0.5)·255 lands exactly on .5: 0.5/255 → 0.5 (ties to 0), 1.5/255 → 2.
    const unitToX = (u: number) => 2 * u - 1;
    const values = [-2, -1, unitToX(0.5 / 255), unitToX(1.5 / 255), 0, 1, 3, unitToX(254.4 / 255)];
    const decoded = new Float32Array(3 * values.length);
    decoded.set(values, 0);
    decoded.set(values, values.length);
    decoded.set(values, 2 * values.length);
    const [rgb] = decodedToRgb(decoded, 1, 1, values.length);
    const red = Array.from({ length: values.length }, (_, i) => rgb![i * 3]);
    // float32 rounding can move the exact .5 ties by one ulp; the reference is numpy on float32.
    const expected = values.map((x) => {
      const unit = Math.min(1, Math.max(0, Math.fround(Math.fround(x) * 0.5 + 0.5)));
      const scaled = Math.fround(unit * 255);
      const floor = Math.floor(scaled);
      const frac = scaled - floor;
      return frac > 0.5 ? floor + 1 : frac < 0.5 ? floor : floor % 2 === 0 ? floor : floor + 1;
    });
    expect(red).toEqual(expected);
    expect(red.slice(0, 2)).toEqual([0, 0]);
    expect(red[4]).toBe(128); // 127.5 ties to even
    expect(red.slice(5, 7)).toEqual([255, 255]);
  });

  test("equals clamp, float32 ·255 and numpy's half-to-even round on a wide sample of float32 values", () => {
    // Every 4099th float32 bit pattern (NaN excluded) plus every .5 tie of ·255: the
    // Uint8ClampedArray store must agree with the formula written out step by step.
    const bits = new Uint32Array(1);
    const asFloat = new Float32Array(bits.buffer);
    const values: number[] = [];
    for (let b = 0; b < 2 ** 32; b += 4099) {
      bits[0] = b;
      if (!Number.isNaN(asFloat[0]!)) values.push(asFloat[0]!);
    }
    for (let k = 0; k < 256; k++) values.push(Math.fround(((k + 0.5) / 255) * 2 - 1), Math.fround((k / 255) * 2 - 1), Infinity, -Infinity, -0);
    const plane = values.length;
    const decoded = new Float32Array(3 * plane);
    decoded.set(values, 0);
    decoded.set(values.slice().reverse(), plane);
    decoded.set(values, 2 * plane);
    const [rgb] = decodedToRgb(decoded, 1, 1, plane);
    const reference = (x: number) => {
      const unit = Math.min(1, Math.max(0, Math.fround(x * 0.5 + 0.5)));
      const scaled = Math.fround(unit * 255);
      const floor = Math.floor(scaled);
      const frac = scaled - floor;
      return frac > 0.5 ? floor + 1 : frac < 0.5 ? floor : floor % 2 === 0 ? floor : floor + 1;
    };
    let mismatches = 0;
    for (let i = 0; i < plane; i++) {
      for (let c = 0; c < 3; c++) if (rgb![i * 3 + c] !== reference(decoded[c * plane + i]!)) mismatches++;
    }
    expect(plane).toBeGreaterThan(1_000_000);
    expect(mismatches).toBe(0);
  });

  test("lays the planes out as interleaved RGB rows", () => {
    const decoded = new Float32Array([1, -1, -1, 1, -1, -1]); // 1×2 image: R = [1, −1], G = [−1, 1], B = [−1, −1]
    expect(Array.from(decodedToRgb(decoded, 1, 1, 2)[0]!)).toEqual([255, 0, 0, 0, 255, 0]);
  });

  test("refuses NaN instead of writing a black image", () => {
    expect(() => decodedToRgb(new Float32Array([0, NaN, 0]), 1, 1, 1, "vae/model.onnx")).toThrow(/vae\/model\.onnx produced NaN in image 0/);
    const second = new Float32Array(2 * 3 * 4);
    second[12 + 2 * 4 + 3] = NaN; // image 1, blue, pixel 3
    expect(() => decodedToRgb(second, 2, 2, 2, "vae")).toThrow("vae produced NaN in image 1 (at channel 2, pixel 3); the image would be black");
  });

  test("rgbToPixels is diffusers' preprocess: u8/255 then 2x − 1, planar", () => {
    const pixels = rgbToPixels(new Uint8Array([0, 255, 128]), 1, 1);
    expect(Array.from(pixels)).toEqual([-1, 1, Math.fround(2 * Math.fround(128 / 255) - 1)]);
  });
});

describe("PNG text chunks", () => {
  let png: Buffer;
  beforeAll(async () => {
    png = await sharp(gradient(8), { raw: { width: 8, height: 8, channels: 3 } }).png().toBuffer();
  });

  test("a Latin-1 infotext goes into a tEXt 'parameters' chunk before the image data, with a valid CRC", async () => {
    const text = "a cabin, snowy – no\nSteps: 20, Sampler: PLMS, CFG scale: 7.5, Seed: 1, Size: 8x8, RNG: CPU".replace("–", "-");
    const out = insertPngText(png, "parameters", text);
    const chunks = readPngChunks(out); // checks every CRC
    const types = chunks.map((c) => c.type);
    expect(types.indexOf("tEXt")).toBeLessThan(types.indexOf("IDAT"));
    expect(await readPngText(out)).toEqual([{ chunk: "tEXt", keyword: "parameters", text }]);
    // The image itself is unchanged.
    const { data } = await sharp(out).raw().toBuffer({ resolveWithObject: true });
    expect(Buffer.compare(data, Buffer.from(gradient(8)))).toBe(0);
  });

  test("text outside Latin-1 goes into an iTXt chunk as UTF-8", async () => {
    const text = "富士山と桜 🌸\nSteps: 20";
    const out = insertPngText(png, "parameters", text);
    expect(await readPngText(out)).toEqual([{ chunk: "iTXt", keyword: "parameters", text }]);
    expect(textChunk("parameters", "café").subarray(4, 8).toString()).toBe("tEXt"); // é is Latin-1
  });

  test("a corrupted chunk is detected by its CRC", () => {
    const out = insertPngText(png, "parameters", "hello");
    const broken = Buffer.from(out);
    const at = broken.indexOf("hello") + 1;
    broken.writeUInt8(broken.readUInt8(at) ^ 1, at);
    expect(() => readPngChunks(broken)).toThrow(/bad CRC/);
    expect(() => readPngChunks(Buffer.from("not a png"))).toThrow(SdTrtError);
  });
});

describe("encodeImage", () => {
  const rgb = gradient(16);

  test("PNG is lossless and carries the parameters", async () => {
    const out = await encodeImage(rgb, 16, 16, { parameters: "p\nSteps: 1" });
    const { data, info } = await sharp(out).raw().toBuffer({ resolveWithObject: true });
    expect([info.format, info.width, info.height, info.channels]).toEqual(["raw", 16, 16, 3]);
    expect(Buffer.compare(data, Buffer.from(rgb))).toBe(0);
    expect((await readPngText(out))[0]?.text).toBe("p\nSteps: 1");
  });

  test("JPEG and WebP carry an ASCII infotext in EXIF UserComment", async () => {
    for (const format of ["jpeg", "webp"] as const) {
      const out = await encodeImage(rgb, 16, 16, { format, quality: 90, parameters: "a cat\nSteps: 20, Seed: 1" });
      const meta = await sharp(out).metadata();
      expect(meta.format).toBe(format);
      expect(meta.exif?.toString("latin1")).toContain("a cat\nSteps: 20, Seed: 1");
    }
  });

  test("formats come from the extension; bad formats and qualities are refused", async () => {
    expect(["a.png", "b.JPG", "c.jpeg", "d.webp", "e.gif", "f"].map(formatFromExtension)).toEqual(["png", "jpeg", "jpeg", "webp", undefined, undefined]);
    await expect(encodeImage(rgb, 16, 16, { format: "gif" as "png" })).rejects.toThrow(/format must be one of "png", "jpeg", "webp"/);
    await expect(encodeImage(rgb, 16, 16, { format: "jpeg", quality: 0 })).rejects.toThrow(/quality must be an integer from 1 to 100/);
  });
});

describe("readImage", () => {
  let scratch: string;
  beforeAll(async () => {
    scratch = await mkdtemp(join(tmpdir(), "sd-trt-read-image-"));
  });
  afterAll(async () => {
    await rm(scratch, { recursive: true, force: true });
  });

  test("reads PNG, WebP (lossless) and raw pixels to the same RGB bytes", async () => {
    const rgb = gradient(64);
    const pngPath = join(scratch, "init.png");
    await sharp(rgb, { raw: { width: 64, height: 64, channels: 3 } }).png().toFile(pngPath);
    const webp = await sharp(rgb, { raw: { width: 64, height: 64, channels: 3 } }).webp({ lossless: true }).toBuffer();
    for (const source of [pngPath, new Uint8Array(webp), { data: rgb, width: 64, height: 64, channels: 3 as const }]) {
      const image = await readImage(source);
      expect([image.width, image.height]).toEqual([64, 64]);
      expect(Buffer.compare(Buffer.from(image.rgb), Buffer.from(rgb))).toBe(0);
    }
  });

  test("drops alpha, turns greyscale into RGB, and rounds the size down to a multiple of 8", async () => {
    const rgba = new Uint8Array(70 * 67 * 4).fill(200);
    const fromRgba = await readImage({ data: rgba, width: 70, height: 67, channels: 4 });
    expect([fromRgba.width, fromRgba.height, fromRgba.rgb.length]).toEqual([64, 64, 64 * 64 * 3]);
    const grey = await sharp(Buffer.alloc(16 * 16, 90), { raw: { width: 16, height: 16, channels: 1 } }).png().toBuffer();
    const fromGrey = await readImage(grey);
    expect(fromGrey.rgb.length).toBe(16 * 16 * 3);
    expect(new Set(fromGrey.rgb)).toEqual(new Set([90]));
  });

  test("resizes to an explicit width × height", async () => {
    const image = await readImage({ data: gradient(64), width: 64, height: 64, channels: 3 }, { width: 128, height: 96 });
    expect([image.width, image.height, image.rgb.length]).toEqual([128, 96, 128 * 96 * 3]);
  });

  test("an unreadable file is a ModelFileError naming it; bad bytes an InvalidOptionError", async () => {
    const missing = join(scratch, "missing.png");
    const error = await readImage(missing).catch((e: unknown) => e);
    expect(error).toBeInstanceOf(ModelFileError);
    expect((error as ModelFileError).file).toBe(missing);
    expect((error as Error).message).toContain(`cannot read initImage ${missing}`);
    const junk = join(scratch, "junk.png");
    await writeFile(junk, "definitely not an image");
    await expect(readImage(junk)).rejects.toThrow(/cannot read initImage .*junk\.png/);
    await expect(readImage(new Uint8Array([1, 2, 3]))).rejects.toBeInstanceOf(InvalidOptionError);
    await expect(readImage({ data: new Uint8Array(5), width: 2, height: 2, channels: 3 })).rejects.toThrow(/raw pixels must be/);
  });
});

describe("formatInfotext", () => {
  test("writes A1111's parameters text", () => {
    expect(
      formatInfotext({ prompt: "a cat", steps: 20, sampler: "Euler a", cfgScale: 7.5, seed: 1n, width: 512, height: 768, rng: "cpu" }),
    ).toBe("a cat\nSteps: 20, Sampler: Euler a, CFG scale: 7.5, Seed: 1, Size: 512x768, RNG: CPU");
    expect(
      formatInfotext({
        prompt: "a cat",
        negativePrompt: "blurry",
        steps: 20,
        sampler: "PLMS",
        cfgScale: 1,
        seed: 18446744073709551615n,
        width: 64,
        height: 64,
        modelHash: "0123456789",
        denoisingStrength: 0.6,
        rng: "nv",
      }),
    ).toBe("a cat\nNegative prompt: blurry\nSteps: 20, Sampler: PLMS, CFG scale: 1, Seed: 18446744073709551615, Size: 64x64, Model hash: 0123456789, Denoising strength: 0.6, RNG: NV");
  });

  test("quotes a value that would break the list, as A1111's quote() does", () => {
    expect(formatInfotext({ prompt: "p", steps: 1, sampler: "odd, name", cfgScale: 2, seed: 0, width: 8, height: 8, rng: "cpu" })).toContain('Sampler: "odd, name"');
  });
});
