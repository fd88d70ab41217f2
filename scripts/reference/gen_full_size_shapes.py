#!/usr/bin/env python3
"""The tensor names and shapes of full-size SD 1.5 and SD 2.1 single-file checkpoints (no weights).

For lib/convert/checkpoint (issue 12): the configs derived from a single file's shapes are checked
against the published configs the shapes were made from, and scripts/bench-convert-checkpoint.mjs
writes a random-weight checkpoint of these shapes to time a full-size conversion.

The models are diffusers' UNet2DConditionModel and AutoencoderKL and transformers' CLIPTextModel
built on the meta device (shapes only) from the configs below — those of
stable-diffusion-v1-5/stable-diffusion-v1-5 and stabilityai/stable-diffusion-2-1 (`unet/config.json`,
`vae/config.json`, `text_encoder/config.json`, the keys that decide shapes) — and renamed to the
original layout by diffusers' scripts/convert_diffusers_to_original_stable_diffusion.py, unchanged
(its tables are made for exactly this geometry): convert_unet_state_dict, convert_vae_state_dict,
and the text encoder as that script's __main__ does (SD 2.x through convert_text_enc_state_dict_v20).
transformers 5 names CLIPTextModel's weights without the `text_model.` prefix that real files have;
it is put back first.

Writes test/fixtures/checkpoints/full_size_shapes.json: {family: {"configs": {...}, "tensors": {name: shape}}}.

Made with (offline, see scripts/reference/README.md):
  PYTHONPATH=/tmp/diffusers-src/src /tmp/dvenv/bin/python scripts/reference/gen_full_size_shapes.py
  diffusers 0.40.0.dev0 at git 58eb52c0803ea9af3abec60841c2a093bdf1f951, transformers 5.18.0, torch 2.13.0+cpu.
"""
import importlib.util
import json
import os
from pathlib import Path

import diffusers
import torch
import transformers
from diffusers import AutoencoderKL, UNet2DConditionModel
from transformers import CLIPTextConfig, CLIPTextModel

DIFFUSERS_COMMIT = "58eb52c0803ea9af3abec60841c2a093bdf1f951"
DIFFUSERS_SCRIPTS = Path(os.environ.get("DIFFUSERS_SCRIPTS", "/tmp/diffusers-src/scripts"))
OUT = Path(__file__).resolve().parents[2] / "test/fixtures/checkpoints/full_size_shapes.json"

VAE = dict(block_out_channels=[128, 256, 512, 512], down_block_types=["DownEncoderBlock2D"] * 4, up_block_types=["UpDecoderBlock2D"] * 4,
           in_channels=3, out_channels=3, latent_channels=4, layers_per_block=2, norm_num_groups=32, sample_size=512, scaling_factor=0.18215)
UNET_COMMON = dict(block_out_channels=[320, 640, 1280, 1280], layers_per_block=2, in_channels=4, out_channels=4, norm_num_groups=32,
                   down_block_types=["CrossAttnDownBlock2D", "CrossAttnDownBlock2D", "CrossAttnDownBlock2D", "DownBlock2D"],
                   up_block_types=["UpBlock2D", "CrossAttnUpBlock2D", "CrossAttnUpBlock2D", "CrossAttnUpBlock2D"])
FAMILIES = {
    "sd15": {
        "unet": dict(UNET_COMMON, sample_size=64, cross_attention_dim=768, attention_head_dim=8, use_linear_projection=False, upcast_attention=False),
        "vae": VAE,
        "text_encoder": dict(hidden_size=768, intermediate_size=3072, num_attention_heads=12, num_hidden_layers=12, max_position_embeddings=77,
                             vocab_size=49408, hidden_act="quick_gelu", projection_dim=768),
    },
    "sd21": {
        "unet": dict(UNET_COMMON, sample_size=96, cross_attention_dim=1024, attention_head_dim=[5, 10, 20, 20], use_linear_projection=True, upcast_attention=True),
        "vae": dict(VAE, sample_size=768),
        "text_encoder": dict(hidden_size=1024, intermediate_size=4096, num_attention_heads=16, num_hidden_layers=23, max_position_embeddings=77,
                             vocab_size=49408, hidden_act="gelu", projection_dim=512),
    },
}


def load_converter():
    spec = importlib.util.spec_from_file_location("convert_to_original", DIFFUSERS_SCRIPTS / "convert_diffusers_to_original_stable_diffusion.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def main():
    conv = load_converter()
    out = {"provenance": {"script": "scripts/reference/gen_full_size_shapes.py", "diffusers": f"{diffusers.__version__} (git {DIFFUSERS_COMMIT})",
                          "transformers": transformers.__version__, "torch": torch.__version__}}
    for family, configs in FAMILIES.items():
        with torch.device("meta"):
            unet = UNet2DConditionModel(**configs["unet"]).state_dict()
            vae = AutoencoderKL(**configs["vae"]).state_dict()
            text = CLIPTextModel(CLIPTextConfig(**configs["text_encoder"])).state_dict()
        text = {k if k.startswith("text_model.") else f"text_model.{k}": v for k, v in text.items()}
        state = {"model.diffusion_model." + k: v for k, v in conv.convert_unet_state_dict(unet).items()}
        state.update({"first_stage_model." + k: v for k, v in conv.convert_vae_state_dict(vae).items()})
        if family == "sd21":
            text = conv.convert_text_enc_state_dict_v20({"transformer." + k: v for k, v in text.items()})
            state.update({"cond_stage_model.model." + k: v for k, v in text.items()})
        else:
            state.update({"cond_stage_model.transformer." + k: v for k, v in conv.convert_text_enc_state_dict(text).items()})
        out[family] = {"configs": configs, "tensors": {k: list(v.shape) for k, v in state.items()}}
        params = sum(torch.Size(v.shape).numel() for v in state.values())
        print(f"{family}: {len(state)} tensors, {params} parameters ({params * 2 / 2**30:.2f} GiB in fp16)")
    OUT.write_text(json.dumps(out, indent=None, separators=(",", ":")) + "\n")


if __name__ == "__main__":
    main()
