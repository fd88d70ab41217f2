"""
End-to-end goldens for A1111's txt2img and img2img sampling paths on the tiny model
(models/tiny-sd), for test/e2e/a1111-tiny.test.ts.

What runs: k-diffusion's own samplers and CompVisDenoiser (crowsonkb/k-diffusion ab527a9, as
A1111 v1.10.1 pins it) and A1111's own modules/rng.py ImageRNG and modules/sd_schedulers.py (the
same files and stubs as gen_a1111_kdiffusion_goldens.py, which this script imports), driving the
tiny model's ONNX graphs through onnxruntime (CPU). A1111's glue around them is transcribed from
v1.10.1 in a few lines each:
- conditioning: CLIP's last_hidden_state of the prompt's 77 ids (BOS, tokens, EOS padding; no
  emphasis in these prompts, so A1111's multiplier renormalisation is the identity);
- CFGDenoiser.forward + combine_denoised: one UNet call on [x (cond rows); x (uncond rows)],
  denoised = D_uncond + (D_cond − D_uncond) · cfg_scale;
- processing: x = rng.next() · sigmas[0] (KDiffusionSampler.sample), the sampler's randn_like =
  rng.next() (TorchHijack), seeds = seed + i, or all the same seed with subseed + i when a
  variation strength is set (process_images);
- decode: VAE decoder on x / scale_factor, then A1111's ((x + 1) / 2).clamp(0, 1) · 255 cast with
  astype(uint8) (truncation);
- hires fix (sample_hr_pass with a latent upscaler): calculate_target_resolution, F.interpolate with
  shared.latent_upscale_modes' mode/antialias, the truncate_x/y crop, a new ImageRNG at the new
  latent size whose first draw is the noise, then sample_img2img with steps given
  (setup_img2img_steps: steps' = int(steps / min(strength, 0.999)), t_enc = steps - 1,
  sigma_sched = sigmas[steps' - t_enc - 1:], x = samples + noise * sigma_sched[0]);
- img2img (StableDiffusionProcessingImg2Img.init / .sample, KDiffusionSampler.sample_img2img): the init
  image as float32 / 255, batch-repeated, x * 2 - 1 (images_tensor_to_samples), the VAE encoder per image,
  times scale_factor; noise = rng.next() (the ImageRNG's first draw); setup_img2img_steps with
  img2img_fix_steps off (t_enc = int(min(strength, 0.999) * steps)), sigma_sched = sigmas[steps - t_enc - 1:],
  xi = init_latent + noise * sigma_sched[0], the sampler given what sample_img2img gives it by its signature
  (ref.a1111_img2img_kwargs). A1111 samples the VAE posterior (get_first_stage_encoding's .sample()) from
  torch's unseeded global generator; the tiny encoder returns the posterior mean, so no draw is involved here.

Mode `hires-prompts` (test/fixtures/a1111/tiny_e2e_hires_prompts.json, test/e2e/a1111-hires-prompts.test.ts): the
hires fix with prompt editing / alternation, A1111's hr_prompt / hr_negative_prompt and hr_sampler_name /
hr_scheduler. Here the conditioning and the CFG step counter are A1111's own code, not transcribed:
modules/prompt_parser.py (SdConditioning, get_learned_conditioning with hires_steps, get_multicond_learned_conditioning,
reconstruct_*_batch) and modules/sd_samplers_cfg_denoiser.py's CFGDenoiser.forward (loaded with
gen_a1111_ddim_cfgpp.py's stubs; its inner_model is KDiffusionSampler's CompVisDenoiser, as CFGDenoiserKDiffusion
makes it). Transcribed from processing.py (v1.10.1): setup_conds (first pass: total_steps =
sampler_config.total_steps(steps), x2 for "second_order" samplers), calculate_hr_conds (hires conds with
steps = firstpass_steps and hires_steps = total_steps of the hires sampler for hr_second_pass_steps or steps),
sample_hr_pass (create_sampler(hr_sampler_name or sampler_name): a new CFG denoiser whose step restarts at 0 in
Sampler.initialize; get_sigmas with hr_scheduler, which defaults to the first pass's scheduler name).

Usage: KDIFFUSION=... A1111=... python scripts/reference/gen_a1111_tiny_e2e.py > test/fixtures/a1111/tiny_e2e.json
       KDIFFUSION=... A1111=... PYTHONPATH=<lark> python scripts/reference/gen_a1111_tiny_e2e.py hires-prompts \
         > test/fixtures/a1111/tiny_e2e_hires_prompts.json   (lark 1.3.1 for prompt_parser)
Made with Python 3.11, torch 2.13.0+cpu, numpy 1.26.4, onnxruntime 1.30.0, transformers' CLIPTokenizer
(the model's own tokenizer files).
"""
import json
import types
import os
import sys

import numpy as np
import onnxruntime as ort
import torch

from transformers import CLIPTokenizer  # before the stubs below replace tqdm

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import gen_a1111_kdiffusion_goldens as ref  # noqa: E402  (loads k-diffusion and A1111's modules, stubbing tqdm & co.)

ROOT = os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "..")
MODEL = os.path.join(ROOT, "models", "tiny-sd")
SCALE_FACTOR = 0.18215

tokenizer = CLIPTokenizer.from_pretrained(os.path.join(MODEL, "tokenizer"))
sessions = {name: ort.InferenceSession(os.path.join(MODEL, name, "model.onnx"), providers=["CPUExecutionProvider"])
            for name in ("text_encoder", "unet", "vae_decoder", "vae_encoder")}


def encode(text):
    ids = tokenizer(text, padding="max_length", max_length=77, truncation=True).input_ids
    out = sessions["text_encoder"].run(["last_hidden_state"], {"input_ids": np.array([ids], dtype=np.int32)})[0]
    return torch.from_numpy(out)


class TinyUNet:
    """LatentDiffusion stand-in: alphas_cumprod (ldm's SD 1.x table) + apply_model on the ONNX UNet."""

    def __init__(self):
        self.alphas_cumprod = ref.sd1_alphas_cumprod()
        self.device = torch.device("cpu")

    def apply_model(self, x, t, cond):
        outs = []
        for row in range(x.shape[0]):
            feeds = {"sample": x[row:row + 1].numpy().astype(np.float32),
                     "timestep": np.array([float(t[row])], dtype=np.float32),
                     "encoder_hidden_states": cond[row:row + 1].numpy().astype(np.float32)}
            outs.append(torch.from_numpy(sessions["unet"].run(["out_sample"], feeds)[0]))
        return torch.cat(outs)


def cfg_denoiser(model_wrap, cond, uncond, cfg_scale, catenate_conds=torch.cat):
    """CFGDenoiser.forward for one prompt per image: cond rows, then uncond rows, one call. SDXL's
    conds are dicts: pass A1111's catenate_conds (gen_a1111_tiny_sdxl_hires.py)."""

    def forward(x, sigma, **kwargs):
        b = x.shape[0]
        x_in = torch.cat([x, x])
        sigma_in = torch.cat([sigma, sigma])
        x_out = model_wrap(x_in, sigma_in, cond=catenate_conds([cond, uncond]))
        denoised_uncond = x_out[-b:]
        denoised = torch.clone(denoised_uncond)
        for i in range(b):
            denoised[i] += (x_out[i] - denoised_uncond[i]) * cfg_scale
        return denoised

    return forward


LATENT_UPSCALE_MODES = {
    "Latent": {"mode": "bilinear", "antialias": False},
    "Latent (antialiased)": {"mode": "bilinear", "antialias": True},
    "Latent (bicubic)": {"mode": "bicubic", "antialias": False},
    "Latent (bicubic antialiased)": {"mode": "bicubic", "antialias": True},
    "Latent (nearest)": {"mode": "nearest", "antialias": False},
    "Latent (nearest-exact)": {"mode": "nearest-exact", "antialias": False},
}


def target_resolution(case):
    """StableDiffusionProcessingTxt2Img.calculate_target_resolution (v1.10.1)."""
    w, h = case["width"], case["height"]
    rx, ry = case.get("hr_resize_x", 0), case.get("hr_resize_y", 0)
    truncate_x = truncate_y = 0
    if rx == 0 and ry == 0:
        to_x, to_y = int(w * case["hr_scale"]), int(h * case["hr_scale"])
    elif ry == 0:
        to_x, to_y = rx, rx * h // w
    elif rx == 0:
        to_x, to_y = ry * w // h, ry
    else:
        if w / h < rx / ry:
            to_x, to_y = rx, rx * h // w
        else:
            to_x, to_y = ry * w // h, ry
        truncate_x = (to_x - rx) // 8
        truncate_y = (to_y - ry) // 8
    return to_x, to_y, truncate_x, truncate_y


def hires_pass(case, model_wrap, options, funcname, samples, cond, uncond, catenate_conds=torch.cat):
    to_x, to_y, truncate_x, truncate_y = target_resolution(case)
    scale = LATENT_UPSCALE_MODES[case["hr_upscaler"]]
    samples = torch.nn.functional.interpolate(samples, size=(to_y // 8, to_x // 8), mode=scale["mode"], antialias=scale["antialias"])
    samples = samples[:, :, truncate_y // 2:samples.shape[2] - (truncate_y + 1) // 2, truncate_x // 2:samples.shape[3] - (truncate_x + 1) // 2]
    image_rng = ref.rng.ImageRNG(samples.shape[1:], case["seeds"], subseeds=case.get("subseeds"),
                                 subseed_strength=case.get("subseed_strength", 0.0),
                                 seed_resize_from_h=case.get("seed_resize_from_h", 0),
                                 seed_resize_from_w=case.get("seed_resize_from_w", 0))
    noise = image_rng.next()
    requested = case.get("hr_second_pass_steps") or case["steps"]
    strength = case["denoising_strength"]
    steps = int(requested / min(strength, 0.999))
    t_enc = requested - 1
    sigmas = ref.a1111_get_sigmas(model_wrap, options, case["schedule"], steps)
    sigma_sched = sigmas[steps - t_enc - 1:]
    xi = samples + noise * sigma_sched[0]
    ref.sampling.torch = ref.TorchHijack(image_rng, [], lambda: 0)
    out = ref.sampler_function(funcname)(cfg_denoiser(model_wrap, cond, uncond, case["cfg_scale"], catenate_conds), xi, sigma_sched,
                                          extra_args={}, disable=True)
    ref.sampling.torch = torch
    return out


def gradient_init_image(width, height):
    """The init image the tests write (test/fixtures/tiny-sd-cases/reference.ts gradientInitImage), HWC uint8."""
    y, x = np.mgrid[0:height, 0:width]
    return np.stack([4 * x + 2, 4 * y + 2, 255 - 2 * (x + y)], axis=-1).astype(np.uint8)


def img2img_init_latent(case, b):
    """StableDiffusionProcessingImg2Img.init for one init image: float32 / 255, CHW, repeated over the
    batch; images_tensor_to_samples: x * 2 - 1, one encode per image, get_first_stage_encoding = scale_factor * z."""
    image = gradient_init_image(case["width"], case["height"]).astype(np.float32) / 255.0
    image = np.moveaxis(image, 2, 0)
    batch_images = np.expand_dims(image, axis=0).repeat(b, axis=0)
    image = torch.from_numpy(batch_images) * 2 - 1
    latents = [torch.from_numpy(sessions["vae_encoder"].run(["latent_sample"], {"sample": img.unsqueeze(0).numpy()})[0])[0] for img in image]
    return SCALE_FACTOR * torch.stack(latents)


def img2img_samples(case, model_wrap, options, funcname, image_rng, denoiser, b):
    """StableDiffusionProcessingImg2Img.sample + KDiffusionSampler.sample_img2img (v1.10.1)."""
    init_latent = img2img_init_latent(case, b)
    noise = image_rng.next()
    steps, t_enc = ref.setup_img2img_steps(case["steps"], case["denoising_strength"])
    sigmas = ref.a1111_get_sigmas(model_wrap, options, case["schedule"], steps)
    sigma_sched = sigmas[steps - t_enc - 1:]
    xi = init_latent + noise * sigma_sched[0]
    func = ref.sampler_function(funcname)
    return func(denoiser, xi, extra_args={}, disable=True, **ref.a1111_img2img_kwargs(func, sigma_sched))


class TimestepsCFG:
    """CFGDenoiserTimesteps as the timestep samplers see it: the CFG combine of CompVisTimestepsDenoiser
    (the UNet's eps as is, fed the integer timestep), and model.inner_model.inner_model.alphas_cumprod."""

    def __init__(self, unet, cond, uncond, cfg_scale):
        self.inner_model = types.SimpleNamespace(inner_model=unet)
        self.forward = cfg_denoiser(lambda x, t, cond: unet.apply_model(x, t, cond), cond, uncond, cfg_scale)

    def __call__(self, x, t, **kwargs):
        return self.forward(x, t)


def timesteps_samples(case, funcname, image_rng, cond, uncond, b):
    """CompVisSampler.sample (x = rng.next(), unscaled) or sample_img2img (v1.10.1) with A1111's DDIM / PLMS."""
    unet = TinyUNet()
    model = TimestepsCFG(unet, cond, uncond, case["cfg_scale"])
    noise = image_rng.next()
    timesteps = ref.a1111_get_timesteps(case["steps"])
    if case.get("img2img"):
        init_latent = img2img_init_latent(case, b)
        steps, t_enc = ref.setup_img2img_steps(case["steps"], case["denoising_strength"])
        alphas_cumprod = unet.alphas_cumprod
        x = init_latent * torch.sqrt(alphas_cumprod[timesteps[t_enc]]) + noise * torch.sqrt(1 - alphas_cumprod[timesteps[t_enc]])
        timesteps = timesteps[:t_enc]
    else:
        x = noise
    # Sampler.initialize: eta = p.eta (else opts.eta_ddim = 0), passed where the function takes it.
    kwargs = {"eta": case["eta"]} if "eta" in case else {}
    return getattr(ref.sd_samplers_timesteps_impl, funcname)(model, x, timesteps, extra_args={}, disable=True, **kwargs)


def run_case(case):
    key = case["sampler"]
    if key in ref.TIMESTEP_SAMPLERS:
        return run_timesteps_case(case)
    label, funcname, options = ref.SAMPLERS[key]
    ref.shared.opts.eta_noise_seed_delta = case.get("ensd", 0)
    b = len(case["seeds"])
    h, w = case["height"] // 8, case["width"] // 8
    model_wrap = ref.denoiser_for(key, TinyUNet())
    sigmas = ref.a1111_get_sigmas(model_wrap, options, case["schedule"], case["steps"])
    image_rng = ref.rng.ImageRNG((4, h, w), case["seeds"], subseeds=case.get("subseeds"),
                                 subseed_strength=case.get("subseed_strength", 0.0),
                                 seed_resize_from_h=case.get("seed_resize_from_h", 0),
                                 seed_resize_from_w=case.get("seed_resize_from_w", 0))
    ref.sampling.torch = ref.TorchHijack(image_rng, [], lambda: 0)
    cond = encode(case["prompt"]).repeat(b, 1, 1)
    uncond = encode(case["negative_prompt"]).repeat(b, 1, 1)
    denoiser = cfg_denoiser(model_wrap, cond, uncond, case["cfg_scale"])
    if case.get("img2img"):
        samples = img2img_samples(case, model_wrap, options, funcname, image_rng, denoiser, b)
    elif funcname == "sample_dpm_fast":
        # KDiffusionSampler.sample: n = steps, the model's sigma range, eta = opts.eta_ancestral (1).
        x = image_rng.next() * sigmas[0]
        samples = ref.sampling.sample_dpm_fast(denoiser, x, model_wrap.sigmas[0].item(), model_wrap.sigmas[-1].item(), case["steps"],
                                               extra_args={}, disable=True, eta=1.0)
    else:
        x = image_rng.next() * sigmas[0]
        samples = ref.sampler_function(funcname)(denoiser, x, sigmas, extra_args={}, disable=True)
    ref.sampling.torch = torch
    if case.get("enable_hr"):
        samples = hires_pass(case, model_wrap, options, funcname, samples, cond, uncond)
    return finish_case(case, label, samples, sigmas)


def run_timesteps_case(case):
    label, funcname = ref.TIMESTEP_SAMPLERS[case["sampler"]]
    ref.shared.opts.eta_noise_seed_delta = case.get("ensd", 0)
    b = len(case["seeds"])
    image_rng = ref.rng.ImageRNG((4, case["height"] // 8, case["width"] // 8), case["seeds"], subseeds=case.get("subseeds"),
                                 subseed_strength=case.get("subseed_strength", 0.0))
    ref.sampling.torch = ref.TorchHijack(image_rng, [], lambda: 0)
    cond = encode(case["prompt"]).repeat(b, 1, 1)
    uncond = encode(case["negative_prompt"]).repeat(b, 1, 1)
    samples = timesteps_samples(case, funcname, image_rng, cond, uncond, b)
    ref.sampling.torch = torch
    return finish_case(case, label, samples, None)


def finish_case(case, label, samples, sigmas):
    decoded = sessions["vae_decoder"].run(["sample"], {"latent_sample": (samples / SCALE_FACTOR).numpy().astype(np.float32)})[0]
    pixels = (255.0 * np.moveaxis(np.clip((decoded + 1.0) / 2.0, 0.0, 1.0), 1, 3)).astype(np.uint8)
    return {**case, "a1111_sampler": label, "sigmas": ref.f32(sigmas.tolist()) if sigmas is not None else None,
            "final_latents": ref.f32(samples.reshape(-1).tolist()), "pixels_hwc": pixels.reshape(-1).tolist()}


CASES = [
    {"id": "euler-a-ensd", "sampler": "k_euler_a", "schedule": "automatic", "steps": 6, "seeds": [11, 12], "ensd": 31337},
    {"id": "dpmpp-2m-automatic-karras", "sampler": "k_dpmpp_2m", "schedule": "automatic", "steps": 6, "seeds": [3]},
    {"id": "heun-exponential", "sampler": "k_heun", "schedule": "exponential", "steps": 5, "seeds": [4]},
    {"id": "lms-uniform", "sampler": "k_lms", "schedule": "uniform", "steps": 6, "seeds": [5]},
    {"id": "dpm2-a-variation-resize", "sampler": "k_dpm_2_a", "schedule": "automatic", "steps": 5, "seeds": [6, 6],
     "subseeds": [99, 100], "subseed_strength": 0.3, "seed_resize_from_w": 48, "seed_resize_from_h": 80},
    {"id": "dpmpp-2s-a-sgm-ensd", "sampler": "k_dpmpp_2s_a", "schedule": "sgm_uniform", "steps": 5, "seeds": [8], "ensd": 7},
    {"id": "dpm-fast-ensd", "sampler": "k_dpm_fast", "schedule": "automatic", "steps": 7, "seeds": [9, 10], "ensd": 5},
    {"id": "hires-latent-euler-a-ensd", "sampler": "k_euler_a", "schedule": "automatic", "steps": 4, "seeds": [21], "ensd": 31337,
     "enable_hr": True, "hr_scale": 2.0, "hr_upscaler": "Latent", "denoising_strength": 0.6},
    {"id": "hires-bicubic-aa-dpmpp-2m", "sampler": "k_dpmpp_2m", "schedule": "automatic", "steps": 4, "seeds": [22, 23],
     "enable_hr": True, "hr_scale": 1.5, "hr_upscaler": "Latent (bicubic antialiased)", "hr_second_pass_steps": 3, "denoising_strength": 0.5},
    {"id": "hires-nearest-exact-resize-variation", "sampler": "k_euler", "schedule": "karras", "steps": 3, "seeds": [24],
     "subseeds": [5], "subseed_strength": 0.2, "enable_hr": True, "hr_resize_x": 96, "hr_resize_y": 128,
     "hr_upscaler": "Latent (nearest-exact)", "denoising_strength": 0.7},
    {"id": "hires-antialiased-heun", "sampler": "k_heun", "schedule": "exponential", "steps": 3, "seeds": [25],
     "enable_hr": True, "hr_scale": 2.0, "hr_upscaler": "Latent (antialiased)", "hr_second_pass_steps": 2, "denoising_strength": 0.45},
    {"id": "hires-bicubic-lms", "sampler": "k_lms", "schedule": "uniform", "steps": 3, "seeds": [26],
     "enable_hr": True, "hr_scale": 2.0, "hr_upscaler": "Latent (bicubic)", "denoising_strength": 0.8},
    {"id": "hires-nearest-dpm2-a", "sampler": "k_dpm_2_a", "schedule": "automatic", "steps": 3, "seeds": [27],
     "enable_hr": True, "hr_scale": 2.0, "hr_upscaler": "Latent (nearest)", "denoising_strength": 0.55},
    # img2img from gradient_init_image; t_enc = int(min(strength, 0.999) * steps)
    {"id": "img2img-euler-a-batch", "img2img": True, "sampler": "k_euler_a", "schedule": "automatic", "steps": 8, "seeds": [31, 32],
     "denoising_strength": 0.75},
    {"id": "img2img-dpmpp-2m-rounding-edge", "img2img": True, "sampler": "k_dpmpp_2m", "schedule": "automatic", "steps": 50, "seeds": [33],
     "denoising_strength": 0.58},  # 0.58 * 50 = 28.999999999999996: t_enc = 28
    {"id": "img2img-heun-strength-1", "img2img": True, "sampler": "k_heun", "schedule": "exponential", "steps": 6, "seeds": [34],
     "denoising_strength": 1.0},  # min(1, 0.999) * 6 = 5.994: t_enc = 5, the whole schedule from init latent + σ_max · noise
    {"id": "img2img-lms-one-step", "img2img": True, "sampler": "k_lms", "schedule": "uniform", "steps": 10, "seeds": [35],
     "denoising_strength": 0.05},  # t_enc = 0: one step from the last sigma
    {"id": "img2img-dpm2-a-variation-ensd", "img2img": True, "sampler": "k_dpm_2_a", "schedule": "automatic", "steps": 6, "seeds": [36],
     "subseeds": [7], "subseed_strength": 0.4, "ensd": 31337, "denoising_strength": 0.6},
    {"id": "img2img-dpm-fast", "img2img": True, "sampler": "k_dpm_fast", "schedule": "automatic", "steps": 7, "seeds": [37],
     "denoising_strength": 0.5},
    {"id": "img2img-dpmpp-2s-a-sgm-seed-resize", "img2img": True, "sampler": "k_dpmpp_2s_a", "schedule": "sgm_uniform", "steps": 5,
     "seeds": [38], "seed_resize_from_w": 48, "seed_resize_from_h": 80, "denoising_strength": 0.45},
    # A1111's Restart (sd_samplers_extra.restart_sampler): from 20 steps on a restart segment with one ImageRNG draw
    {"id": "restart-karras-ensd", "sampler": "k_restart", "schedule": "automatic", "steps": 20, "seeds": [41, 42], "ensd": 31337},
    {"id": "img2img-restart", "img2img": True, "sampler": "k_restart", "schedule": "automatic", "steps": 24, "seeds": [43],
     "denoising_strength": 0.9},
    # A1111's LCM (sd_samplers_lcm: LCMCompVisDenoiser, sample_lcm)
    {"id": "lcm-ensd", "sampler": "k_lcm", "schedule": "automatic", "steps": 6, "seeds": [45, 46], "ensd": 31337, "cfg_scale": 1.5},
    {"id": "img2img-lcm-karras", "img2img": True, "sampler": "k_lcm", "schedule": "karras", "steps": 8, "seeds": [47], "cfg_scale": 2.0,
     "denoising_strength": 0.6},
    # A1111's own DDIM and PLMS (sd_samplers_timesteps_impl): integer timesteps, DDIM draws (eta 0) every step.
    # Batch 1 only: the stored file version broadcasts its per-step scalars over s_in ([B]), which only runs for B = 1.
    {"id": "ddim-variation-ensd", "sampler": "a1111_ddim", "steps": 10, "seeds": [51], "subseeds": [9], "subseed_strength": 0.3,
     "ensd": 31337},
    {"id": "plms", "sampler": "a1111_plms", "steps": 12, "seeds": [53]},
    {"id": "ddim-eta-ensd", "sampler": "a1111_ddim", "steps": 8, "seeds": [57], "eta": 0.5, "ensd": 31337},
    {"id": "img2img-ddim", "img2img": True, "sampler": "a1111_ddim", "steps": 20, "seeds": [54], "denoising_strength": 0.7},
    {"id": "img2img-plms", "img2img": True, "sampler": "a1111_plms", "steps": 15, "seeds": [55], "denoising_strength": 0.5},
]


def a1111_total_steps(options, steps):
    """SamplerData.total_steps (sd_samplers_common.py): the CFG denoiser's expected calls."""
    return steps * 2 if options.get("second_order", False) else steps


def run_hires_prompts_case(case):
    """txt2img + hires fix with A1111's conds and CFG denoiser (see the module comment, mode hires-prompts)."""
    import gen_a1111_ddim_cfgpp as cfgpp  # A1111's CFGDenoiser and prompt_parser, with their stubs

    prompt_parser = cfgpp.prompt_parser

    class TinyCondModel(TinyUNet):
        """shared.sd_model as CFGDenoiser reads it: crossattn conditioning, eps."""
        parameterization = "eps"
        cond_stage_key = "crossattn"
        model = types.SimpleNamespace(conditioning_key="crossattn")

        def get_learned_conditioning(self, texts):
            return torch.cat([encode(text) for text in texts])

        def apply_model(self, x, t, cond):
            return super().apply_model(x, t, cond["c_crossattn"][0])

    class CFGDenoiserKDiffusion(cfgpp.cfg_denoiser.CFGDenoiser):
        """sd_samplers_kdiffusion.CFGDenoiserKDiffusion: inner_model is the sampler's CompVisDenoiser."""

        def __init__(self, sampler, model_wrap):
            super().__init__(sampler)
            self.model_wrap = model_wrap

        @property
        def inner_model(self):
            return self.model_wrap

    model = TinyCondModel()
    cfgpp.shared.sd_model = model
    ref.shared.opts.eta_noise_seed_delta = case.get("ensd", 0)
    b = len(case["seeds"])
    prompts = [case["prompt"]] * b
    negatives = [case["negative_prompt"]] * b

    def sample(key, schedule, x_or_noise, c, uc, steps, img2img_from=None):
        """KDiffusionSampler.sample / sample_img2img with a new sampler (Sampler.initialize: step = 0)."""
        _, funcname, options = ref.SAMPLERS[key]
        model_wrap = ref.denoiser_for(key, model)
        sampler = types.SimpleNamespace(last_latent=None, sampler_extra_args=None)
        denoiser = CFGDenoiserKDiffusion(sampler, model_wrap)
        denoiser.p = types.SimpleNamespace(extra_generation_params={}, scripts=None)
        denoiser.step = 0
        image_cond = x_or_noise.new_zeros(x_or_noise.shape[0], 5, 1, 1)  # txt2img_image_conditioning
        extra_args = {"cond": c, "image_cond": image_cond, "uncond": uc, "cond_scale": case["cfg_scale"], "s_min_uncond": 0.0}
        sampler.sampler_extra_args = extra_args
        func = ref.sampler_function(funcname)
        if img2img_from is None:
            sigmas = ref.a1111_get_sigmas(model_wrap, options, schedule, steps)
            denoiser.total_steps = a1111_total_steps(options, steps)
            return func(denoiser, x_or_noise * sigmas[0], sigmas, extra_args=extra_args, disable=True), sigmas
        # setup_img2img_steps with steps given (sample_hr_pass): steps' = int(steps / min(strength, 0.999)), t_enc = steps - 1.
        stretched, t_enc = int(steps / min(case["denoising_strength"], 0.999)), steps - 1
        sigmas = ref.a1111_get_sigmas(model_wrap, options, schedule, stretched)
        sigma_sched = sigmas[stretched - t_enc - 1:]
        xi = img2img_from + x_or_noise * sigma_sched[0]
        denoiser.total_steps = a1111_total_steps(options, t_enc + 1)
        return func(denoiser, xi, extra_args=extra_args, disable=True, **ref.a1111_img2img_kwargs(func, sigma_sched)), sigmas

    # First pass: setup_conds.
    options = ref.SAMPLERS[case["sampler"]][2]
    firstpass_steps = a1111_total_steps(options, case["steps"])
    uc = prompt_parser.get_learned_conditioning(model, prompt_parser.SdConditioning(negatives, width=case["width"], height=case["height"], is_negative_prompt=True), firstpass_steps, None, False)
    c = prompt_parser.get_multicond_learned_conditioning(model, prompt_parser.SdConditioning(prompts, width=case["width"], height=case["height"]), firstpass_steps, None, False)
    image_rng = ref.rng.ImageRNG((4, case["height"] // 8, case["width"] // 8), case["seeds"])
    ref.sampling.torch = ref.TorchHijack(image_rng, [], lambda: 0)
    samples, first_sigmas = sample(case["sampler"], case["schedule"], image_rng.next(), c, uc, case["steps"])
    ref.sampling.torch = torch

    # Second pass: sample_hr_pass with calculate_hr_conds.
    to_x, to_y, truncate_x, truncate_y = target_resolution(case)
    scale = LATENT_UPSCALE_MODES[case["hr_upscaler"]]
    samples = torch.nn.functional.interpolate(samples, size=(to_y // 8, to_x // 8), mode=scale["mode"], antialias=scale["antialias"])
    samples = samples[:, :, truncate_y // 2:samples.shape[2] - (truncate_y + 1) // 2, truncate_x // 2:samples.shape[3] - (truncate_x + 1) // 2]
    hr_rng = ref.rng.ImageRNG(samples.shape[1:], case["seeds"])
    noise = hr_rng.next()
    hr_key = case.get("hr_sampler") or case["sampler"]
    hr_schedule = case.get("hr_schedule") or case["schedule"]  # hr_scheduler None: self.scheduler
    hr_steps = case.get("hr_second_pass_steps") or case["steps"]
    hr_total = a1111_total_steps(ref.SAMPLERS[hr_key][2], hr_steps)
    hr_prompts = [case.get("hr_prompt") or case["prompt"]] * b
    hr_negatives = [case.get("hr_negative_prompt") or case["negative_prompt"]] * b
    hr_uc = prompt_parser.get_learned_conditioning(model, prompt_parser.SdConditioning(hr_negatives, width=to_x, height=to_y, is_negative_prompt=True), firstpass_steps, hr_total, False)
    hr_c = prompt_parser.get_multicond_learned_conditioning(model, prompt_parser.SdConditioning(hr_prompts, width=to_x, height=to_y), firstpass_steps, hr_total, False)
    ref.sampling.torch = ref.TorchHijack(hr_rng, [], lambda: 0)
    samples, _ = sample(hr_key, hr_schedule, noise, hr_c, hr_uc, hr_steps, img2img_from=samples)
    ref.sampling.torch = torch
    schedules = {
        "first": prompt_parser.get_learned_conditioning_prompt_schedules([case["prompt"], case["negative_prompt"]], firstpass_steps),
        "hires": prompt_parser.get_learned_conditioning_prompt_schedules([hr_prompts[0], hr_negatives[0]], firstpass_steps, hr_total),
    }
    return {**finish_case(case, ref.SAMPLERS[case["sampler"]][0], samples, first_sigmas), "prompt_schedules": schedules}


HIRES_PROMPT_CASES = [
    # Editing with a fraction (< 1: the first pass only; > 1: the second pass, counted from its own step 1),
    # alternation restarting in the second pass.
    {"id": "hires-editing-alternation-euler-a", "sampler": "k_euler_a", "schedule": "automatic", "steps": 4, "seeds": [71],
     "prompt": "a [lighthouse:castle:0.5] on a [red|blue] [cliff:beach:1.5]", "enable_hr": True, "hr_scale": 2.0,
     "hr_upscaler": "Latent", "hr_second_pass_steps": 4, "denoising_strength": 0.7},
    # A second-order sampler (schedules over 2 x steps), a whole-number `when` past the first pass, and a batch of two.
    {"id": "hires-editing-integer-heun-batch", "sampler": "k_heun", "schedule": "karras", "steps": 3, "seeds": [72, 73],
     "prompt": "a lighthouse [at night:at dawn:8] on a cliff", "negative_prompt": "[fog:rain:2]", "enable_hr": True,
     "hr_scale": 1.5, "hr_upscaler": "Latent (bicubic antialiased)", "hr_second_pass_steps": 2, "denoising_strength": 0.55},
    # hr_prompt / hr_negative_prompt (with editing of their own) and the first pass's sampler.
    {"id": "hires-prompt-negative-dpmpp-2m", "sampler": "k_dpmpp_2m", "schedule": "automatic", "steps": 4, "seeds": [74],
     "hr_prompt": "a castle [on a hill:by the sea:1.5]", "hr_negative_prompt": "blur", "enable_hr": True, "hr_scale": 2.0,
     "hr_upscaler": "Latent", "denoising_strength": 0.6},
    # hr_sampler_name with hr_scheduler left to the first pass's name ("Automatic": the hires sampler's own default).
    {"id": "hires-sampler-euler-a-to-dpmpp-2m", "sampler": "k_euler_a", "schedule": "automatic", "steps": 4, "seeds": [75],
     "hr_sampler": "k_dpmpp_2m", "enable_hr": True, "hr_scale": 2.0, "hr_upscaler": "Latent", "hr_second_pass_steps": 3,
     "denoising_strength": 0.5},
    # hr_sampler_name and hr_scheduler both given, an ancestral sampler in the second pass only.
    {"id": "hires-sampler-schedule-dpmpp-2m-to-dpm2-a-exponential", "sampler": "k_dpmpp_2m", "schedule": "automatic", "steps": 3,
     "seeds": [76], "hr_sampler": "k_dpm_2_a", "hr_schedule": "exponential", "enable_hr": True, "hr_scale": 2.0,
     "hr_upscaler": "Latent (nearest-exact)", "hr_second_pass_steps": 3, "denoising_strength": 0.65},
    # The first pass's schedules of a second-order sampler span 2 x steps (a fraction and alternation there).
    {"id": "hires-first-pass-fraction-alternation-heun", "sampler": "k_heun", "schedule": "automatic", "steps": 3, "seeds": [77],
     "prompt": "a [lighthouse:castle:0.5] on a cliff", "negative_prompt": "[fog|rain]", "enable_hr": True, "hr_scale": 2.0,
     "hr_upscaler": "Latent", "hr_second_pass_steps": 2, "denoising_strength": 0.5},
]


def hires_prompts_main():
    out = []
    for case in HIRES_PROMPT_CASES:
        case = {"prompt": "a lighthouse on a cliff", "negative_prompt": "fog", "width": 64, "height": 64, "cfg_scale": 7.0, **case}
        out.append(run_hires_prompts_case(case))
    import gen_a1111_ddim_cfgpp as cfgpp
    json.dump({"format": "sd-trt-a1111-tiny-e2e/1", "provenance": {**cfgpp.PROVENANCE, "onnxruntime": ort.__version__},
               "randn_source": "CPU", "cases": out}, sys.stdout, separators=(",", ":"))


def main():
    out = []
    for case in CASES:
        case = {"prompt": "a lighthouse on a cliff", "negative_prompt": "fog", "width": 64, "height": 64, "cfg_scale": 7.0, **case}
        out.append(run_case(case))
    json.dump({"format": "sd-trt-a1111-tiny-e2e/1", "provenance": {**ref.PROVENANCE, "onnxruntime": ort.__version__},
               "randn_source": "CPU", "cases": out}, sys.stdout, separators=(",", ":"))


if __name__ == "__main__":
    if sys.argv[1:] == ["hires-prompts"]:
        hires_prompts_main()
    else:
        main()
