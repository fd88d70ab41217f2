/**
 * transformers' CLIPTextModel (SD 1.x, SD 2.x) and CLIPTextModelWithProjection (SDXL's second text
 * encoder) as an ONNX graph.
 *
 * I/O (optimum's text-encoder export, with the int32 ids of optimum ≤ 1.22 that lib/model/graph-io.ts
 * reads): `input_ids` int32 [batch_size, sequence_length] → `last_hidden_state` float32
 * [batch_size, sequence_length, D], `pooler_output` [batch_size, D] (CLIPTextModel) or `text_embeds`
 * [batch_size, projection_dim] (with projection); with `hiddenStates`, also `hidden_states.0` (the
 * embeddings) … `hidden_states.N` (layer N's output), named as optimum names them for SDXL.
 *
 * Named tensors, for the graph edits clip skip and textual inversion make (in the compute type):
 * - `text_model.embeddings.token_embedding.output` [B, L, D]: the token-embedding lookup (Gather of
 *   `text_model.embeddings.token_embedding.weight` at `input_ids`), before the positions are added;
 * - `text_model.embeddings.output` [B, L, D]: tokens + positions, the input of layer 0;
 * - `text_model.encoder.layers.<i>.output` [B, L, D]: layer i's output (= hidden_states.<i+1>);
 * - `text_model.final_layer_norm.output` [B, L, D]: the final layer norm of the last layer's output,
 *   i.e. last_hidden_state.
 *
 * The computation is transformers' (CLIPTextTransformer.forward): causal self-attention in pre-LN
 * blocks, quick_gelu or gelu MLP, and the pooled row at argmax(input_ids) when the config's
 * `eos_token_id` is 2 (the legacy rule of the SD 1.x/2.x configs: the EOS id 49407 is the largest
 * id), else at the first position holding `eos_token_id`.
 */
import type { GraphBuilder, Value } from "../../onnx/builder.js";
import type { ComponentSource } from "../types.js";
import { ComponentConfig } from "./config.js";
import { type GraphDtype, Layers } from "./layers.js";

export interface ClipGraphOptions {
  dtype: GraphDtype;
  /** Also output `hidden_states.0` … `hidden_states.N` (SDXL's export; clip skip). */
  hiddenStates?: boolean;
  /** For messages: "<checkpoint> text_encoder". */
  origin: string;
}

/** The lowest float32, which transformers adds above the diagonal of the causal mask. */
const FLOAT32_LOWEST = -3.4028234663852886e38;

export async function buildClipTextGraph(g: GraphBuilder, source: ComponentSource, options: ClipGraphOptions): Promise<void> {
  const config = new ComponentConfig(source.config, options.origin);
  const layers = new Layers(g, source.weights, options.origin, options.dtype);
  const hidden = config.integer("hidden_size");
  const heads = config.integer("num_attention_heads");
  const layerCount = config.integer("num_hidden_layers");
  const epsilon = config.number("layer_norm_eps", 1e-5);
  const activation = config.string("hidden_act", "quick_gelu");
  config.require("hidden_act", ["quick_gelu", "gelu"], "quick_gelu");
  const eosTokenId = config.number("eos_token_id", 2);
  const withProjection = layers.has("text_projection.weight");

  const ids = g.input("input_ids", "int32", ["batch_size", "sequence_length"]);
  const hiddenStates: Value[] = [];

  // Embeddings: token lookup + the first L position embeddings.
  let h = await g.scope("text_model/embeddings", async () => {
    const tokens = g.op("Gather", [await layers.weight("text_model.embeddings.token_embedding.weight"), ids], { axis: 0 }, { output: "text_model.embeddings.token_embedding.output" });
    const length = g.op("Slice", [g.op("Shape", [ids], {}, { type: "int64" }), g.constant([1], "int64"), g.constant([2], "int64")]);
    const positions = g.op("Slice", [await layers.weight("text_model.embeddings.position_embedding.weight"), g.constant([0], "int64"), length, g.constant([0], "int64")]);
    return g.op("Add", [tokens, positions], {}, { output: "text_model.embeddings.output" });
  });
  hiddenStates.push(h);

  // The causal mask [L, L]: 0 on and below the diagonal, the lowest float above (added to float32 scores).
  const mask = await g.scope("text_model/causal_mask", () => {
    const length = g.op("Gather", [g.op("Shape", [ids], {}, { type: "int64" }), g.constant([1], "int64", [])], { axis: 0 });
    const steps = g.op("Range", [g.constant([0], "int64", []), length, g.constant([1], "int64", [])]);
    const above = g.op("Less", [g.op("Unsqueeze", [steps, g.constant([1], "int64")]), g.op("Unsqueeze", [steps, g.constant([0], "int64")])], {}, { type: "bool" });
    return g.op("Where", [above, g.scalar(FLOAT32_LOWEST, "float32"), g.scalar(0, "float32")], {}, { type: "float32" });
  });

  const headDim = hidden / heads;
  for (let i = 0; i < layerCount; i++) {
    const prefix = `text_model.encoder.layers.${i}`;
    h = await g.scope(`text_model/encoder/layers.${i}`, async () => {
      const x = await layers.layerNorm(h, `${prefix}.layer_norm1`, epsilon);
      const q = await layers.linear(x, `${prefix}.self_attn.q_proj`);
      const k = await layers.linear(x, `${prefix}.self_attn.k_proj`);
      const v = await layers.linear(x, `${prefix}.self_attn.v_proj`);
      const attended = await layers.linear(layers.attention(q, k, v, heads, headDim, { mask }), `${prefix}.self_attn.out_proj`);
      const r = g.op("Add", [h, attended]);
      const y = await layers.layerNorm(r, `${prefix}.layer_norm2`, epsilon);
      const fc1 = await layers.linear(y, `${prefix}.mlp.fc1`);
      const act = activation === "gelu" ? layers.gelu(fc1) : layers.quickGelu(fc1);
      return g.op("Add", [r, await layers.linear(act, `${prefix}.mlp.fc2`)], {}, { output: `${prefix}.output` });
    });
    hiddenStates.push(h);
  }
  const last = await layers.layerNorm(h, "text_model.final_layer_norm", epsilon, { output: "text_model.final_layer_norm.output" });

  // The pooled row: argmax(input_ids) (eos_token_id 2), else the first EOS.
  const pooled = await g.scope("text_model/pooler", async () => {
    // ArgMax over float32 (ids < 2^24 are exact): TensorRT's ArgMax takes float types; ties go to the first index, as in torch.
    const picked = eosTokenId === 2 ? ids : g.op("Equal", [ids, g.constant([eosTokenId], "int32", [])], {}, { type: "bool" });
    const position = g.op("ArgMax", [g.cast(picked, "float32")], { axis: -1, keepdims: 1 }, { type: "int64" });
    return g.op("GatherND", [last, position], { batch_dims: 1 });
  });

  g.output(g.cast(last, "float32"), "last_hidden_state", ["batch_size", "sequence_length", hidden]);
  if (withProjection) {
    const projected = await layers.linear(pooled, "text_projection");
    g.output(g.cast(projected, "float32"), "text_embeds", ["batch_size", layers.shape("text_projection.weight")[0]!]);
  } else {
    g.output(g.cast(pooled, "float32"), "pooler_output", ["batch_size", hidden]);
  }
  if (options.hiddenStates) {
    for (const [i, state] of hiddenStates.entries()) g.output(g.cast(state, "float32"), `hidden_states.${i}`, ["batch_size", "sequence_length", hidden]);
  }
  layers.checkAllRead();
}
