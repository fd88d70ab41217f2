#!/usr/bin/env python3
"""A tiny SDXL refiner as people download it (`sd_xl_refiner_1.0.safetensors` layout) and a diffusers folder,
with one base + refiner generation, for lib/convert/checkpoint's refiner reading (issue 13).

Writes test/fixtures/checkpoints/sdxl-refiner/:
  diffusers/                 a StableDiffusionXLImg2ImgPipeline folder as stabilityai/stable-diffusion-xl-refiner-1.0
                             lays it out: model_index.json (text_encoder and tokenizer null, requires_aesthetics_score
                             true, force_zeros_for_empty_prompt false), scheduler/, unet/ (fp16), and text_encoder_2/,
                             tokenizer_2/, vae/ as symlinks to the tiny SDXL base's (../../sdxl/diffusers/): the real
                             refiner ships the base's OpenCLIP ViT-bigG and VAE architecture, and sharing keeps the
                             fixture small
  single_file.safetensors    fp16, the original layout: model.diffusion_model.*, first_stage_model.*,
                             conditioner.embedders.0.model.* (OpenCLIP, in_proj joined, text_projection [width, proj])
  pipeline_goldens.json      base (the tiny SDXL base's single file) with denoising_end, then the refiner with
                             denoising_start on the same generator: timesteps, final latents, uint8 pixels
  full_size_shapes.json      a full-size refiner single file's tensor names and shapes (no weights), from the models
                             built on the meta device with the published configs (FULL_SIZE) and renamed by the same
                             functions

Made with diffusers' own code:
- the single file by scripts/convert_diffusers_to_original_sdxl.py: convert_unet_state_dict, convert_vae_state_dict,
  convert_openclip_text_enc_state_dict, and its text_projection transpose, under the refiner's prefix
  `conditioner.embedders.0.model.`. The script's UNet prefix table is built at import for SDXL base's geometry
  (3 levels, attention on the last two); gen_tiny_single_file.unet_layer_table rebuilds it with the script's own
  formulas for the refiner's (4 levels: DownBlock2D, CrossAttnDownBlock2D ×2, DownBlock2D), then the function
  runs unchanged;
- the reference models by StableDiffusionXLImg2ImgPipeline.from_single_file(file, config=<folder>), checked to load
  exactly the weights from_pretrained(<folder>) loads (float32);
- the generation by StableDiffusionXLPipeline.from_single_file(<base file>, config=<base folder>) and the refiner
  pipeline above, as gen_tiny_sdxl.py's refiner cases run them (one torch.Generator object for both calls).

The tiny refiner UNet has the refiner's structure: 4 levels (8, 8, 8, 16), layers_per_block 2, attention on levels 1
and 2 with transformer_layers_per_block 2 for every attention (an int, as the published config's 4: the mid block
takes it too, while the last level has none), addition_time_embed_dim 8 with 5 time ids (original size, crop,
aesthetic score): projection_class_embeddings_input_dim 6 + 5 · 8, cross_attention_dim 6 (text_encoder_2 alone).

Run (offline, see scripts/reference/README.md), after gen_tiny_sdxl_single_file.py:
  PYTHONPATH=/tmp/diffusers-src/src /tmp/dvenv/bin/python scripts/reference/gen_tiny_sdxl_refiner_single_file.py
  diffusers 0.40.0.dev0 at git 58eb52c0803ea9af3abec60841c2a093bdf1f951 (its scripts/ at /tmp/diffusers-src/scripts),
  transformers 5.18.0, torch 2.13.0+cpu, safetensors 0.8.0 (asserted; PROVENANCE is written into the json).
"""
import base64
import json
import os
import shutil
import sys
from pathlib import Path

import diffusers
import numpy as np
import safetensors
import torch
import transformers
from diffusers import (AutoencoderKL, EulerAncestralDiscreteScheduler, EulerDiscreteScheduler, StableDiffusionXLImg2ImgPipeline,
                       StableDiffusionXLPipeline, UNet2DConditionModel)
from safetensors.torch import load_file, save_file
from transformers import CLIPTextConfig, CLIPTextModelWithProjection, CLIPTokenizer

sys.path.insert(0, str(Path(__file__).resolve().parent))
import gen_tiny_checkpoints as tiny  # noqa: E402  (perturb, assert_same_weights)
import gen_tiny_sdxl_single_file as sdxl  # noqa: E402  (SDXL_SCHEDULER, load_converter, FULL_SIZE)
import gen_tiny_single_file as sd  # noqa: E402  (unet_layer_table)

DIFFUSERS_COMMIT = "58eb52c0803ea9af3abec60841c2a093bdf1f951"
ROOT = Path(__file__).resolve().parents[2]
BASE = ROOT / "test/fixtures/checkpoints/sdxl"
OUT = ROOT / "test/fixtures/checkpoints/sdxl-refiner"
REFINER_PREFIX = "conditioner.embedders.0.model."
SEED = 1313

PROVENANCE = {
    "script": "scripts/reference/gen_tiny_sdxl_refiner_single_file.py",
    "diffusers": f"{diffusers.__version__} (git {DIFFUSERS_COMMIT})",
    "transformers": transformers.__version__,
    "torch": torch.__version__,
    "safetensors": safetensors.__version__,
    "numpy": np.__version__,
}

# stabilityai/stable-diffusion-xl-refiner-1.0's unet/config.json: the keys that decide shapes and those a converter must
# get right (agreeing with Stability's sd_xl_refiner.yaml: model_channels 384, channel_mult [1, 2, 4, 4], attention at
# resolutions 2 and 4, num_head_channels 64, transformer_depth 4, context_dim 1280, adm_in_channels 2560).
# text_encoder_2 and vae are the base's (FULL_SIZE of gen_tiny_sdxl_single_file.py).
FULL_SIZE = {
    "unet": dict(
        act_fn="silu", addition_embed_type="text_time", addition_time_embed_dim=256, attention_head_dim=[6, 12, 24, 24],
        block_out_channels=[384, 768, 1536, 1536], cross_attention_dim=1280,
        down_block_types=["DownBlock2D", "CrossAttnDownBlock2D", "CrossAttnDownBlock2D", "DownBlock2D"],
        flip_sin_to_cos=True, freq_shift=0, in_channels=4, layers_per_block=2, norm_num_groups=32, out_channels=4,
        projection_class_embeddings_input_dim=2560, sample_size=128, transformer_layers_per_block=4,
        up_block_types=["UpBlock2D", "CrossAttnUpBlock2D", "CrossAttnUpBlock2D", "UpBlock2D"], upcast_attention=False,
        use_linear_projection=True,
    ),
    "text_encoder_2": sdxl.FULL_SIZE["text_encoder_2"],
    "vae": sdxl.FULL_SIZE["vae"],
}

CASES = [
    dict(id="single_file_base_refiner_euler", prompt="a lighthouse on a cliff at dusk", negative_prompt="blurry", seed=7, steps=4,
         split=0.75, guidance_scale=5.0),
    dict(id="single_file_base_refiner_euler_a_aesthetic", scheduler="EulerAncestralDiscreteScheduler", prompt="a castle",
         seed=9, steps=5, split=0.6, guidance_scale=4.0, aesthetic_score=7.0, negative_aesthetic_score=2.0),
]
SCHEDULERS = {"EulerDiscreteScheduler": EulerDiscreteScheduler, "EulerAncestralDiscreteScheduler": EulerAncestralDiscreteScheduler}


def build_unet(gen) -> UNet2DConditionModel:
    unet = UNet2DConditionModel(
        sample_size=8, in_channels=4, out_channels=4, layers_per_block=2, block_out_channels=(8, 8, 8, 16),
        down_block_types=("DownBlock2D", "CrossAttnDownBlock2D", "CrossAttnDownBlock2D", "DownBlock2D"),
        up_block_types=("UpBlock2D", "CrossAttnUpBlock2D", "CrossAttnUpBlock2D", "UpBlock2D"),
        attention_head_dim=(2, 2, 2, 4), transformer_layers_per_block=2, use_linear_projection=True,
        addition_embed_type="text_time", addition_time_embed_dim=8, projection_class_embeddings_input_dim=6 + 5 * 8,
        cross_attention_dim=6, norm_num_groups=8, flip_sin_to_cos=True, freq_shift=0,
    ).eval()
    tiny.perturb(unet, gen)
    return unet


def write_folder(folder: Path, gen) -> None:
    folder.mkdir(parents=True)
    build_unet(gen).to(torch.float16).save_pretrained(folder / "unet", safe_serialization=True)
    for name in ("text_encoder_2", "tokenizer_2", "vae"):
        os.symlink(Path("../../sdxl/diffusers") / name, folder / name)
    scheduler = EulerDiscreteScheduler.from_config(sdxl.SDXL_SCHEDULER)
    scheduler.save_pretrained(folder / "scheduler")
    pipe = StableDiffusionXLImg2ImgPipeline(
        vae=AutoencoderKL.from_pretrained(folder / "vae"), text_encoder=None,
        text_encoder_2=CLIPTextModelWithProjection.from_pretrained(folder / "text_encoder_2"), tokenizer=None,
        tokenizer_2=CLIPTokenizer.from_pretrained(folder / "tokenizer_2"), unet=UNet2DConditionModel.from_pretrained(folder / "unet"),
        scheduler=scheduler, requires_aesthetics_score=True, force_zeros_for_empty_prompt=False,
    )
    pipe.save_config(folder)


def single_file_state_dict(conv, folder: Path) -> dict:
    """The script's __main__ (safetensors branch) for the refiner: no CLIP ViT-L, OpenCLIP under embedders.0."""
    conv.unet_conversion_map_layer[:] = sd.unet_layer_table(json.loads((folder / "unet/config.json").read_text()))
    unet = conv.convert_unet_state_dict(load_file(folder / "unet/diffusion_pytorch_model.safetensors"))
    vae = conv.convert_vae_state_dict(load_file(folder / "vae/diffusion_pytorch_model.safetensors"))
    te2 = conv.convert_openclip_text_enc_state_dict(load_file(folder / "text_encoder_2/model.safetensors"))
    state = {"model.diffusion_model." + k: v for k, v in unet.items()}
    state.update({"first_stage_model." + k: v for k, v in vae.items()})
    te2 = {REFINER_PREFIX + k: v for k, v in te2.items()}
    te2[REFINER_PREFIX + "text_projection"] = te2.pop(REFINER_PREFIX + "text_projection.weight").T.contiguous()
    state.update(te2)
    return state


def full_size_shapes(conv) -> None:
    """FULL_SIZE's models on the meta device, renamed as single_file_state_dict renames the tiny ones."""
    with torch.device("meta"):
        unet = UNet2DConditionModel(**FULL_SIZE["unet"])
        vae = AutoencoderKL(**FULL_SIZE["vae"])
        te2 = CLIPTextModelWithProjection(CLIPTextConfig(**FULL_SIZE["text_encoder_2"]))
    conv.unet_conversion_map_layer[:] = sd.unet_layer_table(FULL_SIZE["unet"])
    state = {"model.diffusion_model." + k: v for k, v in conv.convert_unet_state_dict(unet.state_dict()).items()}
    state.update({"first_stage_model." + k: v for k, v in conv.convert_vae_state_dict(vae.state_dict()).items()})
    te2_state = {k if k.startswith(("text_model.", "text_projection.")) else f"text_model.{k}": v for k, v in te2.state_dict().items()}
    te2_state = {REFINER_PREFIX + k: v for k, v in conv.convert_openclip_text_enc_state_dict(te2_state).items()}
    te2_state[REFINER_PREFIX + "text_projection"] = te2_state.pop(REFINER_PREFIX + "text_projection.weight").T
    state.update(te2_state)
    tensors = {k: list(v.shape) for k, v in state.items() if v.dtype.is_floating_point}
    doc = {"provenance": PROVENANCE, "configs": FULL_SIZE, "tensors": tensors}
    (OUT / "full_size_shapes.json").write_text(json.dumps(doc, indent=None) + "\n")
    print(f"full_size_shapes.json: {len(tensors)} tensors")


def refiner_weights(pipe) -> dict:
    return {f"{name}.{k}": v for name in ("text_encoder_2", "unet", "vae") for k, v in getattr(pipe, name).state_dict().items()}


def flat(t) -> list:
    return [float(v) for v in t.detach().float().reshape(-1).numpy()]


def run_case(base_file: Path, refiner_file: Path, case: dict) -> dict:
    """Base then refiner, each loaded from its single file, on one generator object (gen_tiny_sdxl.run_refiner_case's order)."""
    cls = SCHEDULERS[case.get("scheduler", "EulerDiscreteScheduler")]
    base = StableDiffusionXLPipeline.from_single_file(str(base_file), config=str(BASE / "diffusers"), torch_dtype=torch.float32)
    refiner = StableDiffusionXLImg2ImgPipeline.from_single_file(str(refiner_file), config=str(OUT / "diffusers"), torch_dtype=torch.float32)
    timesteps = {"base": [], "refiner": []}
    for name, p in (("base", base), ("refiner", refiner)):
        p.scheduler = cls.from_config(p.scheduler.config)
        p.set_progress_bar_config(disable=True)
        forward = p.unet.forward

        def spy(sample, timestep, *a, _f=forward, _n=name, **k):
            timesteps[_n].append(float(timestep))
            return _f(sample, timestep, *a, **k)
        p.unet.forward = spy
    common = dict(prompt=case["prompt"], num_inference_steps=case["steps"], guidance_scale=case["guidance_scale"])
    if "negative_prompt" in case:
        common["negative_prompt"] = case["negative_prompt"]
    extra = {k: case[k] for k in ("aesthetic_score", "negative_aesthetic_score") if k in case}

    def run(output_type):
        g = torch.Generator().manual_seed(case["seed"])
        with torch.no_grad():
            latents = base(**common, width=64, height=64, denoising_end=case["split"], output_type="latent", generator=g).images
            return refiner(**common, **extra, image=latents, denoising_start=case["split"], output_type=output_type, generator=g).images

    final = run("latent")
    seen = {k: list(v) for k, v in timesteps.items()}
    u8 = (run("np") * 255).round().astype(np.uint8)
    return {**case, "scheduler_class": cls.__name__, "base_timesteps": seen["base"], "refiner_timesteps": seen["refiner"],
            "latent_shape": list(final.shape), "final_latents": flat(final), "image_shape_hwc": list(u8.shape[1:]),
            "image_uint8_hwc_b64": base64.b64encode(np.ascontiguousarray(u8[0]).tobytes()).decode("ascii")}


def main() -> None:
    assert diffusers.__version__ == "0.40.0.dev0", diffusers.__version__
    assert transformers.__version__ == "5.18.0", transformers.__version__
    torch.set_grad_enabled(False)
    if OUT.exists():
        shutil.rmtree(OUT)
    folder = OUT / "diffusers"
    gen = torch.Generator().manual_seed(SEED)
    torch.manual_seed(SEED)  # the classes' own init draws from the global generator
    write_folder(folder, gen)

    conv = sdxl.load_converter()
    state = single_file_state_dict(conv, folder)
    path = OUT / "single_file.safetensors"
    save_file({k: v.to(torch.float16).contiguous() for k, v in state.items()}, path)
    expected = refiner_weights(StableDiffusionXLImg2ImgPipeline.from_pretrained(folder, torch_dtype=torch.float32))
    loaded = StableDiffusionXLImg2ImgPipeline.from_single_file(str(path), config=str(folder), torch_dtype=torch.float32)
    assert loaded.text_encoder is None and loaded.tokenizer is None, "the refiner pipeline has no first text encoder"
    tiny.assert_same_weights(path.name, refiner_weights(loaded), expected)
    print(f"{path.name} ({path.stat().st_size} bytes, {len(state)} tensors) loads back to the folder's {len(expected)} weights exactly")

    cases = [run_case(BASE / "single_file.fp16.safetensors", path, case) for case in CASES]
    for c in cases:
        print(f"{c['id']}: base {c['base_timesteps']} refiner {c['refiner_timesteps']} |latents| max {max(abs(x) for x in c['final_latents']):.4f}")
    doc = {
        "provenance": PROVENANCE,
        "base": "test/fixtures/checkpoints/sdxl/single_file.fp16.safetensors with config test/fixtures/checkpoints/sdxl/diffusers",
        "fields": "base = StableDiffusionXLPipeline.from_single_file(denoising_end=split, output_type='latent'), then refiner = "
                  "StableDiffusionXLImg2ImgPipeline.from_single_file(single_file.safetensors, config=diffusers) with image=those "
                  "latents, denoising_start=split, the SAME generator object; 64x64; scheduler_class for both; final_latents / "
                  "image_uint8_hwc_b64 (base64 of round(x * 255) of output_type='np') are the refiner's",
        "single_file": {"dtype": "fp16", "bytes": path.stat().st_size, "tensors": len(state)},
        "cases": cases,
    }
    (OUT / "pipeline_goldens.json").write_text(json.dumps(doc, indent=None) + "\n")
    full_size_shapes(conv)


if __name__ == "__main__":
    main()
