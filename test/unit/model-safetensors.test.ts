/**
 * The .safetensors reader: files written by huggingface/safetensors' own writer
 * (scripts/reference/safetensors_fixtures.py) read back to exactly the float32 values torch reads,
 * and every malformed file refused with a ModelFileError naming the file and the defect.
 */
import { readFileSync } from "node:fs";
import { describe, expect, test } from "@jest/globals";
import { ModelFileError } from "../../lib/errors.js";
import { MAX_HEADER_BYTES, parseSafetensors, readSafetensors } from "../../lib/model/safetensors.js";

const dir = new URL("../fixtures/safetensors/", import.meta.url);
const expected = JSON.parse(readFileSync(new URL("expected.json", dir), "utf8")) as Record<string, Record<string, { dtype: string; shape: number[]; values: string[] }>>;
const pythonFloat = (repr: string) => (repr === "inf" ? Infinity : repr === "-inf" ? -Infinity : repr === "nan" ? NaN : Number(repr));
const DTYPE_NAMES: Record<string, string> = { F32: "float32", F16: "float16", BF16: "bfloat16" };

/** A file from a header object and a data length (the data bytes are zero). */
function file(header: unknown, dataBytes: number, headerText = JSON.stringify(header)): Uint8Array {
  const json = new TextEncoder().encode(headerText);
  const out = new Uint8Array(8 + json.length + dataBytes);
  new DataView(out.buffer).setBigUint64(0, BigInt(json.length), true);
  out.set(json, 8);
  return out;
}

function refusal(bytes: Uint8Array): string {
  try {
    parseSafetensors(bytes, "bad.safetensors");
  } catch (error) {
    expect(error).toBeInstanceOf(ModelFileError);
    return (error as Error).message;
  }
  throw new Error("expected the file to be refused");
}

describe("files written by huggingface/safetensors read back as torch reads them", () => {
  test.each(["mixed", "embedding"])("%s.safetensors: names, dtypes, shapes and every value", async (name) => {
    const read = await readSafetensors(new URL(`${name}.safetensors`, dir).pathname);
    const golden = expected[name]!;
    expect([...read.tensors.keys()].sort()).toEqual(Object.keys(golden).sort());
    for (const [tensorName, tensor] of read.tensors) {
      const want = golden[tensorName]!;
      expect({ name: tensorName, dtype: DTYPE_NAMES[tensor.dtype], shape: tensor.shape }).toEqual({ name: tensorName, dtype: want.dtype, shape: want.shape });
      expect(Array.from(tensor.toFloat32())).toEqual(want.values.map(pythonFloat));
    }
  });

  test("the metadata is read", async () => {
    const read = await readSafetensors(new URL("mixed.safetensors", dir).pathname);
    expect(read.metadata).toEqual({ format: "pt", note: "sd-trt fixture" });
  });
});

describe("malformed files are refused, naming the defect", () => {
  const tensor = (dtype: string, shape: number[], offsets: number[]) => ({ dtype, shape, data_offsets: offsets });

  test("too short, a header length past the end or over the limit, a header that is not a JSON object", () => {
    expect(refusal(new Uint8Array(4))).toMatch(/^bad\.safetensors is not a valid \.safetensors file: it has 4 bytes, fewer than the 8-byte header length$/);
    const long = file({}, 0);
    new DataView(long.buffer).setBigUint64(0, 1000n, true);
    expect(refusal(long)).toMatch(/header length 1000 runs past the end of the file/);
    new DataView(long.buffer).setBigUint64(0, BigInt(MAX_HEADER_BYTES) + 1n, true);
    expect(refusal(long)).toMatch(/exceeds the limit of 100000000 bytes/);
    expect(refusal(file(null, 0, "{not json"))).toMatch(/header is not UTF-8 JSON/);
    expect(refusal(file([], 0))).toMatch(/header is not a JSON object/);
  });

  test("a dtype sd-trt does not read, a bad shape, offsets outside the data or of the wrong size", () => {
    expect(refusal(file({ a: tensor("I64", [1], [0, 8]) }, 8))).toMatch(/tensor "a" has dtype "I64"; sd-trt reads F32, F16 and BF16/);
    expect(refusal(file({ a: tensor("F32", [-1], [0, 4]) }, 4))).toMatch(/tensor "a" has shape \[-1\], not a list of non-negative integers/);
    expect(refusal(file({ a: tensor("F32", [2], [0, 8]) }, 4))).toMatch(/tensor "a" has data_offsets \[0, 8\] outside the 4 bytes of data/);
    expect(refusal(file({ a: tensor("F32", [2], [0, 4]) }, 4))).toMatch(/tensor "a" of F32 \[2\] needs 8 bytes, its data_offsets give 4/);
    expect(refusal(file({ a: { dtype: "F32", shape: [1] } }, 4))).toMatch(/tensor "a" has data_offsets undefined, not \[begin, end\]/);
  });

  test("overlapping tensors, uncovered bytes, bytes after the last tensor, bad metadata", () => {
    expect(refusal(file({ a: tensor("F32", [2], [0, 8]), b: tensor("F32", [1], [4, 8]) }, 8))).toMatch(/tensor "b" overlaps the tensor before it/);
    expect(refusal(file({ a: tensor("F32", [1], [4, 8]) }, 8))).toMatch(/the data has 4 bytes no tensor covers before "a"/);
    expect(refusal(file({ a: tensor("F32", [1], [0, 4]) }, 6))).toMatch(/the data has 2 bytes after the last tensor/);
    expect(refusal(file({ __metadata__: { a: 1 } }, 0))).toMatch(/__metadata__\.a is not a string/);
  });

  test("a file that cannot be read is named", async () => {
    await expect(readSafetensors("/nonexistent/x.safetensors")).rejects.toThrow(/^\/nonexistent\/x\.safetensors cannot be read/);
  });
});
