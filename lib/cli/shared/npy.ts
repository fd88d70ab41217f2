/**
 * NumPy `.npy` files, format version 1.0 (https://numpy.org/doc/stable/reference/generated/numpy.lib.format.html):
 * the magic string, a little-endian uint16 header length, a Python-literal header dict padded with
 * spaces to a multiple of 64 bytes and ended by a newline, then the raw C-order data.
 */

const MAGIC = Buffer.from([0x93, 0x4e, 0x55, 0x4d, 0x50, 0x59, 0x01, 0x00]); // \x93NUMPY v1.0
const ALIGN = 64;

/** Python's repr of a shape tuple: `(2, 4, 8, 8)`, `(5,)`, `()`. */
function shapeLiteral(shape: readonly number[]): string {
  if (shape.length === 1) return `(${shape[0]},)`;
  return `(${shape.join(", ")})`;
}

/** Encodes float32 data of the given shape as a `.npy` v1.0 file (`<f4`, C order). */
export function encodeNpyFloat32(data: Float32Array, shape: readonly number[]): Buffer {
  const count = shape.reduce((a, b) => a * b, 1);
  if (count !== data.length) throw new RangeError(`npy: shape [${shape.join(", ")}] holds ${count} values, got ${data.length}`);
  const dict = `{'descr': '<f4', 'fortran_order': False, 'shape': ${shapeLiteral(shape)}, }`;
  const unpadded = MAGIC.length + 2 + dict.length + 1;
  const headerLength = dict.length + 1 + ((ALIGN - (unpadded % ALIGN)) % ALIGN);
  const header = Buffer.alloc(MAGIC.length + 2 + headerLength, 0x20);
  MAGIC.copy(header, 0);
  header.writeUInt16LE(headerLength, MAGIC.length);
  header.write(dict, MAGIC.length + 2, "latin1");
  header[header.length - 1] = 0x0a;
  const body = Buffer.alloc(data.length * 4);
  for (let i = 0; i < data.length; i++) body.writeFloatLE(data[i]!, i * 4);
  return Buffer.concat([header, body]);
}

/** Reads a `.npy` v1.0/v2.0 file holding little-endian float32 in C order. */
export function decodeNpyFloat32(file: Uint8Array): { data: Float32Array; shape: number[] } {
  const buffer = Buffer.from(file.buffer, file.byteOffset, file.byteLength);
  if (!buffer.subarray(0, 6).equals(MAGIC.subarray(0, 6))) throw new Error("npy: bad magic");
  const major = buffer[6];
  const headerLength = major === 1 ? buffer.readUInt16LE(8) : buffer.readUInt32LE(8);
  const start = major === 1 ? 10 : 12;
  const header = buffer.subarray(start, start + headerLength).toString("latin1");
  if (!/'descr':\s*'<f4'/.test(header) || !/'fortran_order':\s*False/.test(header)) throw new Error(`npy: unsupported header ${header.trim()}`);
  const shapeText = /'shape':\s*\(([^)]*)\)/.exec(header)?.[1] ?? "";
  const shape = shapeText.split(",").map((s) => s.trim()).filter(Boolean).map(Number);
  const body = buffer.subarray(start + headerLength);
  const data = new Float32Array(body.length / 4);
  for (let i = 0; i < data.length; i++) data[i] = body.readFloatLE(i * 4);
  return { data, shape };
}
