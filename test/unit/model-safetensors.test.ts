/**
 * The .safetensors reader: files written by huggingface/safetensors' own writer
 * (scripts/reference/safetensors_fixtures.py) read back to exactly the float32 values torch reads,
 * both held in memory and streamed from the file tensor by tensor; every malformed file refused
 * with a ModelFileError naming the file and the defect; pickles refused without being opened.
 */
import { mkdtempSync, readFileSync, rmSync, truncateSync, writeFileSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { afterAll, describe, expect, test } from "@jest/globals";
import { ModelFileError } from "../../lib/errors.js";
import { refusePickle } from "../../lib/model/pickle.js";
import { MAX_HEADER_BYTES, openSafetensors, parseSafetensors, readSafetensors } from "../../lib/model/safetensors.js";

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

  test.each(["mixed", "embedding"])("%s.safetensors streamed from the file gives the same tensors", async (name) => {
    const path = new URL(`${name}.safetensors`, dir).pathname;
    const [whole, streamed] = [await readSafetensors(path), await openSafetensors(path)];
    expect(streamed.metadata).toEqual(whole.metadata);
    expect([...streamed.tensors.keys()]).toEqual([...whole.tensors.keys()]);
    for (const [tensorName, tensor] of streamed.tensors) {
      const inMemory = whole.tensors.get(tensorName)!;
      expect({ dtype: tensor.dtype, shape: tensor.shape }).toEqual({ dtype: inMemory.dtype, shape: inMemory.shape });
      expect(await tensor.read()).toEqual(inMemory.toFloat32());
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

  test("a dtype the format does not define, a bad shape, offsets outside the data or of the wrong size", () => {
    expect(refusal(file({ a: tensor("F12", [1], [0, 8]) }, 8))).toMatch(/tensor "a" has dtype "F12", which the format does not define/);
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

  test("an integer tensor (a checkpoint's position_ids) is checked and listed apart from the float ones", () => {
    const read = parseSafetensors(file({ ids: tensor("I64", [1], [0, 8]), w: tensor("F32", [1], [8, 12]) }, 12), "ok.safetensors");
    expect([...read.tensors.keys()]).toEqual(["w"]);
    expect(read.otherTensors.get("ids")).toEqual({ dtype: "I64", shape: [1] });
    expect(Array.from(read.tensors.get("w")!.toFloat32())).toEqual([0]);
    expect(refusal(file({ ids: tensor("I64", [2], [0, 8]) }, 8))).toMatch(/tensor "ids" of I64 \[2\] needs 16 bytes, its data_offsets give 8/);
  });

  test("a file that cannot be read is named", async () => {
    await expect(readSafetensors("/nonexistent/x.safetensors")).rejects.toThrow(/^\/nonexistent\/x\.safetensors cannot be read/);
  });
});

describe("files on disk: truncation, changes under the reader, pickles", () => {
  const scratch = mkdtempSync(join(tmpdir(), "sdtrt-safetensors-"));
  afterAll(() => rmSync(scratch, { recursive: true, force: true }));
  const onDisk = (name: string, bytes: Uint8Array) => {
    const path = join(scratch, name);
    writeFileSync(path, bytes);
    return path;
  };
  const twoTensors = () => file({ a: { dtype: "F32", shape: [2], data_offsets: [0, 8] }, b: { dtype: "F16", shape: [2], data_offsets: [8, 12] } }, 12);

  test("a truncated file is refused when opened, naming the file and the tensor past its end", async () => {
    const path = onDisk("truncated.safetensors", twoTensors().subarray(0, twoTensors().length - 3));
    await expect(openSafetensors(path)).rejects.toThrow(ModelFileError);
    await expect(openSafetensors(path)).rejects.toThrow(`${path} is not a valid .safetensors file: tensor "b" has data_offsets [8, 12] outside the 9 bytes of data (the file ends before it: truncated?)`);
  });

  test("a header length over the limit is refused before the header is read", async () => {
    const bytes = twoTensors();
    new DataView(bytes.buffer).setBigUint64(0, 1n << 40n, true);
    await expect(openSafetensors(onDisk("long-header.safetensors", bytes))).rejects.toThrow(/header length 1099511627776 exceeds the limit/);
  });

  test("a file that shrinks after it was opened is refused at the next read", async () => {
    const path = onDisk("shrinks.safetensors", twoTensors());
    const opened = await openSafetensors(path);
    expect(Array.from(await opened.tensors.get("a")!.read())).toEqual([0, 0]);
    truncateSync(path, 20);
    await expect(opened.tensors.get("b")!.read()).rejects.toThrow(/changed while it was being read: it had \d+ bytes, now 20/);
  });

  test.each([".ckpt", ".pt", ".pth", ".bin"])("a %s file is refused by its name, never opened", async (extension) => {
    const path = join(scratch, `absent-model${extension}`); // does not exist: the name alone decides
    await expect(refusePickle(path)).rejects.toThrow(new RegExp(`absent-model\\${extension} is a PyTorch pickle \\(\\${extension}\\): loading it would run the code it contains, so sd-trt does not open it\\. Convert it to \\.safetensors first`));
    await expect(openSafetensors(path)).rejects.toThrow(/is a PyTorch pickle/);
  });

  test("a pickle or torch zip archive named .safetensors is refused by its first bytes, streamed or in memory", async () => {
    const pickle = onDisk("pickle.safetensors", Uint8Array.from([0x80, 0x04, 0x95, 0x10, 0, 0, 0, 0, 0, 0, 0, 0]));
    await expect(openSafetensors(pickle)).rejects.toThrow(/pickle\.safetensors is a Python pickle \(it starts with pickle's PROTO opcode\): loading it would run the code it contains/);
    await expect(readSafetensors(pickle)).rejects.toThrow(/pickle\.safetensors is a Python pickle/);
    const zip = onDisk("zip.safetensors", Uint8Array.from([0x50, 0x4b, 0x03, 0x04, 0, 0, 0, 0, 0, 0]));
    await expect(openSafetensors(zip)).rejects.toThrow(/zip\.safetensors is a zip archive, the layout torch\.save writes pickles in/);
  });

  test("a safetensors file whose header length starts with the bytes of a pickle opcode is read", async () => {
    // A header of 0x0280 = 640 bytes begins 0x80 0x02, pickle protocol 2's first bytes; its 9th byte is "{".
    const header = `{"a":{"dtype":"F32","shape":[1],"data_offsets":[0,4]}}`;
    const bytes = file(null, 4, header.padEnd(640, " "));
    expect([bytes[0], bytes[1], bytes[8]]).toEqual([0x80, 0x02, 0x7b]);
    const read = await openSafetensors(onDisk("looks-like-pickle.safetensors", bytes));
    expect(Array.from(await read.tensors.get("a")!.read())).toEqual([0]);
  });
});
