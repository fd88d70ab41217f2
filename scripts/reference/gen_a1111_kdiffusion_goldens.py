"""
Goldens for A1111's k-diffusion samplers on the analytic model of test/fixtures/goldens/schedulers.json.

Runs k-diffusion's own sampler functions and CompVisDenoiser (k_diffusion/sampling.py, external.py,
utils.py at crowsonkb/k-diffusion ab527a9a6d347f364e3d185ba6d714e22d80cb3c, the commit A1111 v1.10.1
pins in modules/launch_utils.py) and A1111's own modules/sd_schedulers.py and modules/rng.py, driven
the way A1111 v1.10.1's KDiffusionSampler drives them:

- sigmas: KDiffusionSampler.get_sigmas (sd_samplers_kdiffusion.py): one more step when the sampler
  has discard_next_to_last_sigma, "Automatic" = the sampler's own scheduler option (none = the
  model's uniform get_sigmas), sigma_min/max = model_wrap.sigmas[0]/[-1], then the penultimate
  sigma dropped. (Transcribed below in `a1111_get_sigmas`; it is a dozen lines of glue.)
- x = rng.next() * sigmas[0]; every later randn_like the sampler makes is rng.next()
  (sd_samplers_common.TorchHijack), with rng = modules.rng.ImageRNG(seeds=[seed]) and the
  "CPU" random source; eta_noise_seed_delta re-seeds the generator after the first draw.
- the model: CompVisDenoiser(inner) with inner.alphas_cumprod = ldm's SD 1.x table (float64
  cumprod of the linear-in-sqrt betas, stored as float32, as ldm's DDPM.register_schedule does) and
  inner.apply_model(inp, t) = the analytic model (t is the fractional timestep sigma_to_t gives).

Only import-time dependencies are stubbed (torchsde, torchdiffeq, tqdm, PIL, torchvision; A1111's
modules.shared / devices / rng_philox). Nothing upstream is modified.

Usage (from the repository root):
  KDIFFUSION=/path/to/k-diffusion-checkout A1111=/path/to/stable-diffusion-webui \
    python scripts/reference/gen_a1111_kdiffusion_goldens.py > test/fixtures/a1111/kdiffusion_goldens.json
  ... gen_a1111_kdiffusion_goldens.py image-rng > test/fixtures/a1111/image_rng.json
    (A1111's ImageRNG alone: variation seeds via its slerp, seed resize, ENSD; CPU source)
  ... gen_a1111_kdiffusion_goldens.py img2img > test/fixtures/a1111/kdiffusion_img2img.json
    (KDiffusionSampler.sample_img2img's step rule on the analytic model)
  ... gen_a1111_kdiffusion_goldens.py timesteps > test/fixtures/a1111/timesteps_goldens.json
    (A1111's own DDIM and PLMS, sd_samplers_timesteps_impl, txt2img and img2img, on the analytic model)

A1111 source used: stable-diffusion-webui v1.10.1 is 82a973c04367123ae98bd9abdf80d9eda9b910e2. The
two module files were taken from the file versions recorded in PROVENANCE below (the whole
repository could not be brought onto the machine that made the committed output); modules/rng.py
at that version is the v1.6+ ImageRNG, and modules/sd_schedulers.py is v1.10's list (its later
"Karras Exponential" entry was left out, it is not in v1.10.1).
Made with Python 3.11, torch 2.13.0+cpu, numpy 1.26.4, scipy 1.11.1.
"""
import importlib.util
import inspect
import json
import math
import os
import sys
import types

import numpy as np
import torch

PROVENANCE = {
    "k_diffusion": "crowsonkb/k-diffusion ab527a9a6d347f364e3d185ba6d714e22d80cb3c (k_diffusion/sampling.py, external.py, utils.py)",
    "a1111_sd_schedulers": "AUTOMATIC1111/stable-diffusion-webui modules/sd_schedulers.py, file version of commit 02b0092d5a8450b282bd7d9c2d84fdfed0f3c6db without the post-1.10 'Karras Exponential' entry",
    "a1111_rng": "AUTOMATIC1111/stable-diffusion-webui modules/rng.py, file version of commit 0d5dc9a6e7f6362e423a06bf0e75dd5854025394",
    "a1111_sd_samplers_timesteps_impl": "AUTOMATIC1111/stable-diffusion-webui modules/sd_samplers_timesteps_impl.py: ddim and plms, file version of commit 2035cbbd5d6e7678450c701fce1a5de7d8bd7084 (the code index's; its UniPC part left out). It broadcasts the per-step scalars over s_in ([B]), which runs for batch 1 only (later versions use s_x = ones(B, 1, 1, 1)); every golden here is batch 1, where the two are the same scalar",
    "a1111_sd_samplers_lcm": "AUTOMATIC1111/stable-diffusion-webui modules/sd_samplers_lcm.py (LCMCompVisDenoiser, sample_lcm), file version id 441641476 of the code index (not checked against an 82a973c checkout)",
    "a1111_sd_samplers_extra": "AUTOMATIC1111/stable-diffusion-webui modules/sd_samplers_extra.py: restart_sampler only, as two file versions in the code index agree on it (not checked against an 82a973c checkout)",
    "a1111_release": "v1.10.1 = 82a973c04367123ae98bd9abdf80d9eda9b910e2 (sampler table, get_sigmas, TorchHijack transcribed from it)",
    "python": sys.version.split()[0],
    "torch": torch.__version__,
    "numpy": np.__version__,
}

KDIFFUSION = os.environ["KDIFFUSION"]
A1111 = os.environ["A1111"]


def stub(name, **attrs):
    module = types.ModuleType(name)
    module.__dict__.update(attrs)
    sys.modules[name] = module
    return module


# --- import-time stubs (nothing here is called on the paths this script runs) ---
stub("torchsde")
stub("torchdiffeq", odeint=None)
# restart_sampler iterates tqdm.tqdm(step_list), the timestep samplers tqdm.trange: pass-throughs keep their loops as they are.
stub("tqdm", tqdm=lambda iterable=None, *args, **kwargs: iterable, trange=lambda *args, disable=None, **kwargs: range(*args))
class _Progress:
    def __init__(self, *args, **kwargs):
        pass

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        return False

    def update(self, *args):
        pass


stub("tqdm.auto", trange=lambda *a, disable=None, **k: range(*a), tqdm=_Progress)
stub("PIL", Image=None)
stub("torchvision")
stub("torchvision.transforms")
stub("torchvision.transforms.functional")
sys.modules["torchvision.transforms"].functional = sys.modules["torchvision.transforms.functional"]


def load(package, name, path):
    spec = importlib.util.spec_from_file_location(f"{package}.{name}", path)
    module = importlib.util.module_from_spec(spec)
    sys.modules[f"{package}.{name}"] = module
    setattr(sys.modules[package], name, module)
    spec.loader.exec_module(module)
    return module


# k_diffusion as a package of its three numeric modules (its __init__ imports training code).
kd = stub("k_diffusion")
kd.__path__ = [os.path.join(KDIFFUSION, "k_diffusion")]
load("k_diffusion", "utils", os.path.join(KDIFFUSION, "k_diffusion", "utils.py"))
sampling = load("k_diffusion", "sampling", os.path.join(KDIFFUSION, "k_diffusion", "sampling.py"))
external = load("k_diffusion", "external", os.path.join(KDIFFUSION, "k_diffusion", "external.py"))


class Opts:
    randn_source = "CPU"
    eta_noise_seed_delta = 0
    beta_dist_alpha = 0.6
    beta_dist_beta = 0.6


modules = stub("modules")
modules.__path__ = [os.path.join(A1111, "modules")]
shared = stub("modules.shared", opts=Opts(), device=torch.device("cpu"), sd_model=types.SimpleNamespace(is_sdxl=False, device=torch.device("cpu")))
devices = stub("modules.devices", cpu=torch.device("cpu"), device=torch.device("cpu"))
stub("modules.rng_philox")
modules.shared, modules.devices, modules.rng_philox = shared, devices, sys.modules["modules.rng_philox"]
sd_schedulers = load("modules", "sd_schedulers", os.path.join(A1111, "modules", "sd_schedulers.py"))
rng = load("modules", "rng", os.path.join(A1111, "modules", "rng.py"))
sd_samplers_extra = load("modules", "sd_samplers_extra", os.path.join(A1111, "modules", "sd_samplers_extra.py"))
sd_samplers_timesteps_impl = load("modules", "sd_samplers_timesteps_impl", os.path.join(A1111, "modules", "sd_samplers_timesteps_impl.py"))
# sd_samplers_lcm subclasses A1111's CFGDenoiser and KDiffusionSampler and lists itself as SamplerData at import
# time; only its LCMCompVisDenoiser and sample_lcm run here.
for name, attrs in {"sd_samplers_cfg_denoiser": {"CFGDenoiser": object}, "sd_samplers_kdiffusion": {"KDiffusionSampler": object},
                    "sd_samplers_common": {"SamplerData": lambda *args: None}}.items():
    setattr(modules, name, stub(f"modules.{name}", **attrs))
sd_samplers_lcm = load("modules", "sd_samplers_lcm", os.path.join(A1111, "modules", "sd_samplers_lcm.py"))

# A1111 v1.10.1 samplers_k_diffusion (label, funcname, options) for the samplers this file covers.
SAMPLERS = {
    "k_euler": ("Euler", "sample_euler", {}),
    "k_euler_a": ("Euler a", "sample_euler_ancestral", {"uses_ensd": True}),
    "k_lms": ("LMS", "sample_lms", {}),
    "k_heun": ("Heun", "sample_heun", {"second_order": True}),
    "k_dpm_2": ("DPM2", "sample_dpm_2", {"scheduler": "karras", "discard_next_to_last_sigma": True, "second_order": True}),
    "k_dpm_2_a": ("DPM2 a", "sample_dpm_2_ancestral", {"scheduler": "karras", "discard_next_to_last_sigma": True, "uses_ensd": True, "second_order": True}),
    "k_dpmpp_2s_a": ("DPM++ 2S a", "sample_dpmpp_2s_ancestral", {"scheduler": "karras", "uses_ensd": True, "second_order": True}),
    "k_dpmpp_2m": ("DPM++ 2M", "sample_dpmpp_2m", {"scheduler": "karras"}),
    "k_dpm_fast": ("DPM fast", "sample_dpm_fast", {"uses_ensd": True}),
    # sd_samplers_kdiffusion: ('Restart', sd_samplers_extra.restart_sampler, ['restart'], {'scheduler': 'karras', "second_order": True})
    "k_restart": ("Restart", "restart_sampler", {"scheduler": "karras", "second_order": True}),
    # sd_samplers_lcm: ('LCM', sample_lcm, ['k_lcm'], {}), run by LCMSampler with its LCMCompVisDenoiser
    "k_lcm": ("LCM", "sample_lcm", {}),
}
# LCM's denoiser maps sigma <-> t its own way, which the schedules that ask the inner model (uniform, sgm_uniform,
# simple, normal, ddim) would follow; sd-trt refuses those for LCM, so they get no goldens.
LCM_SCHEDULES = ["automatic", "karras", "exponential", "polyexponential", "kl_optimal", "align_your_steps"]


def sampler_function(funcname):
    """KDiffusionSampler's func: a k_diffusion.sampling function by name, or A1111's own (restart_sampler, sample_lcm)."""
    return getattr(sampling, funcname, None) or getattr(sd_samplers_extra, funcname, None) or getattr(sd_samplers_lcm, funcname)


def denoiser_for(key, inner, parameterization="eps"):
    """KDiffusionSampler's model_wrap: CompVis(V)Denoiser, or LCMSampler's LCMCompVisDenoiser."""
    if key == "k_lcm":
        return sd_samplers_lcm.LCMCompVisDenoiser(inner)
    return (external.CompVisVDenoiser if parameterization == "v" else external.CompVisDenoiser)(inner, quantize=False)
SCHEDULES = ["automatic", "uniform", "karras", "exponential", "polyexponential", "sgm_uniform", "kl_optimal",
             "align_your_steps", "simple", "normal", "ddim"]


def sd1_alphas_cumprod():
    # ldm DDPM.register_schedule with make_beta_schedule("linear", 1000, 0.00085, 0.012):
    # betas in float64 torch, cumprod in float64 numpy, registered as float32.
    betas = (torch.linspace(0.00085 ** 0.5, 0.012 ** 0.5, 1000, dtype=torch.float64) ** 2).numpy()
    alphas_cumprod = np.cumprod(1.0 - betas, axis=0)
    return torch.tensor(alphas_cumprod, dtype=torch.float32)


class AnalyticUNet:
    """The LatentDiffusion stand-in CompVisDenoiser wraps: alphas_cumprod + apply_model."""

    def __init__(self, dtype, log):
        self.alphas_cumprod = sd1_alphas_cumprod()
        self.device = torch.device("cpu")
        self.dtype = dtype
        self.log = log
        self.k = torch.arange(256, dtype=torch.float64).reshape(1, 4, 8, 8)

    def apply_model(self, inp, t, cond=None):
        tv = float(t.reshape(-1)[0])
        self.log.append({"t": tv, "t_dtype": str(t.dtype).replace("torch.", "")})
        c = math.cos(tv / 300)
        out = (0.3 * inp.to(torch.float64)) * c + 0.05 * torch.sin(tv / 50 + self.k)
        return out.to(self.dtype)


def a1111_get_sigmas(model_wrap, options, schedule, steps):
    """KDiffusionSampler.get_sigmas of A1111 v1.10.1 with default opts (no overrides of sigma min/max/rho)."""
    discard_next_to_last_sigma = options.get("discard_next_to_last_sigma", False)
    steps += 1 if discard_next_to_last_sigma else 0
    scheduler_name = schedule
    if scheduler_name == "automatic":
        scheduler_name = options.get("scheduler", None)
    scheduler = sd_schedulers.schedulers_map.get(scheduler_name)
    m_sigma_min, m_sigma_max = model_wrap.sigmas[0].item(), model_wrap.sigmas[-1].item()
    if scheduler is None or scheduler.function is None:
        sigmas = model_wrap.get_sigmas(steps)
    else:
        kwargs = {"sigma_min": m_sigma_min, "sigma_max": m_sigma_max}
        if scheduler.need_inner_model:
            kwargs["inner_model"] = model_wrap
        sigmas = scheduler.function(n=steps, **kwargs, device=torch.device("cpu"))
    if discard_next_to_last_sigma:
        sigmas = torch.cat([sigmas[:-2], sigmas[-1:]])
    return sigmas.cpu()


class TorchHijack:
    """sd_samplers_common.TorchHijack (v1.6+): k-diffusion's torch.randn_like is the image RNG's next()."""

    def __init__(self, image_rng, draws, step_of):
        self.rng = image_rng
        self.draws = draws
        self.step_of = step_of

    def __getattr__(self, item):
        if item == "randn_like":
            return self.randn_like
        if hasattr(torch, item):
            return getattr(torch, item)
        raise AttributeError(item)

    def randn_like(self, x):
        noise = self.rng.next()
        self.draws.append({"step": self.step_of(), "noise": noise})
        return noise


def f32(values):
    return [float(np.float32(v)) for v in values]


def vec(tensor, dtype):
    flat = tensor.reshape(-1).tolist()
    return f32(flat) if dtype == "float32" else flat


def run(key, schedule, steps, dtype, seed=7, ensd=0, extra=None, keep_draws=False, parameterization="eps"):
    label, funcname, options = SAMPLERS[key]
    torch_dtype = torch.float32 if dtype == "float32" else torch.float64
    model_log = []
    inner = AnalyticUNet(torch_dtype, model_log)
    # KDiffusionSampler: CompVisVDenoiser when sd_model.parameterization == "v".
    model_wrap = denoiser_for(key, inner, parameterization)
    sigmas = a1111_get_sigmas(model_wrap, options, schedule, steps)

    shared.opts.eta_noise_seed_delta = ensd
    image_rng = rng.ImageRNG((4, 8, 8), [seed])
    x = image_rng.next().to(torch_dtype)
    x = x * sigmas[0]
    x0 = x.clone()

    evals = []
    current = {"i": 0}
    draws = []
    sampling.torch = TorchHijack(image_rng, draws, lambda: current["i"])

    def model(xin, sigma, **kwargs):
        c_in = model_wrap.get_scalings(sigma)[-1]
        before = len(model_log)
        out = model_wrap(xin, sigma, **kwargs)
        assert len(model_log) == before + 1
        evals.append({"step": current["i"], "sigma": float(sigma.reshape(-1)[0]), "t": model_log[-1]["t"],
                      "c_in": float(c_in.reshape(-1)[0])})
        return out

    xs = []

    def callback(d):
        # k-diffusion calls back right after each step's first model call: that call starts step i.
        current["i"] = d["i"]
        evals[-1]["starts_step"] = d["i"]
        xs.append(vec(d["x"], dtype))

    func = sampler_function(funcname)
    kwargs = dict(extra or {})
    if funcname == "sample_dpm_fast":
        # KDiffusionSampler.sample: n = steps, sigma_min/max = the model's range, eta = opts.eta_ancestral.
        kwargs.setdefault("eta", 1.0)
        final = func(model, x, model_wrap.sigmas[0].item(), model_wrap.sigmas[-1].item(), steps, extra_args={"cond": None}, callback=callback, disable=True, **kwargs)
    else:
        final = func(model, x, sigmas, extra_args={"cond": None}, callback=callback, disable=True, **kwargs)
    sampling.torch = torch
    return {
        "id": f"{key}/{schedule}/{steps}/{dtype}" + (f"/ensd{ensd}" if ensd else "") + ("/v" if parameterization == "v" else "") + "".join(f"/{k}={v}" for k, v in (extra or {}).items()),
        "key": key,
        "sampler": label,
        "function": funcname,
        "options": options,
        "schedule": schedule,
        "steps": steps,
        "dtype": dtype,
        "seed": seed,
        "ensd": ensd,
        "extra": extra or {},
        "parameterization": parameterization,
        "sigmas": f32(sigmas.tolist()),
        "evals": [{"sigma": e["sigma"], "t": e["t"], "c_in": e["c_in"], "starts_step": e.get("starts_step")} for e in evals],
        # Every draw is rng.next() of the CPU source: tests regenerate them; a few runs keep them
        # to check that (the ENSD runs and the non-default seed).
        "draw_count": len(draws),
        "draws": [vec(d["noise"], "float32") for d in draws] if keep_draws else None,
        "x0": vec(x0, dtype),
        # x at the start of steps 1… (the callback's x), float32 runs only, to keep the file small.
        "x_at_step": xs[1:] if dtype == "float32" else None,
        "final": vec(final, dtype),
    }


def main():
    runs = []
    for key in SAMPLERS:
        if key == "k_dpm_fast":
            continue
        for schedule in LCM_SCHEDULES if key == "k_lcm" else SCHEDULES:
            for dtype in ("float32", "float64"):
                runs.append(run(key, schedule, 8, dtype))
        runs.append(run(key, "automatic", 20, "float32"))
    for key, extra in [("k_euler_a", {"eta": 0.5}), ("k_dpm_2_a", {"eta": 0.7, "s_noise": 0.9}),
                       ("k_dpmpp_2s_a", {"eta": 0.0}), ("k_euler", {"s_noise": 0.8}), ("k_dpm_2_a", {"eta": 0.0})]:
        runs.append(run(key, "automatic", 8, "float32", extra=extra))
    for key in ("k_euler_a", "k_dpm_2_a", "k_dpmpp_2s_a"):
        runs.append(run(key, "karras", 8, "float32", seed=1234, ensd=31337, keep_draws=True))
    runs.append(run("k_euler_a", "exponential", 8, "float32", keep_draws=True))
    # DPM fast takes n and the model's sigma range; the schedule only scales the start (sigmas[0]).
    for steps in (8, 9, 10, 2):
        for dtype in ("float32", "float64"):
            runs.append(run("k_dpm_fast", "automatic", steps, dtype))
    runs.append(run("k_dpm_fast", "karras", 7, "float32"))
    runs.append(run("k_dpm_fast", "automatic", 9, "float32", extra={"eta": 0.0}))
    runs.append(run("k_dpm_fast", "automatic", 9, "float32", seed=1234, ensd=31337, keep_draws=True))
    runs.append(run("k_lcm", "automatic", 4, "float32", seed=1234, ensd=31337, keep_draws=True))
    runs.append(run("k_lcm", "automatic", 1, "float64"))
    for key in [k for k in SAMPLERS if k not in ("k_dpm_fast", "k_lcm")]:
        runs.append(run(key, "automatic", 8, "float32", parameterization="v"))
        runs.append(run(key, "karras", 8, "float64", parameterization="v"))
    # Restart inserts its restart segments from 20 steps on (twice, steps // 4 long, from 36).
    for steps, schedule, dtype in [(36, "karras", "float32"), (40, "uniform", "float64"), (24, "exponential", "float64")]:
        runs.append(run("k_restart", schedule, steps, dtype))
    runs.append(run("k_restart", "karras", 20, "float32", seed=1234, ensd=31337, keep_draws=True))
    runs.append(run("k_euler", "align_your_steps", 11, "float32"))
    runs.append(run("k_dpmpp_2m", "karras", 1, "float32"))
    runs.append(run("k_heun", "exponential", 2, "float64"))

    probe = external.CompVisDenoiser(AnalyticUNet(torch.float32, []), quantize=False)
    doc = {
        "format": "sd-trt-a1111-kdiffusion-goldens/1",
        "provenance": PROVENANCE,
        "model": "out[k] = 0.3 * inp[k] * cos(t / 300) + 0.05 * sin(t / 50 + k), evaluated in float64, cast to the run dtype; "
                 "inp = c_in * x, t = CompVisDenoiser.sigma_to_t(sigma) (fractional, float32)",
        "alphas_cumprod": f32(sd1_alphas_cumprod().tolist()),
        "model_sigmas": f32(probe.sigmas.tolist()),
        "model_log_sigmas": f32(probe.log_sigmas.tolist()),
        "latent_shape": [1, 4, 8, 8],
        "runs": runs,
    }
    json.dump(doc, sys.stdout, separators=(",", ":"))


def setup_img2img_steps(steps, denoising_strength):
    """sd_samplers_common.setup_img2img_steps (A1111 v1.10.1) with opts.img2img_fix_steps off."""
    return steps, int(min(denoising_strength, 0.999) * steps)


def a1111_img2img_kwargs(func, sigma_sched):
    """KDiffusionSampler.sample_img2img (v1.10.1): what it passes the sampler besides the model and xi,
    chosen by the function's parameters; eta is initialize()'s opts.eta_ancestral (1)."""
    parameters = inspect.signature(func).parameters
    kwargs = {}
    if "sigma_min" in parameters:
        kwargs["sigma_min"] = sigma_sched[-2]  # the last sigma is 0, which DPM fast / adaptive refuse
    if "sigma_max" in parameters:
        kwargs["sigma_max"] = sigma_sched[0]
    if "n" in parameters:
        kwargs["n"] = len(sigma_sched) - 1
    if "sigma_sched" in parameters:
        kwargs["sigma_sched"] = sigma_sched
    if "sigmas" in parameters:
        kwargs["sigmas"] = sigma_sched
    if "eta" in parameters:
        kwargs["eta"] = 1.0
    return kwargs


def img2img_run(key, schedule, steps, strength, seed=7):
    """KDiffusionSampler.sample_img2img: sigma_sched = sigmas[steps - t_enc - 1:], xi = x + noise · sigma_sched[0]."""
    label, funcname, options = SAMPLERS[key]
    model_log = []
    inner = AnalyticUNet(torch.float32, model_log)
    model_wrap = denoiser_for(key, inner)
    steps, t_enc = setup_img2img_steps(steps, strength)
    sigmas = a1111_get_sigmas(model_wrap, options, schedule, steps)
    sigma_sched = sigmas[steps - t_enc - 1:]
    shared.opts.eta_noise_seed_delta = 0
    init_latent = (torch.randn([1, 4, 8, 8], generator=torch.Generator().manual_seed(99)) * 0.8).to(torch.float32)
    image_rng = rng.ImageRNG((4, 8, 8), [seed])
    noise = image_rng.next()
    xi = init_latent + noise * sigma_sched[0]
    sampling.torch = TorchHijack(image_rng, [], lambda: 0)
    func = sampler_function(funcname)
    final = func(lambda x, sigma, **kw: model_wrap(x, sigma, **kw), xi, extra_args={"cond": None}, disable=True,
                 **a1111_img2img_kwargs(func, sigma_sched))
    sampling.torch = torch
    return {
        "id": f"{key}/{schedule}/{steps}/strength{strength}", "key": key, "sampler": label, "schedule": schedule, "steps": steps,
        "strength": strength, "seed": seed, "t_enc": t_enc, "start_index": steps - t_enc - 1,
        "sigma_sched": f32(sigma_sched.tolist()), "init_latent": vec(init_latent, "float32"), "noise": vec(noise, "float32"),
        "evals": len(model_log), "final": vec(final, "float32"),
    }


def img2img_main():
    runs = []
    for key in SAMPLERS:
        runs.append(img2img_run(key, "automatic", 10, 0.6))
    runs += [img2img_run("k_dpm_2", "karras", 10, 0.35), img2img_run("k_lms", "exponential", 12, 0.5),
             img2img_run("k_dpmpp_2m", "karras", 10, 1.0), img2img_run("k_euler_a", "kl_optimal", 8, 0.75),
             img2img_run("k_heun", "uniform", 6, 0.05), img2img_run("k_dpmpp_2s_a", "sgm_uniform", 9, 0.999),
             # 0.58 · 50 = 28.999999999999996: int() gives t_enc = 28, not 29
             img2img_run("k_euler", "automatic", 50, 0.58), img2img_run("k_dpm_fast", "karras", 8, 0.5),
             img2img_run("k_restart", "automatic", 30, 0.8), img2img_run("k_lcm", "automatic", 8, 0.5)]
    json.dump({"format": "sd-trt-a1111-img2img/1", "provenance": PROVENANCE,
               "rule": "steps, t_enc = steps, int(min(strength, 0.999) * steps); sigma_sched = get_sigmas(steps)[steps - t_enc - 1:]; "
                       "x = init_latent + rng.next() * sigma_sched[0]; the sampler runs fresh on sigma_sched",
               "runs": runs}, sys.stdout, separators=(",", ":"))


def a1111_get_timesteps(steps):
    """CompVisSampler.get_timesteps (A1111 v1.10.1, opts.always_discard_next_to_last_sigma off)."""
    return torch.clip(torch.asarray(list(range(0, 1000, 1000 // steps)), device=torch.device("cpu")) + 1, 0, 999)


class TimestepsDenoiser:
    """What the timestep samplers are handed: CFGDenoiserTimesteps without guidance around
    CompVisTimestepsDenoiser (forward = inner_model.apply_model(input, timesteps)); they read
    model.inner_model.inner_model.alphas_cumprod."""

    def __init__(self, unet):
        self.inner_model = types.SimpleNamespace(inner_model=unet)

    def __call__(self, x, t, **kwargs):
        return self.inner_model.inner_model.apply_model(x, t)


TIMESTEP_SAMPLERS = {"a1111_ddim": ("DDIM", "ddim"), "a1111_plms": ("PLMS", "plms")}


def timesteps_run(key, steps, dtype, seed=7, eta=None, strength=None, denoiser=TimestepsDenoiser):
    """CompVisSampler.sample (txt2img: x = rng.next(), unscaled) or sample_img2img (strength given). `denoiser`
    wraps the model as the sampler sees it (gen_a1111_unipc_goldens.py passes A1111's v-prediction one)."""
    label, funcname = TIMESTEP_SAMPLERS[key]
    torch_dtype = torch.float32 if dtype == "float32" else torch.float64
    model_log = []
    unet = AnalyticUNet(torch_dtype, model_log)
    shared.opts.eta_noise_seed_delta = 0
    image_rng = rng.ImageRNG((4, 8, 8), [seed])
    noise = image_rng.next().to(torch_dtype)
    timesteps = a1111_get_timesteps(steps)
    out = {"id": f"{key}/{steps}/{dtype}" + (f"/eta={eta}" if eta is not None else "") + (f"/strength{strength}" if strength is not None else ""),
           "key": key, "sampler": label, "steps": steps, "dtype": dtype, "seed": seed, "eta": eta, "strength": strength,
           "timesteps": timesteps.tolist()}
    if strength is None:
        x = noise
    else:
        steps_, t_enc = setup_img2img_steps(steps, strength)
        timesteps_sched = timesteps[:t_enc]
        init_latent = (torch.randn([1, 4, 8, 8], generator=torch.Generator().manual_seed(99)) * 0.8).to(torch_dtype)
        alphas_cumprod = unet.alphas_cumprod
        sqrt_alpha_cumprod = torch.sqrt(alphas_cumprod[timesteps[t_enc]])
        sqrt_one_minus_alpha_cumprod = torch.sqrt(1 - alphas_cumprod[timesteps[t_enc]])
        x = init_latent * sqrt_alpha_cumprod + noise * sqrt_one_minus_alpha_cumprod
        timesteps = timesteps_sched
        out.update({"t_enc": t_enc, "init_latent": vec(init_latent, dtype), "signal": float(sqrt_alpha_cumprod), "noise_scale": float(sqrt_one_minus_alpha_cumprod)})
    x0 = x.clone()
    draws = []
    sampling.torch = TorchHijack(image_rng, draws, lambda: 0)
    func = getattr(sd_samplers_timesteps_impl, funcname)
    kwargs = {"eta": eta} if eta is not None else {}
    final = func(denoiser(unet), x, timesteps, extra_args={}, disable=True, **kwargs)
    sampling.torch = torch
    out.update({"evals": [e["t"] for e in model_log], "draw_count": len(draws), "x0": vec(x0, dtype), "noise": vec(noise, "float32"),
                "final": vec(final, dtype)})
    return out


def timesteps_main():
    runs = []
    for key in TIMESTEP_SAMPLERS:
        for steps in (2, 3, 7, 10, 20, 50):
            for dtype in ("float32", "float64"):
                runs.append(timesteps_run(key, steps, dtype))
        for steps, strength in ((10, 0.6), (20, 0.75), (7, 1.0), (50, 0.58)):
            runs.append(timesteps_run(key, steps, "float32", strength=strength))
    runs += [timesteps_run("a1111_ddim", 10, "float32", eta=0.5), timesteps_run("a1111_ddim", 12, "float64", eta=1.0, seed=1234)]
    json.dump({"format": "sd-trt-a1111-timesteps/1", "provenance": PROVENANCE,
               "rule": "txt2img: x = rng.next(); img2img: t_enc = int(min(strength, 0.999) * steps), x = init * sqrt(a[ts[t_enc]]) + noise * sqrt(1 - a[ts[t_enc]]), "
                       "the sampler runs ts[:t_enc]; ts = clip(range(0, 1000, 1000 // steps) + 1, 0, 999)",
               "runs": runs}, sys.stdout, separators=(",", ":"))


def image_rng_case(name, shape, seeds, subseeds=None, subseed_strength=0.0, resize_h=0, resize_w=0, ensd=0, nexts=2):
    shared.opts.eta_noise_seed_delta = ensd
    g = rng.ImageRNG(shape, seeds, subseeds=subseeds, subseed_strength=subseed_strength,
                     seed_resize_from_h=resize_h, seed_resize_from_w=resize_w)
    draws = [g.next() for _ in range(1 + nexts)]
    return {
        "name": name, "shape": list(shape), "seeds": seeds, "subseeds": subseeds, "subseed_strength": subseed_strength,
        "seed_resize_from_h": resize_h, "seed_resize_from_w": resize_w, "ensd": ensd,
        # draws[0] = first() (the initial latents), then next() calls; each [len(seeds), *shape].
        "draws": [f32(d.reshape(-1).tolist()) for d in draws],
    }


def image_rng_main():
    shape = (4, 8, 8)
    cases = [
        image_rng_case("plain", shape, [7, 8]),
        image_rng_case("ensd", shape, [7, 8], ensd=31337),
        image_rng_case("variation 0.3", shape, [7, 8], subseeds=[100, 101], subseed_strength=0.3),
        image_rng_case("variation 1", shape, [7, 8], subseeds=[100, 101], subseed_strength=1.0),
        image_rng_case("variation 0.05 + ensd", shape, [1234], subseeds=[4321], subseed_strength=0.05, ensd=31337),
        image_rng_case("variation, subseed = seed (the linear branch)", shape, [5], subseeds=[5], subseed_strength=0.6),
        image_rng_case("seed resize from 48x40 (smaller)", shape, [7, 8], resize_h=40, resize_w=48),
        image_rng_case("seed resize from 96x80 (larger)", shape, [7], resize_h=80, resize_w=96),
        image_rng_case("seed resize from 96x40 + variation + ensd", (4, 8, 6), [3, 4], subseeds=[9, 10], subseed_strength=0.5, resize_h=40, resize_w=96, ensd=7),
    ]
    json.dump({"format": "sd-trt-a1111-image-rng/1", "provenance": PROVENANCE, "randn_source": "CPU", "cases": cases},
              sys.stdout, separators=(",", ":"))


if __name__ == "__main__":
    if sys.argv[1:] == ["image-rng"]:
        image_rng_main()
    elif sys.argv[1:] == ["img2img"]:
        img2img_main()
    elif sys.argv[1:] == ["timesteps"]:
        timesteps_main()
    else:
        main()
