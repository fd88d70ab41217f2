#!/usr/bin/env python3
"""Single-file (A1111/civitai layout) forms of the tiny reference checkpoints, and whole-pipeline goldens.

For lib/convert/checkpoint (issue 12). Reads the diffusers folders written by gen_tiny_checkpoints.py
(test/fixtures/checkpoints/<family>/diffusers/) and writes, with diffusers' own code:

  test/fixtures/checkpoints/sd1/single_file.safetensors        fp32  } the original LDM layout
  test/fixtures/checkpoints/sd1/single_file.fp16.safetensors   fp16  } (model.diffusion_model.*,
  test/fixtures/checkpoints/sd2/single_file.fp16.safetensors   fp16  }  first_stage_model.*, cond_stage_model.*)
  test/fixtures/checkpoints/<family>/pipeline_goldens.json     StableDiffusionPipeline on the folder

The single files come from diffusers' scripts/convert_diffusers_to_original_stable_diffusion.py, whose
functions are imported and run: convert_unet_state_dict, convert_vae_state_dict, and for the text
encoder the identity (SD 1.x, `cond_stage_model.transformer.`) or convert_text_enc_state_dict_v20
(SD 2.x OpenCLIP, `cond_stage_model.model.`, q/k/v joined into in_proj), called directly because the
script's own v2 test looks for layer 22 of the real 23-layer encoder. transformers 5 saves
CLIPTextModel without the `text_model.` prefix that the script (and every real single file) has, so
it is put back first. The script's UNet prefix table is built at import for SD's own geometry
(4 levels, 2 resnets per level, `3 * i + j` block numbers); `unet_layer_table` rebuilds it with the
same formulas for the tiny UNet's levels, layers per block and attention placement (n = layers + 1
in place of 3), and convert_unet_state_dict then runs unchanged. fp32 is written for sd1 only to keep fixtures small: the tiny weights are fp16
values, so the fp32 and fp16 files hold the same numbers in two dtypes.

Each file is checked to load back, through StableDiffusionPipeline.from_single_file(file,
config=<folder>), to exactly the weights from_pretrained(<folder>) loads (float32), and the pipeline
from the single file is checked to give the same latents as the one from the folder.

Pipeline goldens (float32 models, torch.Generator("cpu").manual_seed(seed), 64x64): per case the
final latents (output_type="latent", before the VAE) and the uint8 image as diffusers' numpy_to_pil
makes it (round(x * 255) of output_type="np"), HWC.

Made with (offline, see scripts/reference/README.md):
  PYTHONPATH=/tmp/diffusers-src/src /tmp/dvenv/bin/python scripts/reference/gen_tiny_single_file.py
  diffusers 0.40.0.dev0 at git 58eb52c0803ea9af3abec60841c2a093bdf1f951 (its scripts/ folder at
  /tmp/diffusers-src/scripts), transformers 5.18.0, torch 2.13.0+cpu, safetensors 0.8.0.
"""
import importlib.util
import json
import os
import sys
from pathlib import Path

import diffusers
import numpy as np
import safetensors
import torch
import transformers
from diffusers import EulerDiscreteScheduler, PNDMScheduler, StableDiffusionPipeline
from safetensors.torch import load_file, save_file

sys.path.insert(0, str(Path(__file__).resolve().parent))
import gen_tiny_checkpoints as tiny  # noqa: E402  (assert_same_weights)

DIFFUSERS_COMMIT = "58eb52c0803ea9af3abec60841c2a093bdf1f951"
DIFFUSERS_SCRIPTS = Path(os.environ.get("DIFFUSERS_SCRIPTS", "/tmp/diffusers-src/scripts"))
ROOT = Path(__file__).resolve().parents[2]
OUT = ROOT / "test/fixtures/checkpoints"

PROVENANCE = {
    "script": "scripts/reference/gen_tiny_single_file.py",
    "diffusers": f"{diffusers.__version__} (git {DIFFUSERS_COMMIT})",
    "transformers": transformers.__version__,
    "torch": torch.__version__,
    "safetensors": safetensors.__version__,
}

# (family, dtypes written, pipeline cases)
FAMILIES = {
    "sd1": {
        "dtypes": ["fp32", "fp16"],
        "cases": [
            dict(id="sd1-pndm-cfg", scheduler="PNDMScheduler", prompt="a photograph of an astronaut riding a horse",
                 negative_prompt="blurry, low quality", seed=42, steps=3, guidance_scale=7.5),
            dict(id="sd1-euler-cfg", scheduler="EulerDiscreteScheduler", prompt="a red fox in the snow",
                 negative_prompt="", seed=1234, steps=4, guidance_scale=5.0),
        ],
    },
    "sd2": {
        "dtypes": ["fp16"],
        "cases": [
            dict(id="sd2-euler-v-cfg", scheduler="EulerDiscreteScheduler", prompt="a photograph of an astronaut riding a horse",
                 negative_prompt="blurry, low quality", seed=42, steps=3, guidance_scale=7.5),
            dict(id="sd2-ddim-v-cfg", scheduler="DDIMScheduler", prompt="a red fox in the snow",
                 negative_prompt="", seed=1234, steps=4, guidance_scale=5.0),
        ],
    },
}
SCHEDULERS = {"PNDMScheduler": PNDMScheduler, "EulerDiscreteScheduler": EulerDiscreteScheduler, "DDIMScheduler": diffusers.DDIMScheduler}


def load_converter():
    spec = importlib.util.spec_from_file_location("convert_to_original", DIFFUSERS_SCRIPTS / "convert_diffusers_to_original_stable_diffusion.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def unet_layer_table(config: dict) -> list:
    """The script's unet_conversion_map_layer for any level count and layers_per_block (see the docstring)."""
    n = config["layers_per_block"] + 1
    levels = len(config["block_out_channels"])
    down_attn = [t.startswith("CrossAttn") for t in config["down_block_types"]]
    up_attn = [t.startswith("CrossAttn") for t in config["up_block_types"]]
    table = []
    for i in range(levels):
        for j in range(n - 1):
            table.append((f"input_blocks.{n * i + j + 1}.0.", f"down_blocks.{i}.resnets.{j}."))
            if down_attn[i]:
                table.append((f"input_blocks.{n * i + j + 1}.1.", f"down_blocks.{i}.attentions.{j}."))
        for j in range(n):
            table.append((f"output_blocks.{n * i + j}.0.", f"up_blocks.{i}.resnets.{j}."))
            if up_attn[i]:
                table.append((f"output_blocks.{n * i + j}.1.", f"up_blocks.{i}.attentions.{j}."))
        if i < levels - 1:
            table.append((f"input_blocks.{n * (i + 1)}.0.op.", f"down_blocks.{i}.downsamplers.0.conv."))
            table.append((f"output_blocks.{n * i + n - 1}.{2 if up_attn[i] else 1}.", f"up_blocks.{i}.upsamplers.0."))
    table.append(("middle_block.1.", "mid_block.attentions.0."))
    for j in range(2):
        table.append((f"middle_block.{2 * j}.", f"mid_block.resnets.{j}."))
    return table


def single_file_state_dict(conv, folder: Path, family: str) -> dict:
    """The script's __main__, minus its v2 detection by depth (see the module docstring)."""
    conv.unet_conversion_map_layer[:] = unet_layer_table(json.loads((folder / "unet/config.json").read_text()))
    unet = load_file(folder / "unet/diffusion_pytorch_model.safetensors")
    vae = load_file(folder / "vae/diffusion_pytorch_model.safetensors")
    text = load_file(folder / "text_encoder/model.safetensors")
    text = {k if k.startswith("text_model.") else f"text_model.{k}": v for k, v in text.items()}

    unet = {"model.diffusion_model." + k: v for k, v in conv.convert_unet_state_dict(unet).items()}
    vae = {"first_stage_model." + k: v for k, v in conv.convert_vae_state_dict(vae).items()}
    if family == "sd2":
        text = conv.convert_text_enc_state_dict_v20({"transformer." + k: v for k, v in text.items()})
        text = {"cond_stage_model.model." + k: v for k, v in text.items()}
    else:
        text = {"cond_stage_model.transformer." + k: v for k, v in conv.convert_text_enc_state_dict(text).items()}
    return {**unet, **vae, **text}


def component_weights(pipe) -> dict:
    return {f"{name}.{k}": v for name in ("text_encoder", "unet", "vae") for k, v in getattr(pipe, name).state_dict().items()}


def run_case(pipe, case: dict) -> tuple[np.ndarray, np.ndarray]:
    pipe.scheduler = SCHEDULERS[case["scheduler"]].from_config(pipe.scheduler.config)
    common = dict(prompt=case["prompt"], negative_prompt=case["negative_prompt"], num_inference_steps=case["steps"],
                  guidance_scale=case["guidance_scale"], height=64, width=64)
    latents = pipe(**common, generator=torch.Generator("cpu").manual_seed(case["seed"]), output_type="latent").images
    image = pipe(**common, generator=torch.Generator("cpu").manual_seed(case["seed"]), output_type="np").images
    return latents[0].numpy(), (image[0] * 255).round().astype("uint8")


def main():
    conv = load_converter()
    torch.set_grad_enabled(False)
    for family, spec in FAMILIES.items():
        folder = OUT / family / "diffusers"
        reference = StableDiffusionPipeline.from_pretrained(folder, torch_dtype=torch.float32, safety_checker=None)
        reference.set_progress_bar_config(disable=True)
        state = single_file_state_dict(conv, folder, family)
        expected = component_weights(reference)
        files = {}
        for dtype in spec["dtypes"]:
            path = OUT / family / ("single_file.safetensors" if dtype == "fp32" else "single_file.fp16.safetensors")
            torch_dtype = torch.float32 if dtype == "fp32" else torch.float16
            save_file({k: v.to(torch_dtype).contiguous() for k, v in state.items()}, path)
            loaded = StableDiffusionPipeline.from_single_file(str(path), config=str(folder), torch_dtype=torch.float32, safety_checker=None)
            loaded.set_progress_bar_config(disable=True)
            tiny.assert_same_weights(path.name, component_weights(loaded), expected)
            files[path.name] = {"dtype": dtype, "bytes": path.stat().st_size, "tensors": len(state)}
            print(f"{family}: {path.name} ({path.stat().st_size} bytes) loads back to the folder's {len(expected)} weights exactly")
            first = spec["cases"][0]
            a, _ = run_case(loaded, first)
            b, _ = run_case(reference, first)
            assert np.array_equal(a, b), f"{path.name}: the single-file pipeline's latents differ from the folder's"

        cases = []
        for case in spec["cases"]:
            latents, image = run_case(reference, case)
            cases.append({**case, "height": 64, "width": 64,
                          # `_use_default_values` is a set: its order changes run to run.
                          "scheduler_config": {k: v for k, v in reference.scheduler.config.items() if k != "_use_default_values"},
                          "latents": {"shape": list(latents.shape), "values": [float(x) for x in latents.reshape(-1)]},
                          "image_uint8_hwc": {"shape": list(image.shape), "values": image.reshape(-1).tolist()}})
            print(f"{family}: {case['id']} latents |max| {np.abs(latents).max():.4f}")
        golden = {"provenance": PROVENANCE, "single_files": files, "cases": cases}
        (OUT / family / "pipeline_goldens.json").write_text(json.dumps(golden, indent=None, default=str) + "\n")


if __name__ == "__main__":
    sys.exit(main())
