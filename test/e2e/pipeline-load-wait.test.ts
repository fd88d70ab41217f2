/**
 * `Pipeline.load`'s `onWaitingForModel`: called once, when only the backend's model loading is
 * left (the tokenizer is built), before the load resolves, so a caller can use the wait
 * (`sd-trt generate` loads its image encoder then). A load that fails before that point never
 * calls it.
 */
import { describe, expect, test } from "@jest/globals";
import { ModelFileError } from "../../lib/errors.js";
import { Pipeline } from "../../lib/pipeline/pipeline.js";

describe("Pipeline.load onWaitingForModel", () => {
  test("is called once, while the model is still loading", async () => {
    let loaded = false;
    const calls: boolean[] = [];
    const loading = Pipeline.load(undefined, { backend: "cpu", onWaitingForModel: () => calls.push(loaded) });
    const pipeline = await loading.then((p) => {
      loaded = true;
      return p;
    });
    try {
      expect(calls).toEqual([false]);
      expect((await pipeline.generate({ prompt: "a cat", width: 64, height: 64, steps: 2, seed: 1n })).images).toHaveLength(1);
    } finally {
      await pipeline.dispose();
    }
  });

  test("is not called when the folder cannot be loaded", async () => {
    let called = false;
    await expect(Pipeline.load("/no/such/model/folder", { backend: "cpu", onWaitingForModel: () => (called = true) })).rejects.toBeInstanceOf(ModelFileError);
    expect(called).toBe(false);
  });
});
