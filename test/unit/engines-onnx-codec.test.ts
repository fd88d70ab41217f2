import { describe, expect, test, beforeAll, afterAll } from "@jest/globals";
import { mkdtemp, readFile, rm, stat, writeFile } from "node:fs/promises";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { ModelFileError } from "../../lib/errors.js";
import { decodeMessage, encodeMessage, intField, packedIntsField, PbMessage, stringField, WireType } from "../../lib/onnx/protobuf.js";
import { ExternalDataReader, OnnxModel, tensorBytes, tensorHeader } from "../../lib/onnx/model.js";
import { writeOnnxModel } from "../../lib/onnx/write.js";
import { DataType, GraphField, ModelField, NodeField, TensorField } from "../../lib/onnx/schema.js";

const TINY = join(process.cwd(), "models", "tiny-sd");
const ROLES = ["text_encoder", "unet", "vae_decoder", "vae_encoder"] as const;

describe("protobuf wire format", () => {
  test("decode then encode reproduces every tiny-sd ONNX file byte for byte", async () => {
    for (const role of ROLES) {
      const path = join(TINY, role, "model.onnx");
      const bytes = await readFile(path);
      const model = OnnxModel.decode(bytes, path);
      const again = model.encode();
      expect(again.length).toBe(bytes.length);
      expect(Buffer.from(again).equals(bytes)).toBe(true);
    }
  });

  test("an edit survives a round trip and changes only the edited field", async () => {
    const path = join(TINY, "vae_encoder", "model.onnx");
    const model = await OnnxModel.read(path);
    const before = model.graph.string(GraphField.name);
    model.graph.setString(GraphField.name, "renamed graph");
    const reread = OnnxModel.decode(model.encode(), path);
    expect(reread.graph.string(GraphField.name)).toBe("renamed graph");
    expect(before).not.toBe("renamed graph");
    expect(reread.io()).toEqual(model.io());
    expect(reread.graph.messages(GraphField.node).length).toBe(model.graph.messages(GraphField.node).length);
  });

  test("negative int64 values take ten bytes and read back signed", () => {
    const msg = new PbMessage([intField(1, -1), intField(2, -123456789012345n), intField(3, 300)]);
    const bytes = encodeMessage(msg);
    // tag + 10-byte varint for each negative value, tag + 2 bytes for 300
    expect(bytes.length).toBe(11 + 11 + 3);
    const back = decodeMessage(bytes);
    expect(back.int(1)).toBe(-1);
    expect(back.int(2)).toBe(-123456789012345);
    expect(back.int(3)).toBe(300);
  });

  test("repeated integers read the same packed or unpacked", () => {
    const packed = decodeMessage(encodeMessage(new PbMessage([packedIntsField(1, [1, 4, 64, 64])])));
    const unpacked = decodeMessage(encodeMessage(new PbMessage([1, 4, 64, 64].map((v) => intField(1, v)))));
    expect(packed.ints(1)).toEqual([1, 4, 64, 64]);
    expect(unpacked.ints(1)).toEqual([1, 4, 64, 64]);
  });

  test("a truncated file is a ModelFileError naming it", async () => {
    const path = join(TINY, "unet", "model.onnx");
    const bytes = await readFile(path);
    expect(() => OnnxModel.decode(bytes.subarray(0, 1000), "unet/model.onnx")).toThrow(ModelFileError);
    expect(() => OnnxModel.decode(bytes.subarray(0, 1000), "unet/model.onnx")).toThrow(/unet\/model\.onnx is not a valid ONNX model/);
  });

  test("a wrong wire type is reported with the message name and field", () => {
    const msg = decodeMessage(encodeMessage(new PbMessage([intField(8, 5)])), { name: "TensorProto", messages: {} });
    expect(() => msg.string(8)).toThrow(/TensorProto field 8 has wire type 0/);
  });
});

describe("external data", () => {
  let dir: string;
  beforeAll(async () => {
    dir = await mkdtemp(join(tmpdir(), "sd-trt-onnx-"));
  });
  afterAll(async () => {
    await rm(dir, { recursive: true, force: true });
  });

  test("large tensors move to model.onnx_data and read back identical", async () => {
    const source = await OnnxModel.read(join(TINY, "unet", "model.onnx"));
    const inline = new Map<string, Uint8Array>();
    const reader = new ExternalDataReader();
    for (const t of source.initializers()) inline.set(tensorHeader(t).name, Uint8Array.from(await tensorBytes(t, source, reader)));

    const copy = OnnxModel.decode(source.encode(), source.path);
    const out = join(dir, "unet", "model.onnx");
    await (await import("node:fs/promises")).mkdir(join(dir, "unet"), { recursive: true });
    const written = await writeOnnxModel(copy.proto, out, { externalDataThreshold: 256 });
    expect(written).toEqual([out, `${out}_data`]);
    expect((await stat(out)).size).toBeLessThan((await stat(join(TINY, "unet", "model.onnx"))).size / 2);

    const reread = await OnnxModel.read(out);
    expect(reread.externalDataFiles()).toEqual([`${out}_data`]);
    let external = 0;
    for (const t of reread.initializers()) {
      const { name } = tensorHeader(t);
      if (t.int(TensorField.dataLocation) === 1) external++;
      expect(Buffer.from(await tensorBytes(t, reread, reader)).equals(Buffer.from(inline.get(name)!))).toBe(true);
    }
    expect(external).toBeGreaterThan(0);
    await reader.close();
  });

  test("external data outside the model's folder is refused", async () => {
    const tensor = new PbMessage([
      packedIntsField(TensorField.dims, [2]),
      intField(TensorField.dataType, DataType.FLOAT),
      stringField(TensorField.name, "w"),
      intField(TensorField.dataLocation, 1),
      {
        no: TensorField.externalData,
        wt: WireType.LengthDelimited,
        value: new PbMessage([stringField(1, "location"), stringField(2, "../secret.bin")]),
      },
    ]);
    const graph = new PbMessage([{ no: GraphField.initializer, wt: WireType.LengthDelimited, value: tensor }]);
    const bytes = encodeMessage(new PbMessage([intField(ModelField.irVersion, 8), { no: ModelField.graph, wt: WireType.LengthDelimited, value: graph }]));
    const path = join(dir, "escape.onnx");
    await writeFile(path, bytes);
    const model = await OnnxModel.read(path);
    const reader = new ExternalDataReader();
    await expect(tensorBytes(model.initializers()[0]!, model, reader)).rejects.toThrow(/outside the model's folder/);
    await reader.close();
  });

  test("a data file shorter than offset + length is reported", async () => {
    const tensor = new PbMessage([
      packedIntsField(TensorField.dims, [4]),
      intField(TensorField.dataType, DataType.FLOAT),
      stringField(TensorField.name, "w"),
      intField(TensorField.dataLocation, 1),
      { no: TensorField.externalData, wt: WireType.LengthDelimited, value: new PbMessage([stringField(1, "location"), stringField(2, "short.bin")]) },
    ]);
    const graph = new PbMessage([{ no: GraphField.initializer, wt: WireType.LengthDelimited, value: tensor }]);
    const path = join(dir, "short.onnx");
    await writeFile(path, encodeMessage(new PbMessage([{ no: ModelField.graph, wt: WireType.LengthDelimited, value: graph }])));
    await writeFile(join(dir, "short.bin"), new Uint8Array(8));
    const model = await OnnxModel.read(path);
    const reader = new ExternalDataReader();
    await expect(tensorBytes(model.initializers()[0]!, model, reader)).rejects.toThrow(/short\.bin ends before offset 0 \+ length 16/);
    await reader.close();
  });

  test("graph inputs and outputs are read with their dims", async () => {
    const model = await OnnxModel.read(join(TINY, "unet", "model.onnx"));
    const io = model.io();
    expect(io.inputs.map((i) => [i.name, i.dtype, i.shape])).toEqual([
      ["sample", "float", ["batch_size", 4, "height", "width"]],
      ["timestep", "float", ["steps"]],
      ["encoder_hidden_states", "float", ["batch_size", "sequence_length", 32]],
    ]);
    expect(io.outputs.map((o) => o.name)).toEqual(["out_sample"]);
    expect(model.opsetVersion()).toBe(14);
    expect(model.graph.messages(GraphField.node).some((n) => n.string(NodeField.opType) === "Softmax")).toBe(true);
  });
});
