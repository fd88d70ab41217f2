/**
 * Clip skip through every surface, against A1111's own code: te05_clip_skip.json is what A1111's
 * FrozenCLIPEmbedderWithCustomWords gives with CLIP_stop_at_last_layers 1 and 2 on the tiny-sd-te05
 * text encoder (scripts/reference/a1111_clip_skip_ti.py). The library (`promptConditioning`), `sd-trt
 * tokenize --json --model DIR --embeddings --clip-skip N`, `generate` (infotext, batching) and the
 * server's override_settings all take it; out of range names the encoder's layer count.
 */
import { mkdtemp, rm } from "node:fs/promises";
import { readFileSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { afterAll, beforeAll, describe, expect, test } from "@jest/globals";
import { InvalidOptionError } from "../../lib/errors.js";
import { Pipeline } from "../../lib/pipeline/pipeline.js";
import { runTokenize } from "../../lib/cli/commands/tokenize.js";
import { PipelineService } from "../../lib/service/pipeline-service.js";
import { SdServer } from "../../lib/server/server.js";
import { batchKey } from "../../lib/pipeline/generation.js";
import sharp from "sharp";
import { copyTe05Model, moveWeightsToExternalData } from "../fixtures/tiny-sd-cases/model-variants.js";
import { postA1111 } from "../support/a1111-goldens.js";

interface Te05Golden {
  cases: { text: string; chunks: number; conds: Record<string, { shape: [number, number]; values: number[] }> }[];
}
const golden = JSON.parse(readFileSync(new URL("../fixtures/a1111/clip-ti/te05_clip_skip.json", import.meta.url), "utf8")) as Te05Golden;

let dir: string;
let model: string;
let pipe: Pipeline;
beforeAll(async () => {
  dir = await mkdtemp(join(tmpdir(), "sd-trt-clip-skip-"));
  model = await copyTe05Model(join(dir, "model"));
  pipe = await Pipeline.load(model, { backend: "cpu" });
});
afterAll(async () => {
  await pipe?.dispose();
  await rm(dir, { recursive: true, force: true });
});

/** Worst |a − b| / max(1, |b|). Emphasis weights are ≤ 1.2 here, so this is the goldens' suggested check. */
function worstError(actual: ArrayLike<number>, expected: readonly number[]): number {
  expect(actual.length).toBe(expected.length);
  let worst = 0;
  for (let i = 0; i < expected.length; i++) worst = Math.max(worst, Math.abs(actual[i]! - expected[i]!) / Math.max(1, Math.abs(expected[i]!)));
  return worst;
}

describe("clip skip, as A1111 computes it", () => {
  test("the library's conditioning equals A1111's for clip skip 1 and 2 (1e-5), and the two differ", async () => {
    for (const c of golden.cases) {
      for (const [skip, cond] of Object.entries(c.conds)) {
        const { shape, values } = await pipe.promptConditioning(c.text, { clipSkip: Number(skip) });
        expect(shape).toEqual(cond.shape);
        expect([c.text, skip, worstError(values, cond.values) < 1e-5]).toEqual([c.text, skip, true]);
      }
      expect(worstError(Float32Array.from(c.conds["2"]!.values), c.conds["1"]!.values)).toBeGreaterThan(1e-3);
    }
  });

  test("sd-trt tokenize --json --model DIR --embeddings --clip-skip 2 prints A1111's conditioning", async () => {
    const c = golden.cases[1]!;
    const out = JSON.parse(await runTokenize({ words: [c.text], json: true, model, embeddings: true, clipSkip: 2 })) as { cond: { shape: number[]; values: number[] } };
    expect(out.cond.shape).toEqual(c.conds["2"]!.shape);
    expect(worstError(out.cond.values, c.conds["2"]!.values)).toBeLessThan(1e-5);
    await expect(runTokenize({ words: [c.text], json: true, clipSkip: 2 })).rejects.toThrow(/--clip-skip needs --model DIR --embeddings/);
  });

  test("a text encoder whose weights are in an external data file takes clip skip the same", async () => {
    const external = await copyTe05Model(join(dir, "external"));
    expect(await moveWeightsToExternalData(join(external, "text_encoder", "model.onnx"), "model.onnx_data")).toBeGreaterThan(0);
    const other = await Pipeline.load(external, { backend: "cpu" });
    try {
      const c = golden.cases[0]!;
      const { values } = await other.promptConditioning(c.text, { clipSkip: 2 });
      expect(worstError(values, c.conds["2"]!.values)).toBeLessThan(1e-5);
    } finally {
      await other.dispose();
    }
  });

  test("beyond the text encoder's layers is refused naming clipSkip and the limit (2 for tiny-sd)", async () => {
    expect(pipe.limits.maxClipSkip).toBe(2);
    await expect(pipe.generate({ prompt: "a cat", clipSkip: 3, width: 64, height: 64, steps: 1 })).rejects.toThrow(InvalidOptionError);
    await expect(pipe.generate({ prompt: "a cat", clipSkip: 3, width: 64, height: 64, steps: 1 })).rejects.toThrow(/clipSkip must be an integer from 1 to 2, got 3/);
    await expect(pipe.promptConditioning("a cat", { clipSkip: 0 })).rejects.toThrow(/clipSkip must be an integer from 1 to 2, got 0/);
  });

  test("generate: clip skip 2 changes the image, writes A1111's `Clip skip: 2` and keeps requests of different clip skips apart", async () => {
    const base = { prompt: "a castle on a hill", width: 64, height: 64, steps: 2, seed: 3, scheduler: "euler" } as const;
    const one = await pipe.generate(base);
    const two = await pipe.generate({ ...base, clipSkip: 2 });
    expect(Buffer.from(one.images[0]!.rgb).equals(Buffer.from(two.images[0]!.rgb))).toBe(false);
    expect(two.images[0]!.infotext).toMatch(/, Size: 64x64, Model hash: [0-9a-f]+, Clip skip: 2, RNG: CPU$/);
    expect(one.images[0]!.infotext).not.toMatch(/Clip skip/);
    expect(batchKey(pipe.resolveOptions(base))).not.toBe(batchKey(pipe.resolveOptions({ ...base, clipSkip: 2 })));
  });

  test("the server applies override_settings.CLIP_stop_at_last_layers: the library's image and infotext", async () => {
    const service = await PipelineService.create(pipe, { maxQueue: 4, batchWindowMs: 0 });
    const server = new SdServer({ service });
    const { url } = await server.listen({ host: "127.0.0.1", port: 0 });
    try {
      const body = { prompt: "a castle on a hill", width: 64, height: 64, steps: 2, seed: 3, sampler_name: "Euler", override_settings: { CLIP_stop_at_last_layers: 2 } };
      const response = await postA1111(url, "txt2img", body);
      expect(response.status).toBe(200);
      const json = (await response.json()) as { info: string; images: string[] };
      const info = JSON.parse(json.info) as { clip_skip: number; infotexts: string[] };
      expect(info.clip_skip).toBe(2);
      expect(info.infotexts[0]).toMatch(/Clip skip: 2/);
      // The server's defaults: guidance 7, A1111's "GPU" (= NV) noise.
      const library = await pipe.generate({ prompt: body.prompt, width: 64, height: 64, steps: 2, seed: 3, scheduler: "k_euler", guidance: 7, rng: "nv", clipSkip: 2 });
      expect(info.infotexts[0]).toBe(library.images[0]!.infotext);
      const served = await sharp(Buffer.from(json.images[0]!, "base64")).removeAlpha().raw().toBuffer();
      expect(served.equals(Buffer.from(library.images[0]!.rgb))).toBe(true);
      const tooFar = await postA1111(url, "txt2img", { ...body, override_settings: { CLIP_stop_at_last_layers: 3 } });
      expect(tooFar.status).toBe(422);
      expect(await tooFar.text()).toMatch(/CLIP_stop_at_last_layers.*from 1 to 2, got 3/);
    } finally {
      await server.close();
      await service.dispose();
    }
  });
});
