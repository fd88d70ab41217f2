"""
FLOPs of one SDXL base UNet evaluation, counted by running diffusers' own UNet2DConditionModel
(built from stabilityai/stable-diffusion-xl-base-1.0's unet/config.json, below) on the meta device
under torch.utils.flop_counter.FlopCounterMode: no weights, no arithmetic, every aten op counted from
its shapes (a multiply-add = 2 FLOPs; convolutions, matmuls and attention; FlopCounterMode does not
count element-wise ops, norms or softmax).

The numbers set the GPU target: a UNet evaluation at 1024² with classifier-free guidance is batch 2.
Output of the run recorded below (2,567,463,684 parameters):
  512²: 1.589 TFLOPs per image; 768²: 3.641; 1024²: 6.761 (13.522 for the CFG batch of 2).

Usage: PYTHONPATH=/tmp/diffusers-src/src /tmp/dvenv/bin/python scripts/reference/sdxl_unet_flops.py
Made with diffusers 0.40.0.dev0 (58eb52c), torch 2.13.0+cpu.
"""
import json

import torch
from torch.utils.flop_counter import FlopCounterMode
from diffusers import UNet2DConditionModel

# stabilityai/stable-diffusion-xl-base-1.0, unet/config.json (the keys that shape the network).
SDXL_BASE_UNET = {
    "act_fn": "silu", "addition_embed_type": "text_time", "addition_embed_type_num_heads": 64, "addition_time_embed_dim": 256,
    "attention_head_dim": [5, 10, 20], "block_out_channels": [320, 640, 1280], "center_input_sample": False,
    "cross_attention_dim": 2048, "down_block_types": ["DownBlock2D", "CrossAttnDownBlock2D", "CrossAttnDownBlock2D"],
    "downsample_padding": 1, "flip_sin_to_cos": True, "freq_shift": 0, "in_channels": 4, "layers_per_block": 2,
    "mid_block_scale_factor": 1, "mid_block_type": "UNetMidBlock2DCrossAttn", "norm_eps": 1e-05, "norm_num_groups": 32,
    "out_channels": 4, "projection_class_embeddings_input_dim": 2816, "sample_size": 128,
    "transformer_layers_per_block": [1, 2, 10], "up_block_types": ["CrossAttnUpBlock2D", "CrossAttnUpBlock2D", "UpBlock2D"],
    "use_linear_projection": True,
}


def count(unet, batch, size):
    h = w = size // 8
    args = (torch.randn(batch, 4, h, w, device="meta"), torch.tensor([999.0] * batch, device="meta"), torch.randn(batch, 77, 2048, device="meta"))
    added = {"text_embeds": torch.randn(batch, 1280, device="meta"), "time_ids": torch.randn(batch, 6, device="meta")}
    with FlopCounterMode(display=False) as counter, torch.no_grad():
        unet(*args, added_cond_kwargs=added)
    return counter.get_total_flops()


def main():
    with torch.device("meta"):
        unet = UNet2DConditionModel(**SDXL_BASE_UNET).eval()
    params = sum(p.numel() for p in unet.parameters())
    rows = {}
    for size in (512, 768, 1024):
        for batch in (1, 2):
            rows[f"{size}x{size} batch {batch}"] = count(unet, batch, size)
    print(json.dumps({"unet_parameters": params, "flops": rows, "tflops": {k: round(v / 1e12, 3) for k, v in rows.items()}}, indent=1))


if __name__ == "__main__":
    main()
