/**
 * The SDXL pieces that need no model run: the optimum SDXL folder (text_encoder_2, tokenizer_2,
 * model_index flags), the graph contracts (penultimate hidden state, pooled text_embeds, the UNet's
 * text_embeds/time_ids), the time ids, how the two encoders' outputs are joined, and A1111's
 * padding after the end token with tokenizer_2's "!".
 */
import { describe, expect, test } from "@jest/globals";
import { readFile, unlink, writeFile } from "node:fs/promises";
import { join } from "node:path";
import { ModelFileError } from "../../lib/errors.js";
import { locateModelFolder } from "../../lib/model/folder.js";
import { describeSdxlTextEncoder, describeUnet, type GraphSignature, type TensorSpec } from "../../lib/model/graph-io.js";
import { joinEncoderStates, pooledOfRows, uncondThenCond } from "../../lib/backends/sdxl-conditioning.js";
import { sdxlTimeIds } from "../../lib/pipeline/sdxl-options.js";
import { buildPromptBatch } from "../../lib/prompt/conditioning.js";
import { ClipTokenizer } from "../../lib/tokenizer/index.js";
import { TINY_SDXL_DIR } from "../fixtures/sdxl/reference.js";
import { scratchFolder } from "../support/scratch-folder.js";

const scratch = scratchFolder("sd-trt-sdxl-model-");
/** A copy of the tiny SDXL folder. */
const copySdxl = () => scratch.copy(TINY_SDXL_DIR);

describe("the optimum SDXL folder", () => {
  test("has its second text encoder, tokenizer_2 and SDXL's flags", async () => {
    const folder = await locateModelFolder(TINY_SDXL_DIR);
    expect(folder.sdxl?.textEncoder2.path).toBe(join(folder.dir, "text_encoder_2", "model.onnx"));
    expect(folder.sdxl?.tokenizer2).toEqual({ vocab: join(folder.dir, "tokenizer_2", "vocab.json"), merges: join(folder.dir, "tokenizer_2", "merges.txt") });
    expect([folder.sdxl?.forceZerosForEmptyPrompt, folder.sdxl?.requiresAestheticsScore, folder.sdxl?.vaeForceUpcast]).toEqual([true, false, true]);
    expect([folder.scalingFactor, folder.nativeSize, folder.schedulerClass, folder.schedulerConfig["timestep_spacing"]]).toEqual([0.13025, 64, "EulerDiscreteScheduler", "leading"]);
  });

  test("an SD 1.x folder has no SDXL parts", async () => {
    expect((await locateModelFolder(join(import.meta.dirname, "..", "..", "models", "tiny-sd"))).sdxl).toBeUndefined();
  });

  test("text_encoder_2 without tokenizer_2 names the missing file", async () => {
    const dir = await copySdxl();
    await unlink(join(dir, "tokenizer_2", "vocab.json"));
    const error = await locateModelFolder(dir).catch((e: unknown) => e);
    expect(error).toBeInstanceOf(ModelFileError);
    expect((error as ModelFileError).message).toMatch(/has text_encoder_2 \(SDXL\) but is missing the tokenizer file .*tokenizer_2\/vocab\.json/);
  });

  test("a model_index flag that is not a boolean is named", async () => {
    const dir = await copySdxl();
    const index = JSON.parse(await readFile(join(dir, "model_index.json"), "utf8"));
    await writeFile(join(dir, "model_index.json"), JSON.stringify({ ...index, force_zeros_for_empty_prompt: "yes" }));
    await expect(locateModelFolder(dir)).rejects.toThrow(/model_index\.json: force_zeros_for_empty_prompt must be true or false, got "yes"/);
  });

});

const spec = (name: string, type: string, shape: (number | string)[]): TensorSpec => ({ name, type, shape });
const ids = spec("input_ids", "int64", ["batch_size", "sequence_length"]);
const hidden = (i: number) => spec(`hidden_states.${i}`, "float32", ["batch_size", "sequence_length", 16]);

describe("SDXL graph contracts", () => {
  test("a text encoder's conditioning is its penultimate hidden state (hidden_states[-2])", () => {
    const signature: GraphSignature = { inputs: [ids], outputs: [spec("last_hidden_state", "float32", ["b", "s", 16]), hidden(0), hidden(1), hidden(2), hidden(3)] };
    const io = describeSdxlTextEncoder(signature, "te.onnx", false);
    expect([io.hiddenName, io.hiddenSize, io.pooledName]).toEqual(["hidden_states.2", 16, undefined]);
  });

  test("text_encoder_2 must return text_embeds; an encoder without hidden states is refused", () => {
    const withoutPooled: GraphSignature = { inputs: [ids], outputs: [spec("last_hidden_state", "float32", ["b", "s", 16]), hidden(0), hidden(1), hidden(2)] };
    expect(() => describeSdxlTextEncoder(withoutPooled, "te2.onnx", true)).toThrow(/text_encoder_2 must return the pooled, projected embedding "text_embeds"/);
    const noStates: GraphSignature = { inputs: [ids], outputs: [spec("last_hidden_state", "float32", ["b", "s", 16])] };
    expect(() => describeSdxlTextEncoder(noStates, "te.onnx", false)).toThrow(/te\.onnx: unsupported text encoder graph: an SDXL text encoder must return its hidden states/);
  });

  test("the UNet's text_embeds and time_ids are read with their sizes", () => {
    const unet: GraphSignature = {
      inputs: [spec("sample", "float32", ["b", 4, "h", "w"]), spec("timestep", "float32", ["steps"]), spec("encoder_hidden_states", "float32", ["b", "s", 32]), spec("text_embeds", "float32", ["b", 16]), spec("time_ids", "float32", ["b", 6])],
      outputs: [spec("out_sample", "float32", ["b", 4, "h", "w"])],
    };
    expect(describeUnet(unet, "unet.onnx").addedConditioning).toEqual({ textEmbedsName: "text_embeds", timeIdsName: "time_ids", textEmbedsSize: 16, timeIdsSize: 6 });
    const onlyOne = { ...unet, inputs: unet.inputs.filter((i) => i.name !== "time_ids") };
    expect(() => describeUnet(onlyOne, "unet.onnx")).toThrow(/input "text_embeds" not used by a SD 1\.x\/2\.x pipeline/);
  });
});

describe("SDXL conditioning arithmetic", () => {
  test("time ids are diffusers' original_size + crops_coords_top_left + target_size, sizes as (height, width)", () => {
    expect(Array.from(sdxlTimeIds({ width: 768, height: 1024 }, { top: 16, left: 32 }, { width: 512, height: 256 }))).toEqual([1024, 768, 16, 32, 256, 512]);
  });

  test("each row's tokens carry text_encoder's states then text_encoder_2's; pooled is its text's first chunk", () => {
    // 2 texts × 1 chunk × 77 tokens; hidden 2 and 3; values encode (text, token, channel).
    const states = (texts: number, h: number, tag: number) => Float32Array.from({ length: texts * 77 * h }, (_, i) => tag * 1e4 + Math.floor(i / (77 * h)) * 1000 + (Math.floor(i / h) % 77) * 10 + (i % h));
    const joined = joinEncoderStates({ states: states(2, 2, 1), hidden: 2, rowOf: [1, 0] }, { states: states(2, 3, 2), hidden: 3, rowOf: [0, 0] }, 1, 2);
    expect(joined.length).toBe(2 * 77 * 5);
    // Row 0, token 5: text 1 of encoder 1, then text 0 of encoder 2.
    expect(Array.from(joined.subarray(5 * 5, 6 * 5))).toEqual([11050, 11051, 20050, 20051, 20052]);
    // Row 1, token 76: text 0 of both.
    expect(Array.from(joined.subarray((77 + 76) * 5, (77 + 77) * 5))).toEqual([10760, 10761, 20760, 20761, 20762]);
    // Pooled [texts · chunks, 2] with 2 chunks per text: a row takes its text's chunk 0.
    expect(Array.from(pooledOfRows(Float32Array.of(1, 2, 3, 4, 5, 6, 7, 8), 2, 2, [1, 0]))).toEqual([5, 6, 1, 2]);
    expect(Array.from(uncondThenCond(Float32Array.of(0, 0), Float32Array.of(1, 2)))).toEqual([0, 0, 1, 2]);
  });
});

describe("A1111's padding with tokenizer_2", () => {
  const reading = { syntax: "a1111" as const, emphasis: "original" as const, commaPaddingBacktrack: 20 };
  test("after a chunk's first end token come pad ids ('!' = 0), as sd_hijack_clip's process_tokens writes them", async () => {
    const tokenizer2 = await ClipTokenizer.fromDirectory(join(TINY_SDXL_DIR, "tokenizer_2"));
    const tokenizer1 = await ClipTokenizer.fromDirectory(join(TINY_SDXL_DIR, "tokenizer"));
    const two = buildPromptBatch(tokenizer2, ["a cat"], reading, "prompt").batch.ids;
    const one = buildPromptBatch(tokenizer1, ["a cat"], reading, "prompt").batch.ids;
    expect(Array.from(two.subarray(0, 6))).toEqual([49406, 320, 2368, 49407, 0, 0]);
    expect(two.subarray(4).every((id) => id === 0)).toBe(true);
    expect(Array.from(one.subarray(0, 6))).toEqual([49406, 320, 2368, 49407, 49407, 49407]);
    // diffusers' reading pads the same way ("plain").
    expect(Array.from(buildPromptBatch(tokenizer2, ["a cat"], { ...reading, syntax: "plain" }, "prompt").batch.ids)).toEqual(Array.from(two));
  });
});
