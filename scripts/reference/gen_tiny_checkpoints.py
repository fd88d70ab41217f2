#!/usr/bin/env python3
"""Tiny random-weight Stable Diffusion checkpoints, built with the real transformers/diffusers classes,
and the outputs torch computes for each component on fixed inputs.

For lib/convert (issue 12): the checkpoint readers load these diffusers folders, and the ONNX graphs
built in TypeScript (lib/convert/graphs) are compared against the recorded torch outputs.

Writes, for each family in FAMILIES (sd1, sd2):
  test/fixtures/checkpoints/<family>/diffusers/        a diffusers folder: model_index.json, scheduler/,
      tokenizer/, text_encoder/, unet/, vae/ (save_pretrained(safe_serialization=True), weights fp16)
  test/fixtures/checkpoints/<family>/component_goldens.json   index: name -> {dtype, shape, offset} (+ inputs)
  test/fixtures/checkpoints/<family>/component_goldens.bin    the arrays, little-endian, concatenated

and test/fixtures/checkpoints/deep-unet/ (unet/ and its goldens): SD 1.5's UNet block layout at tiny widths;
test/fixtures/checkpoints/sdxl-parts/ (text_encoder_2/, unet/ and their goldens): SDXL's CLIPTextModelWithProjection
and a UNet with the "text_time" added embedding.

The weights are random (fixed seeds) on top of each class's own initialisation, with every bias and norm
parameter perturbed too so that none of them is the identity. They are saved as float16, as real SD
checkpoints are; the goldens come from the models *reloaded from the saved folder* in float32, so they
are exactly what the files on disk compute.

Sizes: text hidden 8 (vocab 49408 kept, so the real tokenizer's ids are valid), UNet channels (16, 32),
VAE channels (8, 8, 16, 16) so that the VAE factor is 8 as in SD.

Made with (offline, see scripts/reference/README.md):
  PYTHONPATH=/tmp/diffusers-src/src /tmp/dvenv/bin/python scripts/reference/gen_tiny_checkpoints.py
  diffusers 0.40.0.dev0 at git 58eb52c0803ea9af3abec60841c2a093bdf1f951, transformers 5.18.0,
  torch 2.13.0+cpu, safetensors 0.8.0, numpy (asserted below; PROVENANCE is written into the json).
"""
import json
import shutil
import sys
from pathlib import Path

import diffusers
import numpy as np
import safetensors
import torch
import transformers
from safetensors.torch import load_file, save_file
from diffusers import AutoencoderKL, DDIMScheduler, PNDMScheduler, UNet2DConditionModel
from transformers import CLIPTextConfig, CLIPTextModel, CLIPTextModelWithProjection, CLIPTokenizer

DIFFUSERS_COMMIT = "58eb52c0803ea9af3abec60841c2a093bdf1f951"
ROOT = Path(__file__).resolve().parents[2]
OUT = ROOT / "test/fixtures/checkpoints"
TOKENIZER_DATA = ROOT / "data/clip-tokenizer"

PROVENANCE = {
    "script": "scripts/reference/gen_tiny_checkpoints.py",
    "diffusers": f"{diffusers.__version__} (git {DIFFUSERS_COMMIT})",
    "transformers": transformers.__version__,
    "torch": torch.__version__,
    "safetensors": safetensors.__version__,
    "numpy": np.__version__,
}

PROMPTS = ["a photograph of an astronaut riding a horse", "", "masterpiece, best quality, (red:1.2) fox in snow"]

# SD 1.5's scheduler/scheduler_config.json (runwayml/stable-diffusion-v1-5), less its `clip_sample`,
# which PNDMScheduler does not take.
SD1_SCHEDULER = dict(
    beta_start=0.00085, beta_end=0.012, beta_schedule="scaled_linear", num_train_timesteps=1000,
    set_alpha_to_one=False, skip_prk_steps=True, steps_offset=1, trained_betas=None,
)
# SD 2.1 (768-v)'s scheduler/scheduler_config.json (stabilityai/stable-diffusion-2-1).
SD2_SCHEDULER = dict(
    beta_start=0.00085, beta_end=0.012, beta_schedule="scaled_linear", num_train_timesteps=1000,
    set_alpha_to_one=False, steps_offset=1, clip_sample=False, prediction_type="v_prediction", trained_betas=None,
)

FAMILIES = {
    "sd1": dict(
        seed=1201,
        text=dict(hidden_act="quick_gelu"),
        # SD 1.5's tokenizer (openai/clip-vit-large-patch14): pads with <|endoftext|>.
        tokenizer=dict(pad_token="<|endoftext|>"),
        unet=dict(attention_head_dim=2, use_linear_projection=False, upcast_attention=False),
        scheduler=(PNDMScheduler, SD1_SCHEDULER),
    ),
    "sd2": dict(
        seed=1202,
        # SD 2.x's text encoder is OpenCLIP ViT-H converted: gelu (the penultimate layer is simply the last
        # layer diffusers keeps, nothing else changes in CLIPTextModel).
        text=dict(hidden_act="gelu"),
        # SD 2.x's tokenizer pads with "!" (id 0).
        tokenizer=dict(pad_token="!"),
        unet=dict(attention_head_dim=[2, 8], use_linear_projection=True, upcast_attention=True),
        scheduler=(DDIMScheduler, SD2_SCHEDULER),
    ),
}


def perturb(model: torch.nn.Module, generator: torch.Generator) -> None:
    """Random weights on top of the class's own init; biases and norm affines moved off 0 and 1."""
    with torch.no_grad():
        for _, p in sorted(model.named_parameters()):
            noise = torch.randn(p.shape, generator=generator)
            p.add_(noise * (0.1 if p.dim() == 1 else 0.02))


def text_encoder(spec: dict, gen: torch.Generator) -> CLIPTextModel:
    config = CLIPTextConfig(
        vocab_size=49408, hidden_size=8, intermediate_size=16, num_hidden_layers=2, num_attention_heads=2,
        max_position_embeddings=77, projection_dim=8, layer_norm_eps=1e-5,
        # The ids of openai/clip-vit-large-patch14's config (SD 1.x) and SD 2.x's: eos_token_id 2 makes
        # transformers pool at argmax(input_ids) (its legacy rule), as the real SD text encoders do.
        bos_token_id=0, eos_token_id=2, pad_token_id=1, **spec["text"],
    )
    model = CLIPTextModel(config).eval()
    perturb(model, gen)
    return model


def unet(spec: dict, gen: torch.Generator) -> UNet2DConditionModel:
    model = UNet2DConditionModel(
        sample_size=8, in_channels=4, out_channels=4,
        down_block_types=("CrossAttnDownBlock2D", "DownBlock2D"),
        up_block_types=("UpBlock2D", "CrossAttnUpBlock2D"),
        block_out_channels=(16, 32), layers_per_block=1, norm_num_groups=8, cross_attention_dim=8,
        flip_sin_to_cos=True, freq_shift=0, **spec["unet"],
    ).eval()
    perturb(model, gen)
    return model


def vae(gen: torch.Generator) -> AutoencoderKL:
    model = AutoencoderKL(
        in_channels=3, out_channels=3, latent_channels=4, sample_size=32,
        down_block_types=("DownEncoderBlock2D",) * 4, up_block_types=("UpDecoderBlock2D",) * 4,
        block_out_channels=(8, 8, 16, 16), layers_per_block=1, norm_num_groups=4, scaling_factor=0.18215,
    ).eval()
    perturb(model, gen)
    return model


def prefix_text_model_keys(path: Path) -> None:
    """Gives the text encoder's keys the `text_model.` prefix of the real SD folders.

    transformers 5 flattened CLIPTextModel (its state dict is `embeddings.…`, `encoder.…`), but every
    SD 1.x/2.x diffusers folder people download, and diffusers' single-file conversion, name them
    `text_model.embeddings.…`; transformers 5 still loads that form (checked in record_goldens).
    """
    tensors = load_file(path)
    save_file({f"text_model.{k}": v for k, v in tensors.items()}, path, metadata={"format": "pt"})


def write_tokenizer(folder: Path, pad_token: str) -> None:
    """The tokenizer folder of SD 1.5 / SD 2.1: the bundled CLIP vocab and merges with their configs."""
    folder.mkdir(parents=True)
    for name in ("vocab.json", "merges.txt"):
        shutil.copyfile(TOKENIZER_DATA / name, folder / name)
    special = {"bos_token": "<|startoftext|>", "eos_token": "<|endoftext|>", "pad_token": pad_token,
               "unk_token": "<|endoftext|>"}
    config = {"add_prefix_space": False, "do_lower_case": True, "errors": "replace", "model_max_length": 77,
              "tokenizer_class": "CLIPTokenizer", **special}
    (folder / "special_tokens_map.json").write_text(json.dumps(special, indent=2) + "\n")
    (folder / "tokenizer_config.json").write_text(json.dumps(config, indent=2) + "\n")


def assert_same_weights(name: str, got: dict, expected: dict) -> None:
    """The single-file generators' check: a pipeline loaded by from_single_file holds every weight of
    the folder's pipeline (`expected`, key → tensor), each exactly equal; `name` labels the failure."""
    missing = sorted(set(expected) - set(got))
    assert not missing, f"{name}: from_single_file did not load {missing[:5]}"
    for key, value in expected.items():
        assert torch.equal(got[key], value), f"{name}: {key} differs from the folder's weights"


class Goldens:
    """Arrays appended to one .bin with a json index (float32 or int32, little-endian)."""

    def __init__(self) -> None:
        self.index: dict = {}
        self.chunks: list[bytes] = []
        self.offset = 0

    def add(self, name: str, array) -> None:
        a = array.detach().cpu().numpy() if torch.is_tensor(array) else np.asarray(array)
        a = a.astype("<i4" if a.dtype.kind in "iu" else "<f4")
        data = np.ascontiguousarray(a).tobytes()
        self.index[name] = {"dtype": "int32" if a.dtype.kind == "i" else "float32", "shape": list(a.shape),
                            "offset": self.offset}
        self.chunks.append(data)
        self.offset += len(data)

    def write(self, folder: Path, extra: dict) -> None:
        (folder / "component_goldens.bin").write_bytes(b"".join(self.chunks))
        doc = {"provenance": PROVENANCE, **extra, "arrays": self.index}
        (folder / "component_goldens.json").write_text(json.dumps(doc, indent=1) + "\n")


def add_sdxl_unet_goldens(g: Goldens, unet, gen: torch.Generator, latent_width: int, context_width: int) -> None:
    """An SDXL UNet's inputs and output (unet.*): random latents 8 × latent_width and context, two
    rows of time ids (a 64 × 48 image and a 1024 × 768 crop), a fractional timestep. Shared by this
    script's sdxl-parts and gen_tiny_sdxl_single_file.py; the draws from `gen` are in this order."""
    sample = torch.randn(2, 4, 8, latent_width, generator=gen)
    ehs = torch.randn(2, 77, context_width, generator=gen)
    text_embeds = torch.randn(2, 6, generator=gen)
    time_ids = torch.tensor([[64.0, 48.0, 0.0, 0.0, 64.0, 48.0], [1024.0, 768.0, 16.0, 8.0, 1024.0, 768.0]])
    ts = torch.tensor([546.2345], dtype=torch.float32)
    for name, value in [("sample", sample), ("encoder_hidden_states", ehs), ("text_embeds", text_embeds),
                        ("time_ids", time_ids), ("timestep.0", ts)]:
        g.add(f"unet.{name}", value)
    added = {"text_embeds": text_embeds, "time_ids": time_ids}
    g.add("unet.out_sample.0", unet(sample, ts, encoder_hidden_states=ehs, added_cond_kwargs=added).sample)


def record_goldens(folder: Path, seed: int) -> None:
    d = folder / "diffusers"
    te, info = CLIPTextModel.from_pretrained(d / "text_encoder", torch_dtype=torch.float32, output_loading_info=True)
    te.eval()
    assert not any(info.values()), f"text encoder keys not all loaded: {info}"
    un = UNet2DConditionModel.from_pretrained(d / "unet", torch_dtype=torch.float32).eval()
    va = AutoencoderKL.from_pretrained(d / "vae", torch_dtype=torch.float32).eval()
    tok = CLIPTokenizer.from_pretrained(d / "tokenizer")
    g = Goldens()
    gen = torch.Generator().manual_seed(seed + 100)
    with torch.no_grad():
        # Text encoder: real token ids (padded to 77 as the pipelines do).
        ids = tok(PROMPTS, padding="max_length", max_length=77, truncation=True, return_tensors="pt").input_ids
        out = te(ids, output_hidden_states=True)
        g.add("text_encoder.input_ids", ids)
        g.add("text_encoder.last_hidden_state", out.last_hidden_state)
        g.add("text_encoder.pooler_output", out.pooler_output)
        # hidden_states[0] is the embeddings' output, hidden_states[i] layer i's output (before the final LN).
        for i, h in enumerate(out.hidden_states):
            g.add(f"text_encoder.hidden_states.{i}", h)

        # UNet: batch 2 (a CFG pair), a non-square latent, an integer and a fractional timestep.
        sample = torch.randn(2, 4, 8, 6, generator=gen)
        ehs = torch.randn(2, 77, 8, generator=gen)
        g.add("unet.sample", sample)
        g.add("unet.encoder_hidden_states", ehs)
        timesteps = [999.0, 546.2345]
        for k, t in enumerate(timesteps):
            ts = torch.tensor([t], dtype=torch.float32)
            g.add(f"unet.timestep.{k}", ts)
            g.add(f"unet.out_sample.{k}", un(sample, ts, encoder_hidden_states=ehs).sample)

        # VAE decode (post_quant_conv included, no 1/scaling_factor) and encode (quant_conv included).
        latent = torch.randn(1, 4, 4, 5, generator=gen)
        g.add("vae.decoder.latent_sample", latent)
        g.add("vae.decoder.sample", va.decode(latent).sample)
        image = torch.rand(1, 3, 32, 24, generator=gen) * 2 - 1
        posterior = va.encode(image).latent_dist
        g.add("vae.encoder.sample", image)
        g.add("vae.encoder.moments", posterior.parameters)  # quant_conv output [mean | logvar], unclamped
        g.add("vae.encoder.mean", posterior.mean)
        g.add("vae.encoder.logvar", posterior.logvar)  # clamped to [-30, 20] as diffusers does
        g.add("vae.encoder.std", posterior.std)
    g.write(folder, {"prompts": PROMPTS, "unet_timesteps": timesteps})


def deep_unet() -> None:
    """A UNet with SD 1.5's block layout (4 levels, 2 layers per block, cross-attention in the first three)
    at tiny widths, with a 2-deep transformer at level 1 (a per-block transformer_layers_per_block list,
    as SDXL has), and its torch output: the skip-connection order and block wiring at full depth."""
    folder = OUT / "deep-unet"
    if folder.exists():
        shutil.rmtree(folder)
    gen = torch.Generator().manual_seed(1203)
    torch.manual_seed(1203)
    model = UNet2DConditionModel(
        sample_size=16, in_channels=4, out_channels=4,
        down_block_types=("CrossAttnDownBlock2D",) * 3 + ("DownBlock2D",),
        up_block_types=("UpBlock2D",) + ("CrossAttnUpBlock2D",) * 3,
        block_out_channels=(8, 8, 16, 16), layers_per_block=2, transformer_layers_per_block=[1, 2, 1, 1],
        norm_num_groups=4, cross_attention_dim=8, attention_head_dim=2, flip_sin_to_cos=True, freq_shift=0,
    ).eval()
    perturb(model, gen)
    model.to(torch.float16).save_pretrained(folder / "unet", safe_serialization=True)
    un = UNet2DConditionModel.from_pretrained(folder / "unet", torch_dtype=torch.float32).eval()
    g = Goldens()
    with torch.no_grad():
        sample = torch.randn(2, 4, 16, 8, generator=gen)
        ehs = torch.randn(2, 77, 8, generator=gen)
        ts = torch.tensor([321.5], dtype=torch.float32)
        g.add("unet.sample", sample)
        g.add("unet.encoder_hidden_states", ehs)
        g.add("unet.timestep.0", ts)
        g.add("unet.out_sample.0", un(sample, ts, encoder_hidden_states=ehs).sample)
    g.write(folder, {"unet_timesteps": [321.5]})


def sdxl_parts() -> None:
    """SDXL's two new parts at tiny widths, with their torch outputs: the second text encoder
    (CLIPTextModelWithProjection: text_embeds) and a UNet with addition_embed_type "text_time"
    (text_embeds and time_ids inputs), linear projections and a per-block transformer depth list."""
    folder = OUT / "sdxl-parts"
    if folder.exists():
        shutil.rmtree(folder)
    gen = torch.Generator().manual_seed(1204)
    torch.manual_seed(1204)
    config = CLIPTextConfig(
        vocab_size=49408, hidden_size=8, intermediate_size=16, num_hidden_layers=2, num_attention_heads=2,
        max_position_embeddings=77, projection_dim=6, layer_norm_eps=1e-5, hidden_act="gelu",
        bos_token_id=0, eos_token_id=2, pad_token_id=1,
    )
    te2 = CLIPTextModelWithProjection(config).eval()
    perturb(te2, gen)
    te2.to(torch.float16).save_pretrained(folder / "text_encoder_2", safe_serialization=True)
    path = folder / "text_encoder_2" / "model.safetensors"
    tensors = load_file(path)
    # SDXL's folders name them text_model.… and text_projection.weight (transformers 5 saves text_model flattened).
    save_file({k if k.startswith(("text_model.", "text_projection.")) else f"text_model.{k}": v for k, v in tensors.items()},
              path, metadata={"format": "pt"})
    unet = UNet2DConditionModel(
        sample_size=8, in_channels=4, out_channels=4,
        down_block_types=("DownBlock2D", "CrossAttnDownBlock2D"), up_block_types=("CrossAttnUpBlock2D", "UpBlock2D"),
        block_out_channels=(16, 32), layers_per_block=1, transformer_layers_per_block=[1, 2], attention_head_dim=[2, 4],
        norm_num_groups=8, cross_attention_dim=16, use_linear_projection=True, addition_embed_type="text_time",
        addition_time_embed_dim=8, projection_class_embeddings_input_dim=6 + 6 * 8, flip_sin_to_cos=True, freq_shift=0,
    ).eval()
    perturb(unet, gen)
    unet.to(torch.float16).save_pretrained(folder / "unet", safe_serialization=True)

    te2, info = CLIPTextModelWithProjection.from_pretrained(folder / "text_encoder_2", torch_dtype=torch.float32,
                                                            output_loading_info=True)
    assert not any(info.values()), f"text encoder 2 keys not all loaded: {info}"
    un = UNet2DConditionModel.from_pretrained(folder / "unet", torch_dtype=torch.float32).eval()
    tok = CLIPTokenizer(str(TOKENIZER_DATA / "vocab.json"), str(TOKENIZER_DATA / "merges.txt"), pad_token="!")
    g = Goldens()
    with torch.no_grad():
        ids = tok(PROMPTS, padding="max_length", max_length=77, truncation=True, return_tensors="pt").input_ids
        out = te2.eval()(ids, output_hidden_states=True)
        g.add("text_encoder_2.input_ids", ids)
        g.add("text_encoder_2.text_embeds", out.text_embeds)
        g.add("text_encoder_2.last_hidden_state", out.last_hidden_state)
        for i, h in enumerate(out.hidden_states):
            g.add(f"text_encoder_2.hidden_states.{i}", h)
        # A config whose eos_token_id is not 2 pools at the first position holding that id (transformers'
        # non-legacy rule); 320 is "a</w>", which the first prompt starts with.
        first_a = CLIPTextModelWithProjection.from_pretrained(folder / "text_encoder_2", torch_dtype=torch.float32,
                                                              eos_token_id=320).eval()
        assert first_a.config.eos_token_id == 320 and ids[0, 1] == 320
        g.add("text_encoder_2.text_embeds.eos_token_id_320", first_a(ids).text_embeds)
        add_sdxl_unet_goldens(g, un, gen, latent_width=6, context_width=16)
    g.write(folder, {"prompts": PROMPTS, "unet_timesteps": [546.2345]})


def main() -> None:
    assert diffusers.__version__ == "0.40.0.dev0", diffusers.__version__
    assert transformers.__version__ == "5.18.0", transformers.__version__
    for family, spec in FAMILIES.items():
        folder = OUT / family
        if folder.exists():
            shutil.rmtree(folder)
        d = folder / "diffusers"
        gen = torch.Generator().manual_seed(spec["seed"])
        torch.manual_seed(spec["seed"])  # the classes' own init draws from the global generator
        te, un, va = text_encoder(spec, gen), unet(spec, gen), vae(gen)
        te.to(torch.float16).save_pretrained(d / "text_encoder", safe_serialization=True)
        prefix_text_model_keys(d / "text_encoder" / "model.safetensors")
        un.to(torch.float16).save_pretrained(d / "unet", safe_serialization=True)
        va.to(torch.float16).save_pretrained(d / "vae", safe_serialization=True)
        write_tokenizer(d / "tokenizer", spec["tokenizer"]["pad_token"])
        scheduler_cls, scheduler_config = spec["scheduler"]
        scheduler = scheduler_cls(**scheduler_config)
        scheduler.save_pretrained(d / "scheduler")
        # model_index.json as StableDiffusionPipeline writes it (no safety checker / feature extractor).
        pipe = diffusers.StableDiffusionPipeline(
            vae=va, text_encoder=te, tokenizer=CLIPTokenizer.from_pretrained(d / "tokenizer"), unet=un,
            scheduler=scheduler, safety_checker=None, feature_extractor=None, requires_safety_checker=False,
        )
        pipe.save_config(d)
        record_goldens(folder, spec["seed"])
        print(family, "written to", folder, file=sys.stderr)
    deep_unet()
    sdxl_parts()


if __name__ == "__main__":
    main()
