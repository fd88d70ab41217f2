/**
 * Graph edits that give a CLIP text encoder export the two inputs A1111's prompt features need,
 * without a re-export:
 *
 * - **Clip skip** (`CLIP_stop_at_last_layers` = N): A1111 takes `hidden_states[-N]` (the residual
 *   stream after layer L − N + 1) and applies the final layer norm to it. The edit adds the input
 *   `clip_skip` (int32 [1]) and feeds the final layer norm with
 *   `Where(clip_skip == L, h_1, … Where(clip_skip == 2, h_{L−1}, h_L))`: with 1 the graph computes
 *   what it computed before, bit for bit (Where copies); every N picks its layer's output exactly.
 * - **Textual inversion**: A1111 replaces the token embeddings at an embedding's positions by its
 *   vectors, before the position embeddings are added (`EmbeddingsWithFixes`). The edit adds the
 *   input `extra_token_vectors` (float32 [rows, hidden], at least one row): a token id t ≥
 *   `vocabSize` takes row t − vocabSize of it (`Gather(extra_token_vectors, t − vocabSize)`), any
 *   other id is looked up in the table as before (through whatever the export does to it first:
 *   the tiny test encoder takes ids modulo its table size), and a `Where` per position picks.
 *   One input of ids keeps chunks, batching and the TensorRT profiles as they are.
 *
 * The layers are found structurally, not by name, so every export works (torch.onnx/optimum
 * exports of transformers' CLIPTextModel with LayerNorm decomposed at opset < 17, a
 * LayerNormalization node at opset ≥ 17, other pre-LN CLIP-like graphs): the final layer norm is
 * the one whose output is `last_hidden_state`; walking back from its input, each residual `Add`
 * has exactly one input that also enters a layer norm (the stream; the other is the attention or
 * MLP branch), and the walk ends at the embedding sum, whose inputs enter no layer norm. Two
 * residual adds make one layer.
 */
import { ModelFileError } from "../errors.js";
import type { OnnxModel } from "./model.js";
import { type PbMessage, PbMessage as Message, intField, stringField, WireType } from "./protobuf.js";
import {
  AttributeField,
  AttributeSchema,
  AttributeType,
  DataType,
  GraphField,
  NodeField,
  NodeSchema,
  TensorField,
  TensorSchema,
  ValueInfoField,
} from "./schema.js";
import { tensorHeader } from "./model.js";
import { tensorValueInfo } from "./value-info.js";

/** The input the clip-skip edit adds: int32 [1], A1111's `CLIP_stop_at_last_layers` (1 … layers). */
export const CLIP_SKIP_INPUT = "clip_skip";
/** The input the textual-inversion edit adds: float32 [rows, hidden], rows ≥ 1. */
export const EXTRA_VECTORS_INPUT = "extra_token_vectors";

export interface TextEncoderLayout {
  /** Transformer layers (`hidden_states` has layers + 1 entries). */
  layers: number;
  /** The residual stream at each layer boundary: [embeddings, after layer 1, …, after layer L]. */
  hiddenStates: string[];
}

export interface TextEncoderEditOptions {
  /** The graph's ids input and hidden-state output (lib/model/graph-io.ts reads them off the graph). */
  idsName: string;
  hiddenName: string;
  /** The tokenizer's vocabulary size: ids from here on mean extra vectors. Omit to add no vectors input. */
  vocabSize?: number;
  /**
   * Add the `clip_skip` input (default true). SDXL's encoders leave it out: they return every
   * hidden state, and A1111's clip skip there picks one of those (no final layer norm).
   */
  clipSkip?: boolean;
}

export interface EditedTextEncoder {
  layout: TextEncoderLayout;
}

/** Where a graph's tensors come from and go to. */
class GraphIndex {
  readonly producer = new Map<string, PbMessage>();
  readonly consumers = new Map<string, PbMessage[]>();
  readonly initializers = new Map<string, PbMessage>();

  constructor(readonly graph: PbMessage) {
    for (const t of graph.messages(GraphField.initializer)) this.initializers.set(t.string(TensorField.name) ?? "", t);
    for (const node of graph.messages(GraphField.node)) {
      for (const out of node.strings(NodeField.output)) this.producer.set(out, node);
      for (const input of node.strings(NodeField.input)) {
        const list = this.consumers.get(input) ?? [];
        list.push(node);
        this.consumers.set(input, list);
      }
    }
  }

  opOf(tensor: string): string | undefined {
    return this.producer.get(tensor)?.string(NodeField.opType);
  }

  /** Whether `tensor` is the input of a layer norm: a LayerNormalization node, or the decomposed `Sub(x, ReduceMean(x))`. */
  entersLayerNorm(tensor: string): boolean {
    for (const node of this.consumers.get(tensor) ?? []) {
      const op = node.string(NodeField.opType);
      if (op === "LayerNormalization" && node.strings(NodeField.input)[0] === tensor) return true;
      if (op === "Sub") {
        const [x, mean] = node.strings(NodeField.input);
        const meanNode = mean === undefined ? undefined : this.producer.get(mean);
        if (x === tensor && meanNode?.string(NodeField.opType) === "ReduceMean" && meanNode.strings(NodeField.input)[0] === tensor) return true;
      }
    }
    return false;
  }

  /** The input of the layer norm nearest above `tensor` (breadth first through producers). */
  layerNormInputAbove(tensor: string, maxNodes = 16): string | undefined {
    const queue = [tensor];
    const seen = new Set<string>();
    while (queue.length > 0 && seen.size < maxNodes) {
      const t = queue.shift()!;
      if (seen.has(t)) continue;
      seen.add(t);
      const node = this.producer.get(t);
      if (!node) continue;
      const op = node.string(NodeField.opType);
      const inputs = node.strings(NodeField.input);
      if (op === "LayerNormalization") return inputs[0];
      if (op === "Sub" && inputs[0] !== undefined && this.entersLayerNorm(inputs[0])) return inputs[0];
      queue.push(...inputs.filter((i) => i !== "" && !this.initializers.has(i)));
    }
    return undefined;
  }
}

/**
 * The layer boundaries of a CLIP-like text encoder, found from the structure of its graph.
 * @throws ModelFileError naming the file when the graph is not a pre-LN transformer ending in a layer norm.
 */
export function textEncoderLayout(model: OnnxModel, hiddenName: string): TextEncoderLayout {
  return findLayout(new GraphIndex(model.graph), model.path, hiddenName);
}

function findLayout(index: GraphIndex, path: string, hiddenName: string): TextEncoderLayout {
  const refuse = (why: string): never => {
    throw new ModelFileError(path, `${path}: cannot find the text encoder's layers for clip skip / textual inversion (${why})`);
  };
  const finalInput = index.layerNormInputAbove(hiddenName) ?? refuse(`${hiddenName} does not come from a layer norm`);
  const stream = [finalInput];
  for (;;) {
    const node = index.producer.get(stream[0]!);
    if (node?.string(NodeField.opType) !== "Add") break;
    const residual = node.strings(NodeField.input).filter((input) => index.entersLayerNorm(input));
    if (residual.length !== 1) break;
    stream.unshift(residual[0]!);
  }
  const adds = stream.length - 1;
  if (adds < 2 || adds % 2 !== 0) refuse(`found ${adds} residual additions before the final layer norm, expected two per layer`);
  return { layers: adds / 2, hiddenStates: stream.filter((_, i) => i % 2 === 0) };
}

/**
 * Adds the `clip_skip` input and (with `vocabSize`) the `extra_token_vectors` input to a text
 * encoder, in place. See the module comment for what each does.
 * @throws ModelFileError naming the file when the layers or the token lookup cannot be found.
 */
export function editTextEncoder(model: OnnxModel, options: TextEncoderEditOptions): EditedTextEncoder {
  const graph = model.graph;
  const index = new GraphIndex(graph);
  const layout = findLayout(index, model.path, options.hiddenName);
  const names = new UniqueNames(graph);
  const nodes: PbMessage[] = [];
  const initializers: PbMessage[] = [];
  const constInt = (base: string, dataType: number, values: number[], dims: number[]): string => {
    const name = names.take(base);
    initializers.push(intTensor(name, dataType, values, dims));
    return name;
  };

  const inputs: PbMessage[] = [];
  if (options.clipSkip !== false) {
    // Clip skip: a chain of Where nodes selecting the layer boundary the final layer norm reads.
    const last = layout.hiddenStates[layout.layers]!;
    const normNodes = index.consumers.get(last) ?? [];
    let selected = last;
    for (let n = 2; n <= layout.layers; n++) {
      const is = names.take(`clip_skip_is_${n}`);
      nodes.push(node("Equal", [CLIP_SKIP_INPUT, constInt(`clip_skip_${n}`, DataType.INT32, [n], [1])], [is], names.take(`ClipSkipEqual${n}`)));
      const out = names.take(`clip_skip_hidden_${n}`);
      nodes.push(node("Where", [is, layout.hiddenStates[layout.layers - n + 1]!, selected], [out], names.take(`ClipSkipWhere${n}`)));
      selected = out;
    }
    for (const consumer of normNodes) replaceInput(consumer, last, selected);
    inputs.push(tensorValueInfo(CLIP_SKIP_INPUT, DataType.INT32, [1]));
  }

  if (options.vocabSize !== undefined) {
    const lookup = findTokenLookup(index, layout, options.idsName) ?? refuse(model.path, "no token-embedding Gather fed by the ids");
    const [tableName, indicesName] = lookup.strings(NodeField.input) as [string, string];
    const table = tensorHeader(index.initializers.get(tableName)!);
    const hidden = table.dims[1]!;
    let extra = EXTRA_VECTORS_INPUT;
    if (table.dataType !== DataType.FLOAT) {
      extra = names.take("extra_token_vectors_cast");
      nodes.push(castNode(EXTRA_VECTORS_INPUT, extra, table.dataType, names.take("ExtraVectorsCast")));
    }
    // Ids as int64 in the shape of the lookup's indices.
    const ids64 = names.take("ids_int64");
    nodes.push(castNode(options.idsName, ids64, DataType.INT64, names.take("IdsCast")));
    const indicesShape = names.take("token_indices_shape");
    nodes.push(node("Shape", [indicesName], [indicesShape], names.take("TokenIndicesShape")));
    const ids = names.take("ids_as_indices");
    nodes.push(node("Reshape", [ids64, indicesShape], [ids], names.take("IdsReshape")));
    const original = names.take("token_indices_int64");
    nodes.push(castNode(indicesName, original, DataType.INT64, names.take("TokenIndicesCast")));
    const isToken = names.take("id_is_token");
    nodes.push(node("Less", [ids, constInt("vocab_size", DataType.INT64, [options.vocabSize], [])], [isToken], names.take("IdIsToken")));
    // Two lookups, each with the other's positions pointed at row 0, then a Where per position:
    // the table's Gather stays the graph's own (the fp16 converter converts it as before, and no
    // table-sized Concat runs per call).
    const zero = constInt("row_zero", DataType.INT64, [0], []);
    const tokenIndex = names.take("token_table_index");
    nodes.push(node("Where", [isToken, original, zero], [tokenIndex], names.take("TokenTableIndex")));
    const extraOffset = names.take("extra_vector_offset");
    nodes.push(node("Sub", [ids, constInt("vocab_size_offset", DataType.INT64, [options.vocabSize], [])], [extraOffset], names.take("ExtraVectorOffset")));
    const extraIndex = names.take("extra_vector_index");
    nodes.push(node("Where", [isToken, zero, extraOffset], [extraIndex], names.take("ExtraVectorIndex")));
    const looked = lookup.strings(NodeField.output)[0]!;
    const fromTable = names.take("token_vectors_from_table");
    lookup.setStrings(NodeField.output, [fromTable]);
    replaceInput(lookup, indicesName, tokenIndex);
    const fromExtra = names.take("token_vectors_from_extra");
    nodes.push(node("Gather", [extra, extraIndex], [fromExtra], names.take("ExtraVectorGather"), [intAttribute("axis", 0)]));
    const isTokenColumn = names.take("id_is_token_column");
    const opset = model.opsetVersion() ?? 13;
    nodes.push(
      opset >= 13
        ? node("Unsqueeze", [isToken, constInt("last_axis", DataType.INT64, [-1], [1])], [isTokenColumn], names.take("IdIsTokenColumn"))
        : node("Unsqueeze", [isToken], [isTokenColumn], names.take("IdIsTokenColumn"), [intsAttribute("axes", [-1])]),
    );
    nodes.push(node("Where", [isTokenColumn, fromTable, fromExtra], [looked], names.take("TokenVectors")));
    inputs.push(tensorValueInfo(EXTRA_VECTORS_INPUT, DataType.FLOAT, ["extra_vectors", hidden]));
  }

  // New nodes go first: each reads only graph inputs, initializers or outputs of nodes that the
  // topological order below puts before it.
  graph.setMessages(GraphField.initializer, [...graph.messages(GraphField.initializer), ...initializers]);
  graph.setMessages(GraphField.input, [...graph.messages(GraphField.input), ...inputs]);
  graph.setMessages(GraphField.node, topologicalOrder([...graph.messages(GraphField.node), ...nodes], graph));
  return { layout };
}

function refuse(path: string, why: string): never {
  throw new ModelFileError(path, `${path}: cannot find the text encoder's token lookup for textual inversion (${why})`);
}

// Ops a token id passes through unchanged in meaning on its way to the lookup (input 0 only).
const ID_PATH_OPS = new Set(["Cast", "Reshape", "Mod", "Unsqueeze", "Squeeze", "Identity", "Flatten"]);

/** The Gather that looks the ids up in the token table: its data is a [rows, hidden] initializer, its indices come from the ids. */
function findTokenLookup(index: GraphIndex, layout: TextEncoderLayout, idsName: string): PbMessage | undefined {
  const embeddingSum = index.producer.get(layout.hiddenStates[0]!);
  const candidates = embeddingSum ? embeddingSum.strings(NodeField.input).map((t) => index.producer.get(t)) : [];
  for (const gather of candidates) {
    if (gather?.string(NodeField.opType) !== "Gather") continue;
    const [data, indices] = gather.strings(NodeField.input);
    const table = data === undefined ? undefined : index.initializers.get(data);
    if (!table || tensorHeader(table).dims.length !== 2) continue;
    let t = indices;
    for (let i = 0; t !== undefined && t !== idsName && i < 8; i++) {
      const p = index.producer.get(t);
      t = p && ID_PATH_OPS.has(p.string(NodeField.opType) ?? "") ? p.strings(NodeField.input)[0] : undefined;
    }
    if (t === idsName) return gather;
  }
  return undefined;
}

function replaceInput(node: PbMessage, from: string, to: string): void {
  node.setStrings(
    NodeField.input,
    node.strings(NodeField.input).map((input) => (input === from ? to : input)),
  );
}

/** Kahn's order, stable: the nodes as they were wherever that already works. */
function topologicalOrder(nodes: PbMessage[], graph: PbMessage): PbMessage[] {
  const available = new Set<string>([
    "",
    ...graph.messages(GraphField.input).map((v) => v.string(ValueInfoField.name) ?? ""),
    ...graph.messages(GraphField.initializer).map((t) => t.string(TensorField.name) ?? ""),
  ]);
  const out: PbMessage[] = [];
  let pending = nodes;
  while (pending.length > 0) {
    const next: PbMessage[] = [];
    for (const n of pending) {
      if (n.strings(NodeField.input).every((i) => available.has(i))) {
        out.push(n);
        for (const o of n.strings(NodeField.output)) available.add(o);
      } else next.push(n);
    }
    if (next.length === pending.length) return [...out, ...next]; // inputs from outside (subgraphs): keep the rest as is
    pending = next;
  }
  return out;
}

class UniqueNames {
  readonly used = new Set<string>();
  constructor(graph: PbMessage) {
    for (const n of graph.messages(GraphField.node)) {
      this.used.add(n.string(NodeField.name) ?? "");
      for (const o of n.strings(NodeField.output)) this.used.add(o);
    }
    for (const t of graph.messages(GraphField.initializer)) this.used.add(t.string(TensorField.name) ?? "");
    for (const v of graph.messages(GraphField.input)) this.used.add(v.string(ValueInfoField.name) ?? "");
  }
  take(base: string): string {
    let name = base;
    for (let i = 1; this.used.has(name); i++) name = `${base}_${i}`;
    this.used.add(name);
    return name;
  }
}

function node(opType: string, inputs: string[], outputs: string[], name: string, attributes: PbMessage[] = []): PbMessage {
  return new Message(
    [
      ...inputs.map((i) => stringField(NodeField.input, i)),
      ...outputs.map((o) => stringField(NodeField.output, o)),
      stringField(NodeField.name, name),
      stringField(NodeField.opType, opType),
      ...attributes.map((value) => ({ no: NodeField.attribute, wt: WireType.LengthDelimited as const, value })),
    ],
    NodeSchema,
  );
}

function intAttribute(name: string, value: number): PbMessage {
  return new Message([stringField(AttributeField.name, name), intField(AttributeField.i, value), intField(AttributeField.type, AttributeType.INT)], AttributeSchema);
}

function intsAttribute(name: string, values: number[]): PbMessage {
  return new Message([stringField(AttributeField.name, name), ...values.map((v) => intField(AttributeField.ints, v)), intField(AttributeField.type, AttributeType.INTS)], AttributeSchema);
}

function castNode(input: string, output: string, to: number, name: string): PbMessage {
  return node("Cast", [input], [output], name, [intAttribute("to", to)]);
}

function intTensor(name: string, dataType: number, values: number[], dims: number[]): PbMessage {
  const bytes = dataType === DataType.INT64 ? 8 : 4;
  const raw = new Uint8Array(values.length * bytes);
  const view = new DataView(raw.buffer);
  values.forEach((v, i) => {
    if (bytes === 8) view.setBigInt64(i * 8, BigInt(v), true);
    else view.setInt32(i * 4, v, true);
  });
  return new Message(
    [
      ...dims.map((d) => intField(TensorField.dims, d)),
      intField(TensorField.dataType, dataType),
      stringField(TensorField.name, name),
      { no: TensorField.rawData, wt: WireType.LengthDelimited, value: raw },
    ],
    TensorSchema,
  );
}

