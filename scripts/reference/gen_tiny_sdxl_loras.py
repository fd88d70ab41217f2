#!/usr/bin/env python3
"""Tiny LoRAs for the tiny SDXL base, and what diffusers' StableDiffusionXLPipeline makes of them.

The SDXL counterpart of gen_tiny_loras.py (SD 1.x); same layout, written to test/fixtures/loras/sdxl/:
  kohya_sdxl.safetensors  a kohya-format SDXL LoRA, float16: `lora_unet_*` under the SGM/LDM block names
                          kohya's SDXL trainer uses (`input_blocks_4_1_transformer_blocks_0_attn1_to_q`,
                          `middle_block_1_…`, `output_blocks_3_0_out_layers_3`, resnet `in_layers_2`,
                          `emb_layers_1`, `skip_connection`, `time_embed_0`, `label_emb_0_0`), `lora_te1_*`
                          (CLIP ViT-L → text_encoder) and `lora_te2_*` (OpenCLIP bigG → text_encoder_2), alpha 2
                          at ranks 4 and 2, `ss_base_model_version` = sdxl_base_v1-0.
  peft_sdxl.safetensors   a diffusers/PEFT LoRA saved by `StableDiffusionXLPipeline.save_lora_weights` (`unet.*`,
                          `text_encoder.*`, `text_encoder_2.*`) with `lora_adapter_metadata`.
  fused.safetensors       per case, every weight any case changes, as `load_lora_weights` + `fuse_lora` leave it.
  generations.safetensors whole StableDiffusionXLPipeline generations (CASE): `<case>/latents`, `<case>/pixels`
                          for base, kohya_0.8, kohya_0.8+peft_0.5 and "unloaded" (unfuse + unload on the same pipeline).
  reference.json          cases, changed keys, model weight shapes, versions.

Base model: test/fixtures/checkpoints/sdxl/diffusers (scripts/reference/gen_tiny_sdxl_single_file.py).
Run offline from the repository root with diffusers 0.40.0.dev0 (git 58eb52c0803ea9af3abec60841c2a093bdf1f951),
torch 2.13.0+cpu, transformers 5.18.0, peft 0.21.0, safetensors 0.8.0:
  PYTHONPATH=/tmp/diffusers-src/src /tmp/dvenv/bin/python scripts/reference/gen_tiny_sdxl_loras.py
"""
import json
import sys
from pathlib import Path

import diffusers
import numpy as np
import peft
import safetensors
import safetensors.torch
import torch
import transformers
from diffusers import StableDiffusionXLPipeline
from peft import LoraConfig
from peft.utils import get_peft_model_state_dict
from safetensors.torch import save_file

MODEL = Path("test/fixtures/checkpoints/sdxl/diffusers")
OUT = Path("test/fixtures/loras/sdxl")
# The SDXL pipeline golden's request (test/fixtures/checkpoints/sdxl/pipeline_goldens.json).
CASE = {"prompt": "a photograph of an astronaut riding a horse", "negative_prompt": "blurry", "seed": 42, "steps": 3, "guidance_scale": 5.0, "height": 64, "width": 64}
F32 = torch.float32
# One alpha for every layer: diffusers 0.40 cannot apply differing alphas of kohya files (see gen_tiny_loras.py).
KOHYA_ALPHA = 2.0
# kohya SDXL module name (SGM/LDM UNet, "." written "_") → (diffusers module path it must land on, rank).
# The tiny UNet has layers_per_block 2: input_blocks 1-2 level 0, 4-5 level 1 (4_1 its first attention),
# 7-8 level 2; output_blocks 0-2 level 0 … (each output level one resnet more).
KOHYA_UNET = {
    "input_blocks_4_1_transformer_blocks_0_attn1_to_q": ("down_blocks.1.attentions.0.transformer_blocks.0.attn1.to_q", 4),
    "input_blocks_4_1_transformer_blocks_0_attn2_to_k": ("down_blocks.1.attentions.0.transformer_blocks.0.attn2.to_k", 4),
    "input_blocks_4_1_proj_in": ("down_blocks.1.attentions.0.proj_in", 4),
    "input_blocks_4_0_in_layers_2": ("down_blocks.1.resnets.0.conv1", 4),  # LoCon: a 3×3 conv
    "input_blocks_4_0_emb_layers_1": ("down_blocks.1.resnets.0.time_emb_proj", 2),
    "input_blocks_7_0_skip_connection": ("down_blocks.2.resnets.0.conv_shortcut", 2),
    "middle_block_1_transformer_blocks_0_ff_net_0_proj": ("mid_block.attentions.0.transformer_blocks.0.ff.net.0.proj", 4),
    "output_blocks_1_1_transformer_blocks_0_attn1_to_out_0": ("up_blocks.0.attentions.1.transformer_blocks.0.attn1.to_out.0", 4),
    "output_blocks_3_0_out_layers_3": ("up_blocks.1.resnets.0.conv2", 2),
    "time_embed_0": ("time_embedding.linear_1", 2),
    "label_emb_0_0": ("add_embedding.linear_1", 2),
}
# Text encoders: MLP layers only, one rank. diffusers 0.40 with transformers 5 turns kohya's
# `self_attn_q_proj` into `self_attn.to_q_lora`, which it then attaches to no module (the layer is
# silently left out), and with mixed ranks it builds a config that misses layers. The PEFT file
# covers the text encoders' attention layers; sd-trt's unit tests cover kohya's attention names.
KOHYA_TE = {
    "lora_te1_": ("text_encoder", {"text_model.encoder.layers.0.mlp.fc1": 4, "text_model.encoder.layers.1.mlp.fc2": 4}),
    "lora_te2_": ("text_encoder_2", {"text_model.encoder.layers.0.mlp.fc2": 4, "text_model.encoder.layers.1.mlp.fc1": 4}),
}
COMPONENTS = ("unet", "text_encoder", "text_encoder_2")
DISK = {"unet": "diffusion_pytorch_model.safetensors", "text_encoder": "model.safetensors", "text_encoder_2": "model.safetensors"}


def module_of(root: torch.nn.Module, path: str) -> torch.nn.Module:
    try:
        return root.get_submodule(path)
    except AttributeError:  # transformers 5 dropped CLIPTextModel's `text_model` level
        return root.get_submodule(path.removeprefix("text_model."))


def factors(m: torch.nn.Module, rank: int, g: torch.Generator):
    if isinstance(m, torch.nn.Conv2d):
        kh, kw = m.kernel_size
        return torch.randn(rank, m.in_channels, kh, kw, generator=g) * 0.3, torch.randn(m.out_channels, rank, 1, 1, generator=g) * 0.3
    return torch.randn(rank, m.in_features, generator=g) * 0.3, torch.randn(m.out_features, rank, generator=g) * 0.3


def kohya_lora(pipe, g: torch.Generator) -> dict:
    sd = {}
    layers = [(f"lora_unet_{name}", module_of(pipe.unet, path), rank) for name, (path, rank) in KOHYA_UNET.items()]
    for prefix, (component, table) in KOHYA_TE.items():
        layers += [(prefix + path.replace(".", "_"), module_of(getattr(pipe, component), path), rank) for path, rank in table.items()]
    for name, m, rank in layers:
        down, up = factors(m, rank, g)
        sd[f"{name}.lora_down.weight"] = down.half()
        sd[f"{name}.lora_up.weight"] = up.half()
        sd[f"{name}.alpha"] = torch.tensor(KOHYA_ALPHA).half()
    return sd


def randomize_lora(model: torch.nn.Module, g: torch.Generator) -> None:
    """PEFT initialises lora_B to zero (a no-op adapter); give both factors values."""
    for name, p in model.named_parameters():
        if "lora_B" in name or "lora_A" in name:
            with torch.no_grad():
                p.copy_(torch.randn(p.shape, generator=g) * 0.3)


def load_pipe() -> StableDiffusionXLPipeline:
    pipe = StableDiffusionXLPipeline.from_pretrained(MODEL, torch_dtype=F32)
    pipe.set_progress_bar_config(disable=True)
    return pipe


def main() -> None:
    assert diffusers.__version__ == "0.40.0.dev0", diffusers.__version__
    torch.set_grad_enabled(False)
    OUT.mkdir(parents=True, exist_ok=True)
    g = torch.Generator().manual_seed(4321)
    pipe = load_pipe()

    # 1. kohya file, written in kohya's SDXL layout (its trainer is not installable offline).
    kohya_path = OUT / "kohya_sdxl.safetensors"
    save_file(kohya_lora(pipe, g), kohya_path, metadata={"ss_network_module": "networks.lora", "ss_output_name": "kohya_sdxl", "ss_base_model_version": "sdxl_base_v1-0"})

    # 2. PEFT file: PEFT attaches the adapters, diffusers saves them.
    cfgs = {
        "unet": LoraConfig(r=4, lora_alpha=8, target_modules=["to_q", "to_v", "to_out.0", "proj_out", "conv2"], rank_pattern={"to_v": 2}, alpha_pattern={"conv2": 2}),
        "text_encoder": LoraConfig(r=2, lora_alpha=3, target_modules=["k_proj", "fc2"]),
        "text_encoder_2": LoraConfig(r=2, lora_alpha=4, target_modules=["q_proj", "out_proj", "fc1"]),
    }
    for c in COMPONENTS:
        getattr(pipe, c).add_adapter(cfgs[c])
        randomize_lora(getattr(pipe, c), g)
    peft_path = OUT / "peft_sdxl.safetensors"
    StableDiffusionXLPipeline.save_lora_weights(
        OUT, weight_name=peft_path.name,
        unet_lora_layers=get_peft_model_state_dict(pipe.unet), text_encoder_lora_layers=get_peft_model_state_dict(pipe.text_encoder),
        text_encoder_2_lora_layers=get_peft_model_state_dict(pipe.text_encoder_2),
        unet_lora_adapter_metadata=cfgs["unet"].to_dict(), text_encoder_lora_adapter_metadata=cfgs["text_encoder"].to_dict(),
        text_encoder_2_lora_adapter_metadata=cfgs["text_encoder_2"].to_dict(),
    )
    files = {"kohya": kohya_path, "peft": peft_path}
    # diffusers gets a float32 copy of the kohya file whose text names drop transformers 4's `text_model.`
    # level (the reasons are gen_tiny_loras.py's); the fixture keeps kohya's real names and float16.
    loadable = dict(files)
    loadable["kohya"] = OUT / "kohya_sdxl.for-diffusers.tmp.safetensors"
    # (transformers 5's CLIPTextModel has no `text_model` level; its CLIPTextModelWithProjection keeps one.)
    fresh = load_pipe()
    dropped = [prefix for prefix, (component, _) in KOHYA_TE.items() if not hasattr(getattr(fresh, component), "text_model")]
    state = safetensors.torch.load_file(kohya_path)

    def rename(key: str) -> str:
        prefix = next((p for p in dropped if key.startswith(p + "text_model_")), None)
        return key.replace(prefix + "text_model_", prefix, 1) if prefix else key

    save_file({rename(k): v.float() for k, v in state.items()}, loadable["kohya"])

    on_disk = {(c, k): v for c in COMPONENTS for k, v in safetensors.torch.load_file(MODEL / c / DISK[c]).items()}

    def folder_key(component: str, key: str) -> tuple:
        return (component, key) if (component, key) in on_disk else (component, f"text_model.{key}")

    def weights(p) -> dict:
        return {folder_key(c, k.replace(".base_layer", "")): v.detach().clone() for c in COMPONENTS for k, v in getattr(p, c).state_dict().items() if ".lora_" not in k}

    base = weights(load_pipe())
    assert set(base) == set(on_disk), "the pipeline's weights are not the folder's"
    assert all(torch.equal(base[k], on_disk[k].float()) for k in on_disk), "the pipeline's base weights differ from the files"
    cases = {"kohya_0.8": [("kohya", 0.8)], "peft_0.6": [("peft", 0.6)], "kohya_0.8+peft_0.5": [("kohya", 0.8), ("peft", 0.5)]}

    def apply(p, loras) -> None:
        for name, _ in loras:
            p.load_lora_weights(str(loadable[name]), adapter_name=name)
        names = [n for n, _ in loras]
        p.set_adapters(names, adapter_weights=[s for _, s in loras])
        p.fuse_lora(components=list(COMPONENTS), lora_scale=1.0, adapter_names=names)

    def remove(p) -> None:
        p.unfuse_lora(components=list(COMPONENTS))
        p.unload_lora_weights()

    results = {"base": base}
    for case, loras in cases.items():
        p = load_pipe()
        apply(p, loras)
        results[case] = weights(p)

    # Self-check: every layer the kohya file names landed where the table says.
    for path, _ in KOHYA_UNET.values():
        assert not torch.equal(results["kohya_0.8"][("unet", path + ".weight")], base[("unet", path + ".weight")]), f"diffusers left unet {path} unchanged"
    for component, table in KOHYA_TE.values():
        for path in table:
            assert not torch.equal(results["kohya_0.8"][(component, path + ".weight")], base[(component, path + ".weight")]), f"diffusers left {component} {path} unchanged"
    changed = sorted({key for case in cases for key, v in results[case].items() if not torch.equal(v, base[key])})
    save_file({f"{case}/{c}/{k}": results[case][(c, k)].float().contiguous() for case in ("base", *cases) for (c, k) in changed}, OUT / "fused.safetensors")

    # 3. Whole generations on one pipeline: base, one LoRA, two LoRAs, base again after unfuse + unload.
    gen_pipe = load_pipe()
    common = dict(prompt=CASE["prompt"], negative_prompt=CASE["negative_prompt"], num_inference_steps=CASE["steps"], guidance_scale=CASE["guidance_scale"], height=CASE["height"], width=CASE["width"])

    def generate() -> dict:
        latents = gen_pipe(**common, generator=torch.Generator("cpu").manual_seed(CASE["seed"]), output_type="latent").images
        image = gen_pipe(**common, generator=torch.Generator("cpu").manual_seed(CASE["seed"]), output_type="np").images
        return {"latents": latents[0].float().contiguous(), "pixels": torch.from_numpy((image[0] * 255).round().astype("uint8")).float().contiguous()}

    generations = {"base": generate()}
    for case in ("kohya_0.8", "kohya_0.8+peft_0.5"):
        apply(gen_pipe, cases[case])
        generations[case] = generate()
        remove(gen_pipe)
    generations["unloaded"] = generate()
    for case in ("kohya_0.8", "kohya_0.8+peft_0.5"):
        assert not torch.equal(generations[case]["pixels"], generations["base"]["pixels"]), f"{case} did not change the image"
    save_file({f"{case}/{what}": t for case, gen in generations.items() for what, t in gen.items()}, OUT / "generations.safetensors")
    loadable["kohya"].unlink()

    reference = {
        "model": str(MODEL),
        "cases": {case: [{"lora": files[n].name, "scale": s} for n, s in loras] for case, loras in cases.items()},
        "kohya_unet_modules": {name: path for name, (path, _) in KOHYA_UNET.items()},
        "changed": [f"{c}/{k}" for c, k in changed],
        "model_weights": {c: {k: list(v.shape) for (cc, k), v in sorted(base.items()) if cc == c} for c in COMPONENTS},
        "generation": {**CASE, "generator": "torch.Generator('cpu'), one for the batch", "scheduler": "the folder's EulerDiscreteScheduler",
                       "cases": list(generations),
                       "unloaded_latents_max_abs_diff_from_base": float((generations["unloaded"]["latents"] - generations["base"]["latents"]).abs().max())},
        "provenance": {
            "script": "scripts/reference/gen_tiny_sdxl_loras.py",
            "diffusers": diffusers.__version__, "diffusers_git": "58eb52c0803ea9af3abec60841c2a093bdf1f951",
            "torch": torch.__version__, "transformers": transformers.__version__, "peft": peft.__version__,
            "safetensors": safetensors.__version__, "numpy": np.__version__, "python": sys.version.split()[0],
        },
    }
    (OUT / "reference.json").write_text(json.dumps(reference, indent=1) + "\n")
    print("wrote", OUT, "changed", len(changed))


if __name__ == "__main__":
    main()
