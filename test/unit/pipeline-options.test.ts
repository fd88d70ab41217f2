/** Validation of every `generate()` option, before any model runs: one throws-test per rule. */
import { describe, expect, test } from "@jest/globals";
import { resolveGenerateOptions, type ValidationContext } from "../../lib/pipeline/options.js";
import { canonicalSchedulerName, SCHEDULER_NAMES } from "../../lib/schedulers/index.js";
import { ClipTokenizer } from "../../lib/tokenizer/index.js";
import { expectOptionRefused } from "../support/option-refusals.js";

const ctx: ValidationContext = {
  limits: { maxBatch: 4, minWidth: 64, maxWidth: 1024, minHeight: 64, maxHeight: 768, sizeMultiple: 8, canEncodeImages: true, canObserveLatents: true, maxPromptChunks: 3 },
  defaultWidth: 512,
  defaultHeight: 512,
  defaultScheduler: "pndm",
  schedulerNames: SCHEDULER_NAMES,
  canonicalScheduler: (name) => canonicalSchedulerName(name),
  hostLatents: true,
  tokenizer: await ClipTokenizer.default(),
};

function rejects(options: Record<string, unknown>, option: string, message: RegExp, context: ValidationContext = ctx): void {
  expectOptionRefused(options, option, message, context);
}

describe("defaults", () => {
  test("diffusers' defaults, the model's size and scheduler, a random seed on one generator", () => {
    const r = resolveGenerateOptions({ prompt: "a cat" }, ctx);
    expect(r).toMatchObject({ prompts: ["a cat"], negativePrompts: [""], batch: 1, width: 512, height: 512, steps: 50, guidance: 7.5, scheduler: "pndm", rng: "cpu", perImageGenerators: false, randomSeed: true, returnLatents: false });
    expect(r.generatorSeeds).toHaveLength(1);
    expect(r.generatorSeeds[0]! >= 0n && r.generatorSeeds[0]! < 2n ** 32n).toBe(true);
  });

  test("the batch follows seeds or a prompt list; a string prompt is repeated", () => {
    expect(resolveGenerateOptions({ prompt: "x", seeds: [1, 2, 3] }, ctx)).toMatchObject({ batch: 3, prompts: ["x", "x", "x"], perImageGenerators: true, generatorSeeds: [1n, 2n, 3n] });
    expect(resolveGenerateOptions({ prompt: ["a", "b"], negativePrompt: "n" }, ctx)).toMatchObject({ batch: 2, negativePrompts: ["n", "n"] });
    expect(resolveGenerateOptions({ prompt: "x", seed: 5n, batch: 2 }, ctx)).toMatchObject({ batch: 2, generatorSeeds: [5n], perImageGenerators: false, randomSeed: false });
  });

  test("scheduler class names map to canonical names", () => {
    expect(resolveGenerateOptions({ prompt: "x", scheduler: "EulerAncestralDiscreteScheduler" }, ctx).scheduler).toBe("euler_a");
  });

  test("img2img keeps the init image's size unless both sizes are given, and defaults strength to 0.8", () => {
    const r = resolveGenerateOptions({ prompt: "x", initImage: "in.png" }, ctx);
    expect([r.width, r.height, r.strength]).toEqual([undefined, undefined, 0.8]);
  });
});

describe("each invalid option is refused, naming it", () => {
  test("prompt", () => {
    rejects({ prompt: 42 }, "prompt", /prompt must be a string or a non-empty array of strings, got 42/);
    rejects({ prompt: [] }, "prompt", /non-empty array/);
    rejects({ prompt: undefined }, "prompt", /got undefined/);
  });
  test("negativePrompt", () => {
    rejects({ negativePrompt: 3 }, "negativePrompt", /negativePrompt must be a string/);
    rejects({ prompt: ["a", "b"], negativePrompt: ["n"] }, "negativePrompt", /one entry per image \(batch 2\), got an array of length 1/);
  });
  test("width and height: multiples of the model's size multiple within the backend's limits", () => {
    rejects({ width: 100 }, "width", /width must be a multiple of 8 from 64 to 1024 for this model, got 100/);
    rejects({ width: 56 }, "width", /from 64 to 1024 for this model, got 56/);
    rejects({ width: 1032 }, "width", /got 1032/);
    rejects({ height: 776 }, "height", /height must be a multiple of 8 from 64 to 768 for this model, got 776/);
    rejects({ height: "512" }, "height", /got "512" \(string\)/);
    rejects({ width: 512, initImage: "x.png" }, "height", /give both width and height, or neither/);
  });
  test("steps", () => {
    rejects({ steps: 0 }, "steps", /steps must be an integer from 1 to 1000, got 0/);
    rejects({ steps: 1001 }, "steps", /got 1001/);
    rejects({ steps: 2.5 }, "steps", /got 2\.5/);
  });
  test("guidance", () => {
    rejects({ guidance: -1 }, "guidance", /guidance must be a number from 0 to 100, got -1/);
    rejects({ guidance: 101 }, "guidance", /got 101/);
    rejects({ guidance: Number.NaN }, "guidance", /got NaN/);
  });
  test("scheduler", () => {
    rejects({ scheduler: "euler_b" }, "scheduler", /scheduler must be one of lms, euler, euler_a, ddim, pndm, dpmpp_2m, dpmpp_2m_karras, heun, ddpm, unipc, k_euler, k_euler_a, k_lms, k_heun, k_dpm_2, k_dpm_2_a, k_dpmpp_2s_a, k_dpmpp_2m, k_dpmpp_sde, k_dpmpp_2m_sde, k_dpmpp_2m_sde_heun, k_dpmpp_3m_sde, k_dpm_fast, k_restart, k_lcm, a1111_ddim, a1111_plms, a1111_ddim_cfgpp, a1111_unipc .*got "euler_b"/);
  });
  test("seed and seeds", () => {
    rejects({ seed: -1 }, "seed", /seed must be an integer from 0 to 18446744073709551615/);
    rejects({ seed: 2n ** 64n }, "seed", /got 18446744073709551616n/);
    rejects({ seed: 1, seeds: [1] }, "seeds", /either seed .* or seeds/);
    rejects({ seeds: [] }, "seeds", /non-empty array of seeds/);
    rejects({ seeds: [1, 1.5] }, "seeds[1]", /seeds\[1\] must be an integer/);
    rejects({ seeds: [1, 2], batch: 3 }, "seeds", /one seed per image \(batch 3\), got an array of length 2/);
  });
  test("batch", () => {
    rejects({ batch: 0 }, "batch", /batch must be an integer from 1 to 4, got 0/);
    rejects({ batch: 5 }, "batch", /from 1 to 4, got 5/);
    rejects({ seeds: [1, 2, 3, 4, 5] }, "seeds", /seeds asks for 5 images, but the backend takes at most 4 per call/);
  });
  test("rng", () => {
    rejects({ rng: "gpu" }, "rng", /rng must be one of "cpu", "nv", got "gpu"/);
  });
  test("strength", () => {
    rejects({ strength: 0.5 }, "strength", /strength applies to img2img only/);
    rejects({ initImage: "x.png", strength: 0 }, "strength", /greater than 0 and at most 1, got 0/);
    rejects({ initImage: "x.png", strength: 1.5 }, "strength", /got 1\.5/);
    rejects({ initImage: "x.png", strength: 0.04, steps: 20 }, "strength", /runs no step/);
  });
  test("initImage without a VAE encoder", () => {
    rejects({ initImage: "x.png" }, "initImage", /needs a model folder with a VAE encoder/, { ...ctx, limits: { ...ctx.limits, canEncodeImages: false } });
  });
  test("callbacks, signal and flags", () => {
    rejects({ signal: {} }, "signal", /signal must be an AbortSignal/);
    rejects({ onProgress: 1 }, "onProgress", /onProgress must be a function/);
    rejects({ onLatents: () => {} }, "onLatents", /needs the CPU backend/, { ...ctx, hostLatents: false });
    rejects({ returnLatents: "yes" }, "returnLatents", /true or false/);
  });
  test("unknown options (typos) are refused", () => {
    rejects({ negative_prompt: "x" }, "negative_prompt", /unknown option "negative_prompt"/);
  });
});

describe("A1111 options (sigmaSchedule, subseeds, subseedStrength, seedResizeFrom, ensd)", () => {
  test("k-diffusion samplers take a schedule type by name or A1111 label, Automatic by default", () => {
    expect(resolveGenerateOptions({ prompt: "x", scheduler: "k_dpmpp_2m" }, ctx).a1111).toEqual({ sigmaSchedule: "automatic" });
    expect(resolveGenerateOptions({ prompt: "x", scheduler: "k_euler", sigmaSchedule: "SGM Uniform" }, ctx).a1111).toEqual({ sigmaSchedule: "sgm_uniform" });
    expect(resolveGenerateOptions({ prompt: "x", scheduler: "euler" }, ctx).a1111).toEqual({});
  });
  test("resolves A1111's noise options for per-image generators", () => {
    const r = resolveGenerateOptions({ prompt: "x", scheduler: "k_euler_a", seeds: [5, 5], subseeds: [70, 71], subseedStrength: 0.4, seedResizeFrom: { width: 48, height: 80 }, ensd: 31337 }, ctx);
    expect(r.a1111.noise).toEqual({ subseeds: [70n, 71n], subseedStrength: 0.4, seedResizeFromWidth: 48, seedResizeFromHeight: 80, ensd: 31337 });
  });
  test("sigmaSchedule", () => {
    rejects({ scheduler: "euler", sigmaSchedule: "karras" }, "sigmaSchedule", /sigmaSchedule applies to A1111's k-diffusion samplers .*euler has its own schedule/);
    rejects({ scheduler: "k_euler", sigmaSchedule: "karras9000" }, "sigmaSchedule", /sigmaSchedule must be one of "automatic", "uniform", "karras", .*"ddim" \(or their A1111 labels\), got "karras9000"/);
    rejects({ scheduler: "k_euler", sigmaSchedule: "Beta" }, "sigmaSchedule", /sigmaSchedule "Beta" is not supported: the Beta schedule needs scipy's inverse incomplete beta function/);
  });
  test("subseeds, subseedStrength, seedResizeFrom, ensd", () => {
    rejects({ seed: 1, subseeds: [2], subseedStrength: 0.5 }, "subseeds", /subseeds follows A1111's noise, which has one generator per image: give seeds/);
    rejects({ seeds: [1, 2], subseeds: [2], subseedStrength: 0.5 }, "subseeds", /subseeds must be an array of one seed per image \(batch 2\)/);
    rejects({ seeds: [1], subseeds: [2], subseedStrength: 1.5 }, "subseedStrength", /subseedStrength must be a number from 0 to 1, got 1\.5/);
    rejects({ seeds: [1], subseedStrength: 0.5 }, "subseedStrength", /subseedStrength needs subseeds/);
    rejects({ seeds: [1], seedResizeFrom: { width: 4, height: 64 } }, "seedResizeFrom.width", /seedResizeFrom\.width must be an integer from 8 to 16384, got 4/);
    rejects({ seeds: [1], ensd: -3 }, "ensd", /ensd must be an integer from 0/);
    rejects({ scheduler: "euler", seeds: [1], ensd: 5, initImage: "in.png" }, "ensd", /ensd applies to txt2img, and to img2img with A1111's own samplers \(k_euler_a, …, a1111_ddim, a1111_plms, a1111_unipc\), not img2img with euler/);
  });
  test("a k-diffusion sampler on a UNet with an integer timestep is refused, saying why", () => {
    const intTimestep = { ...ctx, limits: { ...ctx.limits, fractionalTimesteps: false } };
    rejects({ scheduler: "k_euler" }, "scheduler", /k_euler feeds the UNet fractional timesteps .* this model's UNet takes an integer timestep/, intTimestep);
    expect(resolveGenerateOptions({ prompt: "x", scheduler: "euler" }, intTimestep).scheduler).toBe("euler");
    // LCM and A1111's DDIM / PLMS feed whole training timesteps.
    for (const scheduler of ["k_lcm", "a1111_ddim", "a1111_plms"]) expect(resolveGenerateOptions({ prompt: "x", scheduler }, intTimestep).scheduler).toBe(scheduler);
  });
  test("DDIM CFG++ reads the negative prompt at every guidance scale (A1111 runs its uncond at every scale); others only above 1", () => {
    expect(resolveGenerateOptions({ prompt: "x", negativePrompt: "fog", guidance: 1, scheduler: "a1111_ddim_cfgpp" }, ctx).uncond).not.toBeNull();
    expect(resolveGenerateOptions({ prompt: "x", negativePrompt: "fog", guidance: 0, scheduler: "a1111_ddim_cfgpp" }, ctx).uncond).not.toBeNull();
    expect(resolveGenerateOptions({ prompt: "x", negativePrompt: "fog", guidance: 1, scheduler: "a1111_ddim" }, ctx).uncond).toBeNull();
  });

  test("A1111's UniPC settings: defaults filled in for a1111_unipc, checked, refused elsewhere and on an integer-timestep UNet", () => {
    expect(resolveGenerateOptions({ prompt: "x", scheduler: "a1111_unipc" }, ctx).a1111.uniPc).toEqual({
      uni_pc_variant: "bh1",
      uni_pc_skip_type: "time_uniform",
      uni_pc_order: 3,
      uni_pc_lower_order_final: true,
    });
    const set = resolveGenerateOptions({ prompt: "x", scheduler: "a1111_unipc", uniPc: { variant: "vary_coeff", skipType: "logSNR", order: 2, lowerOrderFinal: false } }, ctx);
    expect(set.a1111.uniPc).toEqual({ uni_pc_variant: "vary_coeff", uni_pc_skip_type: "logSNR", uni_pc_order: 2, uni_pc_lower_order_final: false });
    rejects({ scheduler: "unipc", uniPc: { order: 2 } }, "uniPc", /uniPc applies to A1111's own UniPC \(a1111_unipc, first pass or hires\.scheduler\), not unipc/);
    rejects({ scheduler: "a1111_unipc", uniPc: { variant: "bh3" } }, "uniPc.variant", /uniPc\.variant must be one of "bh1", "bh2", "vary_coeff", got "bh3"/);
    rejects({ scheduler: "a1111_unipc", uniPc: { skipType: "karras" } }, "uniPc.skipType", /uniPc\.skipType must be one of "time_uniform", "time_quadratic", "logSNR", got "karras"/);
    rejects({ scheduler: "a1111_unipc", uniPc: { order: 16 } }, "uniPc.order", /uniPc\.order must be an integer from 1 to 15, got 16/);
    rejects({ scheduler: "a1111_unipc", uniPc: { lowerOrderFinal: 1 } }, "uniPc.lowerOrderFinal", /uniPc\.lowerOrderFinal must be/);
    const intTimestep = { ...ctx, limits: { ...ctx.limits, fractionalTimesteps: false } };
    rejects({ scheduler: "a1111_unipc" }, "scheduler", /a1111_unipc feeds the UNet fractional timesteps .* this model's UNet takes an integer timestep/, intTimestep);
  });
  test("eta", () => {
    expect(resolveGenerateOptions({ prompt: "x", scheduler: "k_dpm_2_a", eta: 0.5 }, ctx).a1111).toEqual({ sigmaSchedule: "automatic", eta: 0.5 });
    rejects({ scheduler: "k_euler", eta: 0.5 }, "eta", /eta applies to A1111's ancestral and SDE samplers, DPM fast, DDIM and DDIM CFG\+\+ .*not k_euler/);
    expect(resolveGenerateOptions({ prompt: "x", scheduler: "a1111_ddim", eta: 0.5 }, ctx).a1111).toEqual({ eta: 0.5 });
    rejects({ scheduler: "a1111_plms", eta: 0.5 }, "eta", /not a1111_plms/);
    expect(resolveGenerateOptions({ prompt: "x", scheduler: "a1111_ddim_cfgpp", eta: 0.5 }, ctx).a1111).toEqual({ eta: 0.5 });
    rejects({ scheduler: "k_euler_a", eta: -1 }, "eta", /eta must be a number from 0 to 100, got -1/);
  });
  test("hires", () => {
    const ok = resolveGenerateOptions({ prompt: "x", width: 256, height: 256, steps: 20, scheduler: "k_euler", seeds: [1], hires: { scale: 1.5, upscaler: "Latent (nearest)" } }, ctx);
    expect(ok.a1111.hires).toEqual({ width: 384, height: 384, truncateX: 0, truncateY: 0, steps: 20, strength: 0.75, upscaler: "Latent (nearest)", scale: 1.5, stepsGiven: false, scheduler: "k_euler", sigmaSchedule: "automatic" });
    const resized = resolveGenerateOptions({ prompt: "x", width: 256, height: 256, scheduler: "k_euler", seeds: [1], hires: { resizeWidth: 384, resizeHeight: 512 } }, ctx);
    expect(resized.a1111.hires).toMatchObject({ width: 384, height: 512, truncateX: 16, truncateY: 0, resize: "384x512" });
    const base = { prompt: "x", width: 256, height: 256, scheduler: "k_euler", seeds: [1] };
    rejects({ ...base, hires: { scale: 1 } }, "hires.scale", /hires\.scale must be greater than 1 when no resize size is given \(A1111's hr_scale\), got 1/);
    rejects({ ...base, hires: { upscaler: "R-ESRGAN 4x+" } }, "hires.upscaler", /hires\.upscaler must be one of "Latent", .*pixel upscalers such as ESRGAN or Lanczos are not supported\), got "R-ESRGAN 4x\+"/);
    rejects({ ...base, hires: { scale: 4 } }, "hires.scale", /hires gives a second pass of 1024×1024; the model takes multiples of 8 in 64-1024 × 64-768/);
    rejects({ ...base, hires: { strength: 0 } }, "hires.strength", /hires\.strength must be greater than 0/);
    rejects({ ...base, scheduler: "euler", hires: {} }, "hires", /A1111's own samplers \(k_\*, a1111_ddim, a1111_plms, a1111_unipc\) only, not euler/);
    for (const scheduler of ["a1111_ddim", "a1111_plms", "a1111_unipc"]) expect(resolveGenerateOptions({ ...base, scheduler, hires: {} }, ctx).a1111.hires).toMatchObject({ width: 512, height: 512 });
    rejects({ ...base, seeds: undefined, seed: 1, hires: {} }, "hires", /give seeds/);
    rejects({ ...base, scheduler: "euler", initImage: "in.png", hires: {} }, "hires", /hires applies to txt2img only/);
  });
  test("hires.scheduler takes any of A1111's samplers (hr_sampler_name), with p.eta and the uni_pc_* settings for whichever pass uses them", () => {
    const base = { prompt: "x", width: 256, height: 256, scheduler: "k_euler", seeds: [1] };
    // A timestep sampler's second pass has no schedule type; a k-diffusion one after a timestep first pass gets "Automatic".
    for (const scheduler of ["a1111_ddim", "a1111_ddim_cfgpp", "a1111_plms", "a1111_unipc"]) {
      const hires = resolveGenerateOptions({ ...base, hires: { scheduler } }, ctx).a1111.hires!;
      expect(hires.scheduler).toBe(scheduler);
      expect(hires).not.toHaveProperty("sigmaSchedule");
    }
    expect(resolveGenerateOptions({ ...base, scheduler: "a1111_ddim", hires: { scheduler: "k_dpmpp_2m" } }, ctx).a1111.hires).toMatchObject({ scheduler: "k_dpmpp_2m", sigmaSchedule: "automatic" });
    rejects({ ...base, hires: { scheduler: "a1111_ddim", sigmaSchedule: "karras" } }, "hires.sigmaSchedule", /applies to A1111's k-diffusion samplers .*the second pass's a1111_ddim has its own schedule/);
    rejects({ ...base, hires: { scheduler: "euler" } }, "hires.scheduler", /one of A1111's own samplers \(k_euler, .*a1111_ddim, a1111_plms, a1111_ddim_cfgpp, a1111_unipc\), got "euler"/);
    // UniPC settings: filled in when either pass runs it, and handed to that pass only.
    const unipc = resolveGenerateOptions({ ...base, uniPc: { variant: "bh2" }, hires: { scheduler: "a1111_unipc" } }, ctx).a1111;
    expect(unipc.uniPc).toMatchObject({ uni_pc_variant: "bh2", uni_pc_order: 3 });
    expect(resolveGenerateOptions({ ...base, hires: { scheduler: "a1111_unipc" } }, ctx).a1111.uniPc).toMatchObject({ uni_pc_variant: "bh1" });
    rejects({ ...base, uniPc: { variant: "bh2" }, hires: { scheduler: "a1111_ddim" } }, "uniPc", /not k_euler/);
    const intTimestep = { ...ctx, limits: { ...ctx.limits, fractionalTimesteps: false } };
    rejects({ ...base, scheduler: "a1111_ddim", hires: { scheduler: "a1111_unipc" } }, "hires.scheduler", /a1111_unipc feeds the UNet fractional timesteps/, intTimestep);
    // eta: p.eta for both passes, accepted when either sampler takes it, applied where one does.
    const secondOnly = resolveGenerateOptions({ ...base, eta: 0.4, hires: { scheduler: "a1111_ddim" } }, ctx).a1111;
    expect(secondOnly.eta).toBeUndefined();
    expect(secondOnly.hires!.eta).toBe(0.4);
    const firstOnly = resolveGenerateOptions({ ...base, scheduler: "k_euler_a", eta: 0.7, hires: { scheduler: "a1111_plms" } }, ctx).a1111;
    expect(firstOnly.eta).toBe(0.7);
    expect(firstOnly.hires).not.toHaveProperty("eta");
    rejects({ ...base, eta: 0.4, hires: { scheduler: "a1111_plms" } }, "eta", /in either pass, not k_euler then a1111_plms/);
    // DDIM CFG++ steps with the uncond, which guidance ≤ 1 leaves out of the first pass.
    rejects({ ...base, guidance: 1, hires: { scheduler: "a1111_ddim_cfgpp" } }, "hires.scheduler", /steps with the unconditional prediction/);
    expect(resolveGenerateOptions({ ...base, guidance: 1, scheduler: "a1111_ddim_cfgpp", hires: { scheduler: "a1111_ddim_cfgpp" } }, ctx).uncond).not.toBeNull();
  });
  test("img2img with a k-diffusion sampler takes A1111's strength rule (t_enc = 0 still runs one step) and its noise options", () => {
    const r = resolveGenerateOptions({ prompt: "x", scheduler: "k_euler_a", initImage: "in.png", strength: 0.04, steps: 20, seeds: [1], subseeds: [2], subseedStrength: 0.3, ensd: 5 }, ctx);
    expect(r.strength).toBe(0.04);
    expect(r.a1111.noise).toEqual({ subseeds: [2n], subseedStrength: 0.3, seedResizeFromWidth: 0, seedResizeFromHeight: 0, ensd: 5 });
    rejects({ scheduler: "euler", initImage: "x.png", strength: 0.04, steps: 20 }, "strength", /runs no step/);
  });
});
