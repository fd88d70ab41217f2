/**
 * fp32 → fp16 conversion (lib/onnx/convert-fp16.ts) checked by running both graphs in
 * ONNX Runtime on the tiny-sd fixtures: the converted graph must load, keep float32 I/O, really
 * compute in fp16 (outputs differ from fp32) and stay within fp16 tolerance of the fp32 graph.
 * ORT's CPU provider computes fp16 nodes it has no fp16 kernel for in fp32 between casts
 * (InsertCastTransformer), so the comparison measures fp16 storage of weights and activations.
 */
import { describe, expect, test, beforeAll, afterAll } from "@jest/globals";
import { mkdir, mkdtemp, rm, stat } from "node:fs/promises";
import { tmpdir } from "node:os";
import { join } from "node:path";
import ort from "onnxruntime-node";
import { ModelFileError } from "../../lib/errors.js";
import { convertToFp16, KEEP_FP32_OPS } from "../../lib/onnx/convert-fp16.js";
import { float16BitsToFloat32, float32ArrayToFloat16, float32ToFloat16Bits } from "../../lib/onnx/float16.js";
import { ExternalDataReader, OnnxModel, tensorHeader, valueInfoOf } from "../../lib/onnx/model.js";
import { encodeMessage, intField, PbMessage, stringField, WireType } from "../../lib/onnx/protobuf.js";
import { DataType, GraphField, ModelField, NodeField, TensorField } from "../../lib/onnx/schema.js";
import { writeOnnxModel } from "../../lib/onnx/write.js";

const TINY = join(process.cwd(), "models", "tiny-sd");

describe("float16 bits", () => {
  test("round to nearest even, subnormals, overflow and NaN as numpy does", () => {
    expect(float32ToFloat16Bits(1)).toBe(0x3c00);
    expect(float32ToFloat16Bits(-2)).toBe(0xc000);
    expect(float32ToFloat16Bits(65504)).toBe(0x7bff);
    expect(float32ToFloat16Bits(65519)).toBe(0x7bff); // below the halfway point to 65536
    expect(float32ToFloat16Bits(65520)).toBe(0x7c00); // halfway rounds to even: Infinity
    expect(float32ToFloat16Bits(2 ** -24)).toBe(0x0001); // smallest subnormal
    expect(float32ToFloat16Bits(2 ** -25)).toBe(0x0000); // halfway to 0: even
    expect(float32ToFloat16Bits(1.5 * 2 ** -25)).toBe(0x0001);
    expect(float32ToFloat16Bits(1 + 2 ** -11)).toBe(0x3c00); // tie → even mantissa
    expect(float32ToFloat16Bits(1 + 3 * 2 ** -11)).toBe(0x3c02); // tie → even mantissa (up)
    expect(float32ToFloat16Bits(-0)).toBe(0x8000);
    expect(float32ToFloat16Bits(Infinity)).toBe(0x7c00);
    expect(float32ToFloat16Bits(NaN) & 0x7c00).toBe(0x7c00);
    expect(float32ToFloat16Bits(NaN) & 0x03ff).not.toBe(0);
  });

  test("every fp16 value survives fp16 → fp32 → fp16", () => {
    for (let bits = 0; bits < 0x10000; bits++) {
      if ((bits & 0x7c00) === 0x7c00 && (bits & 0x3ff) !== 0) continue; // NaN payloads
      expect(float32ToFloat16Bits(float16BitsToFloat32(bits))).toBe(bits);
    }
  });

  test("weights beyond ±65504 are clamped to the largest finite fp16, infinities kept", () => {
    const { bits, clamped } = float32ArrayToFloat16(Float32Array.of(-3.4028234663852886e38, 1e5, -Infinity, 3));
    expect(Array.from(bits, float16BitsToFloat32)).toEqual([-65504, 65504, -Infinity, 3]);
    expect(clamped).toBe(2);
  });
});

function pseudoRandom(n: number, seed: number, scale = 1): Float32Array {
  const a = new Float32Array(n);
  let s = seed;
  for (let i = 0; i < n; i++) {
    s = (s * 1103515245 + 12345) % 2147483648;
    a[i] = (s / 2147483648 - 0.5) * 2 * scale;
  }
  return a;
}

const FEEDS: Record<string, () => Record<string, ort.Tensor>> = {
  text_encoder: () => ({
    input_ids: new ort.Tensor("int32", Int32Array.from({ length: 154 }, (_, i) => (i % 77 === 0 ? 49406 : i % 77 < 9 ? 320 + 7 * i : 49407)), [2, 77]),
  }),
  unet: () => ({
    sample: new ort.Tensor("float32", pseudoRandom(2 * 4 * 8 * 8, 1), [2, 4, 8, 8]),
    timestep: new ort.Tensor("float32", Float32Array.of(946.42), [1]),
    encoder_hidden_states: new ort.Tensor("float32", pseudoRandom(2 * 77 * 32, 7), [2, 77, 32]),
  }),
  vae_decoder: () => ({ latent_sample: new ort.Tensor("float32", pseudoRandom(4 * 8 * 8, 3, 3), [1, 4, 8, 8]) }),
  vae_encoder: () => ({ sample: new ort.Tensor("float32", pseudoRandom(3 * 64 * 64, 5), [1, 3, 64, 64]) }),
};

describe("fp32 → fp16 conversion of the tiny-sd graphs", () => {
  let dir: string;
  beforeAll(async () => {
    dir = await mkdtemp(join(tmpdir(), "sd-trt-fp16-"));
  });
  afterAll(async () => {
    await rm(dir, { recursive: true, force: true });
  });

  for (const role of Object.keys(FEEDS)) {
    test(`${role}: runs in ONNX Runtime, keeps float32 I/O and matches fp32 within fp16 tolerance`, async () => {
      const sourcePath = join(TINY, role, "model.onnx");
      const source = await OnnxModel.read(sourcePath);
      const reader = new ExternalDataReader();
      const { model, report } = await convertToFp16(source, reader);
      await reader.close();
      await mkdir(join(dir, role), { recursive: true });
      const out = join(dir, role, "model.onnx");
      await writeOnnxModel(model, out);

      const converted = await OnnxModel.read(out);
      expect(converted.io()).toEqual(source.io()); // same names, float32 types, dims
      const weights = converted.initializers().map(tensorHeader);
      expect(weights.some((w) => w.dataType === DataType.FLOAT16)).toBe(true);
      expect(report.fp16Nodes).toBeGreaterThan(report.fp32Nodes);
      expect((await stat(`${out}_data`)).size).toBeGreaterThan(0);

      const fp32 = await ort.InferenceSession.create(sourcePath);
      const fp16 = await ort.InferenceSession.create(out);
      const feeds = FEEDS[role]!();
      const a = await fp32.run(feeds);
      const b = await fp16.run(feeds);
      for (const name of fp32.outputNames) {
        const x = a[name]!.data as Float32Array;
        const y = b[name]!.data as Float32Array;
        expect(b[name]!.type).toBe("float32");
        let maxDiff = 0;
        let maxAbs = 0;
        for (let i = 0; i < x.length; i++) {
          maxDiff = Math.max(maxDiff, Math.abs(x[i]! - y[i]!));
          maxAbs = Math.max(maxAbs, Math.abs(x[i]!));
        }
        expect(Number.isFinite(maxDiff)).toBe(true);
        expect(maxDiff).toBeGreaterThan(0); // it really computes in fp16
        expect(maxDiff).toBeLessThan(4e-3 * Math.max(1, maxAbs));
      }
      await fp32.release();
      await fp16.release();
    });
  }

  test("normalisation, softmax and the timestep embedding stay fp32", async () => {
    const reader = new ExternalDataReader();
    const text = await convertToFp16(await OnnxModel.read(join(TINY, "text_encoder", "model.onnx")), reader);
    const unet = await convertToFp16(await OnnxModel.read(join(TINY, "unet", "model.onnx")), reader);
    await reader.close();
    // The decomposed LayerNorm of opset 14: ReduceMean, Pow, Sqrt and the Div by the Sqrt.
    expect(text.report.fp32ByOp).toMatchObject({ ReduceMean: 10, Pow: 5, Sqrt: 5, Div: 5, Softmax: 2 });
    expect(unet.report.fp32ByOp).toMatchObject({ Sin: 1, Cos: 1, InstanceNormalization: 8, Softmax: 1 });
    // The causal mask (torch's finfo(float32).min) was clamped to stay finite in fp16.
    expect(text.report.valuesClamped).toBeGreaterThan(0);
    // Every Softmax reads a float32 value: its input comes from a Cast to FLOAT or an fp32 node.
    const graph = text.model.message(ModelField.graph)!;
    const nodes = graph.messages(GraphField.node);
    const producer = new Map<string, PbMessage>();
    for (const n of nodes) for (const o of n.strings(NodeField.output)) producer.set(o, n);
    for (const softmax of nodes.filter((n) => n.string(NodeField.opType) === "Softmax")) {
      const p = producer.get(softmax.strings(NodeField.input)[0]!)!;
      const op = p.string(NodeField.opType);
      if (op === "Cast") {
        const to = p.messages(NodeField.attribute).find((a) => a.string(1) === "to")!.int(3);
        expect(to).toBe(DataType.FLOAT);
      } else {
        expect(["Add", "Div", "Mul", "Sub"]).toContain(op); // fp32 arithmetic feeding it
      }
    }
    expect(KEEP_FP32_OPS).toContain("LayerNormalization");
  });

  test("fp32Attention (upcast_attention) keeps each Q·Kᵀ MatMul feeding a Softmax, and the scale between, in fp32", async () => {
    const reader = new ExternalDataReader();
    try {
      const source = await OnnxModel.read(join(TINY, "unet", "model.onnx"));
      const plain = await convertToFp16(source, reader);
      const upcast = await convertToFp16(source, reader, { fp32Attention: true });
      // Without the option the score MatMul runs in fp16 (the overflow diffusers' upcast_attention avoids).
      expect(plain.report.attentionScoresFp32).toBe(0);
      expect(plain.report.fp32ByOp.MatMul ?? 0).toBe(0);
      // The tiny UNet has one attention (one Softmax): its score MatMul is fp32 with the option.
      expect(upcast.report.attentionScoresFp32).toBe(1);
      expect(upcast.report.fp32ByOp.MatMul).toBe(1);
      // The Softmax's input is now produced in fp32 straight from the MatMul path: no Cast up before it.
      const graph = upcast.model.message(ModelField.graph)!;
      const nodes = graph.messages(GraphField.node);
      const producer = new Map<string, PbMessage>();
      for (const n of nodes) for (const o of n.strings(NodeField.output)) producer.set(o, n);
      const softmax = nodes.find((n) => n.string(NodeField.opType) === "Softmax")!;
      let op = producer.get(softmax.strings(NodeField.input)[0]!)!.string(NodeField.opType);
      let value = softmax.strings(NodeField.input)[0]!;
      for (let i = 0; i < 8 && op !== "MatMul"; i++) {
        expect(op).not.toBe("Cast");
        value = producer.get(value)!.strings(NodeField.input)[0]!;
        op = producer.get(value)!.string(NodeField.opType);
      }
      expect(op).toBe("MatMul");
      // The MatMul's q and k are cast up from the fp16 projections.
      const matmul = producer.get(value)!;
      for (const input of matmul.strings(NodeField.input)) {
        const from = producer.get(input);
        if (from?.string(NodeField.opType) === "Cast") {
          expect(from.messages(NodeField.attribute).find((a) => a.string(1) === "to")!.int(3)).toBe(DataType.FLOAT);
        }
      }
      // And the graph is valid: it runs and stays within fp16 tolerance of the fp32 UNet.
      await mkdir(join(dir, "unet-upcast"), { recursive: true });
      const out = join(dir, "unet-upcast", "model.onnx");
      await writeOnnxModel(upcast.model, out);
      const fp32 = await ort.InferenceSession.create(join(TINY, "unet", "model.onnx"));
      const fp16 = await ort.InferenceSession.create(out);
      const feeds = FEEDS.unet!();
      const x = (await fp32.run(feeds)).out_sample!.data as Float32Array;
      const y = (await fp16.run(feeds)).out_sample!.data as Float32Array;
      let maxDiff = 0;
      let maxAbs = 0;
      for (let i = 0; i < x.length; i++) {
        maxDiff = Math.max(maxDiff, Math.abs(x[i]! - y[i]!));
        maxAbs = Math.max(maxAbs, Math.abs(x[i]!));
      }
      expect(maxDiff).toBeLessThan(4e-3 * Math.max(1, maxAbs));
      await fp32.release();
      await fp16.release();
    } finally {
      await reader.close();
    }
  });

  test("an operator from another domain is refused with its node name", async () => {
    const valueInfo = (name: string) =>
      new PbMessage([
        stringField(1, name),
        {
          no: 2,
          wt: WireType.LengthDelimited,
          value: new PbMessage([{ no: 1, wt: WireType.LengthDelimited, value: new PbMessage([intField(1, DataType.FLOAT)]) }]),
        },
      ]);
    const node = new PbMessage([
      stringField(NodeField.input, "x"),
      stringField(NodeField.output, "y"),
      stringField(NodeField.name, "fused_0"),
      stringField(NodeField.opType, "FusedGemm"),
      stringField(NodeField.domain, "com.microsoft"),
    ]);
    const graph = new PbMessage([
      { no: GraphField.node, wt: WireType.LengthDelimited, value: node },
      { no: GraphField.input, wt: WireType.LengthDelimited, value: valueInfo("x") },
      { no: GraphField.output, wt: WireType.LengthDelimited, value: valueInfo("y") },
    ]);
    const bytes = encodeMessage(new PbMessage([intField(ModelField.irVersion, 8), { no: ModelField.graph, wt: WireType.LengthDelimited, value: graph }]));
    const model = OnnxModel.decode(bytes, "custom.onnx");
    expect(valueInfoOf(model.graph.messages(GraphField.output)[0]!).dtype).toBe("float");
    const reader = new ExternalDataReader();
    await expect(convertToFp16(model, reader)).rejects.toThrow(ModelFileError);
    await expect(convertToFp16(model, reader)).rejects.toThrow(/FusedGemm node "fused_0" is from operator domain "com.microsoft"/);
    await reader.close();
  });

  test("constants read in both precisions get an fp16 copy; the fp32 original stays", async () => {
    const reader = new ExternalDataReader();
    const source = await OnnxModel.read(join(TINY, "vae_decoder", "model.onnx"));
    const { model, report } = await convertToFp16(source, reader);
    await reader.close();
    expect(report.constantsDuplicated).toBeGreaterThan(0);
    const graph = model.message(ModelField.graph)!;
    const initializers = new Map(graph.messages(GraphField.initializer).map((t) => [t.string(TensorField.name)!, tensorHeader(t).dataType]));
    const constants = new Map(
      graph
        .messages(GraphField.node)
        .filter((n) => n.string(NodeField.opType) === "Constant")
        .map((n) => [n.strings(NodeField.output)[0]!, n]),
    );
    const copies = [...initializers.keys(), ...constants.keys()].filter((n) => n.endsWith("__fp16"));
    expect(copies.length).toBe(report.constantsDuplicated);
    for (const copy of copies) {
      const original = copy.slice(0, -"__fp16".length);
      if (initializers.has(copy)) {
        expect(initializers.get(copy)).toBe(DataType.FLOAT16);
        expect(initializers.get(original)).toBe(DataType.FLOAT);
      } else {
        expect(constants.has(original)).toBe(true);
      }
    }
  });
});
