#!/usr/bin/env python3
"""Tiny LoRAs for the tiny SD 1.x checkpoint, and what diffusers makes of them.

Writes test/fixtures/loras/:
  kohya_sd1.safetensors   a kohya/A1111-format LoRA (`lora_unet_*`, `lora_te_*`, `.lora_down.weight`,
                          `.lora_up.weight`, `.alpha`), float16 as kohya saves it: attention and
                          feed-forward Linear layers, the 1×1 `proj_in` conv, a LoCon 3×3 resnet conv, the
                          time-embedding projection, and text-encoder attention + MLP layers; alpha 2
                          at ranks 4 and 2, so alpha/rank scaling is exercised (see KOHYA_ALPHA).
  peft_sd1.safetensors    a diffusers/PEFT LoRA saved by `StableDiffusionPipeline.save_lora_weights`
                          from `get_peft_model_state_dict` of adapters PEFT itself attached (random, non-zero
                          lora_B), with `lora_adapter_metadata` (r, lora_alpha, rank/alpha patterns).
  fused.safetensors       for each case, every weight that any case changes, as diffusers' own
                          `load_lora_weights` + `fuse_lora` leave it (`<case>/<component>/<key>`, torch layout,
                          float32); case "base" is the untouched model.
  generations.safetensors whole generations by diffusers' StableDiffusionPipeline (REQUEST, SEED): `<case>/latents`
                          (the final latents, [4, h/8, w/8]) and `<case>/pixels` (uint8 RGB HWC stored as float32)
                          for base, kohya_0.8, kohya_0.8+peft_0.5 and "unloaded" (after unfuse_lora +
                          unload_lora_weights on the same pipeline).
  reference.json          the cases (which LoRA at which scale), the files' A1111 "addnet" hashes
                          (sha256 of the bytes after the header, as A1111's `hashes.addnet_hash_safetensors`
                          computes them; A1111 itself is not importable without its whole web UI, so the
                          same hashlib calls are made here), and the versions used.

The base model is the tiny sd1 diffusers folder of scripts/reference/gen_tiny_checkpoints.py
(test/fixtures/checkpoints/sd1/diffusers); pass another folder as the first argument.

Run offline from the repository root with diffusers 0.40.0.dev0 (git 58eb52c0803ea9af3abec60841c2a093bdf1f951),
torch 2.13.0+cpu, transformers 5.18.0, peft 0.21.0, safetensors 0.8.0:
  PYTHONPATH=/tmp/diffusers-src/src /tmp/dvenv/bin/python scripts/reference/gen_tiny_loras.py
"""
import hashlib
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
from diffusers import StableDiffusionPipeline, UNet2DConditionModel
from peft import LoraConfig
from peft.utils import get_peft_model_state_dict
from safetensors.torch import save_file
from transformers import CLIPTextModel, CLIPTokenizer

OUT = Path("test/fixtures/loras")
# The generation every case runs (small: the tiny model at 64×64).
REQUEST = {"prompt": "a photo of a cat", "negative_prompt": "", "height": 64, "width": 64, "num_inference_steps": 4, "guidance_scale": 7.5}
SEED = 42
# The folder stores float16 weights (as real SD folders do); everything here computes in float32,
# as sd-trt's fp32 conversion does (float16 → float32 is exact).
F32 = torch.float32
TOKENIZER = Path("../shared/data/clip-tokenizer")

# kohya module names (diffusers module path; kohya writes it with "." → "_") → rank. Every layer
# has alpha 2, so alpha/rank is 0.5 at rank 4 and 1 at rank 2. One alpha for all layers because
# diffusers 0.40 cannot apply differing alphas: it builds `alpha_pattern` from its own intermediate
# names (`…attn2.processor.to_k_lora.down.weight`), which PEFT matches to no module and ignores
# (it warns "alpha_pattern keys did not match any targeted module"), so every layer would get
# the most common alpha. sd-trt applies each layer's own alpha (as kohya and A1111 do); the
# unit tests cover differing alphas on their own.
KOHYA_ALPHA = 2.0
KOHYA_UNET = {
    "down_blocks.0.attentions.0.transformer_blocks.0.attn1.to_q": 4,
    "down_blocks.0.attentions.0.transformer_blocks.0.attn1.to_k": 4,
    "down_blocks.0.attentions.0.transformer_blocks.0.attn1.to_v": 4,
    "down_blocks.0.attentions.0.transformer_blocks.0.attn1.to_out.0": 4,
    "down_blocks.0.attentions.0.transformer_blocks.0.attn2.to_k": 4,
    "down_blocks.0.attentions.0.transformer_blocks.0.ff.net.0.proj": 4,
    "down_blocks.0.attentions.0.proj_in": 4,  # a 1×1 conv in SD 1.x
    "down_blocks.0.resnets.0.conv1": 4,  # LoCon: a 3×3 conv
    "down_blocks.0.resnets.0.time_emb_proj": 4,
    "up_blocks.1.attentions.0.transformer_blocks.0.attn2.to_v": 2,
}
KOHYA_TE = {
    "text_model.encoder.layers.0.self_attn.q_proj": 4,
    "text_model.encoder.layers.0.self_attn.out_proj": 4,
    "text_model.encoder.layers.1.mlp.fc1": 4,
}


def module_of(root: torch.nn.Module, path: str) -> torch.nn.Module:
    # transformers 5 dropped CLIPTextModel's `text_model` level; kohya names keep it (they were
    # made on transformers 4 models).
    try:
        return root.get_submodule(path)
    except AttributeError:
        return root.get_submodule(path.removeprefix("text_model."))


def kohya_lora(unet: torch.nn.Module, te: torch.nn.Module, g: torch.Generator) -> dict:
    sd = {}
    for prefix, root, table in (("lora_unet_", unet, KOHYA_UNET), ("lora_te_", te, KOHYA_TE)):
        for path, rank in table.items():
            m = module_of(root, path)
            name = prefix + path.replace(".", "_")
            if isinstance(m, torch.nn.Conv2d):
                kh, kw = m.kernel_size
                down = torch.randn(rank, m.in_channels, kh, kw, generator=g) * 0.3
                up = torch.randn(m.out_channels, rank, 1, 1, generator=g) * 0.3
            else:
                down = torch.randn(rank, m.in_features, generator=g) * 0.3
                up = torch.randn(m.out_features, rank, generator=g) * 0.3
            sd[f"{name}.lora_down.weight"] = down.half()
            sd[f"{name}.lora_up.weight"] = up.half()
            sd[f"{name}.alpha"] = torch.tensor(KOHYA_ALPHA).half()
    return sd


def randomize_lora_b(model: torch.nn.Module, g: torch.Generator) -> None:
    """PEFT initialises lora_B to zero (a no-op adapter); give it values so the LoRA does something."""
    for name, p in model.named_parameters():
        if "lora_B" in name or "lora_A" in name:
            with torch.no_grad():
                p.copy_(torch.randn(p.shape, generator=g) * 0.3)


def addnet_hash(path: Path) -> str:
    data = path.read_bytes()
    n = int.from_bytes(data[:8], "little")
    return hashlib.sha256(data[8 + n :]).hexdigest()


def main() -> None:
    model = Path(sys.argv[1] if len(sys.argv) > 1 else "test/fixtures/checkpoints/sd1/diffusers")
    OUT.mkdir(parents=True, exist_ok=True)
    g = torch.Generator().manual_seed(1234)

    unet = UNet2DConditionModel.from_pretrained(model / "unet", torch_dtype=F32)
    te = CLIPTextModel.from_pretrained(model / "text_encoder", torch_dtype=F32)

    # 1. kohya file, written by hand in kohya's layout (its trainer is not installable offline).
    kohya_path = OUT / "kohya_sd1.safetensors"
    save_file(kohya_lora(unet, te, g), kohya_path, metadata={"ss_network_module": "networks.lora", "ss_output_name": "kohya_sd1", "ss_base_model_version": "sd_v1"})

    # 2. PEFT file: PEFT attaches the adapters, diffusers saves them.
    unet_cfg = LoraConfig(r=4, lora_alpha=8, target_modules=["to_q", "to_k", "to_v", "to_out.0", "proj_out", "conv2"], rank_pattern={"to_v": 2}, alpha_pattern={"conv2": 2})
    te_cfg = LoraConfig(r=2, lora_alpha=3, target_modules=["k_proj", "v_proj", "fc2"])
    unet.add_adapter(unet_cfg)
    te.add_adapter(te_cfg)
    randomize_lora_b(unet, g)
    randomize_lora_b(te, g)
    peft_path = OUT / "peft_sd1.safetensors"
    StableDiffusionPipeline.save_lora_weights(
        OUT,
        unet_lora_layers=get_peft_model_state_dict(unet),
        text_encoder_lora_layers=get_peft_model_state_dict(te),
        weight_name=peft_path.name,
        unet_lora_adapter_metadata=unet_cfg.to_dict(),
        text_encoder_lora_adapter_metadata=te_cfg.to_dict(),
    )

    # 3. What diffusers' pipeline makes of them: a fresh pipeline per case, so no case sees
    # another's adapters.
    files = {"kohya": kohya_path, "peft": peft_path}
    # diffusers is handed a copy of the kohya file with the same values in float32 (float16 widens
    # exactly): its pipeline takes the UNet's dtype from the first parameter it finds, which after
    # loading a float16 LoRA can be a LoRA factor, and then feeds float16 into float32 layers.
    # diffusers 0.40 with transformers 5 also cannot place kohya's text-encoder names: they keep
    # transformers 4's `text_model.` level, which CLIPTextModel's module tree no longer has, so its
    # rank lookup finds nothing and load_lora_weights fails. The copy's names drop that one level;
    # the fixture keeps kohya's real names and float16.
    loadable = dict(files)
    loadable["kohya"] = OUT / "kohya_sd1.for-diffusers.tmp.safetensors"
    drop_level = not hasattr(te, "text_model")
    state = safetensors.torch.load_file(kohya_path)
    save_file({(k.replace("lora_te_text_model_", "lora_te_") if drop_level else k): v.float() for k, v in state.items()}, loadable["kohya"])

    def pipeline() -> StableDiffusionPipeline:
        return StableDiffusionPipeline(
            vae=None, text_encoder=CLIPTextModel.from_pretrained(model / "text_encoder", torch_dtype=F32), tokenizer=CLIPTokenizer.from_pretrained(TOKENIZER),
            unet=UNet2DConditionModel.from_pretrained(model / "unet", torch_dtype=F32), scheduler=None, safety_checker=None, feature_extractor=None, requires_safety_checker=False,
        )

    on_disk = {**{("unet", k): v for k, v in safetensors.torch.load_file(model / "unet" / "diffusion_pytorch_model.safetensors").items()},
               **{("text_encoder", k): v for k, v in safetensors.torch.load_file(model / "text_encoder" / "model.safetensors").items()}}

    def folder_key(component: str, key: str) -> tuple:
        # The folder's keys are what sd-trt sees (and names graph weights by): its text encoder
        # keeps the `text_model.` level that transformers 5's module tree has dropped.
        return (component, key) if (component, key) in on_disk else (component, f"text_model.{key}")

    def weights(pipe: StableDiffusionPipeline) -> dict:
        # PEFT wraps adapted layers: "x.to_q.base_layer.weight" is the model's "x.to_q.weight".
        return {
            folder_key(c, k.replace(".base_layer", "")): v.detach().clone()
            for c, m in (("unet", pipe.unet), ("text_encoder", pipe.text_encoder))
            for k, v in m.state_dict().items()
            if ".lora_" not in k
        }

    base = weights(pipeline())
    assert set(base) == set(on_disk), "the pipeline's weights are not the folder's"
    assert all(torch.equal(base[k], on_disk[k].float()) for k in on_disk), "the pipeline's base weights differ from the files"
    cases = {
        "kohya_0.8": [("kohya", 0.8)],
        "peft_0.6": [("peft", 0.6)],
        "kohya_0.8+peft_0.5": [("kohya", 0.8), ("peft", 0.5)],
    }
    results = {"base": base}
    for case, loras in cases.items():
        pipe = pipeline()
        for name, _ in loras:
            pipe.load_lora_weights(str(loadable[name]), adapter_name=name)
        names = [n for n, _ in loras]
        pipe.set_adapters(names, adapter_weights=[s for _, s in loras])
        pipe.fuse_lora(components=["unet", "text_encoder"], lora_scale=1.0, adapter_names=names)
        results[case] = weights(pipe)
        pipe.unfuse_lora(components=["unet", "text_encoder"])
        pipe.unload_lora_weights()
        results[f"unloaded_after_{case}"] = weights(pipe)

    # 4. Whole generations through diffusers' StableDiffusionPipeline on the full folder: base, one
    # LoRA, two LoRAs, and the base again after unfuse_lora + unload_lora_weights on the same pipeline.
    gen_pipe = StableDiffusionPipeline.from_pretrained(model, torch_dtype=F32, safety_checker=None, requires_safety_checker=False)
    gen_pipe.set_progress_bar_config(disable=True)

    def generate() -> dict:
        out = {}
        for kind in ("latent", "pil"):
            images = gen_pipe(**REQUEST, generator=torch.Generator().manual_seed(SEED), output_type=kind).images
            if kind == "latent":
                out["latents"] = images[0].float().contiguous()
            else:
                out["pixels"] = torch.from_numpy(np.array(images[0])).float().contiguous()  # uint8 HWC as float
        return out

    generations = {"base": generate()}
    for case in ("kohya_0.8", "kohya_0.8+peft_0.5"):
        loras = cases[case]
        for name, _ in loras:
            gen_pipe.load_lora_weights(str(loadable[name]), adapter_name=name)
        names = [n for n, _ in loras]
        gen_pipe.set_adapters(names, adapter_weights=[s for _, s in loras])
        gen_pipe.fuse_lora(components=["unet", "text_encoder"], lora_scale=1.0, adapter_names=names)
        generations[case] = generate()
        gen_pipe.unfuse_lora(components=["unet", "text_encoder"])
        gen_pipe.unload_lora_weights()
    generations["unloaded"] = generate()
    save_file({f"{case}/{what}": t for case, g in generations.items() for what, t in g.items()}, OUT / "generations.safetensors")
    for case, g in generations.items():
        if case != "base":
            assert not torch.equal(g["pixels"], generations["base"]["pixels"]) or case == "unloaded", f"{case} did not change the image"
    loadable["kohya"].unlink()

    # Self-check: every layer each LoRA file names changed in each case that uses it.
    named = {"kohya": {("unet", p + ".weight") for p in KOHYA_UNET} | {("text_encoder", p + ".weight") for p in KOHYA_TE}}
    for case, loras in cases.items():
        for name, _ in loras:
            for key in named.get(name, ()):
                assert not torch.equal(results[case][key], base[key]), f"{case}: diffusers left {key} unchanged"
    changed = sorted({key for case in cases for key, v in results[case].items() if not torch.equal(v, base[key])})
    # diffusers' unfuse subtracts the delta again, so its "unloaded" weights are the base only to
    # rounding; recorded for the note, not used as a target (sd-trt restores the base bit for bit).
    unloaded_max_diff = max(float((results[f"unloaded_after_{case}"][k] - base[k]).abs().max()) for case in cases for k in changed)
    out = {f"{case}/{c}/{k}": results[case][(c, k)].float().contiguous() for case in ("base", *cases) for (c, k) in changed}
    save_file(out, OUT / "fused.safetensors")

    reference = {
        "model": str(model),
        "cases": {case: [{"lora": files[n].name, "scale": s} for n, s in loras] for case, loras in cases.items()},
        "changed": [f"{c}/{k}" for c, k in changed],
        # every weight of the base model (key → torch shape): what the LoRAs are matched against
        "model_weights": {c: {k: list(v.shape) for (cc, k), v in sorted(base.items()) if cc == c} for c in ("unet", "text_encoder")},
        "diffusers_unfuse_max_abs_diff_from_base": unloaded_max_diff,
        "generation": {**REQUEST, "seed": SEED, "generator": "torch.Generator() (CPU), one for the batch", "scheduler": "the folder's PNDMScheduler",
                       "cases": ["base", "kohya_0.8", "kohya_0.8+peft_0.5", "unloaded"],
                       "unloaded_latents_max_abs_diff_from_base": float((generations["unloaded"]["latents"] - generations["base"]["latents"]).abs().max())},
        "addnet_hash": {p.name: addnet_hash(p) for p in files.values()},
        "provenance": {
            "diffusers": diffusers.__version__, "diffusers_git": "58eb52c0803ea9af3abec60841c2a093bdf1f951",
            "torch": torch.__version__, "transformers": transformers.__version__, "peft": peft.__version__,
            "safetensors": safetensors.__version__, "python": sys.version.split()[0],
        },
    }
    (OUT / "reference.json").write_text(json.dumps(reference, indent=1) + "\n")
    print("wrote", OUT, "changed", len(changed), "unfuse max diff", unloaded_max_diff)


if __name__ == "__main__":
    main()
