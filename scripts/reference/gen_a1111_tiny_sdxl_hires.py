"""
A1111's hires fix with an SDXL model, end to end on the tiny SDXL (test/fixtures/sdxl/tiny-sdxl), for
test/e2e/a1111-sdxl-hires.test.ts.

What A1111 v1.10.1 (82a973c) does differently for SDXL in the second pass: processing.py's
calculate_hr_conds builds the hires prompts as SdConditioning(..., width=hr_upscale_to_x,
height=hr_upscale_to_y), and sd_models_xl.get_learned_conditioning turns that width/height into the
conditioner's original_size_as_tuple and target_size_as_tuple (crop = opts.sdxl_crop_top/left, 0/0).
Its cond cache does not hand the first pass's conds back: get_conds_with_caching's key holds
hires_steps (None for the first pass, the second pass's step count for the hires conds). So the
second pass runs with the same text conditioning and time ids from the upscale size — before
A1111's truncate_x/y crop, so a resize with both sizes gives time ids larger than the final image.

What runs (A1111's and upstream code, loaded from checkouts, stubs only at import time):
- A1111's modules/sd_models_xl.py: get_learned_conditioning (the time-id rule, the empty negative
  prompt's zeroed text conditioning), extend_sdxl (alphas_cumprod from sgm's
  LegacyDDPMDiscretization, the parameterization from sgm's denoiser scaling) and apply_model;
- sgm (Stability-AI/generative-models 45c443b, the commit A1111 v1.10.1 pins in launch_utils.py):
  modules/diffusionmodules/discretizer.py, util.py (make_beta_schedule) and denoiser_scaling.py;
- A1111's modules/prompt_parser.py: SdConditioning, get_learned_conditioning,
  get_multicond_learned_conditioning, reconstruct_cond_batch / reconstruct_multicond_batch;
  modules/torch_utils.py; catenate_conds taken out of modules/sd_samplers_cfg_denoiser.py with `ast`
  (importing that module pulls in the whole UI);
- k-diffusion's samplers and CompVisDenoiser, A1111's ImageRNG, schedule types and the rest of the
  txt2img / hires glue exactly as gen_a1111_tiny_e2e.py runs them for SD 1.x (imported from it).

The stand-ins (the tiny model is ONNX, not sgm's torch modules):
- the conditioner (sgm's GeneralConditioner of sd_xl_base.yaml): its two text embedders are the ONNX
  text encoders read as A1111's SDXL embedders read theirs (CLIP-L's hidden layer before the last,
  OpenCLIP's "penultimate" layer and its projected pooled output, both joined per token; prompts
  padded by each tokenizer's own pad token, EOS and "!" as A1111's id_pad), zeroed when
  force_zero_embeddings names "txt" as GeneralConditioner does. Its three ConcatTimestepEmbedderND
  inputs are passed on raw: the ONNX UNet (diffusers' UNet2DConditionModel with text_time
  add_embedding) takes the pooled text embeds and the six time ids and makes the Fourier features
  itself, which is the same function of the same numbers;
- the OpenAIWrapper: the ONNX UNet, one row per call.
processing.py's setup_conds / calculate_hr_conds are transcribed in two lines (a1111_conds): the
SdConditioning sizes are the only thing they pass on for SDXL.

Usage: KDIFFUSION=... A1111=... SGM=... python scripts/reference/gen_a1111_tiny_sdxl_hires.py > test/fixtures/a1111/tiny_sdxl_hires.json
  A1111 = a folder with 82a973c's modules/ (git archive 82a973c modules), SGM = a folder with
  generative-models' sgm/ at 45c443b; lark and einops importable (prompt_parser, sgm's util).
Made with Python 3.11.7, torch 2.13.0+cpu, numpy 2.4.6, onnxruntime 1.30.0, transformers 5.18.0,
lark 1.3.1, einops 0.8.2 (the files' git blob ids are checked at run time and written to provenance.file_blobs).
"""
import ast
import hashlib
import json
import os
import sys
import types

import numpy as np
import onnxruntime as ort
import torch

from transformers import CLIPTokenizer  # before the stubs gen_a1111_kdiffusion_goldens.py makes

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import gen_a1111_tiny_e2e as e2e  # noqa: E402  (k-diffusion, A1111's rng/schedules, its txt2img + hires glue)

ref = e2e.ref
ROOT = os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "..")
MODEL = os.path.join(ROOT, "test", "fixtures", "sdxl", "tiny-sdxl")
SCALE_FACTOR = 0.13025  # sd_xl_base.yaml's scale_factor (the tiny VAE's scaling_factor)
A1111 = ref.A1111
SGM = os.environ["SGM"]

# git blob ids of the files run here (git hash-object), checked below.
BLOBS = {
    ("A1111", "modules/sd_models_xl.py"): "1242a59369f738cc0e5ec4b2d7baa87fa2c4153f",
    ("A1111", "modules/prompt_parser.py"): "4e393d2866f6bc93a527d5eb6827a1613ca08097",
    ("A1111", "modules/torch_utils.py"): "5ea3da094c597b8487876ec9d51d910ec720edb0",
    ("A1111", "modules/sd_samplers_cfg_denoiser.py"): "b6fbf33724380aee15295f9066d1073b85b51049",
    ("A1111", "modules/processing.py"): "7535b56e18c004da696465b594287adab29aed52",  # transcribed: setup_conds, calculate_hr_conds, sample_hr_pass
    ("A1111", "modules/rng.py"): "5390d1bb73e342a749dcd5e1281fb5b7e8a2106a",
    ("A1111", "modules/sd_schedulers.py"): "f4d16e309ff4c97d9080a4bfd460b73602a9d174",
    ("SGM", "sgm/modules/diffusionmodules/discretizer.py"): "4135ac99b86655845b00dbe92702c217b995adfe",
    ("SGM", "sgm/modules/diffusionmodules/util.py"): "069ff131fb9789949203551e0efd8313a3d0cc08",
    ("SGM", "sgm/modules/diffusionmodules/denoiser_scaling.py"): "f8a2ac6732ea78f1030b21bebd14063d52ac2a82",
    ("KDIFFUSION", "k_diffusion/sampling.py"): "9f10e8d874eba2b8a0dc2537851a9b28ef65b579",
    ("KDIFFUSION", "k_diffusion/external.py"): "79b51cec41c52f054775f26c26cf63414d588aef",
}


def blob_id(path):
    data = open(path, "rb").read()
    return hashlib.sha1(b"blob %d\0" % len(data) + data).hexdigest()


def file_blobs():
    out = {}
    for (root, rel), expected in BLOBS.items():
        got = blob_id(os.path.join({"A1111": A1111, "SGM": SGM, "KDIFFUSION": ref.KDIFFUSION}[root], rel))
        if got != expected:
            raise SystemExit(f"{rel}: blob {got}, expected {expected}")
        out[rel] = got
    return out


# --- sgm: the package skeleton sd_models_xl.py imports (its attributes are only assigned to), and the
# three numeric files extend_sdxl runs, loaded from the checkout. sgm.util's append_zero is imported
# by the discretizer but used only by Discretization.__call__, which nothing here calls.
def module(name, path=None, **attrs):
    m = ref.stub(name, **attrs)
    if path is not None:
        m.__path__ = [path]
    parent, _, child = name.rpartition(".")
    if parent:
        setattr(sys.modules[parent], child, m)
    return m


class DiffusionEngine:
    """sgm.models.diffusion.DiffusionEngine: sd_models_xl.py assigns its methods onto this class."""


class GeneralConditioner:
    """sgm.modules.GeneralConditioner: sd_models_xl.py assigns its methods onto this class."""


module("sgm", os.path.join(SGM, "sgm"))
module("sgm.util", append_zero=None)
module("sgm.models")
module("sgm.models.diffusion", DiffusionEngine=DiffusionEngine)
module("sgm.modules", os.path.join(SGM, "sgm", "modules"), GeneralConditioner=GeneralConditioner)
module("sgm.modules.attention")
module("sgm.modules.encoders")
module("sgm.modules.encoders.modules")
module("sgm.modules.diffusionmodules", os.path.join(SGM, "sgm", "modules", "diffusionmodules"))
module("sgm.modules.diffusionmodules.model")
module("sgm.modules.diffusionmodules.openaimodel")
for name in ("util", "denoiser_scaling", "discretizer"):
    ref.load("sgm.modules.diffusionmodules", name, os.path.join(SGM, "sgm", "modules", "diffusionmodules", f"{name}.py"))
denoiser_scaling = sys.modules["sgm.modules.diffusionmodules.denoiser_scaling"]

# --- A1111: the options sd_models_xl reads (shared_options.py's defaults at 82a973c), the device/dtype.
ref.shared.opts.sdxl_crop_top = 0
ref.shared.opts.sdxl_crop_left = 0
ref.shared.opts.sdxl_refiner_low_aesthetic_score = 2.5
ref.shared.opts.sdxl_refiner_high_aesthetic_score = 6.0
ref.shared.ldm_print = print
ref.devices.dtype = torch.float32
prompt_parser = ref.load("modules", "prompt_parser", os.path.join(A1111, "modules", "prompt_parser.py"))
ref.load("modules", "torch_utils", os.path.join(A1111, "modules", "torch_utils.py"))
sd_models_xl = ref.load("modules", "sd_models_xl", os.path.join(A1111, "modules", "sd_models_xl.py"))


def a1111_function(path, name):
    """A top-level function of an A1111 module that cannot be imported, compiled from its source alone."""
    tree = ast.parse(open(path).read())
    body = [n for n in tree.body if isinstance(n, ast.FunctionDef) and n.name == name]
    namespace = {"torch": torch}
    exec(compile(ast.Module(body=body, type_ignores=[]), path, "exec"), namespace)
    return namespace[name]


catenate_conds = a1111_function(os.path.join(A1111, "modules", "sd_samplers_cfg_denoiser.py"), "catenate_conds")

# --- the tiny SDXL's ONNX graphs
tokenizers = [CLIPTokenizer.from_pretrained(os.path.join(MODEL, name)) for name in ("tokenizer", "tokenizer_2")]
sessions = {name: ort.InferenceSession(os.path.join(MODEL, name, "model.onnx"), providers=["CPUExecutionProvider"])
            for name in ("text_encoder", "text_encoder_2", "unet", "vae_decoder")}


def penultimate(session):
    """The name of the hidden state before the last layer (hidden_states.N-1 of hidden_states.0 … N)."""
    names = [o.name for o in session.get_outputs() if o.name.startswith("hidden_states.")]
    return f"hidden_states.{len(names) - 2}"


class TinyConditioner(GeneralConditioner):
    """GeneralConditioner of sd_xl_base.yaml on the ONNX text encoders (see the module comment)."""

    def __init__(self):
        # txt (CLIP-L), txt (OpenCLIP bigG), original_size_as_tuple, crop_coords_top_left, target_size_as_tuple
        self.embedders = [types.SimpleNamespace(ucg_rate=None, input_key=key) for key in
                          ("txt", "txt", "original_size_as_tuple", "crop_coords_top_left", "target_size_as_tuple")]
        self.calls = []

    def __call__(self, batch, force_zero_embeddings=None):
        texts = list(batch["txt"])
        states = []
        pooled = None
        for tokenizer, name in zip(tokenizers, ("text_encoder", "text_encoder_2")):
            ids = np.array(tokenizer(texts, padding="max_length", max_length=77, truncation=True).input_ids, dtype=np.int64)
            session = sessions[name]
            wanted = [penultimate(session)] + (["text_embeds"] if name == "text_encoder_2" else [])
            out = session.run(wanted, {"input_ids": ids})
            states.append(torch.from_numpy(out[0]))
            if name == "text_encoder_2":
                pooled = torch.from_numpy(out[1])
        crossattn = torch.cat(states, dim=-1)
        if "txt" in (force_zero_embeddings or []):
            crossattn, pooled = torch.zeros_like(crossattn), torch.zeros_like(pooled)
        time_ids = torch.cat([batch[key] for key in ("original_size_as_tuple", "crop_coords_top_left", "target_size_as_tuple")], dim=1)
        self.calls.append({"texts": texts, "time_ids": time_ids.tolist(), "zeroed": "txt" in (force_zero_embeddings or [])})
        return {"crossattn": crossattn, "text_embeds": pooled, "time_ids": time_ids}


class TinyOpenAIWrapper(torch.nn.Module):
    """sgm's OpenAIWrapper on the ONNX UNet; `diffusion_model` carries the parameter extend_sdxl reads the dtype off."""

    def __init__(self):
        super().__init__()
        self.diffusion_model = torch.nn.Module()
        self.diffusion_model.register_parameter("dtype_probe", torch.nn.Parameter(torch.zeros(1)))

    def forward(self, x, t, c):
        outs = []
        for row in range(x.shape[0]):
            feeds = {"sample": x[row:row + 1].numpy().astype(np.float32), "timestep": np.array([float(t[row])], dtype=np.float32),
                     "encoder_hidden_states": c["crossattn"][row:row + 1].numpy().astype(np.float32),
                     "text_embeds": c["text_embeds"][row:row + 1].numpy().astype(np.float32),
                     "time_ids": c["time_ids"][row:row + 1].numpy().astype(np.float32)}
            outs.append(torch.from_numpy(sessions["unet"].run(["out_sample"], feeds)[0]))
        return torch.cat(outs)


class TinySdxl(DiffusionEngine):
    """The DiffusionEngine A1111 loads, with the tiny model's parts; extend_sdxl sets alphas_cumprod."""

    is_sdxl_inpaint = False

    def __init__(self):
        self.model = TinyOpenAIWrapper()
        self.denoiser = types.SimpleNamespace(scaling=denoiser_scaling.EpsScaling())
        self.conditioner = TinyConditioner()
        self.device = torch.device("cpu")
        sd_models_xl.extend_sdxl(self)
        assert self.parameterization == "eps"


def a1111_conds(engine, case, width, height, hires_steps=None):
    """processing.py setup_conds (width, height = p.width, p.height) / calculate_hr_conds (hr_upscale_to_x/y):
    uc = get_learned_conditioning(negative SdConditioning), c = get_multicond_learned_conditioning(SdConditioning),
    then what CFGDenoiser takes at a step (reconstruct_*_batch; no prompt editing here, so step 0 stands for all)."""
    b = len(case["seeds"])
    prompts = prompt_parser.SdConditioning([case["prompt"]] * b, width=width, height=height)
    negative = prompt_parser.SdConditioning([case["negative_prompt"]] * b, width=width, height=height, is_negative_prompt=True)
    uc = prompt_parser.get_learned_conditioning(engine, negative, case["steps"], hires_steps)
    c = prompt_parser.get_multicond_learned_conditioning(engine, prompts, case["steps"], hires_steps)
    _, tensor = prompt_parser.reconstruct_multicond_batch(c, 0)
    return tensor, prompt_parser.reconstruct_cond_batch(uc, 0)


def run_case(case):
    label, funcname, options = ref.SAMPLERS[case["sampler"]]
    ref.shared.opts.eta_noise_seed_delta = case.get("ensd", 0)
    engine = TinySdxl()
    model_wrap = ref.denoiser_for(case["sampler"], engine)
    sigmas = ref.a1111_get_sigmas(model_wrap, options, case["schedule"], case["steps"])
    image_rng = ref.rng.ImageRNG((4, case["height"] // 8, case["width"] // 8), case["seeds"])
    cond, uncond = a1111_conds(engine, case, case["width"], case["height"])
    first_calls = len(engine.conditioner.calls)
    ref.sampling.torch = ref.TorchHijack(image_rng, [], lambda: 0)
    x = image_rng.next() * sigmas[0]
    samples = ref.sampler_function(funcname)(e2e.cfg_denoiser(model_wrap, cond, uncond, case["cfg_scale"], catenate_conds), x, sigmas,
                                             extra_args={}, disable=True)
    ref.sampling.torch = torch
    to_x, to_y, _, _ = e2e.target_resolution(case)
    hr_cond, hr_uncond = a1111_conds(engine, case, to_x, to_y, hires_steps=case.get("hr_second_pass_steps") or case["steps"])
    samples = e2e.hires_pass(case, model_wrap, options, funcname, samples, hr_cond, hr_uncond, catenate_conds)
    decoded = sessions["vae_decoder"].run(["sample"], {"latent_sample": (1.0 / SCALE_FACTOR * samples).numpy().astype(np.float32)})[0]
    pixels = (255.0 * np.moveaxis(np.clip((decoded + 1.0) / 2.0, 0.0, 1.0), 1, 3)).astype(np.uint8)
    calls = engine.conditioner.calls
    return {**case, "a1111_sampler": label, "hr_upscale_to": [to_x, to_y],
            "conditioner_calls": {"first_pass": calls[:first_calls], "hires_pass": calls[first_calls:]},
            "final_latents": ref.f32(samples.reshape(-1).tolist()), "pixels_hwc": pixels.reshape(-1).tolist()}


CASES = [
    # Strengths and second-pass steps high enough that the tiny UNet's weak time-id response shows: with the
    # first pass's time ids in the second pass the latents move by 8e-3 and 1.2e-2 of max|x| (the tests' bar is
    # 1e-4), and with the final image's size (96×128) instead of the upscale size by 1.2e-2.
    # hr_scale 1.5: 64² → 96², time ids (96, 96, 0, 0, 96, 96) in the second pass; two images, a negative prompt.
    {"id": "sdxl-hires-latent-euler-a", "sampler": "k_euler_a", "schedule": "automatic", "steps": 4, "seeds": [21, 22],
     "negative_prompt": "fog", "enable_hr": True, "hr_scale": 1.5, "hr_upscaler": "Latent", "hr_second_pass_steps": 6,
     "denoising_strength": 0.8},
    # Resize to 96×128 from 64²: upscaled to 128² (hr_upscale_to), truncate_x 4 → 96×128; the time ids
    # are (128, 128, 0, 0, 128, 128), the upscale size. An empty negative prompt: zeroed text conditioning.
    {"id": "sdxl-hires-bicubic-aa-resize-dpmpp-2m-empty-negative", "sampler": "k_dpmpp_2m", "schedule": "automatic", "steps": 4,
     "seeds": [23], "negative_prompt": "", "enable_hr": True, "hr_resize_x": 96, "hr_resize_y": 128,
     "hr_upscaler": "Latent (bicubic antialiased)", "hr_second_pass_steps": 6, "denoising_strength": 0.9},
]


def main():
    blobs = file_blobs()
    out = [run_case({"prompt": "a lighthouse on a cliff", "width": 64, "height": 64, "cfg_scale": 7.0, **case}) for case in CASES]
    # The A1111 files are 82a973c's here (gen_a1111_kdiffusion_goldens.py's PROVENANCE names older file versions of some).
    provenance = {"k_diffusion": ref.PROVENANCE["k_diffusion"], "python": ref.PROVENANCE["python"], "torch": torch.__version__,
                  "numpy": np.__version__, "onnxruntime": ort.__version__,
                  "a1111": "AUTOMATIC1111/stable-diffusion-webui 82a973c04367123ae98bd9abdf80d9eda9b910e2 (v1.10.1): the modules/ files run here, blob ids in file_blobs",
                  "sgm": "Stability-AI/generative-models 45c443b316737a4ab6e40413d7794a7f5657c19f (A1111 v1.10.1's pin)",
                  "file_blobs": blobs}
    json.dump({"format": "sd-trt-a1111-tiny-sdxl-hires/1", "provenance": provenance, "randn_source": "CPU", "cases": out},
              sys.stdout, separators=(",", ":"))


if __name__ == "__main__":
    main()
