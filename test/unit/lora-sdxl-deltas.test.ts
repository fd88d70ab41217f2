/**
 * SDXL LoRA files → weight deltas, against diffusers' own StableDiffusionXLPipeline
 * `load_lora_weights` + `fuse_lora` on the tiny SDXL base (scripts/reference/gen_tiny_sdxl_loras.py):
 * a kohya file under kohya's SGM UNet names (`input_blocks_4_1_…`, resnet `in_layers_2`, `emb_layers_1`,
 * `skip_connection`, `time_embed_0`, `label_emb_0_0`) with `lora_te1_`/`lora_te2_` layers, and a PEFT file
 * for all three components, alone and together. Base + deltas must equal diffusers' fused weights to
 * float32 rounding and change exactly the weights diffusers changed; SD LoRAs on SDXL and SDXL LoRAs on
 * SD are refused naming the file.
 */
import { readFileSync } from "node:fs";
import { join } from "node:path";
import { describe, expect, test } from "@jest/globals";
import { readCheckpoint } from "../../lib/convert/checkpoint/index.js";
import { checkpointWithLoras } from "../../lib/convert/lora/checkpoint.js";
import { loraDeltas, loraGenerationOfKeys, type LoraTarget } from "../../lib/convert/lora/deltas.js";
import { readLoraFile } from "../../lib/convert/lora/read.js";
import { loraSetDeltas, mergedWeight } from "../../lib/convert/lora/set.js";
import { sgmModuleToDiffusersFlat } from "../../lib/convert/lora/sgm-names.js";
import type { ComponentName } from "../../lib/convert/types.js";
import { ModelFileError } from "../../lib/errors.js";
import { readSafetensors } from "../../lib/model/safetensors.js";

const loras = new URL("../fixtures/loras/", import.meta.url).pathname;
const dir = join(loras, "sdxl");
interface Reference {
  cases: Record<string, { lora: string; scale: number }[]>;
  kohya_unet_modules: Record<string, string>;
  changed: string[];
  model_weights: Record<string, Record<string, number[]>>;
}
const reference = JSON.parse(readFileSync(join(dir, "reference.json"), "utf8")) as Reference;
const targetOf = (ref: Reference, family: LoraTarget["family"]): LoraTarget => ({
  ...(family ? { family } : {}),
  weights: Object.fromEntries(Object.entries(ref.model_weights).map(([c, w]) => [c, new Map(Object.entries(w))])) as LoraTarget["weights"],
});
const sdxl = targetOf(reference, "sdxl");
const sd1 = targetOf(JSON.parse(readFileSync(join(loras, "reference.json"), "utf8")) as Reference, "sd1");
const fused = await readSafetensors(join(dir, "fused.safetensors"));
const fusedWeight = (kase: string, componentKey: string) => fused.tensors.get(`${kase}/${componentKey}`)!.toFloat32();

function expectClose(actual: Float32Array, expected: Float32Array, what: string): void {
  expect(actual.length).toBe(expected.length);
  let worst = 0;
  for (let i = 0; i < expected.length; i++) worst = Math.max(worst, Math.abs(actual[i]! - expected[i]!) / Math.max(1, Math.abs(expected[i]!)));
  if (worst > 1e-6) throw new Error(`${what}: worst relative difference ${worst} > 1e-6`);
}

describe("SDXL merged weights match diffusers' fuse_lora", () => {
  for (const [kase, set] of Object.entries(reference.cases)) {
    test(`${kase}: base + the deltas of each LoRA, in order, equal StableDiffusionXLPipeline's fused weights`, async () => {
      const deltas = await loraSetDeltas(
        set.map(({ lora, scale }) => ({ path: join(dir, lora), scale })),
        sdxl,
      );
      for (const componentKey of reference.changed) {
        const [component, ...rest] = componentKey.split("/");
        const entry = deltas.get(component as ComponentName)?.get(rest.join("/"));
        const merged = entry ? mergedWeight(fusedWeight("base", componentKey), entry.deltas) : fusedWeight("base", componentKey);
        expectClose(merged, fusedWeight(kase, componentKey), `${kase} ${componentKey}`);
      }
      const touched = [...deltas].flatMap(([component, keys]) => [...keys.keys()].map((key) => `${component}/${key}`));
      expect(touched.filter((k) => !reference.changed.includes(k))).toEqual([]);
    });
  }

  test("the kohya file's text layers land on both encoders: lora_te1_ on text_encoder, lora_te2_ on text_encoder_2", async () => {
    const deltas = loraDeltas(await readLoraFile(join(dir, "kohya_sdxl.safetensors")), sdxl, 1);
    const components = new Set(deltas.map((d) => d.component));
    expect([...components].sort()).toEqual(["text_encoder", "text_encoder_2", "unet"]);
  });
});

test("sd-trt convert --lora: the SDXL checkpoint's changed weights read as StableDiffusionXLPipeline's fused weights", async () => {
  const source = await readCheckpoint(join(process.cwd(), "test", "fixtures", "checkpoints", "sdxl", "diffusers"));
  const merged = await checkpointWithLoras(source, [{ path: join(dir, "kohya_sdxl.safetensors"), scale: 0.8 }, { path: join(dir, "peft_sdxl.safetensors"), scale: 0.5 }]);
  for (const componentKey of reference.changed) {
    const [component, ...rest] = componentKey.split("/");
    const tensor = merged.components[component as ComponentName]!.weights.get(rest.join("/"))!;
    expectClose(await tensor.read(), fusedWeight("kohya_0.8+peft_0.5", componentKey), componentKey);
  }
});

describe("kohya's SGM UNet names map as diffusers maps them", () => {
  test.each(Object.entries(reference.kohya_unet_modules))("%s → %s", (sgm, diffusers) => {
    expect(sgmModuleToDiffusersFlat(sgm, 2)).toBe(diffusers.replaceAll(".", "_"));
  });

  test("names the LDM layout does not have map to nothing", () => {
    expect(sgmModuleToDiffusersFlat("input_blocks_4_7_proj_in", 2)).toBeUndefined();
    expect(sgmModuleToDiffusersFlat("middle_block", 2)).toBeUndefined();
  });
});

describe("a LoRA for the other generation is refused naming the file", () => {
  test("the SD 1.x kohya LoRA on SDXL (its metadata says sd_v1)", async () => {
    const path = join(loras, "kohya_sd1.safetensors");
    const lora = await readLoraFile(path);
    expect(() => loraDeltas(lora, sdxl, 1)).toThrow(ModelFileError);
    expect(() => loraDeltas(lora, sdxl, 1)).toThrow(`${path} is a LoRA for SD 1.x`);
  });

  test("the SD 1.x kohya LoRA without its metadata on SDXL (its single lora_te_ text encoder)", async () => {
    const path = join(loras, "kohya_sd1.safetensors");
    const lora = { ...(await readLoraFile(path)), metadata: {} };
    expect(loraGenerationOfKeys(lora)?.sdxl).toBe(false);
    expect(() => loraDeltas(lora, sdxl, 1)).toThrow(new RegExp(`^${path} is a LoRA for SD 1\\.x/2\\.x \\(its layer lora_te_\\S+ \\(one text encoder\\)\\); the model is SDXL$`));
  });

  test("the SDXL kohya LoRA without its metadata on SD 1.x (its SGM block names, lora_te1_)", async () => {
    const path = join(dir, "kohya_sdxl.safetensors");
    const lora = { ...(await readLoraFile(path)), metadata: {} };
    expect(() => loraDeltas(lora, sd1, 1)).toThrow(new RegExp(`^${path} is a LoRA for SDXL \\(its layer lora_\\S+\\); the model is SD 1\\.x$`));
  });

  test("the SDXL PEFT LoRA on SD 1.x (its text_encoder_2 layers)", async () => {
    const path = join(dir, "peft_sdxl.safetensors");
    const lora = await readLoraFile(path);
    expect(loraGenerationOfKeys(lora)?.sdxl).toBe(true);
    expect(() => loraDeltas(lora, sd1, 1)).toThrow(`${path} is a LoRA for SDXL (its layer `);
  });
});
