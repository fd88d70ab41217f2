"""
Goldens for A1111's "DDIM CFG++" (sd_samplers_timesteps_impl.ddim_cfgpp), run through A1111's own
CFGDenoiserTimesteps (modules/sd_samplers_timesteps.py, subclassing modules/sd_samplers_cfg_denoiser.py's
CFGDenoiser), because CFG++ works through that object: ddim_cfgpp sets `model.cond_scale_miltiplier = 1 / 12.5`
and `model.need_last_noise_uncond = True`, CFGDenoiser.forward then guides with cond_scale / 12.5 and keeps
`last_noise_uncond` (the uncond rows of its UNet output), and ddim_cfgpp renoises with that.

Two modes, both extending the existing A1111 generators (they import gen_a1111_kdiffusion_goldens.py and
gen_a1111_tiny_e2e.py for the stubs, k-diffusion's TorchHijack glue, ImageRNG, the analytic model and the tiny
model's ONNX sessions):

  analytic  the analytic model of test/fixtures/goldens/schedulers.json as the LatentDiffusion stand-in, its
            output for the empty (uncond) conditioning times 0.9 and for the prompt as is: the addon's analytic
            stand-in UNet with guidance (native/denoiser/analytic_model.h), so the native host path checks against
            these numbers directly. txt2img (fp32, fp64) and img2img, several CFG scales, eta.
            > test/fixtures/a1111/ddim_cfgpp_goldens.json
  tiny      models/tiny-sd's ONNX graphs (CLIP conditioning, UNet, VAE decoder) driven as A1111's txt2img and
            img2img drive them with DDIM CFG++, decoded with A1111's uint8 truncation.
            > test/fixtures/a1111/tiny_e2e_ddim_cfgpp.json

A1111 code that runs (82a973c04367123ae98bd9abdf80d9eda9b910e2 = v1.10.1, blob ids in PROVENANCE): ddim_cfgpp,
CFGDenoiser.forward / combine_denoised, CFGDenoiserTimesteps, CompVisTimestepsDenoiser, prompt_parser's
conditioning classes and reconstruct_cond_batch / reconstruct_multicond_batch, rng.ImageRNG. Stubbed (import-time
or UI-only): modules.script_callbacks (no callbacks registered: its param objects carry the tensors through
unchanged, as in A1111 without extensions), sd_samplers_common (apply_refiner → False, store_latent → no-op, the
Sampler base class), shared.state, the uni_pc import; shared.opts holds A1111's defaults for the options
CFGDenoiser reads (batch_cond_uncond True, pad_cond_uncond(_v0) False, skip_early_cond 0, s_min_uncond 0,
live_preview_content "Prompt"). CompVisSampler.sample / sample_img2img are transcribed in a few lines (they need
the whole processing object): x = rng.next() (txt2img) or the img2img noising at timesteps[t_enc]; eta as
Sampler.initialize passes it; image_cond = zeros [B, 5, 1, 1] (txt2img_image_conditioning of a non-inpainting
model; img2img_image_conditioning gives the same for SD 1.x).

Usage (from the repository root; lark from its wheel for prompt_parser):
  KDIFFUSION=/path/to/k-diffusion A1111=/path/to/a1111-82a973c PYTHONPATH=/path/to/lark \
    python scripts/reference/gen_a1111_ddim_cfgpp.py analytic > test/fixtures/a1111/ddim_cfgpp_goldens.json
  ... gen_a1111_ddim_cfgpp.py tiny > test/fixtures/a1111/tiny_e2e_ddim_cfgpp.json
Made with Python 3.11, torch 2.13.0+cpu, numpy, onnxruntime 1.30.0, transformers 5.18.0, lark 1.3.1.
"""
import json
import math
import os
import sys
import types

import numpy as np
import torch

from transformers import CLIPTokenizer  # noqa: F401  (the tiny mode's tokenizer, imported before the stubs below replace tqdm)

# The 82a973c sd_samplers_timesteps_impl imports A1111's UniPC port at import time; it is not used here.
for name in ("modules.models", "modules.models.diffusion"):
    sys.modules[name] = types.ModuleType(name)
sys.modules["modules.models.diffusion.uni_pc"] = types.ModuleType("modules.models.diffusion.uni_pc")
# UniPCCFG subclasses uni_pc.UniPC at import time.
sys.modules["modules.models.diffusion.uni_pc"].uni_pc = types.SimpleNamespace(UniPC=object)

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import gen_a1111_kdiffusion_goldens as ref  # noqa: E402  (k-diffusion, A1111's rng/timesteps_impl, stubs)

A1111 = ref.A1111
PROVENANCE = {
    **{k: v for k, v in ref.PROVENANCE.items() if k in ("k_diffusion", "python", "torch", "numpy")},
    "a1111": "AUTOMATIC1111/stable-diffusion-webui 82a973c04367123ae98bd9abdf80d9eda9b910e2 (v1.10.1), files as blobs: "
             "modules/sd_samplers_timesteps_impl.py 180e43899887e5af50287831b6a44fa928ada41e, "
             "modules/sd_samplers_cfg_denoiser.py b6fbf33724380aee15295f9066d1073b85b51049, "
             "modules/sd_samplers_timesteps.py 81edd67d6e49465caff903133eeb61bc1ce32154, "
             "modules/prompt_parser.py 4e393d2866f6bc93a527d5eb6827a1613ca08097, "
             "modules/torch_utils.py 5ea3da094c597b8487876ec9d51d910ec720edb0, modules/rng.py 5390d1bb73e342a749dcd5e1281fb5b7e8a2106a",
}

# --- A1111's CFG denoiser, with the stubs it needs ---
shared = ref.shared
for key, value in {"skip_early_cond": 0.0, "s_min_uncond_all": False, "pad_cond_uncond": False, "pad_cond_uncond_v0": False,
                   "batch_cond_uncond": True, "live_preview_content": "Prompt", "always_discard_next_to_last_sigma": False,
                   "img2img_extra_noise": 0.0, "eta_ddim": 0.0}.items():
    setattr(shared.opts, key, value)
shared.state = types.SimpleNamespace(interrupted=False, skipped=False, sampling_step=0, sampling_steps=0)


class _Carried:
    """script_callbacks' CFGDenoisedParams / AfterCFGCallbackParams: the tensor as given (no script registered)."""

    def __init__(self, x, *rest):
        self.x = x


class _DenoiserParams:
    """script_callbacks.CFGDenoiserParams, read back unchanged by CFGDenoiser.forward."""

    def __init__(self, x, image_cond, sigma, sampling_step, total_sampling_steps, text_cond, text_uncond, denoiser=None):
        self.x, self.image_cond, self.sigma, self.text_cond, self.text_uncond = x, image_cond, sigma, text_cond, text_uncond


ref.stub("modules.script_callbacks", CFGDenoiserParams=_DenoiserParams, cfg_denoiser_callback=lambda params: None,
         CFGDenoisedParams=_Carried, cfg_denoised_callback=lambda params: None,
         AfterCFGCallbackParams=_Carried, cfg_after_cfg_callback=lambda params: None,
         ExtraNoiseParams=_Carried, extra_noise_callback=lambda params: None)
common = sys.modules["modules.sd_samplers_common"]
common.InterruptedException = type("InterruptedException", (BaseException,), {})
common.apply_refiner = lambda denoiser, sigma: False
common.store_latent = lambda latent: None
common.Sampler = object
ref.modules.script_callbacks = sys.modules["modules.script_callbacks"]
prompt_parser = ref.load("modules", "prompt_parser", os.path.join(A1111, "modules", "prompt_parser.py"))
cfg_denoiser = ref.load("modules", "sd_samplers_cfg_denoiser", os.path.join(A1111, "modules", "sd_samplers_cfg_denoiser.py"))
sd_samplers_timesteps = ref.load("modules", "sd_samplers_timesteps", os.path.join(A1111, "modules", "sd_samplers_timesteps.py"))
ddim_cfgpp = ref.sd_samplers_timesteps_impl.ddim_cfgpp
assert ref.sd_samplers_timesteps_impl.ddim_cfgpp.__module__ == "modules.sd_samplers_timesteps_impl"


def conditioning(per_image_conds, steps):
    """What processing hands the sampler: a MulticondLearnedConditioning (one prompt per image, weight 1) and
    the uncond as a list of ScheduledPromptConditioning schedules (no prompt editing: one entry, end_at_step = steps)."""
    cond = prompt_parser.MulticondLearnedConditioning(shape=(len(per_image_conds),), batch=[
        [prompt_parser.ComposableScheduledPromptConditioning([prompt_parser.ScheduledPromptConditioning(steps, c)])]
        for c, _ in per_image_conds])
    uncond = [[prompt_parser.ScheduledPromptConditioning(steps, u)] for _, u in per_image_conds]
    return cond, uncond


def sample_cfgpp(sd_model, x, timesteps, cond, uncond, cfg_scale, eta):
    """CompVisSampler.sample's call of ddim_cfgpp: model_wrap_cfg = CFGDenoiserTimesteps(sampler), after
    Sampler.initialize (step 0, no mask), sampler_extra_args as sample() builds them."""
    shared.sd_model = sd_model
    sampler = types.SimpleNamespace(last_latent=x, sampler_extra_args=None)
    denoiser = sd_samplers_timesteps.CFGDenoiserTimesteps(sampler)
    denoiser.p = types.SimpleNamespace(extra_generation_params={})
    denoiser.step = 0
    denoiser.total_steps = len(timesteps)
    image_cond = x.new_zeros(x.shape[0], 5, 1, 1)
    sampler.sampler_extra_args = {"cond": cond, "image_cond": image_cond, "uncond": uncond, "cond_scale": cfg_scale, "s_min_uncond": 0.0}
    out = ddim_cfgpp(denoiser, x, timesteps, extra_args=sampler.sampler_extra_args, disable=True, eta=eta)
    # What made this CFG++: the multiplier ddim_cfgpp set and the uncond it read.
    assert denoiser.cond_scale_miltiplier == 1 / 12.5 and denoiser.last_noise_uncond is not None
    return out


class AnalyticCondModel(ref.AnalyticUNet):
    """The analytic model, conditioned: rows whose c_crossattn is the empty prompt (0) return 0.9 · out, rows with the
    prompt (1) out, computed in float64 and cast (native/denoiser/analytic_model.h's stand-in with guidance)."""

    parameterization = "eps"
    cond_stage_key = "crossattn"
    model = types.SimpleNamespace(conditioning_key="crossattn")

    def apply_model(self, inp, t, cond=None):
        assert bool((t == t.reshape(-1)[0]).all())
        tv = float(t.reshape(-1)[0])
        self.log.append({"t": tv, "rows": inp.shape[0]})
        out = (0.3 * inp.to(torch.float64)) * math.cos(tv / 300) + 0.05 * torch.sin(tv / 50 + self.k)
        prompt = cond["c_crossattn"][0].to(torch.float64).reshape(inp.shape[0], -1)[:, 0]
        factor = torch.where(prompt == 0, 0.9, 1.0).reshape(-1, 1, 1, 1)
        return (out * factor).to(self.dtype)


def analytic_run(steps, dtype, cfg_scale, seed=7, eta=None, strength=None, parameterization="eps"):
    torch_dtype = torch.float32 if dtype == "float32" else torch.float64
    log = []
    model = AnalyticCondModel(torch_dtype, log)
    # A v model: CFGDenoiserTimesteps wraps it in A1111's CompVisTimestepsVDenoiser (shared.sd_model.parameterization == "v").
    model.parameterization = parameterization
    shared.opts.eta_noise_seed_delta = 0
    image_rng = ref.rng.ImageRNG((4, 8, 8), [seed])
    noise = image_rng.next().to(torch_dtype)
    timesteps = ref.a1111_get_timesteps(steps)
    out = {"id": f"a1111_ddim_cfgpp/{steps}/{dtype}/cfg={cfg_scale}" + (f"/eta={eta}" if eta is not None else "") + (f"/strength{strength}" if strength is not None else "") + ("/v" if parameterization == "v" else ""),
           "steps": steps, "dtype": dtype, "seed": seed, "cfg_scale": cfg_scale, "eta": eta, "strength": strength, "timesteps": timesteps.tolist()}
    if parameterization == "v":
        out["parameterization"] = "v"
    if strength is None:
        x = noise
    else:
        # CompVisSampler.sample_img2img (as gen_a1111_kdiffusion_goldens.timesteps_run).
        _, t_enc = ref.setup_img2img_steps(steps, strength)
        init_latent = (torch.randn([1, 4, 8, 8], generator=torch.Generator().manual_seed(99)) * 0.8).to(torch_dtype)
        sqrt_alpha = torch.sqrt(model.alphas_cumprod[timesteps[t_enc]])
        sqrt_one_minus_alpha = torch.sqrt(1 - model.alphas_cumprod[timesteps[t_enc]])
        x = init_latent * sqrt_alpha + noise * sqrt_one_minus_alpha
        timesteps = timesteps[:t_enc]
        out.update({"t_enc": t_enc, "init_latent": ref.vec(init_latent, dtype), "signal": float(sqrt_alpha), "noise_scale": float(sqrt_one_minus_alpha)})
    x0 = x.clone()
    draws = []
    ref.sampling.torch = ref.TorchHijack(image_rng, draws, lambda: 0)
    cond, uncond = conditioning([(torch.ones(1, 1, dtype=torch_dtype), torch.zeros(1, 1, dtype=torch_dtype))], steps)
    final = sample_cfgpp(model, x, timesteps, cond, uncond, cfg_scale, 0.0 if eta is None else eta)
    ref.sampling.torch = torch
    assert all(e["rows"] == 2 for e in log)  # one call on [cond; uncond] each evaluation
    out.update({"evals": [e["t"] for e in log], "draw_count": len(draws), "x0": ref.vec(x0, dtype), "noise": ref.vec(noise, "float32"),
                "final": ref.vec(final, dtype)})
    return out


def analytic_main():
    runs = []
    for steps in (2, 3, 10, 20, 50):
        for dtype in ("float32", "float64"):
            runs.append(analytic_run(steps, dtype, 7.5))
    runs += [analytic_run(10, "float32", 1.0), analytic_run(10, "float64", 12.5), analytic_run(12, "float32", 3.0, eta=0.5, seed=1234),
             analytic_run(10, "float32", 7.5, strength=0.6), analytic_run(20, "float64", 5.0, strength=0.75)]
    # v-prediction models (the analytic model's output read as v).
    runs += [analytic_run(10, "float32", 7.5, parameterization="v"), analytic_run(12, "float64", 3.0, eta=0.5, seed=1234, parameterization="v"),
             analytic_run(20, "float32", 5.0, strength=0.6, parameterization="v")]
    json.dump({"format": "sd-trt-a1111-ddim-cfgpp/1", "provenance": PROVENANCE,
               "model": "the analytic model of schedulers.json; the uncond rows (empty conditioning) return 0.9 times it",
               "rule": "A1111's CFGDenoiserTimesteps + ddim_cfgpp; txt2img: x = rng.next(); img2img: t_enc = int(min(strength, 0.999) * steps), "
                       "x = init * sqrt(a[ts[t_enc]]) + noise * sqrt(1 - a[ts[t_enc]]), the sampler runs ts[:t_enc]",
               "runs": runs}, sys.stdout, separators=(",", ":"))


def tiny_case(case):
    import gen_a1111_tiny_e2e as tiny  # loads the tiny model's ONNX sessions

    class TinyCondModel(tiny.TinyUNet):
        parameterization = "eps"
        cond_stage_key = "crossattn"
        model = types.SimpleNamespace(conditioning_key="crossattn")

        def apply_model(self, x, t, cond):
            return super().apply_model(x, t, cond["c_crossattn"][0])

    b = len(case["seeds"])
    shared.opts.eta_noise_seed_delta = case.get("ensd", 0)
    image_rng = ref.rng.ImageRNG((4, case["height"] // 8, case["width"] // 8), case["seeds"])
    ref.sampling.torch = ref.TorchHijack(image_rng, [], lambda: 0)
    steps = case["steps"]
    c, u = tiny.encode(case["prompt"])[0], tiny.encode(case["negative_prompt"])[0]
    cond, uncond = conditioning([(c, u)] * b, steps)
    model = TinyCondModel()
    noise = image_rng.next()
    timesteps = ref.a1111_get_timesteps(steps)
    if case.get("img2img"):
        init_latent = tiny.img2img_init_latent(case, b)
        _, t_enc = ref.setup_img2img_steps(steps, case["denoising_strength"])
        x = init_latent * torch.sqrt(model.alphas_cumprod[timesteps[t_enc]]) + noise * torch.sqrt(1 - model.alphas_cumprod[timesteps[t_enc]])
        timesteps = timesteps[:t_enc]
    else:
        x = noise
    samples = sample_cfgpp(model, x, timesteps, cond, uncond, case["cfg_scale"], case.get("eta", 0.0))
    ref.sampling.torch = torch
    return tiny.finish_case(case, "DDIM CFG++", samples, None), tiny.ort.__version__


TINY_CASES = [
    {"id": "ddim-cfgpp-batch", "steps": 10, "seeds": [61, 62], "cfg_scale": 7.0},
    {"id": "ddim-cfgpp-cfg-1", "steps": 8, "seeds": [63], "cfg_scale": 1.0},
    {"id": "ddim-cfgpp-eta", "steps": 8, "seeds": [64], "cfg_scale": 5.0, "eta": 0.5},
    {"id": "img2img-ddim-cfgpp", "img2img": True, "steps": 12, "seeds": [65], "cfg_scale": 7.0, "denoising_strength": 0.6},
]


def tiny_main():
    out = []
    ort_version = None
    for case in TINY_CASES:
        case = {"prompt": "a lighthouse on a cliff", "negative_prompt": "fog", "width": 64, "height": 64, "sampler": "a1111_ddim_cfgpp", **case}
        result, ort_version = tiny_case(case)
        out.append(result)
    json.dump({"format": "sd-trt-a1111-tiny-e2e/1", "provenance": {**PROVENANCE, "onnxruntime": ort_version}, "randn_source": "CPU", "cases": out},
              sys.stdout, separators=(",", ":"))


if __name__ == "__main__":
    if sys.argv[1:] == ["analytic"]:
        analytic_main()
    elif sys.argv[1:] == ["tiny"]:
        tiny_main()
    else:
        sys.exit("usage: gen_a1111_ddim_cfgpp.py analytic|tiny")
