/**
 * The CPU denoise loop's prompt-editing hooks on SDXL: before each evaluation the UNet's
 * encoder_hidden_states and text_embeds feeds point at that evaluation's conditioning (A1111
 * switches both crossattn and vector per step), in the one-call [uncond; cond] layout and when
 * cond and uncond differ in length (two calls, each half its rows).
 */
import { describe, expect, test } from "@jest/globals";
import { runCpuDenoise, type CpuDenoiseJob } from "../../lib/backends/cpu/denoise-loop.js";
import type { HostTensor } from "../../lib/backends/cpu/ort-protocol.js";
import { createScheduler } from "../../lib/schedulers/index.js";

const io = { sampleName: "sample", timestepName: "timestep", timestepType: "float32", timestepLayout: "single", contextName: "encoder_hidden_states", outputName: "out_sample" } as const;
const HIDDEN = 4;
const POOLED = 3;
const BATCH = 2;

/** A [rows, size] array whose every value says which evaluation's conditioning it is (and the row). */
function marked(evalIndex: number, rows: number, size: number): Float32Array {
  return Float32Array.from({ length: rows * size }, (_, i) => 100 * evalIndex + Math.floor(i / size));
}

function job(steps: number, uncondTokens: number): CpuDenoiseJob {
  const program = createScheduler("euler").compile(steps);
  const n = BATCH * 4 * 2 * 2;
  return {
    program,
    latents: new Float32Array(n).fill(1),
    noise: [],
    batch: BATCH,
    latentHeight: 2,
    latentWidth: 2,
    context: new Float32Array(BATCH * (uncondTokens + 77) * HIDDEN),
    condTokens: 77,
    uncondTokens,
    hiddenSize: HIDDEN,
    guidance: Float64Array.of(5, 5),
    io,
    added: { textEmbedsName: "text_embeds", timeIdsName: "time_ids", textEmbeds: marked(0, 2 * BATCH, POOLED), timeIds: new Float32Array(2 * BATCH * 6), textEmbedsSize: POOLED, timeIdsSize: 6 },
  };
}

describe("runCpuDenoise with contextAt and textEmbedsAt", () => {
  test.each([
    ["one call over [uncond; cond]", 77],
    ["two calls when uncond is longer", 154],
  ])("%s: each evaluation's UNet calls get that evaluation's embeddings and text_embeds", async (_name, uncondTokens) => {
    const steps = 3;
    const j = job(steps, uncondTokens);
    const contexts = Array.from({ length: steps }, (_, e) => marked(e, 1, j.context.length));
    const pooled = Array.from({ length: steps }, (_, e) => marked(e, 2 * BATCH, POOLED));
    const seen: { context: number[]; textEmbeds: number[] }[] = [];
    await runCpuDenoise(
      j,
      async (feeds: Record<string, HostTensor>) => {
        seen.push({ context: Array.from(feeds["encoder_hidden_states"]!.data as Float32Array), textEmbeds: Array.from(feeds["text_embeds"]!.data as Float32Array) });
        return new Float32Array((feeds["sample"]!.data as Float32Array).length);
      },
      { contextAt: (e) => contexts[e]!, textEmbedsAt: (e) => pooled[e]! },
    );
    const callsPerEval = uncondTokens === 77 ? 1 : 2;
    expect(seen).toHaveLength(steps * callsPerEval);
    seen.forEach((call, k) => {
      const e = Math.floor(k / callsPerEval);
      const half = k % callsPerEval;
      if (callsPerEval === 1) {
        expect(call.textEmbeds).toEqual(Array.from(pooled[e]!));
        expect(call.context).toEqual(Array.from(contexts[e]!));
      } else {
        // uncond rows 0…batch−1 first, then the cond rows.
        expect(call.textEmbeds).toEqual(Array.from(pooled[e]!.subarray(half * BATCH * POOLED, (half + 1) * BATCH * POOLED)));
        const uncondSize = BATCH * uncondTokens * HIDDEN;
        expect(call.context).toEqual(Array.from(half === 0 ? contexts[e]!.subarray(0, uncondSize) : contexts[e]!.subarray(uncondSize)));
      }
    });
  });

  test("a text_embeds array of another shape is refused, naming the hook", async () => {
    const j = job(2, 77);
    await expect(runCpuDenoise(j, async (feeds) => new Float32Array((feeds["sample"]!.data as Float32Array).length), { textEmbedsAt: () => new Float32Array(5) })).rejects.toThrow(
      /textEmbedsAt returned 5 values, expected 12/,
    );
  });
});
