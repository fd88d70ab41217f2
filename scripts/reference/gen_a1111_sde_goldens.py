"""
Goldens for A1111's SDE samplers (DPM++ SDE, DPM++ 2M SDE, DPM++ 2M SDE Heun, DPM++ 3M SDE) on the
analytic model of test/fixtures/goldens/schedulers.json, and for their Brownian noise itself.

What runs, unmodified:
- k-diffusion's own sample_dpmpp_sde / sample_dpmpp_2m_sde / sample_dpmpp_3m_sde and its
  BrownianTreeNoiseSampler / BatchedBrownianTree (k_diffusion/sampling.py at crowsonkb/k-diffusion
  ab527a9a6d347f364e3d185ba6d714e22d80cb3c, the commit A1111 v1.10.1 pins), on top of
- torchsde 0.2.6 (google-research/torchsde tag v0.2.6 = 5a63002b0767f629c9bc09e9965a50bf3d583ef8, the
  version A1111 v1.10.1's requirements_versions.txt pins): torchsde.BrownianTree, BrownianInterval,
  numpy's SeedSequence;
- A1111 v1.10.1 (82a973c04367123ae98bd9abdf80d9eda9b910e2) code, executed from its files:
  sd_samplers_common.replace_torchsde_browinan (the patch that makes torchsde's _randn A1111's
  devices.randn_local), Sampler.create_noise_sampler (sigma_min/max from the full sigmas, one seed per
  image: p.all_seeds of the iteration), modules/rng.py (randn_local, ImageRNG), modules/rng_philox.py
  (the "NV" source). The sampler table entries (options scheduler, brownian_noise, solver_type,
  discard_next_to_last_sigma) and KDiffusionSampler.sample's kwargs are transcribed below.
Everything else (the analytic model, get_sigmas, the import stubs) is gen_a1111_kdiffusion_goldens.py's,
imported from it.

`trampoline` (torchsde's one control-flow dependency, PyPI trampoline 0.1.2) is not installable on the
machine that made the committed output; TRAMPOLINE below is a minimal module with its semantics
(a generator yielding a generator calls it and receives its return value; raising TailCall(gen)
replaces the running generator by gen; trampoline(gen) runs gen to its return value). It only
orders torchsde's tree search; no number passes through it.

Usage (from the repository root):
  TORCHSDE=/path/to/torchsde-0.2.6-checkout KDIFFUSION=/path/to/k-diffusion-ab527a9 A1111=/path/to/webui-82a973c \
    python scripts/reference/gen_a1111_sde_goldens.py > test/fixtures/a1111/sde_goldens.json
  ... gen_a1111_sde_goldens.py tiny-e2e > test/fixtures/a1111/sde_tiny_e2e.json
    (end to end on models/tiny-sd: gen_a1111_tiny_e2e.py's ONNX model, prompts, CFG and decode, with the SDE samplers)
Made with Python 3.11, torch 2.13.0+cpu, numpy 2.4.6 (SeedSequence is stream-compatible since numpy 1.19;
A1111 pins 1.26.2), scipy 1.17.1.
"""
import ast
import base64
import os
import sys
import types

import numpy as np
import torch

# --- trampoline 0.1.2's semantics (see the docstring) ---
TRAMPOLINE = types.ModuleType("trampoline")


class TailCall(BaseException):
    def __init__(self, call):
        super().__init__()
        self.call = call


def trampoline(generator):
    stack = [generator]
    value = None
    while True:
        try:
            result = stack[-1].send(value)
        except TailCall as tail:
            stack[-1] = tail.call
            value = None
            continue
        except StopIteration as stop:
            stack.pop()
            if not stack:
                return stop.value
            value = stop.value
            continue
        stack.append(result)
        value = None


TRAMPOLINE.TailCall = TailCall
TRAMPOLINE.trampoline = trampoline
sys.modules["trampoline"] = TRAMPOLINE

if sys.argv[1:] == ["tiny-e2e"]:
    from transformers import CLIPTokenizer  # noqa: F401  (before the stubs of gen_a1111_kdiffusion_goldens replace tqdm)

sys.path.insert(0, os.environ["TORCHSDE"])
import torchsde  # noqa: E402
import torchsde._brownian.brownian_interval  # noqa: E402

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import gen_a1111_kdiffusion_goldens as base  # noqa: E402  (stubs torchsde at import: the real one is put back)

sys.modules["torchsde"] = torchsde
base.sampling.torchsde = torchsde
A1111 = os.environ["A1111"]
rng_philox = base.load("modules", "rng_philox", os.path.join(A1111, "modules", "rng_philox.py"))
base.rng.rng_philox = rng_philox

PROVENANCE = {
    **{k: v for k, v in base.PROVENANCE.items() if k in ("k_diffusion", "a1111_sd_schedulers", "python", "torch")},
    "numpy": np.__version__,
    "torchsde": "google-research/torchsde v0.2.6 = 5a63002b0767f629c9bc09e9965a50bf3d583ef8 (torchsde/_brownian/brownian_interval.py, derived.py)",
    "trampoline": "a minimal module with trampoline 0.1.2's semantics (not installable here); control flow only",
    "a1111": "stable-diffusion-webui 82a973c04367123ae98bd9abdf80d9eda9b910e2 (v1.10.1): modules/rng.py, modules/rng_philox.py, "
             "sd_samplers_common.py replace_torchsde_browinan + Sampler.create_noise_sampler executed from the files",
    "a1111_rng_note": "modules/rng.py here is 82a973c's (randn_local, ImageRNG); the analytic-model runs draw x with its ImageRNG",
}


def a1111_function(relpath, name, namespace, cls=None):
    """One function of an A1111 module, compiled from the file and run with the names it uses."""
    path = os.path.join(A1111, relpath)
    tree = ast.parse(open(path, encoding="utf8").read())
    body = tree.body
    if cls is not None:
        body = next(n for n in body if isinstance(n, ast.ClassDef) and n.name == cls).body
    node = next(n for n in body if isinstance(n, ast.FunctionDef) and n.name == name)
    module = ast.Module(body=[node], type_ignores=[])
    exec(compile(module, path, "exec"), namespace)
    return namespace[name]


# modules/sd_samplers_common.py: replace_torchsde_browinan() runs at import; here it runs once, the same way.
a1111_function("modules/sd_samplers_common.py", "replace_torchsde_browinan", {"devices": base.devices})()
base.shared.opts.no_dpmpp_sde_batch_determinism = False
create_noise_sampler = a1111_function("modules/sd_samplers_common.py", "create_noise_sampler", {"shared": base.shared}, cls="Sampler")

# A1111 v1.10.1 samplers_k_diffusion entries.
SAMPLERS = {
    "k_dpmpp_sde": ("DPM++ SDE", "sample_dpmpp_sde", {"scheduler": "karras", "second_order": True, "brownian_noise": True}),
    "k_dpmpp_2m_sde": ("DPM++ 2M SDE", "sample_dpmpp_2m_sde", {"scheduler": "exponential", "brownian_noise": True}),
    "k_dpmpp_2m_sde_heun": ("DPM++ 2M SDE Heun", "sample_dpmpp_2m_sde", {"scheduler": "exponential", "brownian_noise": True, "solver_type": "heun"}),
    "k_dpmpp_3m_sde": ("DPM++ 3M SDE", "sample_dpmpp_3m_sde", {"scheduler": "exponential", "discard_next_to_last_sigma": True, "brownian_noise": True}),
}


def f32_b64(tensor):
    return base64.b64encode(tensor.detach().to(torch.float32).contiguous().numpy().astype("<f4").tobytes()).decode("ascii")


class RecordingNoiseSampler:
    """Passes every call through to A1111's noise sampler and keeps its arguments and result."""

    def __init__(self, inner):
        self.inner = inner
        self.calls = []

    def __call__(self, sigma, sigma_next):
        out = self.inner(sigma, sigma_next)
        self.calls.append(noise_call(self.inner, sigma, sigma_next, out))
        return out


def noise_call(sampler, sigma, sigma_next, out):
    """One BrownianTreeNoiseSampler call: out = tree(t0, t1) / (t1 - t0).abs().sqrt() (its __call__), with the
    two parts kept apart: torch's CPU float32 sqrt goes through MKL here and is not always correctly rounded."""
    t0, t1 = sampler.transform(torch.as_tensor(sigma)), sampler.transform(torch.as_tensor(sigma_next))
    increment = sampler.tree(t0, t1)
    divisor = (t1 - t0).abs().sqrt()
    # The result itself is increment / divisor exactly (checked), so only the two parts are kept.
    assert torch.equal(out, increment / divisor)
    return {"sigma": float(t0), "sigma_next": float(t1), "sigma_dtype": str(t0.dtype).replace("torch.", ""),
            "increment": f32_b64(increment), "divisor": float(divisor)}


def run(key, schedule, steps, dtype, seeds=(7, 1000), source="CPU", extra=None, keep_noise=False, parameterization="eps",
        strength=None, iteration=0):
    """KDiffusionSampler.sample (txt2img) or sample_img2img (strength given) for one batch of len(seeds) images."""
    label, funcname, options = SAMPLERS[key]
    torch_dtype = torch.float32 if dtype == "float32" else torch.float64
    base.shared.opts.randn_source = source
    base.shared.opts.eta_noise_seed_delta = 0
    model_log = []
    inner = base.AnalyticUNet(torch_dtype, model_log)
    model_wrap = base.denoiser_for(key, inner, parameterization)
    seeds = list(seeds)
    start_index = 0
    if strength is None:
        sigmas = base.a1111_get_sigmas(model_wrap, options, schedule, steps)
        sigma_sched = sigmas
    else:
        steps_, t_enc = base.setup_img2img_steps(steps, strength)
        sigmas = base.a1111_get_sigmas(model_wrap, options, schedule, steps_)
        start_index = steps_ - t_enc - 1
        sigma_sched = sigmas[start_index:]
    image_rng = base.rng.ImageRNG((4, 8, 8), seeds)
    noise0 = image_rng.next()
    init_latent = None
    if strength is None:
        x = noise0.to(torch_dtype) * sigmas[0]
    else:
        init_latent = (torch.randn([len(seeds), 4, 8, 8], generator=torch.Generator().manual_seed(99)) * 0.8).to(torch_dtype)
        x = init_latent + noise0.to(torch_dtype) * sigma_sched[0]
    x0 = x.clone()
    draws = []
    base.sampling.torch = base.TorchHijack(image_rng, draws, lambda: 0)
    # KDiffusionSampler: create_noise_sampler(x, sigmas, p) — img2img passes its init latent x (shape only) and the full sigmas.
    p = types.SimpleNamespace(all_seeds=[0] * (iteration * len(seeds)) + seeds, iteration=iteration, batch_size=len(seeds))
    noise_sampler = RecordingNoiseSampler(create_noise_sampler(None, init_latent if init_latent is not None else x, sigmas, p))
    kwargs = {"noise_sampler": noise_sampler, "eta": 1.0}  # eta: initialize()'s opts.eta_ancestral (1)
    if options.get("solver_type") == "heun":
        kwargs["solver_type"] = "heun"
    kwargs.update(extra or {})
    evals = []

    def model(xin, sigma, **kw):
        before = len(model_log)
        out = model_wrap(xin, sigma, **kw)
        assert len(model_log) == before + 1
        evals.append({"sigma": float(sigma.reshape(-1)[0]), "t": model_log[-1]["t"]})
        return out

    func = getattr(base.sampling, funcname)
    final = func(model, x, sigma_sched, extra_args={"cond": None}, disable=True, **kwargs)
    base.sampling.torch = torch
    assert not draws, "the SDE samplers draw no randn_like"
    return {
        "id": f"{key}/{schedule}/{steps}/{dtype}/{source}/seeds={','.join(map(str, seeds))}"
              + ("/v" if parameterization == "v" else "") + (f"/strength{strength}" if strength is not None else "")
              + (f"/iteration{iteration}" if iteration else "") + "".join(f"/{k}={v}" for k, v in (extra or {}).items()),
        "key": key, "sampler": label, "function": funcname, "options": options, "schedule": schedule, "steps": steps,
        "dtype": dtype, "randn_source": source, "seeds": seeds, "extra": extra or {}, "parameterization": parameterization,
        "strength": strength, "start_index": start_index,
        "sigmas": base.f32(sigmas.tolist()),
        "evals": evals,
        "noise_calls": len(noise_sampler.calls),
        # The noise sampler's calls in order: its arguments, the tree's signed increment ([batch, 4, 8, 8] float32,
        # base64, little-endian) and torch's divisor; the call returned increment / divisor.
        "noise": noise_sampler.calls if keep_noise else None,
        "init_latent": base.vec(init_latent, dtype) if init_latent is not None else None,
        "x0": base.vec(x0, dtype),
        "final": base.vec(final, dtype),
    }


def brownian_case(name, shape, seeds, sigma_min, sigma_max, queries, source="CPU"):
    """BrownianTreeNoiseSampler alone (A1111's create_noise_sampler over [sigma_min … sigma_max]), queried in order."""
    base.shared.opts.randn_source = source
    x = torch.zeros([len(seeds), *shape])
    sigmas = torch.tensor([sigma_max, sigma_min, 0.0], dtype=torch.float32)
    p = types.SimpleNamespace(all_seeds=list(seeds), iteration=0, batch_size=len(seeds))
    sampler = create_noise_sampler(None, x, sigmas, p)
    out = []
    for a, b in queries:
        ta, tb = torch.tensor(a, dtype=torch.float32), torch.tensor(b, dtype=torch.float32)
        out.append(noise_call(sampler, ta, tb, sampler(ta, tb)))
    return {"name": name, "shape": list(shape), "seeds": list(seeds), "randn_source": source,
            "sigma_min": float(np.float32(sigma_min)), "sigma_max": float(np.float32(sigma_max)), "queries": out}


def seed_sequence_cases():
    """numpy's SeedSequence as torchsde uses it: generate_state(3) of the root, generate_state(4) per split node."""
    cases = []
    for entropy, spawn_key in [(7, None), (1000, None), (0, None), (2 ** 32 - 1, None), (2 ** 40 + 5, None), (2 ** 64 - 1, None),
                               (7, (0, 0)), (7, (1, 1)), (7, (2, 1)), (7, (5, 3)), (1000, (123456, 17)), (2 ** 40 + 5, (2 ** 33 + 1, 34)),
                               (3, (0, 0))]:
        kw = {"pool_size": 24}
        if spawn_key is not None:
            kw["spawn_key"] = spawn_key
        state = np.random.SeedSequence(entropy=entropy, **kw).generate_state(3 if spawn_key is None else 4)
        cases.append({"entropy": str(entropy), "spawn_key": list(spawn_key) if spawn_key else None, "state": [int(v) for v in state]})
    return cases


def main():
    runs = []
    for key in SAMPLERS:
        for schedule in ("automatic", "karras", "exponential"):
            for dtype in ("float32", "float64"):
                runs.append(run(key, schedule, 8, dtype, keep_noise=(schedule == "automatic" and dtype == "float32")))
        runs.append(run(key, "automatic", 8, "float32", source="NV", keep_noise=True))
        runs.append(run(key, "automatic", 20, "float32"))
        runs.append(run(key, "automatic", 8, "float32", parameterization="v"))
        runs.append(run(key, "automatic", 10, "float32", strength=0.6))
    runs += [
        run("k_dpmpp_2m_sde", "automatic", 8, "float32", extra={"eta": 0.5, "s_noise": 0.9}),
        run("k_dpmpp_2m_sde_heun", "karras", 8, "float64", extra={"eta": 0.0}),
        run("k_dpmpp_3m_sde", "automatic", 8, "float32", extra={"eta": 0.0}),
        # Uniform: torch's float32 log/exp (MKL here) put one of its sigmas one ulp from the correctly rounded value.
        run("k_dpmpp_3m_sde", "uniform", 8, "float32", extra={"eta": 0.3, "s_noise": 1.1}, keep_noise=True),
        run("k_dpmpp_sde", "automatic", 8, "float32", extra={"eta": 0.7, "s_noise": 0.8}),
        run("k_dpmpp_sde", "automatic", 8, "float32", extra={"eta": 0.0}),
        run("k_dpmpp_sde", "karras", 6, "float32", seeds=(2 ** 40 + 5,), keep_noise=True),
        run("k_dpmpp_2m_sde", "karras", 3, "float32", seeds=(1, 2, 3), iteration=2, keep_noise=True),
        # One step: k-diffusion's 2M / 3M SDE loops read h before assigning it (UnboundLocalError), so A1111 fails there.
        run("k_dpmpp_sde", "exponential", 1, "float32"),
        run("k_dpmpp_2m_sde", "exponential", 2, "float32"),
        run("k_dpmpp_3m_sde", "karras", 2, "float64"),
    ]
    brownian = [
        brownian_case("odd shape, CPU", (4, 5, 3), [7, 8], 0.0291675, 14.614642, [(14.614642, 10.0), (10.0, 3.3), (0.5, 0.0291675), (3.3, 0.5)]),
        brownian_case("odd shape, NV", (4, 5, 3), [7], 0.0291675, 14.614642, [(14.614642, 10.0), (0.0291675, 0.04)], source="NV"),
        brownian_case("query outside [sigma_min, sigma_max] is clamped", (4, 4, 4), [11], 0.1, 2.0, [(2.5, 1.0), (0.3, 0.05)]),
    ]
    probe = base.external.CompVisDenoiser(base.AnalyticUNet(torch.float32, []), quantize=False)
    import json
    json.dump({
        "format": "sd-trt-a1111-sde-goldens/1",
        "provenance": PROVENANCE,
        "model": "gen_a1111_kdiffusion_goldens.py's analytic model (kdiffusion_goldens.json 'model'); latents [batch, 4, 8, 8], "
                 "x = ImageRNG(seeds).next() * sigmas[0] (img2img: init_latent + next() * sigma_sched[0])",
        "model_sigmas": base.f32(probe.sigmas.tolist()),
        "seed_sequences": seed_sequence_cases(),
        "brownian": brownian,
        "runs": runs,
    }, sys.stdout, separators=(",", ":"))


TINY_CASES = [
    {"id": "sde-2m-automatic-batch", "sampler": "k_dpmpp_2m_sde", "schedule": "automatic", "steps": 6, "seeds": [61, 62]},
    {"id": "sde-karras-eta", "sampler": "k_dpmpp_sde", "schedule": "automatic", "steps": 5, "seeds": [63], "eta": 0.5},
    {"id": "sde-3m-exponential", "sampler": "k_dpmpp_3m_sde", "schedule": "exponential", "steps": 7, "seeds": [64]},
    {"id": "img2img-sde-2m-heun", "img2img": True, "sampler": "k_dpmpp_2m_sde_heun", "schedule": "karras", "steps": 8, "seeds": [65],
     "denoising_strength": 0.6},
    {"id": "hires-sde-2m-bicubic", "sampler": "k_dpmpp_2m_sde", "schedule": "automatic", "steps": 4, "seeds": [66],
     "enable_hr": True, "hr_scale": 1.5, "hr_upscaler": "Latent (bicubic)", "hr_second_pass_steps": 3, "denoising_strength": 0.5},
]


def tiny_case(tiny, case):
    """KDiffusionSampler.sample / sample_img2img on the tiny model (gen_a1111_tiny_e2e.py's model, prompts and decode),
    with A1111's noise sampler: create_noise_sampler(x, sigmas, p) over the full sigmas, seeds = p.all_seeds."""
    key = case["sampler"]
    label, funcname, options = SAMPLERS[key]
    base.shared.opts.randn_source = "CPU"
    base.shared.opts.eta_noise_seed_delta = 0
    seeds = case["seeds"]
    b = len(seeds)
    h, w = case["height"] // 8, case["width"] // 8
    model_wrap = base.denoiser_for(key, tiny.TinyUNet())
    cond = tiny.encode(case["prompt"]).repeat(b, 1, 1)
    uncond = tiny.encode(case["negative_prompt"]).repeat(b, 1, 1)
    denoiser = tiny.cfg_denoiser(model_wrap, cond, uncond, case["cfg_scale"])
    image_rng = base.rng.ImageRNG((4, h, w), seeds)
    p = types.SimpleNamespace(all_seeds=seeds, iteration=0, batch_size=b)
    func = getattr(base.sampling, funcname)
    extra = {"solver_type": "heun"} if options.get("solver_type") == "heun" else {}
    if case.get("img2img"):
        init_latent = tiny.img2img_init_latent(case, b)
        noise = image_rng.next()
        steps, t_enc = base.setup_img2img_steps(case["steps"], case["denoising_strength"])
        sigmas = base.a1111_get_sigmas(model_wrap, options, case["schedule"], steps)
        sigma_sched = sigmas[steps - t_enc - 1:]
        xi = init_latent + noise * sigma_sched[0]
        kwargs = {**base.a1111_img2img_kwargs(func, sigma_sched), **extra, "noise_sampler": create_noise_sampler(None, init_latent, sigmas, p)}
        samples = func(denoiser, xi, extra_args={}, disable=True, **kwargs)
    else:
        sigmas = base.a1111_get_sigmas(model_wrap, options, case["schedule"], case["steps"])
        x = image_rng.next() * sigmas[0]
        kwargs = {"eta": case.get("eta", 1.0), **extra, "noise_sampler": create_noise_sampler(None, x, sigmas, p)}
        samples = func(denoiser, x, sigmas, extra_args={}, disable=True, **kwargs)
    if case.get("enable_hr"):
        # gen_a1111_tiny_e2e's hires_pass calls the sampler with (model, xi, sigma_sched) alone; A1111's sample_img2img adds
        # create_noise_sampler(x, sigmas, p) over the second pass's whole (stretched) schedule: supplied here around the call.
        requested = case.get("hr_second_pass_steps") or case["steps"]
        stretched = base.a1111_get_sigmas(model_wrap, options, case["schedule"], int(requested / min(case["denoising_strength"], 0.999)))

        def with_noise_sampler(model, xi, sigma_sched, **kw):
            return func(model, xi, sigma_sched, noise_sampler=create_noise_sampler(None, xi, stretched, p), eta=1.0, **extra, **kw)

        setattr(base.sampling, funcname, with_noise_sampler)
        try:
            samples = tiny.hires_pass(case, model_wrap, options, funcname, samples, cond, uncond)
        finally:
            setattr(base.sampling, funcname, func)
    return tiny.finish_case(case, label, samples, sigmas)


def tiny_main():
    import json
    import gen_a1111_tiny_e2e as tiny  # the tiny model's ONNX sessions, prompts, CFG and decode
    cases = [tiny_case(tiny, {"prompt": "a lighthouse on a cliff", "negative_prompt": "fog", "width": 64, "height": 64, "cfg_scale": 7.0, **case})
             for case in TINY_CASES]
    json.dump({"format": "sd-trt-a1111-tiny-e2e/1", "provenance": {**PROVENANCE, "onnxruntime": tiny.ort.__version__},
               "randn_source": "CPU", "cases": cases}, sys.stdout, separators=(",", ":"))


if __name__ == "__main__":
    if sys.argv[1:] == ["tiny-e2e"]:
        tiny_main()
    else:
        main()
