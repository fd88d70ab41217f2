/**
 * The torch layers the SD components are made of (Linear, Conv2d, GroupNorm, LayerNorm, the
 * activations, scaled-dot-product attention), written as ONNX nodes, with the weights taken from a
 * `WeightSource` by their diffusers state-dict keys (lib/convert/types.ts: each initializer is named
 * by its key, Linear weights stored transposed [in, out]).
 *
 * Precision (`dtype`), following the conventions of lib/onnx/convert-fp16.ts so that a converted
 * fp16 graph looks like one our fp16 converter would have made from the fp32 graph:
 * - fp32: everything float32.
 * - fp16: graph inputs and outputs stay float32 (the callers cast at the edges); Linear, Conv and
 *   embedding weights and the computation between the normalisations are float16; GroupNorm and
 *   LayerNorm run in float32 with float32 parameters, and so does Softmax (its input is cast to
 *   float32, its output back), and with `upcast` (diffusers' `upcast_attention`) Q·Kᵀ too.
 *
 * GroupNorm is written as torch's ONNX export writes it, Reshape [N, G, -1] → InstanceNormalization
 * (scale 1, bias 0) → Reshape back → Mul weight → Add bias: ONNX Runtime runs it exactly at opset 17,
 * and TensorRT's ONNX parser recognises this pattern as a group normalisation (GroupNormalization
 * itself needs opset 18/21, which older TensorRT and ONNX Runtime releases do not all implement).
 */
import { ModelFileError } from "../../errors.js";
import type { ElementType, GraphBuilder, Value } from "../../onnx/builder.js";
import type { WeightSource } from "../types.js";

export type GraphDtype = "fp32" | "fp16";

/** Weight keys a checkpoint may carry that no graph reads (buffers saved by older transformers). */
const UNREAD_KEYS = new Set(["text_model.embeddings.position_ids"]);

export class Layers {
  /** The element type of the computation between the normalisations. */
  readonly compute: ElementType;
  private readonly loaded = new Map<string, Promise<Value>>();

  constructor(
    readonly g: GraphBuilder,
    private readonly weights: WeightSource,
    /** For messages: which checkpoint and component the weights come from. */
    private readonly origin: string,
    dtype: GraphDtype,
  ) {
    this.compute = dtype === "fp16" ? "float16" : "float32";
  }

  has(key: string): boolean {
    return this.weights.get(key) !== undefined;
  }

  /** The source tensor's shape (checked to exist). */
  shape(key: string): readonly number[] {
    return this.source(key).shape;
  }

  /** A ModelFileError about this component's weights or config. */
  fail(problem: string): never {
    throw new ModelFileError(this.origin, `${this.origin}: ${problem}`);
  }

  private source(key: string) {
    const tensor = this.weights.get(key);
    if (!tensor) throw new ModelFileError(this.origin, `${this.origin}: the checkpoint has no weight "${key}", which this model's config needs`);
    return tensor;
  }

  /**
   * The initializer for `key`, loaded once however often it is used. `linear` stores it transposed
   * (a Linear weight [out, in] becomes [in, out]); `norm` keeps it float32 in an fp16 graph.
   */
  weight(key: string, kind: "linear" | "plain" | "norm" = "plain"): Promise<Value> {
    let value = this.loaded.get(key);
    if (!value) {
      value = this.load(key, kind);
      this.loaded.set(key, value);
    }
    return value;
  }

  private async load(key: string, kind: "linear" | "plain" | "norm"): Promise<Value> {
    const tensor = this.source(key);
    let data = await tensor.read();
    let shape = [...tensor.shape];
    if (kind === "linear") {
      if (shape.length !== 2) throw new ModelFileError(this.origin, `${this.origin}: weight "${key}" should be a Linear weight [out, in], got shape [${shape.join(", ")}]`);
      const [rows, cols] = shape as [number, number];
      const t = new Float32Array(data.length);
      for (let r = 0; r < rows; r++) for (let c = 0; c < cols; c++) t[c * rows + r] = data[r * cols + c]!;
      data = t;
      shape = [cols, rows];
    }
    return this.g.initializer(key, data, shape, kind === "norm" ? "float32" : this.compute);
  }

  /**
   * Throws when the checkpoint holds weights the graph did not read (an unsupported part of the
   * config). `belongs` picks the keys this graph is made of (the VAE's weights make two graphs).
   */
  checkAllRead(belongs: (key: string) => boolean = () => true): void {
    const unread = [...this.weights.keys()].filter((k) => belongs(k) && !this.loaded.has(k) && !UNREAD_KEYS.has(k));
    if (unread.length > 0) {
      const shown = unread.slice(0, 5).map((k) => JSON.stringify(k)).join(", ");
      throw new ModelFileError(
        this.origin,
        `${this.origin}: ${unread.length} weight(s) are not used by the converted graph (${shown}${unread.length > 5 ? ", …" : ""}); ` +
          "the checkpoint has parts this converter does not know",
      );
    }
  }

  toCompute(x: Value): Value {
    return this.g.cast(x, this.compute);
  }

  /** torch.nn.Linear: x · Wᵀ + b (the bias when the checkpoint has one). */
  async linear(x: Value, prefix: string): Promise<Value> {
    const y = this.g.op("MatMul", [x, await this.weight(`${prefix}.weight`, "linear")]);
    return this.has(`${prefix}.bias`) ? this.g.op("Add", [y, await this.weight(`${prefix}.bias`)]) : y;
  }

  /** torch.nn.Conv2d: `padding` on every side, or [top, left, bottom, right] (ONNX `pads` order); default k/2. */
  async conv(x: Value, prefix: string, options: { stride?: number; padding?: number | readonly number[] } = {}): Promise<Value> {
    const shape = this.shape(`${prefix}.weight`);
    const k = shape[2]!;
    const p = options.padding ?? Math.floor(k / 2);
    const stride = options.stride ?? 1;
    const inputs = [x, await this.weight(`${prefix}.weight`)];
    if (this.has(`${prefix}.bias`)) inputs.push(await this.weight(`${prefix}.bias`));
    return this.g.op("Conv", inputs, {
      kernel_shape: [k, shape[3]!],
      pads: typeof p === "number" ? [p, p, p, p] : p,
      strides: [stride, stride],
      dilations: [1, 1],
      group: 1,
    });
  }

  /** torch.nn.GroupNorm over NC… input (see the module comment for the form). */
  async groupNorm(x: Value, prefix: string, groups: number, epsilon: number): Promise<Value> {
    const g = this.g;
    return g.scope(prefix, async () => {
      const x32 = g.cast(x, "float32");
      const grouped = g.op("Reshape", [x32, g.constant([0, groups, -1], "int64")]);
      const ones = g.constant(new Array<number>(groups).fill(1), "float32");
      const zeros = g.constant(new Array<number>(groups).fill(0), "float32");
      const normed = g.op("InstanceNormalization", [grouped, ones, zeros], { epsilon });
      const back = g.op("Reshape", [normed, g.op("Shape", [x32], {}, { type: "int64" })]);
      const axes = g.constant([1, 2], "int64");
      const w = g.op("Unsqueeze", [await this.weight(`${prefix}.weight`, "norm"), axes]);
      const b = g.op("Unsqueeze", [await this.weight(`${prefix}.bias`, "norm"), axes]);
      return this.toCompute(g.op("Add", [g.op("Mul", [back, w]), b]));
    });
  }

  /** torch.nn.LayerNorm over the last axis (ONNX LayerNormalization, opset 17), in float32. */
  async layerNorm(x: Value, prefix: string, epsilon: number, options: { output?: string } = {}): Promise<Value> {
    const g = this.g;
    const normed = g.op("LayerNormalization", [g.cast(x, "float32"), await this.weight(`${prefix}.weight`, "norm"), await this.weight(`${prefix}.bias`, "norm")], { axis: -1, epsilon });
    return g.cast(normed, this.compute, options.output);
  }

  silu(x: Value): Value {
    return this.g.op("Mul", [x, this.g.op("Sigmoid", [x])]);
  }

  /** torch's exact GELU, 0.5 · x · (1 + erf(x / √2)), the pattern TensorRT fuses. */
  gelu(x: Value): Value {
    const g = this.g;
    const erf = g.op("Erf", [g.op("Div", [x, g.scalar(Math.SQRT2, x.type)])]);
    return g.op("Mul", [g.op("Mul", [x, g.op("Add", [erf, g.scalar(1, x.type)])]), g.scalar(0.5, x.type)]);
  }

  /** CLIP's quick_gelu, x · sigmoid(1.702 x). */
  quickGelu(x: Value): Value {
    const g = this.g;
    return g.op("Mul", [x, g.op("Sigmoid", [g.op("Mul", [x, g.scalar(1.702, x.type)])])]);
  }

  /**
   * Scaled dot-product attention over [B, L, heads·d] projections, written the way TensorRT fuses
   * it: Q scaled by 1/√d before Q·Kᵀ, (+ mask), Softmax, ·V. `mask` is added to the float32 scores
   * ([L, L], broadcast); with `upcast` Q·Kᵀ itself runs in float32.
   */
  attention(q: Value, k: Value, v: Value, heads: number, headDim: number, options: { upcast?: boolean; mask?: Value } = {}): Value {
    const g = this.g;
    const split = g.constant([0, 0, heads, headDim], "int64");
    const qh = g.op("Transpose", [g.op("Reshape", [q, split])], { perm: [0, 2, 1, 3] });
    const kt = g.op("Transpose", [g.op("Reshape", [k, split])], { perm: [0, 2, 3, 1] });
    const vh = g.op("Transpose", [g.op("Reshape", [v, split])], { perm: [0, 2, 1, 3] });
    const scoresType: ElementType = options.upcast ? "float32" : this.compute;
    const qs = g.op("Mul", [g.cast(qh, scoresType), g.scalar(1 / Math.sqrt(headDim), scoresType)]);
    let scores = g.cast(g.op("MatMul", [qs, g.cast(kt, scoresType)]), "float32");
    if (options.mask) scores = g.op("Add", [scores, options.mask]);
    const probs = this.toCompute(g.op("Softmax", [scores], { axis: -1 }));
    const out = g.op("Transpose", [g.op("MatMul", [probs, vh])], { perm: [0, 2, 1, 3] });
    return g.op("Reshape", [out, g.constant([0, 0, heads * headDim], "int64")]);
  }
}
