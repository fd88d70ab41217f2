"""
Goldens for A1111's own UniPC (sd-trt's `a1111_unipc`) and for hires fix / img2img with A1111's
timestep samplers (DDIM, PLMS, UniPC).

What runs: A1111 v1.10.1's own modules/sd_samplers_timesteps_impl.py `unipc` (its UniPCCFG subclass of
modules/models/diffusion/uni_pc/uni_pc.py's UniPC, NoiseScheduleVP('discrete', alphas_cumprod), the
multistep bh1 / bh2 / vary_coeff updates, the skip types, lower_order_final and the corrector skipped at
the last step) plus its `ddim` and `plms`, with the shared.opts values uni_pc_variant, uni_pc_skip_type,
uni_pc_order and uni_pc_lower_order_final set per run. The A1111 files come from the commit sd-trt
targets (82a973c, blob ids in PROVENANCE); gen_a1111_kdiffusion_goldens.py (imported as `ref`) supplies
the import-time stubs, A1111's ImageRNG and the analytic model, and gen_a1111_tiny_e2e.py (imported as
`e2e`) the tiny model, the CFG combine and the hires-fix glue. v-prediction runs go through A1111's own
CompVisTimestepsVDenoiser (modules/sd_samplers_timesteps.py, loaded whole). Stubs added here, import-time
only: uni_pc.py's `tqdm.tqdm(total=steps)` progress bar becomes a no-op context manager, and
sd_samplers_timesteps.py's base class `sd_samplers_common.Sampler` and `modules.script_callbacks` names
(neither runs here).

Driven as A1111's CompVisSampler drives them (transcribed from sd_samplers_timesteps.py):
- txt2img: x = rng.next() (unscaled); timesteps = clip(range(0, 1000, 1000 // steps) + 1, 0, 999), so
  UniPC runs len(timesteps) steps (8 for 7 requested);
- img2img: t_enc = int(min(strength, 0.999) * steps), x = init * sqrt(a[ts[t_enc]]) + noise * sqrt(1 - a[ts[t_enc]]),
  the sampler gets ts[:t_enc] (UniPC: is_img2img=True, t_start = ts[t_enc - 1] / 1000 + 1 / 1000);
- hires fix: sample_hr_pass's second pass is sample_img2img with steps given:
  steps' = int(steps / min(strength, 0.999)), t_enc = steps - 1, timesteps = get_timesteps(steps').

Usage (from the repository root):
  KDIFFUSION=/path/to/k-diffusion@ab527a9 A1111=/path/to/stable-diffusion-webui@82a973c \\
    python scripts/reference/gen_a1111_unipc_goldens.py > test/fixtures/a1111/unipc_goldens.json
  ... gen_a1111_unipc_goldens.py timesteps-v > test/fixtures/a1111/timesteps_v_goldens.json   (A1111's DDIM and PLMS
  on the analytic model read as v, through CompVisTimestepsVDenoiser; runs as gen_a1111_kdiffusion_goldens.py timesteps)
  ... gen_a1111_unipc_goldens.py tiny > test/fixtures/a1111/timesteps_tiny_e2e.json   (also hr_sampler_name cases:
  a k-diffusion first pass as gen_a1111_tiny_e2e.run_case runs it, then a timestep sampler's second pass)
Made with Python 3.11, torch 2.13.0+cpu, numpy, onnxruntime 1.30.0 (/tmp/dvenv).
"""
import inspect
import json
import os
import sys
import types

import torch

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
if sys.argv[1:] == ["tiny"]:
    # The tiny model's sessions, CFG combine, hires and img2img glue; it imports transformers before ref's stubs.
    import gen_a1111_tiny_e2e as e2e  # noqa: E402
import gen_a1111_kdiffusion_goldens as ref  # noqa: E402  (k-diffusion, A1111's modules, the stubs)

impl = ref.sd_samplers_timesteps_impl
uni_pc = impl.uni_pc


class _ProgressBar:
    """uni_pc.py's `with tqdm.tqdm(total=steps) as pbar: ... pbar.update()`, without the bar."""

    def __init__(self, *args, **kwargs):
        pass

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        return False

    def update(self, *args):
        pass


uni_pc.tqdm = types.SimpleNamespace(tqdm=_ProgressBar)

# modules/sd_samplers_timesteps.py for its CompVisTimestepsVDenoiser (v-prediction models): its import-time
# names from modules that do not run here (ref already stubs sd_samplers_common and sd_samplers_cfg_denoiser).
sys.modules["modules.sd_samplers_common"].Sampler = object
ref.modules.script_callbacks = ref.stub("modules.script_callbacks", ExtraNoiseParams=None, extra_noise_callback=None)
sd_samplers_timesteps = ref.load("modules", "sd_samplers_timesteps", os.path.join(ref.A1111, "modules", "sd_samplers_timesteps.py"))


class TimestepsVDenoiser:
    """What the timestep samplers are handed for a v model: CFGDenoiserTimesteps without guidance around
    A1111's CompVisTimestepsVDenoiser (eps from v with alphas_cumprod[t.to(int)])."""

    def __init__(self, unet):
        self.inner_model = sd_samplers_timesteps.CompVisTimestepsVDenoiser(unet)

    def __call__(self, x, t, **kwargs):
        return self.inner_model(x, t)

PROVENANCE = {
    **{k: v for k, v in ref.PROVENANCE.items() if not k.startswith("a1111_sd_samplers_")},
    "a1111": "AUTOMATIC1111/stable-diffusion-webui 82a973c04367123ae98bd9abdf80d9eda9b910e2 (v1.10.1): "
             "modules/sd_samplers_timesteps.py blob 81edd67d6e49465caff903133eeb61bc1ce32154 (CompVisTimestepsVDenoiser), "
             "modules/sd_samplers_timesteps_impl.py blob 180e43899887e5af50287831b6a44fa928ada41e, "
             "modules/models/diffusion/uni_pc/uni_pc.py blob 3333bc808d036f88b93ae1b248fd411bd01548c9, "
             "modules/models/diffusion/uni_pc/__init__.py blob dbb35964ce08f4d3e1b2f77d2a5359c87bf6f3fa, "
             "modules/models/diffusion/uni_pc/sampler.py blob 0a9defa108b8e61adb8665b031c9770158654714, "
             "modules/torch_utils.py blob 5ea3da094c597b8487876ec9d51d910ec720edb0; "
             "transcribed: sd_samplers_timesteps.py blob 81edd67d6e49465caff903133eeb61bc1ce32154 (CompVisSampler), "
             "shared_options.py blob 9f4520274b10f30742f36141d23d57b0104b9a84 (uni_pc_* defaults)",
}

DEFAULT_OPTIONS = {"uni_pc_variant": "bh1", "uni_pc_skip_type": "time_uniform", "uni_pc_order": 3, "uni_pc_lower_order_final": True}
TIMESTEP_FUNCTIONS = {"a1111_ddim": ("DDIM", "ddim"), "a1111_plms": ("PLMS", "plms"), "a1111_unipc": ("UniPC", "unipc")}


def set_unipc_options(options):
    for key, value in {**DEFAULT_OPTIONS, **options}.items():
        setattr(ref.shared.opts, key, value)


def eta_kwargs(case, func):
    """Sampler.initialize: p.eta reaches the sampler's function when it has an `eta` parameter (either pass)."""
    return {"eta": case["eta"]} if "eta" in case and "eta" in inspect.signature(func).parameters else {}


def run_timesteps_sampler(key, model, x, timesteps, is_img2img, callback=None, **kwargs):
    """Sampler.launch_sampling's call: func(model_wrap_cfg, x, timesteps=..., [is_img2img=True]) with a callback."""
    _label, funcname = TIMESTEP_FUNCTIONS[key]
    func = getattr(impl, funcname)
    if funcname == "unipc" and is_img2img:
        kwargs["is_img2img"] = True
    return func(model, x, timesteps, extra_args={}, callback=callback or (lambda d: None), disable=True, **kwargs)


def unipc_run(steps, dtype, options=None, seed=7, strength=None, parameterization="eps"):
    options = options or {}
    set_unipc_options(options)
    torch_dtype = torch.float32 if dtype == "float32" else torch.float64
    model_log = []
    unet = ref.AnalyticUNet(torch_dtype, model_log)
    ref.shared.opts.eta_noise_seed_delta = 0
    image_rng = ref.rng.ImageRNG((4, 8, 8), [seed])
    noise = image_rng.next().to(torch_dtype)
    timesteps = ref.a1111_get_timesteps(steps)
    suffix = "".join(f"/{k[len('uni_pc_'):]}={v}" for k, v in options.items())
    out = {"id": f"a1111_unipc/{steps}/{dtype}{suffix}" + (f"/strength{strength}" if strength is not None else "") + ("/v" if parameterization == "v" else ""),
           "key": "a1111_unipc", "steps": steps, "dtype": dtype, "seed": seed, "options": {**DEFAULT_OPTIONS, **options}, "parameterization": parameterization,
           "strength": strength, "timesteps": timesteps.tolist()}
    if strength is None:
        x = noise
    else:
        _steps, t_enc = ref.setup_img2img_steps(steps, strength)
        init_latent = (torch.randn([1, 4, 8, 8], generator=torch.Generator().manual_seed(99)) * 0.8).to(torch_dtype)
        a = unet.alphas_cumprod[timesteps[t_enc]]
        signal, noise_scale = torch.sqrt(a), torch.sqrt(1 - a)
        x = init_latent * signal + noise * noise_scale
        timesteps = timesteps[:t_enc]
        out.update({"t_enc": t_enc, "init_latent": ref.vec(init_latent, dtype), "signal": float(signal), "noise_scale": float(noise_scale)})
    x0 = x.clone()
    model = TimestepsVDenoiser(unet) if parameterization == "v" else ref.TimestepsDenoiser(unet)
    final = run_timesteps_sampler("a1111_unipc", model, x, timesteps, strength is not None)
    out.update({"evals": [e["t"] for e in model_log], "x0": ref.vec(x0, dtype), "noise": ref.vec(noise, "float32"),
                "final": ref.vec(final, dtype)})
    return out


def try_run(*args, **kwargs):
    """A1111 itself refuses some settings (uni_pc.py asserts steps >= order); those become refusal cases."""
    try:
        return unipc_run(*args, **kwargs)
    except AssertionError as error:
        steps, dtype = args[0], args[1]
        return {"id": f"refused/{steps}/{dtype}/{kwargs}", "steps": steps, "options": {**DEFAULT_OPTIONS, **(kwargs.get("options") or {})},
                "strength": kwargs.get("strength"), "refused": str(error)}


def analytic_main():
    runs = []
    for steps in (3, 5, 7, 10, 20, 50):
        runs.append(try_run(steps, "float32"))
    for options in ({"uni_pc_variant": "bh2"}, {"uni_pc_variant": "vary_coeff"}, {"uni_pc_skip_type": "time_quadratic"},
                    {"uni_pc_skip_type": "logSNR"}, {"uni_pc_order": 1}, {"uni_pc_order": 2}, {"uni_pc_order": 4},
                    {"uni_pc_lower_order_final": False}, {"uni_pc_variant": "bh2", "uni_pc_skip_type": "logSNR", "uni_pc_order": 2},
                    {"uni_pc_variant": "vary_coeff", "uni_pc_skip_type": "time_quadratic", "uni_pc_lower_order_final": False},
                    {"uni_pc_variant": "vary_coeff", "uni_pc_order": 4}, {"uni_pc_order": 5, "uni_pc_skip_type": "logSNR"}):
        runs.append(try_run(12, "float32", options=options))
    # float64 latents: from order 2 on A1111's UniPC mixes its float32 coefficients into torch.einsum with the
    # float64 latents, which torch refuses ("expected scalar type Double but found Float"); order 1 never calls einsum.
    for steps, options in ((10, {"uni_pc_order": 1}), (20, {"uni_pc_order": 1, "uni_pc_variant": "bh2"}),
                           (15, {"uni_pc_order": 1, "uni_pc_variant": "vary_coeff", "uni_pc_skip_type": "logSNR"}),
                           (8, {"uni_pc_order": 1, "uni_pc_skip_type": "time_quadratic", "uni_pc_lower_order_final": False})):
        runs.append(try_run(steps, "float64", options=options))
    for steps, strength, options in ((10, 0.6, {}), (20, 0.75, {}), (7, 1.0, {}), (50, 0.58, {}),
                                     (16, 0.5, {"uni_pc_variant": "bh2", "uni_pc_skip_type": "logSNR"}),
                                     (12, 0.9, {"uni_pc_variant": "vary_coeff", "uni_pc_skip_type": "time_quadratic", "uni_pc_order": 2})):
        runs.append(try_run(steps, "float32", options=options, strength=strength))
    # v-prediction models (CompVisTimestepsVDenoiser: the analytic model's output read as v).
    runs.append(try_run(10, "float32", parameterization="v"))
    runs.append(try_run(12, "float32", options={"uni_pc_variant": "vary_coeff", "uni_pc_skip_type": "logSNR"}, parameterization="v"))
    runs.append(try_run(20, "float32", strength=0.6, parameterization="v"))
    runs.append(try_run(9, "float64", options={"uni_pc_order": 1}, parameterization="v"))
    # A1111's assertion: fewer steps than the order.
    runs.append(try_run(2, "float32"))
    runs.append(try_run(10, "float32", strength=0.25))
    runs.append(try_run(6, "float32", options={"uni_pc_order": 7}))  # 6 requested steps run len(timesteps) = 7: allowed
    runs.append(try_run(6, "float32", options={"uni_pc_order": 8}))
    set_unipc_options({})
    json.dump({"format": "sd-trt-a1111-unipc/1", "provenance": PROVENANCE,
               "model": "the analytic model of gen_a1111_kdiffusion_goldens.py (t = UniPCCFG.get_model_input_time, fractional float32)",
               "rule": "txt2img: x = rng.next(), UniPC over len(ts) steps; img2img: t_enc = int(min(strength, 0.999) * steps), "
                       "x = init * sqrt(a[ts[t_enc]]) + noise * sqrt(1 - a[ts[t_enc]]), UniPC over ts[:t_enc] from t_start = ts[t_enc - 1] / 1000 + 0.001",
               "runs": runs}, sys.stdout, separators=(",", ":"))


def timesteps_v_main():
    """A1111's DDIM and PLMS on a v model: ref.timesteps_run (txt2img, img2img, eta) with CompVisTimestepsVDenoiser."""
    runs = []
    for key, steps, dtype, kwargs in (("a1111_ddim", 10, "float32", {}), ("a1111_ddim", 7, "float64", {}), ("a1111_ddim", 12, "float32", {"eta": 0.5, "seed": 1234}),
                                      ("a1111_ddim", 20, "float32", {"strength": 0.6}), ("a1111_plms", 10, "float32", {}), ("a1111_plms", 3, "float64", {}),
                                      ("a1111_plms", 20, "float64", {"strength": 0.75})):
        run = ref.timesteps_run(key, steps, dtype, denoiser=TimestepsVDenoiser, **kwargs)
        runs.append({**run, "id": run["id"] + "/v", "parameterization": "v"})
    json.dump({"format": "sd-trt-a1111-timesteps/1", "provenance": PROVENANCE,
               "model": "the analytic model of gen_a1111_kdiffusion_goldens.py, its output read as v (CompVisTimestepsVDenoiser: eps = sqrt(a[t]) v + sqrt(1 - a[t]) x)",
               "rule": "as timesteps_goldens.json: txt2img x = rng.next(); img2img t_enc = int(min(strength, 0.999) * steps), "
                       "x = init * sqrt(a[ts[t_enc]]) + noise * sqrt(1 - a[ts[t_enc]]), the sampler runs ts[:t_enc]",
               "runs": runs}, sys.stdout, separators=(",", ":"))


def timesteps_tiny_samples(case, image_rng, cond, uncond, b):
    """CompVisSampler.sample / sample_img2img (v1.10.1) on the tiny model, A1111's DDIM / PLMS / UniPC; or a
    k-diffusion first pass (KDiffusionSampler.sample, as gen_a1111_tiny_e2e.run_case) before a timestep sampler's
    hires pass (hr_sampler_name)."""
    key = case["sampler"]
    set_unipc_options(case.get("unipc", {}))
    unet = e2e.TinyUNet()
    model = e2e.TimestepsCFG(unet, cond, uncond, case["cfg_scale"])
    if key in ref.SAMPLERS:
        _label, funcname, options = ref.SAMPLERS[key]
        model_wrap = ref.denoiser_for(key, unet)
        sigmas = ref.a1111_get_sigmas(model_wrap, options, case.get("schedule", "automatic"), case["steps"])
        func = ref.sampler_function(funcname)
        denoiser = e2e.cfg_denoiser(model_wrap, cond, uncond, case["cfg_scale"])
        samples = func(denoiser, image_rng.next() * sigmas[0], sigmas, extra_args={}, disable=True, **eta_kwargs(case, func))
        return timesteps_hires_pass(case, unet, model, samples)
    noise = image_rng.next()
    timesteps = ref.a1111_get_timesteps(case["steps"])
    if case.get("img2img"):
        init_latent = e2e.img2img_init_latent(case, b)
        _steps, t_enc = ref.setup_img2img_steps(case["steps"], case["denoising_strength"])
        a = unet.alphas_cumprod[timesteps[t_enc]]
        x = init_latent * torch.sqrt(a) + noise * torch.sqrt(1 - a)
        timesteps = timesteps[:t_enc]
    else:
        x = noise
    # Sampler.initialize: eta = p.eta (else opts.eta_ddim = 0), passed where the function takes it.
    kwargs = eta_kwargs(case, getattr(impl, TIMESTEP_FUNCTIONS[key][1]))
    samples = run_timesteps_sampler(key, model, x, timesteps, bool(case.get("img2img")), **kwargs)
    if case.get("enable_hr"):
        samples = timesteps_hires_pass(case, unet, model, samples)
    return samples


def timesteps_hires_pass(case, unet, model, samples):
    """sample_hr_pass with a latent upscaler (as gen_a1111_tiny_e2e.hires_pass), then CompVisSampler.sample_img2img
    with steps given: steps' = int(steps / min(strength, 0.999)), t_enc = steps - 1, timesteps = get_timesteps(steps').
    The second pass's sampler is hr_sampler_name's (create_sampler), else the first pass's."""
    hr_key = case.get("hr_sampler") or case["sampler"]
    to_x, to_y, truncate_x, truncate_y = e2e.target_resolution(case)
    scale = e2e.LATENT_UPSCALE_MODES[case["hr_upscaler"]]
    samples = torch.nn.functional.interpolate(samples, size=(to_y // 8, to_x // 8), mode=scale["mode"], antialias=scale["antialias"])
    samples = samples[:, :, truncate_y // 2:samples.shape[2] - (truncate_y + 1) // 2, truncate_x // 2:samples.shape[3] - (truncate_x + 1) // 2]
    image_rng = ref.rng.ImageRNG(samples.shape[1:], case["seeds"], subseeds=case.get("subseeds"), subseed_strength=case.get("subseed_strength", 0.0))
    noise = image_rng.next()
    requested = case.get("hr_second_pass_steps") or case["steps"]
    strength = case["denoising_strength"]
    steps = int(requested / min(strength, 0.999))
    t_enc = requested - 1
    timesteps = ref.a1111_get_timesteps(steps)
    a = unet.alphas_cumprod[timesteps[t_enc]]
    xi = samples * torch.sqrt(a) + noise * torch.sqrt(1 - a)
    ref.sampling.torch = ref.TorchHijack(image_rng, [], lambda: 0)
    kwargs = eta_kwargs(case, getattr(impl, TIMESTEP_FUNCTIONS[hr_key][1]))
    return run_timesteps_sampler(hr_key, model, xi, timesteps[:t_enc], True, **kwargs)


def run_tiny_case(case):
    label = (ref.SAMPLERS.get(case["sampler"]) or TIMESTEP_FUNCTIONS[case["sampler"]])[0]
    ref.shared.opts.eta_noise_seed_delta = case.get("ensd", 0)
    b = len(case["seeds"])
    image_rng = ref.rng.ImageRNG((4, case["height"] // 8, case["width"] // 8), case["seeds"], subseeds=case.get("subseeds"),
                                 subseed_strength=case.get("subseed_strength", 0.0))
    ref.sampling.torch = ref.TorchHijack(image_rng, [], lambda: 0)
    cond = e2e.encode(case["prompt"]).repeat(b, 1, 1)
    uncond = e2e.encode(case["negative_prompt"]).repeat(b, 1, 1)
    samples = timesteps_tiny_samples(case, image_rng, cond, uncond, b)
    ref.sampling.torch = torch
    set_unipc_options({})
    return e2e.finish_case(case, label, samples, None)


TINY_CASES = [
    {"id": "unipc", "sampler": "a1111_unipc", "steps": 10, "seeds": [61]},
    {"id": "unipc-bh2-logsnr-order2-batch", "sampler": "a1111_unipc", "steps": 8, "seeds": [62, 63],
     "unipc": {"uni_pc_variant": "bh2", "uni_pc_skip_type": "logSNR", "uni_pc_order": 2}},
    {"id": "unipc-vary-coeff-quadratic-7-steps", "sampler": "a1111_unipc", "steps": 7, "seeds": [64],  # 7 steps run len(timesteps) = 8
     "unipc": {"uni_pc_variant": "vary_coeff", "uni_pc_skip_type": "time_quadratic", "uni_pc_lower_order_final": False}},
    {"id": "img2img-unipc", "img2img": True, "sampler": "a1111_unipc", "steps": 20, "seeds": [65], "denoising_strength": 0.6},
    {"id": "hires-ddim-eta-ensd", "sampler": "a1111_ddim", "steps": 6, "seeds": [66], "eta": 0.5, "ensd": 31337,
     "enable_hr": True, "hr_scale": 2.0, "hr_upscaler": "Latent", "denoising_strength": 0.6},
    {"id": "hires-plms-bicubic-aa", "sampler": "a1111_plms", "steps": 8, "seeds": [67],
     "enable_hr": True, "hr_scale": 1.5, "hr_upscaler": "Latent (bicubic antialiased)", "hr_second_pass_steps": 5, "denoising_strength": 0.5},
    {"id": "hires-unipc-nearest", "sampler": "a1111_unipc", "steps": 6, "seeds": [68],
     "enable_hr": True, "hr_scale": 2.0, "hr_upscaler": "Latent (nearest)", "hr_second_pass_steps": 5, "denoising_strength": 0.7},
    # hr_sampler_name: a timestep sampler's second pass after a k-diffusion first pass. UniPC reads its uni_pc_* options
    # whichever pass runs it; p.eta reaches DDIM's second pass though the first pass's sampler takes none.
    {"id": "hires-euler-to-unipc-bh2-order2", "sampler": "k_euler", "steps": 5, "seeds": [69], "hr_sampler": "a1111_unipc",
     "unipc": {"uni_pc_variant": "bh2", "uni_pc_order": 2}, "enable_hr": True, "hr_scale": 2.0, "hr_upscaler": "Latent",
     "hr_second_pass_steps": 4, "denoising_strength": 0.6},
    {"id": "hires-dpmpp-2m-to-ddim-eta", "sampler": "k_dpmpp_2m", "steps": 5, "seeds": [70], "hr_sampler": "a1111_ddim", "eta": 0.4,
     "enable_hr": True, "hr_scale": 1.5, "hr_upscaler": "Latent (bicubic antialiased)", "hr_second_pass_steps": 4, "denoising_strength": 0.55},
    {"id": "hires-euler-a-eta-to-plms", "sampler": "k_euler_a", "steps": 4, "seeds": [71], "hr_sampler": "a1111_plms", "eta": 0.7,
     "enable_hr": True, "hr_scale": 2.0, "hr_upscaler": "Latent (nearest-exact)", "hr_second_pass_steps": 3, "denoising_strength": 0.7},
]


def tiny_main():
    out = []
    for case in TINY_CASES:
        case = {"prompt": "a lighthouse on a cliff", "negative_prompt": "fog", "width": 64, "height": 64, "cfg_scale": 7.0, **case}
        out.append(run_tiny_case(case))
    json.dump({"format": "sd-trt-a1111-tiny-e2e/1", "provenance": {**PROVENANCE, "onnxruntime": e2e.ort.__version__},
               "randn_source": "CPU", "cases": out}, sys.stdout, separators=(",", ":"))


if __name__ == "__main__":
    if sys.argv[1:] == ["tiny"]:
        tiny_main()
    elif sys.argv[1:] == ["timesteps-v"]:
        timesteps_v_main()
    else:
        analytic_main()
