import { describe, expect, it } from "@jest/globals";
import { readFileSync } from "node:fs";
import { join } from "node:path";
import type { BackendLimits } from "../../lib/backends/backend.js";
import { HttpError } from "../../lib/server/http/errors.js";
import { a1111FieldFor, parseA1111Request, type A1111RequestLimits } from "../../lib/server/a1111/request.js";
import { a1111NameOf, a1111SamplerList, resolveA1111Sampler } from "../../lib/server/a1111/samplers.js";
import { applyA1111Settings, defaultA1111Settings, emphasisOf } from "../../lib/server/a1111/settings.js";

const backend: BackendLimits = { maxBatch: 8, minWidth: 64, maxWidth: 2048, minHeight: 64, maxHeight: 2048, sizeMultiple: 8, canEncodeImages: true, canObserveLatents: true, maxPromptChunks: 3 };
const limits: A1111RequestLimits = { backend, maxIterations: 16, maxSteps: 1000, modelName: "tiny-sd", settings: defaultA1111Settings("tiny-sd") };
const docsBody = JSON.parse(readFileSync(join(process.cwd(), "test/fixtures/a1111/txt2img-docs-body.json"), "utf8")) as Record<string, unknown>;

/** The 422 a parse throws, or fails the test. */
function rejection(body: Record<string, unknown>, mode: "txt2img" | "img2img" = "txt2img"): HttpError {
  try {
    parseA1111Request(mode, body, limits);
  } catch (error) {
    expect(error).toBeInstanceOf(HttpError);
    return error as HttpError;
  }
  throw new Error(`expected ${JSON.stringify(body)} to be rejected`);
}

describe("A1111's hires second-pass fields", () => {
  it("maps hr_prompt, hr_negative_prompt, hr_sampler_name and hr_scheduler to the hires options; empty and \"Use same …\" keep the first pass's", () => {
    const hires = (body: Record<string, unknown>) => parseA1111Request("txt2img", { prompt: "a", enable_hr: true, ...body }, limits).hires;
    expect(hires({ hr_prompt: "a castle", hr_negative_prompt: "blur", hr_sampler_name: "DPM2 a", hr_scheduler: "Exponential" })).toMatchObject({
      prompt: "a castle", negativePrompt: "blur", scheduler: "k_dpm_2_a", sigmaSchedule: "exponential",
    });
    expect(hires({ hr_sampler_name: "DPM++ 2M Karras" })).toMatchObject({ scheduler: "k_dpmpp_2m", sigmaSchedule: "karras" });
    expect(hires({ hr_scheduler: "Karras" })).toMatchObject({ sigmaSchedule: "Karras" });
    const same = hires({ hr_prompt: "", hr_negative_prompt: null, hr_sampler_name: "Use same sampler", hr_scheduler: "Use same scheduler" })!;
    for (const key of ["prompt", "negativePrompt", "scheduler", "sigmaSchedule"]) expect(same).not.toHaveProperty(key);
  });

  it("names the hr_ fields for the pipeline's hires options", () => {
    expect(["hires.scheduler", "hires.sigmaSchedule", "hires.prompt", "hires.negativePrompt"].map(a1111FieldFor)).toEqual(["hr_sampler_name", "hr_scheduler", "hr_prompt", "hr_negative_prompt"]);
  });
});

describe("A1111 sampler names", () => {
  it("maps A1111 names to the samplers A1111 runs, with legacy Karras names and schedule types", () => {
    expect(resolveA1111Sampler("Euler a", undefined, undefined)).toEqual({ scheduler: "k_euler_a", sigmaSchedule: "automatic", field: "sampler_name" });
    expect(resolveA1111Sampler("PLMS", undefined, undefined)).toEqual({ scheduler: "a1111_plms", field: "sampler_name" });
    expect(resolveA1111Sampler("DPM++ 2M Karras", undefined, undefined)).toMatchObject({ scheduler: "k_dpmpp_2m", sigmaSchedule: "karras" });
    expect(resolveA1111Sampler("DPM++ 2M", undefined, "Karras")).toMatchObject({ scheduler: "k_dpmpp_2m", sigmaSchedule: "karras" });
    expect(resolveA1111Sampler("DPM++ 2M", undefined, "Automatic")).toMatchObject({ scheduler: "k_dpmpp_2m", sigmaSchedule: "automatic" });
    expect(resolveA1111Sampler("DPM++ 2M", undefined, "Exponential")).toMatchObject({ scheduler: "k_dpmpp_2m", sigmaSchedule: "exponential" });
    expect(resolveA1111Sampler("DPM2 a", undefined, "SGM Uniform")).toMatchObject({ scheduler: "k_dpm_2_a", sigmaSchedule: "sgm_uniform" });
    expect(resolveA1111Sampler("k_lms", undefined, undefined)).toMatchObject({ scheduler: "k_lms" });
    expect(resolveA1111Sampler("unipc", undefined, undefined).scheduler).toBe("a1111_unipc");
    expect(resolveA1111Sampler("UniPC", undefined, undefined).scheduler).toBe("a1111_unipc");
  });

  it("passes eta on to A1111's ancestral samplers", () => {
    expect(parseA1111Request("txt2img", { sampler_name: "Euler a", eta: 0.4 }, limits)).toMatchObject({ scheduler: "k_euler_a", eta: 0.4 });
    expect(parseA1111Request("txt2img", { sampler_name: "Euler", eta: 0.4 }, limits).eta).toBeUndefined();
    expect(parseA1111Request("txt2img", { sampler_name: "DDIM", eta: 0.5 }, limits)).toMatchObject({ scheduler: "a1111_ddim", eta: 0.5 });
    expect(parseA1111Request("txt2img", { sampler_name: "DDIM CFG++", eta: 0.5 }, limits)).toMatchObject({ scheduler: "a1111_ddim_cfgpp", samplerName: "DDIM CFG++", eta: 0.5 });
    // p.eta reaches the hires pass's sampler too (its own Sampler.initialize).
    expect(parseA1111Request("txt2img", { sampler_name: "Euler", eta: 0.5, enable_hr: true, hr_sampler_name: "DDIM" }, limits)).toMatchObject({ scheduler: "k_euler", eta: 0.5, hires: { scheduler: "a1111_ddim" } });
    expect(parseA1111Request("txt2img", { sampler_name: "Euler", eta: 0.5, enable_hr: true, hr_sampler_name: "PLMS" }, limits).eta).toBeUndefined();
  });

  it("runs DDIM CFG++ by its name and alias, without a schedule type", () => {
    expect(resolveA1111Sampler("DDIM CFG++", undefined, undefined)).toEqual({ scheduler: "a1111_ddim_cfgpp", field: "sampler_name" });
    expect(resolveA1111Sampler("ddim_cfgpp", undefined, "Automatic")).toEqual({ scheduler: "a1111_ddim_cfgpp", field: "sampler_name" });
    expect(() => resolveA1111Sampler("DDIM CFG++", undefined, "Karras")).toThrow(/the "Karras" schedule is not available with "DDIM CFG\+\+"/);
  });

  it("takes our canonical names exactly: diffusers' schedulers stay reachable", () => {
    expect(resolveA1111Sampler("euler_a", undefined, undefined)).toEqual({ scheduler: "euler_a", field: "sampler_name" });
    expect(resolveA1111Sampler("dpmpp_2m_karras", undefined, undefined).scheduler).toBe("dpmpp_2m_karras");
    expect(resolveA1111Sampler("ddpm", undefined, undefined).scheduler).toBe("ddpm");
    expect(() => resolveA1111Sampler("euler", undefined, "Karras")).toThrow(/not available with euler/);
  });

  it("falls back to sampler_index, whose A1111 default is Euler, when sampler_name is absent", () => {
    expect(resolveA1111Sampler(undefined, undefined, undefined)).toEqual({ scheduler: "k_euler", sigmaSchedule: "automatic", field: "sampler_index" });
    expect(resolveA1111Sampler("", "DDIM", undefined)).toEqual({ scheduler: "a1111_ddim", field: "sampler_index" });
  });

  it("treats the docs placeholder 'string' as A1111 does: its default sampler DPM++ 2M, Automatic schedule", () => {
    expect(resolveA1111Sampler("string", "Euler", "string")).toMatchObject({ scheduler: "k_dpmpp_2m", sigmaSchedule: "automatic" });
  });

  it("runs A1111's SDE samplers under their names, aliases and pre-1.9 schedule suffixes", () => {
    expect(resolveA1111Sampler("DPM++ SDE", undefined, undefined)).toEqual({ scheduler: "k_dpmpp_sde", sigmaSchedule: "automatic", field: "sampler_name" });
    expect(resolveA1111Sampler("DPM++ 2M SDE Karras", undefined, undefined)).toMatchObject({ scheduler: "k_dpmpp_2m_sde", sigmaSchedule: "karras" });
    expect(resolveA1111Sampler("DPM++ 2M SDE Heun", undefined, "Exponential")).toMatchObject({ scheduler: "k_dpmpp_2m_sde_heun", sigmaSchedule: "exponential" });
    expect(resolveA1111Sampler("k_dpmpp_3m_sde", undefined, undefined)).toMatchObject({ scheduler: "k_dpmpp_3m_sde", sigmaSchedule: "automatic" });
  });

  it("refuses unknown and unimplemented samplers and schedule types, naming the field and saying why or listing the choices", () => {
    expect(() => resolveA1111Sampler("DPM adaptive Karras", undefined, undefined)).toThrow(/not supported: .*adaptively/);
    expect(() => resolveA1111Sampler("DPM adaptive", undefined, undefined)).toThrow(/sampler_name "DPM adaptive" is not supported: its steps are chosen adaptively from the model's outputs/);
    expect(() => resolveA1111Sampler("Euler z", undefined, undefined)).toThrow(/sampler_name must be one of "DPM\+\+ 2M", .*"Euler a"/);
    const schedule = (() => {
      try {
        resolveA1111Sampler("PLMS", undefined, "Karras");
      } catch (error) {
        return error as HttpError;
      }
    })();
    expect(schedule?.field).toBe("scheduler");
    expect(() => resolveA1111Sampler("Euler", undefined, "Beta")).toThrow(/scheduler must be one of "Automatic", "Uniform", "Karras", .*got "Beta": the Beta schedule needs scipy/);
    expect(() => resolveA1111Sampler("Euler", undefined, "no such schedule")).toThrow(/scheduler must be one of/);
  });

  it("lists every sampler with a name that resolves back to itself", () => {
    for (const item of a1111SamplerList()) {
      const canonical = resolveA1111Sampler(item.name, undefined, undefined).scheduler;
      expect(a1111NameOf(canonical)).toBe(item.name);
    }
  });
});

describe("parseA1111Request", () => {
  it("accepts the txt2img example body of A1111's /docs unchanged", () => {
    const generation = parseA1111Request("txt2img", docsBody, limits);
    expect(generation).toMatchObject({ width: 512, height: 512, steps: 50, cfgScale: 7, batchSize: 1, nIter: 1, scheduler: "k_dpmpp_2m", sigmaSchedule: "automatic", rng: "nv", sendImages: true });
    expect(generation.seed).toBeGreaterThanOrEqual(0);
    expect(generation.seed).toBeLessThan(4294967294);
    // The docs body asks for tiling, which we cannot honour: accepted, and reported.
    expect(generation.ignored).toEqual(["restore_faces", "tiling"]);
    expect(generation.parameters).toMatchObject({ ...docsBody });
  });

  it("applies A1111's defaults to an empty body", () => {
    expect(parseA1111Request("txt2img", {}, limits)).toMatchObject({ prompt: "", negativePrompt: "", width: 512, height: 512, steps: 50, cfgScale: 7, scheduler: "k_euler", batchSize: 1, nIter: 1, ignored: [] });
  });

  it("keeps an explicit seed and honours override_settings.randn_source", () => {
    const generation = parseA1111Request("txt2img", { seed: 1234, override_settings: { randn_source: "CPU" } }, limits);
    expect(generation.seed).toBe(1234);
    expect(generation.rng).toBe("cpu");
  });

  it.each([
    [{ steps: "20" }, "steps", /steps must be an integer from 1 to 1000, got "20" \(string\)/],
    [{ steps: 0 }, "steps", /steps must be an integer from 1 to 1000, got 0/],
    [{ steps: 2.5 }, "steps", /steps must be an integer/],
    [{ cfg_scale: "7" }, "cfg_scale", /cfg_scale must be a number/],
    [{ width: 100 }, "width", /width must be a multiple of 8/],
    [{ height: 4096 }, "height", /height must be an integer from 64 to 2048/],
    [{ batch_size: 9 }, "batch_size", /batch_size must be an integer from 1 to 8/],
    [{ n_iter: 17 }, "n_iter", /n_iter must be an integer from 1 to 16/],
    [{ seed: -2 }, "seed", /seed must be an integer from 0/],
    [{ seed: "42" }, "seed", /seed must be an integer/],
    [{ prompt: 42 }, "prompt", /prompt must be a string/],
    [{ negative_prompt: ["a"] }, "negative_prompt", /negative_prompt must be a string/],
    [{ sampler_name: 3 }, "sampler_name", /sampler_name must be a string/],
    [{ send_images: "yes" }, "send_images", /send_images must be true or false/],
  ])("refuses %j with a 422 naming %s", (body, field, message) => {
    const error = rejection(body);
    expect(error.status).toBe(422);
    expect(error.field).toBe(field);
    expect(error.message).toMatch(message);
  });

  it.each([
    [{ enable_hr: true, hr_sampler_name: "Sideways" }, "hr_sampler_name"],
    [{ enable_hr: true, hr_sampler_name: "DPM++ 2M", hr_scheduler: "Sideways" }, "hr_scheduler"],
    [{ enable_hr: true, hr_checkpoint_name: "other.safetensors" }, "hr_checkpoint_name"],
    [{ subseed_strength: 1.5 }, "subseed_strength"],
    [{ subseed_strength: 0.5, subseed: "x" }, "subseed"],
    [{ seed_resize_from_h: 4, seed_resize_from_w: 512 }, "seed_resize_from_h"],
    [{ override_settings: { eta_noise_seed_delta: -1 } }, "override_settings.eta_noise_seed_delta"],
    [{ s_churn: 0.2 }, "s_churn"],
    [{ sampler_name: "DPM2 a", s_noise: 0.5 }, "s_noise"],
    [{ sampler_name: "euler_a", eta: 0 }, "eta"],
    [{ refiner_checkpoint: "sdxl_refiner" }, "refiner_checkpoint"],
    [{ firstphase_width: 256 }, "firstphase_width"],
    [{ script_name: "x/y/z plot" }, "script_name"],
    [{ alwayson_scripts: { controlnet: { args: [] } } }, "alwayson_scripts.controlnet"],
    [{ infotext: "a cat\nSteps: 20" }, "infotext"],
    [{ override_settings: { sd_model_checkpoint: "v1-5-pruned" } }, "override_settings.sd_model_checkpoint"],
    [{ override_settings: { CLIP_stop_at_last_layers: 13 } }, "override_settings.CLIP_stop_at_last_layers"],
    [{ override_settings: { CLIP_stop_at_last_layers: 1.5 } }, "override_settings.CLIP_stop_at_last_layers"],
    [{ override_settings: { some_unknown_setting: 1 } }, "override_settings.some_unknown_setting"],
    [{ override_settings: { randn_source: "MPS" } }, "override_settings.randn_source"],
    [{ override_settings: { emphasis: "original" } }, "override_settings.emphasis"],
    [{ override_settings: { comma_padding_backtrack: 75 } }, "override_settings.comma_padding_backtrack"],
    [{ override_settings: { pad_cond_uncond: "yes" } }, "override_settings.pad_cond_uncond"],
    [{ override_settings: { uni_pc_variant: "bh3" } }, "override_settings.uni_pc_variant"],
    [{ override_settings: { uni_pc_skip_type: "karras" } }, "override_settings.uni_pc_skip_type"],
    [{ override_settings: { uni_pc_order: 16 } }, "override_settings.uni_pc_order"],
    [{ override_settings: { uni_pc_lower_order_final: "no" } }, "override_settings.uni_pc_lower_order_final"],
  ])("refuses a result-changing value we cannot honour: %j names %s", (body, field) => {
    const error = rejection(body);
    expect(error.status).toBe(422);
    expect(error.field).toBe(field);
  });

  it("accepts result-neutral values of unsupported fields", () => {
    const neutral = {
      sampler_name: "Euler a",
      eta: 1,
      subseed: 99,
      subseed_strength: 0,
      seed_resize_from_h: 0,
      seed_resize_from_w: 512,
      s_noise: 1,
      s_tmax: 0,
      refiner_checkpoint: "None",
      hr_upscaler: "Latent",
      styles: ["my style"],
      override_settings: { sd_model_checkpoint: "tiny-sd", samples_save: false, randn_source: "GPU" },
      comments: { anything: 1 },
      some_field_a1111_does_not_have: [1, 2, 3],
    };
    expect(parseA1111Request("txt2img", neutral, limits)).toMatchObject({ scheduler: "k_euler_a", ignored: [] });
  });

  it("reads img2img's init image (data URL or plain base64), strength and resize mode", () => {
    const png = Buffer.from("iVBORw0KGgoAAAANSUhEUgAAAAEAAAABCAIAAACQd1PeAAAADElEQVR4nGP4z8AAAAMBAQDJ/pLvAAAAAElFTkSuQmCC", "base64");
    const generation = parseA1111Request("img2img", { init_images: [`data:image/png;base64,${png.toString("base64")}`], denoising_strength: 0.6, resize_mode: 1, width: 64, height: 64 }, limits);
    expect(generation.initImage?.equals(png)).toBe(true);
    expect(generation.strength).toBe(0.6);
    expect(generation.resizeMode).toBe(1);
    expect(generation.parameters.init_images).toBeNull();
    expect(rejection({ init_images: [] }, "img2img").field).toBe("init_images");
    expect(rejection({ init_images: ["not base64!"] }, "img2img").field).toBe("init_images[0]");
    expect(rejection({ init_images: [png.toString("base64")], denoising_strength: 1.5 }, "img2img").field).toBe("denoising_strength");
    expect(rejection({ init_images: [png.toString("base64")], resize_mode: 2 }, "img2img").field).toBe("resize_mode");
    expect(rejection({ init_images: [png.toString("base64")], mask: png.toString("base64") }, "img2img").field).toBe("mask");
  });

  it("maps pipeline option names to A1111 fields", () => {
    expect(a1111FieldFor("guidance")).toBe("cfg_scale");
    expect(a1111FieldFor("seeds[3]")).toBe("seed");
    expect(a1111FieldFor("strength")).toBe("denoising_strength");
    expect(a1111FieldFor("batch")).toBe("batch_size");
  });
});

describe("A1111 settings: the server's options, with a request's override_settings on top", () => {
  it("A1111's defaults, then the prompt settings a request overrides for itself only", () => {
    const server = defaultA1111Settings("tiny-sd");
    expect(server).toMatchObject({ emphasis: "Original", comma_padding_backtrack: 20, pad_cond_uncond: false, CLIP_stop_at_last_layers: 1, randn_source: "GPU" });
    const generation = parseA1111Request("txt2img", { override_settings: { emphasis: "No norm", comma_padding_backtrack: 0, pad_cond_uncond: true, CLIP_stop_at_last_layers: 2 } }, limits);
    expect(generation.settings).toMatchObject({ emphasis: "No norm", comma_padding_backtrack: 0, pad_cond_uncond: true, CLIP_stop_at_last_layers: 2 });
    expect(emphasisOf(generation.settings)).toBe("no-norm");
    expect(limits.settings.emphasis).toBe("Original");
  });

  it("A1111's UniPC settings (uni_pc_*) default to A1111's and are overridden per request", () => {
    expect(defaultA1111Settings("tiny-sd")).toMatchObject({ uni_pc_variant: "bh1", uni_pc_skip_type: "time_uniform", uni_pc_order: 3, uni_pc_lower_order_final: true });
    const body = { sampler_name: "UniPC", override_settings: { uni_pc_variant: "bh2", uni_pc_skip_type: "logSNR", uni_pc_order: 2, uni_pc_lower_order_final: false } };
    const generation = parseA1111Request("txt2img", body, limits);
    expect(generation).toMatchObject({ scheduler: "a1111_unipc", samplerName: "UniPC" });
    expect(generation.settings).toMatchObject({ uni_pc_variant: "bh2", uni_pc_skip_type: "logSNR", uni_pc_order: 2, uni_pc_lower_order_final: false });
    expect(() => applyA1111Settings(defaultA1111Settings("tiny-sd"), { uni_pc_order: 20 }, "")).toThrow(/^uni_pc_order must be an integer from 1 to 15 \(A1111 allows 50/);
    expect(a1111FieldFor("uniPc.order")).toBe("override_settings.uni_pc_order");
  });

  it("server options apply to every request until changed; null leaves a setting as it is", () => {
    const server = applyA1111Settings(defaultA1111Settings("tiny-sd"), { emphasis: "Ignore", randn_source: "CPU", pad_cond_uncond: null }, "");
    const generation = parseA1111Request("txt2img", {}, { ...limits, settings: server });
    expect(emphasisOf(generation.settings)).toBe("ignore");
    expect(generation.rng).toBe("cpu");
    expect(generation.settings.pad_cond_uncond).toBe(false);
  });

  it("an option that cannot be honoured is named, without the override_settings prefix for /sdapi/v1/options", () => {
    expect(() => applyA1111Settings(defaultA1111Settings("tiny-sd"), { emphasis: "Strong" }, "")).toThrow(/^emphasis must be one of "Original", "No norm", "Ignore", "None", got "Strong"/);
    expect(() => applyA1111Settings(defaultA1111Settings("tiny-sd"), { sd_hypernetwork: "x" }, "")).toThrow(/^sd_hypernetwork is not a setting this server can apply/);
  });

  it("no_dpmpp_sde_batch_determinism: its default (false) is accepted, true is refused saying why", () => {
    expect(applyA1111Settings(defaultA1111Settings("tiny-sd"), { no_dpmpp_sde_batch_determinism: false }, "override_settings.")).toEqual(defaultA1111Settings("tiny-sd"));
    expect(() => applyA1111Settings(defaultA1111Settings("tiny-sd"), { no_dpmpp_sde_batch_determinism: true }, "override_settings.")).toThrow(
      /^override_settings\.no_dpmpp_sde_batch_determinism must be false or null: with it A1111 seeds the SDE samplers' noise from torch's unseeded global generator/,
    );
  });
});
