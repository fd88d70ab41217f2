"""
A tiny random-weight SDXL and diffusers' own reference runs on it, for the SDXL tests.

What it writes (OUT defaults to test/fixtures/sdxl):
- OUT/tiny-sdxl/: an optimum-layout ONNX folder (`model_index.json`, `scheduler/`, `tokenizer/`,
  `tokenizer_2/`, `text_encoder/`, `text_encoder_2/`, `unet/`, `vae_decoder/`, `vae_encoder/`, each
  model with its diffusers `config.json`). The tokenizers' `vocab.json`/`merges.txt` are relative
  symlinks to `data/clip-tokenizer` (the openai/clip-vit-large-patch14 files both SDXL tokenizers
  use), so the fixture stays small.
- OUT/tiny_sdxl_reference.json: `StableDiffusionXLPipeline` / `StableDiffusionXLImg2ImgPipeline`
  (their own `__call__`, PyTorch float32 on the CPU) on the same weights: the final latents
  (`output_type="latent"`) and the decoded uint8 pixels (`output_type="np"`, ×255, round half to
  even as `numpy_to_pil` does), plus what the pipeline fed the UNet (time ids, pooled embeds).
- OUT/tiny-sdxl-refiner/: a refiner-shaped folder (text_encoder_2 only, a UNet with the
  aesthetic-score time ids, requires_aesthetics_score, force_zeros_for_empty_prompt false) and
  `refiner_cases` in the JSON: base with `denoising_end`, then the refiner with `denoising_start`.
- with --diffusers DIR: the diffusers folder (`save_pretrained`) of the same pipeline.

The models are the real classes with small configs and weights from fixed seeds:
`CLIPTextModel` (hidden 16, 2 layers) and `CLIPTextModelWithProjection` (hidden 16, projection 16),
`UNet2DConditionModel` (block_out_channels (8, 16)) with SDXL's conditioning (addition_embed_type "text_time",
addition_time_embed_dim 8, projection_class_embeddings_input_dim = 6 · 8 + 16,
transformer_layers_per_block, cross_attention_dim = 16 + 16, use_linear_projection, sample_size 8 →
default 64×64 images), `AutoencoderKL` (4 blocks = factor 8, scaling_factor 0.13025, force_upcast),
`EulerDiscreteScheduler` with SDXL base's config (timestep_spacing "leading", steps_offset 1).
One deviation keeps the files small: each text encoder's token embedding is an `nn.Embedding` of
1031 rows looked up at `input_id % 1031` (`ModuloEmbedding`; the tiny SD fixture does the same),
instead of 49408 rows. Everything downstream of the lookup (positions, causal blocks, pooling at
the first EOS, the projection) is CLIP's own code. Because of it the --diffusers folder does not
load into a plain `CLIPTextModel`; it documents the weights, it is not committed.

ONNX export: optimum (huggingface/optimum `exporters/onnx/model_configs.py`, `exporters/utils.py`
`_get_submodels_for_export_stable_diffusion`) is not installable here, so the components are
exported with `torch.onnx.export` under optimum's names, dtypes and dynamic axes:
- text_encoder (CLIPTextOnnxConfig, output_hidden_states as optimum sets it for SDXL):
  `input_ids` int64 [batch_size, sequence_length] → `last_hidden_state`, `pooler_output`,
  `hidden_states.0` … `hidden_states.N`;
- text_encoder_2 (CLIPTextWithProjectionOnnxConfig): `input_ids` int64 → `text_embeds`,
  `last_hidden_state`, `hidden_states.0` … `hidden_states.N`;
- unet (UNetOnnxConfig for SDXL): `sample` [batch_size, 4, height, width], `timestep`,
  `encoder_hidden_states` [batch_size, sequence_length, 32], `text_embeds` [batch_size, 16],
  `time_ids` [batch_size, 6] → `out_sample`;
- vae_encoder: `sample` → `latent_parameters` [B, 8, h, w] (mean and log-variance, current optimum);
- vae_decoder: `latent_sample` → `sample` (post_quant_conv included, no 1/scaling_factor).
The timestep is float32 of shape [steps] (not optimum's int64 ≤ 1.22 or its float scalar ≥ 1.24),
the contract models/tiny-sd uses: fractional timesteps stay exact. Opset 17.

Usage: PYTHONPATH=/tmp/diffusers-src/src /tmp/dvenv/bin/python scripts/reference/gen_tiny_sdxl.py [OUT] [--diffusers DIR]
Made with diffusers 0.40.0.dev0 (git 58eb52c0803ea9af3abec60841c2a093bdf1f951), torch 2.13.0+cpu,
transformers 5.18.0, onnx 1.23.1, onnxruntime 1.30.0, numpy (see PROVENANCE in the JSON).
"""
import base64
import hashlib
import json
import os
import shutil
import sys

import numpy as np
import onnxruntime as ort
import torch
import transformers
import diffusers
from diffusers import (
    AutoencoderKL,
    DPMSolverMultistepScheduler,
    EulerAncestralDiscreteScheduler,
    EulerDiscreteScheduler,
    StableDiffusionXLImg2ImgPipeline,
    StableDiffusionXLPipeline,
    UNet2DConditionModel,
)
from transformers import CLIPTextConfig, CLIPTextModel, CLIPTextModelWithProjection, CLIPTokenizer

ROOT = os.path.abspath(os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", ".."))
CLIP_FILES = os.path.join(ROOT, "data", "clip-tokenizer")
DIFFUSERS_COMMIT = "58eb52c0803ea9af3abec60841c2a093bdf1f951"
EMBED_ROWS = 1031
OPSET = 17

torch.set_num_threads(1)  # one thread: reductions in a fixed order


class ModuloEmbedding(torch.nn.Embedding):
    """CLIP's token embedding with EMBED_ROWS rows, looked up at id % EMBED_ROWS (keeps the file small)."""

    def forward(self, ids):
        return super().forward(torch.remainder(ids, self.num_embeddings))


def text_config(projection_dim=None):
    # CLIP-L/bigG's tokenizer ids (bos 49406, eos 49407): eos_token_id 2 would make the pooling
    # take argmax(ids) (the legacy path); the real SDXL configs name 49407 / 2 — both pool at the
    # first 49407 for these ids.
    kwargs = dict(
        vocab_size=49408, hidden_size=16, intermediate_size=32, num_hidden_layers=2, num_attention_heads=2,
        max_position_embeddings=77, hidden_act="gelu", layer_norm_eps=1e-5, bos_token_id=49406, eos_token_id=49407,
        pad_token_id=1,
    )
    if projection_dim is not None:
        kwargs["projection_dim"] = projection_dim
    return CLIPTextConfig(**kwargs)


def with_small_embedding(model, seed):
    torch.manual_seed(seed)
    # transformers 5 flattened CLIPTextModel (no `.text_model`); 4.x keeps it.
    emb = (model.text_model if hasattr(model, "text_model") else model).embeddings
    small = ModuloEmbedding(EMBED_ROWS, emb.token_embedding.embedding_dim)
    torch.nn.init.normal_(small.weight, std=0.5)
    emb.token_embedding = small
    return model


def build_components():
    torch.manual_seed(1)
    text_encoder = with_small_embedding(CLIPTextModel(text_config()), 11).eval()
    torch.manual_seed(2)
    text_encoder_2 = with_small_embedding(CLIPTextModelWithProjection(text_config(projection_dim=16)), 12).eval()
    torch.manual_seed(3)
    unet = UNet2DConditionModel(
        sample_size=8,
        in_channels=4,
        out_channels=4,
        layers_per_block=1,
        block_out_channels=(8, 16),
        down_block_types=("DownBlock2D", "CrossAttnDownBlock2D"),
        up_block_types=("CrossAttnUpBlock2D", "UpBlock2D"),
        attention_head_dim=(2, 4),
        use_linear_projection=True,
        addition_embed_type="text_time",
        addition_time_embed_dim=8,
        transformer_layers_per_block=(1, 2),
        projection_class_embeddings_input_dim=6 * 8 + 16,
        cross_attention_dim=32,
        norm_num_groups=8,
    ).eval()
    # Random init leaves conv_out etc. at scales where the tiny UNet's output is tiny noise; scale
    # every weight a little so the predictions move the latents visibly (still a random model).
    with torch.no_grad():
        g = torch.Generator().manual_seed(4)
        for p in unet.parameters():
            p.add_(torch.randn(p.shape, generator=g) * 0.05)
    torch.manual_seed(5)
    vae = AutoencoderKL(
        in_channels=3,
        out_channels=3,
        down_block_types=("DownEncoderBlock2D",) * 4,
        up_block_types=("UpDecoderBlock2D",) * 4,
        block_out_channels=(8, 16, 16, 16),
        layers_per_block=1,
        latent_channels=4,
        norm_num_groups=8,
        sample_size=64,
        scaling_factor=0.13025,
        force_upcast=True,
    ).eval()
    # SDXL base's scheduler config (stabilityai/stable-diffusion-xl-base-1.0 scheduler_config.json).
    # from_config keeps the keys EulerDiscrete ignores (clip_sample, …) as the real file has them.
    scheduler = EulerDiscreteScheduler.from_config(dict(
        num_train_timesteps=1000, beta_start=0.00085, beta_end=0.012, beta_schedule="scaled_linear",
        prediction_type="epsilon", interpolation_type="linear", timestep_spacing="leading", steps_offset=1,
        use_karras_sigmas=False, clip_sample=False, sample_max_value=1.0, set_alpha_to_one=False,
        skip_prk_steps=True,
    ))
    tokenizer = CLIPTokenizer(os.path.join(CLIP_FILES, "vocab.json"), os.path.join(CLIP_FILES, "merges.txt"),
                              pad_token="<|endoftext|>", model_max_length=77)
    # SDXL's tokenizer_2 (open_clip bigG's) pads with "!" (id 0): tokenizer_2/special_tokens_map.json.
    tokenizer_2 = CLIPTokenizer(os.path.join(CLIP_FILES, "vocab.json"), os.path.join(CLIP_FILES, "merges.txt"),
                                pad_token="!", model_max_length=77)
    return dict(vae=vae, text_encoder=text_encoder, text_encoder_2=text_encoder_2, tokenizer=tokenizer,
                tokenizer_2=tokenizer_2, unet=unet, scheduler=scheduler)


def build_refiner(c):
    """SDXL refiner-shaped: text_encoder_2 only (the base's, as the real refiner shares OpenCLIP bigG),
    a UNet conditioned on it alone (cross_attention_dim 16) with the aesthetic-score time ids
    (5 · 8 + 16 inputs), the base's VAE and scheduler."""
    torch.manual_seed(6)
    unet = UNet2DConditionModel(
        sample_size=8, in_channels=4, out_channels=4, layers_per_block=1, block_out_channels=(8, 16),
        down_block_types=("DownBlock2D", "CrossAttnDownBlock2D"), up_block_types=("CrossAttnUpBlock2D", "UpBlock2D"),
        attention_head_dim=(2, 4), use_linear_projection=True, addition_embed_type="text_time", addition_time_embed_dim=8,
        transformer_layers_per_block=(1, 1), projection_class_embeddings_input_dim=5 * 8 + 16, cross_attention_dim=16,
        norm_num_groups=8,
    ).eval()
    with torch.no_grad():
        g = torch.Generator().manual_seed(7)
        for p in unet.parameters():
            p.add_(torch.randn(p.shape, generator=g) * 0.05)
    return dict(vae=c["vae"], text_encoder=None, text_encoder_2=c["text_encoder_2"], tokenizer=None,
                tokenizer_2=c["tokenizer_2"], unet=unet, scheduler=c["scheduler"])


# ---------------------------------------------------------------- ONNX export (optimum's names)

class TextEncoderExport(torch.nn.Module):
    def __init__(self, model, first):
        super().__init__()
        self.model, self.first = model, first

    def forward(self, input_ids):
        out = self.model(input_ids, output_hidden_states=True)
        first = out.pooler_output if self.first == "pooler_output" else out.text_embeds
        return (first, out.last_hidden_state) + tuple(out.hidden_states)


class UnetExport(torch.nn.Module):
    def __init__(self, unet):
        super().__init__()
        self.unet = unet

    def forward(self, sample, timestep, encoder_hidden_states, text_embeds, time_ids):
        return self.unet(sample, timestep, encoder_hidden_states,
                         added_cond_kwargs={"text_embeds": text_embeds, "time_ids": time_ids}, return_dict=False)[0]


class VaeEncoderExport(torch.nn.Module):
    def __init__(self, vae):
        super().__init__()
        self.vae = vae

    def forward(self, sample):
        return self.vae.encode(sample).latent_dist.parameters


class VaeDecoderExport(torch.nn.Module):
    def __init__(self, vae):
        super().__init__()
        self.vae = vae

    def forward(self, latent_sample):
        return self.vae.decode(latent_sample, return_dict=False)[0]


def export(module, args, path, inputs, outputs, axes):
    os.makedirs(os.path.dirname(path), exist_ok=True)
    with torch.no_grad():
        torch.onnx.export(module, args, path, input_names=inputs, output_names=outputs, dynamic_axes=axes,
                          opset_version=OPSET, dynamo=False, do_constant_folding=True)


def export_onnx(c, out):
    ids = torch.tensor([[49406, 320, 1125, 49407] + [49407] * 73], dtype=torch.int64)
    layers = c["text_encoder"].config.num_hidden_layers
    hidden_names = [f"hidden_states.{i}" for i in range(layers + 1)]
    text_axes = {"input_ids": {0: "batch_size", 1: "sequence_length"}}
    for name in ["last_hidden_state", "pooler_output", "text_embeds"] + hidden_names:
        text_axes[name] = {0: "batch_size", 1: "sequence_length"} if name not in ("pooler_output", "text_embeds") else {0: "batch_size"}
    export(TextEncoderExport(c["text_encoder"], "pooler_output"), (ids,), os.path.join(out, "text_encoder", "model.onnx"),
           ["input_ids"], ["pooler_output", "last_hidden_state"] + hidden_names,
           {k: v for k, v in text_axes.items() if k != "text_embeds"})
    export(TextEncoderExport(c["text_encoder_2"], "text_embeds"), (ids,), os.path.join(out, "text_encoder_2", "model.onnx"),
           ["input_ids"], ["text_embeds", "last_hidden_state"] + hidden_names,
           {k: v for k, v in text_axes.items() if k != "pooler_output"})
    sample = torch.randn(2, 4, 8, 8)
    export(UnetExport(c["unet"]), (sample, torch.tensor([999.0]), torch.randn(2, 77, 32), torch.randn(2, 16), torch.randn(2, 6)),
           os.path.join(out, "unet", "model.onnx"),
           ["sample", "timestep", "encoder_hidden_states", "text_embeds", "time_ids"], ["out_sample"],
           {"sample": {0: "batch_size", 2: "height", 3: "width"}, "timestep": {0: "steps"},
            "encoder_hidden_states": {0: "batch_size", 1: "sequence_length"}, "text_embeds": {0: "batch_size"},
            "time_ids": {0: "batch_size"}, "out_sample": {0: "batch_size", 2: "height", 3: "width"}})
    export(VaeEncoderExport(c["vae"]), (torch.randn(1, 3, 64, 64),), os.path.join(out, "vae_encoder", "model.onnx"),
           ["sample"], ["latent_parameters"],
           {"sample": {0: "batch_size", 2: "height", 3: "width"}, "latent_parameters": {0: "batch_size", 2: "height_latent", 3: "width_latent"}})
    export(VaeDecoderExport(c["vae"]), (torch.randn(1, 4, 8, 8),), os.path.join(out, "vae_decoder", "model.onnx"),
           ["latent_sample"], ["sample"],
           {"latent_sample": {0: "batch_size", 2: "latent_height", 3: "latent_width"}, "sample": {0: "batch_size", 2: "height", 3: "width"}})


def write_json(path, value):
    os.makedirs(os.path.dirname(path), exist_ok=True)
    with open(path, "w") as f:
        json.dump(value, f, indent=2, sort_keys=True)
        f.write("\n")


def write_folder(c, out):
    if os.path.exists(out):
        shutil.rmtree(out)
    export_onnx(c, out)
    write_json(os.path.join(out, "model_index.json"), {
        "_class_name": "ORTStableDiffusionXLPipeline", "_diffusers_version": diffusers.__version__,
        "force_zeros_for_empty_prompt": True, "requires_aesthetics_score": False,
        "scheduler": ["diffusers", "EulerDiscreteScheduler"], "text_encoder": ["transformers", "CLIPTextModel"],
        "text_encoder_2": ["transformers", "CLIPTextModelWithProjection"], "tokenizer": ["transformers", "CLIPTokenizer"],
        "tokenizer_2": ["transformers", "CLIPTokenizer"], "unet": ["diffusers", "UNet2DConditionModel"],
        "vae": ["diffusers", "AutoencoderKL"],
    })
    # diffusers' own serialisation (`save_config`'s text: with _class_name and _diffusers_version).
    diffusers_config = lambda obj: json.loads(obj.to_json_string())
    write_json(os.path.join(out, "scheduler", "scheduler_config.json"), diffusers_config(c["scheduler"]))
    write_json(os.path.join(out, "text_encoder", "config.json"), c["text_encoder"].config.to_dict())
    write_json(os.path.join(out, "text_encoder_2", "config.json"), c["text_encoder_2"].config.to_dict())
    write_json(os.path.join(out, "unet", "config.json"), diffusers_config(c["unet"]))
    for name in ("vae_decoder", "vae_encoder"):
        write_json(os.path.join(out, name, "config.json"), diffusers_config(c["vae"]))
    for name, pad in (("tokenizer", "<|endoftext|>"), ("tokenizer_2", "!")):
        d = os.path.join(out, name)
        os.makedirs(d, exist_ok=True)
        for f in ("vocab.json", "merges.txt"):
            os.symlink(os.path.relpath(os.path.join(CLIP_FILES, f), d), os.path.join(d, f))
        special = {"bos_token": "<|startoftext|>", "eos_token": "<|endoftext|>", "pad_token": pad, "unk_token": "<|endoftext|>"}
        write_json(os.path.join(d, "special_tokens_map.json"), special)
        write_json(os.path.join(d, "tokenizer_config.json"), {**special, "model_max_length": 77, "do_lower_case": True,
                                                               "tokenizer_class": "CLIPTokenizer", "add_prefix_space": False, "errors": "replace"})


def write_refiner_folder(r, out):
    """The refiner's optimum folder: no text_encoder/tokenizer, no vae_encoder (it refines latents)."""
    if os.path.exists(out):
        shutil.rmtree(out)
    ids = torch.tensor([[49406, 320, 1125, 49407] + [0] * 73], dtype=torch.int64)
    layers = r["text_encoder_2"].config.num_hidden_layers
    hidden_names = [f"hidden_states.{i}" for i in range(layers + 1)]
    axes = {"input_ids": {0: "batch_size", 1: "sequence_length"}, "text_embeds": {0: "batch_size"}}
    for name in ["last_hidden_state"] + hidden_names:
        axes[name] = {0: "batch_size", 1: "sequence_length"}
    export(TextEncoderExport(r["text_encoder_2"], "text_embeds"), (ids,), os.path.join(out, "text_encoder_2", "model.onnx"),
           ["input_ids"], ["text_embeds", "last_hidden_state"] + hidden_names, axes)
    export(UnetExport(r["unet"]), (torch.randn(2, 4, 8, 8), torch.tensor([999.0]), torch.randn(2, 77, 16), torch.randn(2, 16), torch.randn(2, 5)),
           os.path.join(out, "unet", "model.onnx"),
           ["sample", "timestep", "encoder_hidden_states", "text_embeds", "time_ids"], ["out_sample"],
           {"sample": {0: "batch_size", 2: "height", 3: "width"}, "timestep": {0: "steps"},
            "encoder_hidden_states": {0: "batch_size", 1: "sequence_length"}, "text_embeds": {0: "batch_size"},
            "time_ids": {0: "batch_size"}, "out_sample": {0: "batch_size", 2: "height", 3: "width"}})
    export(VaeDecoderExport(r["vae"]), (torch.randn(1, 4, 8, 8),), os.path.join(out, "vae_decoder", "model.onnx"),
           ["latent_sample"], ["sample"],
           {"latent_sample": {0: "batch_size", 2: "latent_height", 3: "latent_width"}, "sample": {0: "batch_size", 2: "height", 3: "width"}})
    # stabilityai/stable-diffusion-xl-refiner-1.0's model_index: no text_encoder, force_zeros false, aesthetic score on.
    write_json(os.path.join(out, "model_index.json"), {
        "_class_name": "ORTStableDiffusionXLImg2ImgPipeline", "_diffusers_version": diffusers.__version__,
        "force_zeros_for_empty_prompt": False, "requires_aesthetics_score": True,
        "scheduler": ["diffusers", "EulerDiscreteScheduler"], "text_encoder": [None, None],
        "text_encoder_2": ["transformers", "CLIPTextModelWithProjection"], "tokenizer": [None, None],
        "tokenizer_2": ["transformers", "CLIPTokenizer"], "unet": ["diffusers", "UNet2DConditionModel"],
        "vae": ["diffusers", "AutoencoderKL"],
    })
    diffusers_config = lambda obj: json.loads(obj.to_json_string())
    write_json(os.path.join(out, "scheduler", "scheduler_config.json"), diffusers_config(r["scheduler"]))
    write_json(os.path.join(out, "text_encoder_2", "config.json"), r["text_encoder_2"].config.to_dict())
    write_json(os.path.join(out, "unet", "config.json"), diffusers_config(r["unet"]))
    write_json(os.path.join(out, "vae_decoder", "config.json"), diffusers_config(r["vae"]))
    d = os.path.join(out, "tokenizer_2")
    os.makedirs(d, exist_ok=True)
    for f in ("vocab.json", "merges.txt"):
        os.symlink(os.path.relpath(os.path.join(CLIP_FILES, f), d), os.path.join(d, f))
    special = {"bos_token": "<|startoftext|>", "eos_token": "<|endoftext|>", "pad_token": "!", "unk_token": "<|endoftext|>"}
    write_json(os.path.join(d, "special_tokens_map.json"), special)
    write_json(os.path.join(d, "tokenizer_config.json"), {**special, "model_max_length": 77, "do_lower_case": True,
                                                           "tokenizer_class": "CLIPTokenizer", "add_prefix_space": False, "errors": "replace"})


REFINER_CASES = [
    # Base then refiner on one generator object (the refiner's draws continue the base's).
    dict(id="base_refiner_euler", prompt="a lighthouse on a cliff at dusk", seed=7, steps=4, split=0.75),
    dict(id="base_refiner_euler_a_negative", scheduler="EulerAncestralDiscreteScheduler", prompt="a castle", negative_prompt="fog",
         seed=9, steps=5, split=0.6, aesthetic_score=7.0, negative_aesthetic_score=2.0),
]


def run_refiner_case(c, r, case):
    cls = SCHEDULERS[case.get("scheduler", "EulerDiscreteScheduler")]
    base = StableDiffusionXLPipeline(**{**c, "scheduler": cls.from_config(c["scheduler"].config)}, add_watermarker=False)
    refiner = StableDiffusionXLImg2ImgPipeline(**{**r, "scheduler": cls.from_config(r["scheduler"].config)}, add_watermarker=False,
                                               requires_aesthetics_score=True, force_zeros_for_empty_prompt=False)
    for p in (base, refiner):
        p.set_progress_bar_config(disable=True)
    timesteps = {"base": [], "refiner": []}
    for name, p in (("base", base), ("refiner", refiner)):
        forward = p.unet.forward
        def spy(sample, timestep, *a, _f=forward, _n=name, **k):
            timesteps[_n].append(float(timestep))
            return _f(sample, timestep, *a, **k)
        p.unet.forward = spy
    common = dict(prompt=case["prompt"], num_inference_steps=case["steps"], guidance_scale=case.get("guidance_scale", 5.0))
    if "negative_prompt" in case:
        common["negative_prompt"] = case["negative_prompt"]
    extra = {k: case[k] for k in ("aesthetic_score", "negative_aesthetic_score") if k in case}

    def run(output_type):
        g = torch.Generator().manual_seed(case["seed"])
        with torch.no_grad():
            latents = base(**common, width=64, height=64, denoising_end=case["split"], output_type="latent", generator=g).images
            return latents, refiner(**common, **extra, image=latents, denoising_start=case["split"], output_type=output_type, generator=g).images

    base_latents, final = run("latent")
    steps_seen = {k: list(v) for k, v in timesteps.items()}
    _, images = run("np")
    u8 = (images * 255).round().astype(np.uint8)
    result = dict(case)
    result.update(
        scheduler_class=cls.__name__, guidance_scale=common["guidance_scale"], base_timesteps=steps_seen["base"],
        refiner_timesteps=steps_seen["refiner"], base_latents=flat(base_latents), latent_shape=list(final.shape),
        final_latents=flat(final), image_shape_hwc=list(u8.shape), image_uint8_hwc_b64=[b64(im) for im in u8],
    )
    return result


def check_onnx(c, out):
    """Each ONNX file against its PyTorch module: the largest absolute difference."""
    diffs = {}
    s = lambda n: ort.InferenceSession(os.path.join(out, n, "model.onnx"), providers=["CPUExecutionProvider"])
    ids = np.array([[49406, 1929, 539, 320, 2368, 49407] + [0] * 71, [49406, 320, 1125, 49407] + [49407] * 73], dtype=np.int64)
    with torch.no_grad():
        for name, first in (("text_encoder", "pooler_output"), ("text_encoder_2", "text_embeds")):
            got = s(name).run(None, {"input_ids": ids})
            want = TextEncoderExport(c[name], first)(torch.from_numpy(ids))
            diffs[name] = max(float(np.abs(g - w.numpy()).max()) for g, w in zip(got, want))
        g = torch.Generator().manual_seed(0)
        x, e, te, ti = (torch.randn(2, 4, 8, 16, generator=g), torch.randn(2, 77, 32, generator=g),
                        torch.randn(2, 16, generator=g), torch.tensor([[64.0, 64, 0, 0, 64, 64], [128, 96, 8, 16, 64, 64]]))
        got = s("unet").run(None, {"sample": x.numpy(), "timestep": np.array([946.42], np.float32), "encoder_hidden_states": e.numpy(),
                                   "text_embeds": te.numpy(), "time_ids": ti.numpy()})[0]
        diffs["unet"] = float(np.abs(got - UnetExport(c["unet"])(x, torch.tensor([946.42]), e, te, ti).numpy()).max())
        img = torch.rand(1, 3, 64, 48, generator=g) * 2 - 1
        got = s("vae_encoder").run(None, {"sample": img.numpy()})[0]
        diffs["vae_encoder"] = float(np.abs(got - VaeEncoderExport(c["vae"])(img).numpy()).max())
        z = torch.randn(2, 4, 8, 8, generator=g) * 5
        got = s("vae_decoder").run(None, {"latent_sample": z.numpy()})[0]
        diffs["vae_decoder"] = float(np.abs(got - VaeDecoderExport(c["vae"])(z).numpy()).max())
    return diffs


# ---------------------------------------------------------------- reference cases

def init_image():
    """A 64×64 RGB gradient with a square, as uint8 HWC (the img2img cases' input)."""
    y, x = np.mgrid[0:64, 0:64]
    img = np.stack([x * 4, y * 4, (x + y) * 2], axis=-1).astype(np.uint8)
    img[16:40, 20:44] = [200, 40, 90]
    return img


def flat(t):
    return [float(v) for v in t.detach().float().reshape(-1).numpy()]


def b64(u8):
    return base64.b64encode(np.ascontiguousarray(u8).tobytes()).decode("ascii")


CASES = [
    dict(id="euler_zeros_negative", prompt="a lighthouse on a cliff at dusk", seed=7),
    dict(id="euler_explicit_negatives", prompt="a lighthouse on a cliff at dusk", prompt_2="oil painting, thick brush strokes",
         negative_prompt="blurry", negative_prompt_2="low quality, jpeg artifacts", seed=7),
    dict(id="euler_empty_negative_encoded", prompt="a red fox in the snow", negative_prompt="", seed=3, guidance_scale=7.0),
    dict(id="euler_guidance_off", prompt="a red fox in the snow", seed=3, guidance_scale=1.0),
    dict(id="euler_batch_generator_list", prompt=["a bowl of ramen", "a city street in the rain"],
         negative_prompt=["", "cartoon"], seeds=[11, 12]),
    dict(id="euler_size_conditioning", prompt="a mountain lake", seed=21, width=96, height=64,
         original_size=(1024, 768), crops_coords_top_left=(16, 32), target_size=(512, 512),
         negative_original_size=(256, 256), negative_crops_coords_top_left=(0, 0), negative_target_size=(1024, 1024)),
    dict(id="euler_default_size", prompt="a mountain lake", seed=5, default_size=True),
    dict(id="euler_a_num_images", scheduler="EulerAncestralDiscreteScheduler", prompt="a castle", seed=9, num_images_per_prompt=2,
         negative_prompt="fog"),
    dict(id="dpmpp_2m", scheduler="DPMSolverMultistepScheduler", prompt="a castle", seed=9, steps=4),
    dict(id="img2img_euler", pipeline="img2img", prompt="a watercolor of a harbour", seed=13, strength=0.6, steps=4),
    dict(id="img2img_generator_list", pipeline="img2img", prompt=["a harbour", "a forest"], seeds=[2, 3], strength=0.75,
         steps=4, negative_prompt=["", "dark"]),
]

SCHEDULERS = {"EulerDiscreteScheduler": EulerDiscreteScheduler, "EulerAncestralDiscreteScheduler": EulerAncestralDiscreteScheduler,
              "DPMSolverMultistepScheduler": DPMSolverMultistepScheduler}


def run_case(c, case):
    from PIL import Image
    scheduler = SCHEDULERS[case.get("scheduler", "EulerDiscreteScheduler")].from_config(c["scheduler"].config)
    components = {**c, "scheduler": scheduler}
    img2img = case.get("pipeline") == "img2img"
    cls = StableDiffusionXLImg2ImgPipeline if img2img else StableDiffusionXLPipeline
    pipe = cls(**components, add_watermarker=False)
    pipe.set_progress_bar_config(disable=True)

    captured = {}
    original_time_ids = pipe._get_add_time_ids

    def spy_time_ids(*args, **kwargs):
        out = original_time_ids(*args, **kwargs)
        captured.setdefault("add_time_ids_calls", []).append(out if isinstance(out, torch.Tensor) else out[0])
        return out
    pipe._get_add_time_ids = spy_time_ids
    unet_inputs = []
    unet_forward = pipe.unet.forward

    def spy_unet(sample, timestep, encoder_hidden_states, *args, **kwargs):
        if not unet_inputs:
            unet_inputs.append(dict(text_embeds=kwargs["added_cond_kwargs"]["text_embeds"].clone(),
                                    time_ids=kwargs["added_cond_kwargs"]["time_ids"].clone(),
                                    context=encoder_hidden_states.clone(), batch=sample.shape[0]))
        unet_inputs.append(float(timestep) if torch.is_tensor(timestep) and timestep.numel() == 1 else timestep)
        return unet_forward(sample, timestep, encoder_hidden_states, *args, **kwargs)
    pipe.unet.forward = spy_unet

    def generator():
        if "seeds" in case:
            return [torch.Generator().manual_seed(s) for s in case["seeds"]]
        return torch.Generator().manual_seed(case["seed"])

    kwargs = dict(prompt=case["prompt"], num_inference_steps=case.get("steps", 3),
                  guidance_scale=case.get("guidance_scale", 5.0))
    for key in ("prompt_2", "negative_prompt", "negative_prompt_2", "num_images_per_prompt", "original_size",
                "crops_coords_top_left", "target_size", "negative_original_size", "negative_crops_coords_top_left",
                "negative_target_size", "strength"):
        if key in case:
            kwargs[key] = case[key]
    if img2img:
        kwargs["image"] = Image.fromarray(init_image())
    elif not case.get("default_size"):
        kwargs["width"], kwargs["height"] = case.get("width", 64), case.get("height", 64)

    with torch.no_grad():
        latents = pipe(**kwargs, generator=generator(), output_type="latent").images
        first = unet_inputs[0]
        timesteps = unet_inputs[1:]
        unet_inputs.clear()
        images = pipe(**kwargs, generator=generator(), output_type="np").images
    u8 = (images * 255).round().astype(np.uint8)
    result = {k: (list(v) if isinstance(v, tuple) else v) for k, v in case.items()}
    result.update(
        pipeline=cls.__name__,
        scheduler_class=scheduler.__class__.__name__,
        guidance_scale=kwargs["guidance_scale"],
        num_inference_steps=kwargs["num_inference_steps"],
        unet_batch=first["batch"],
        unet_timesteps=[float(t) if not torch.is_tensor(t) else flat(t) for t in timesteps],
        time_ids=flat(first["time_ids"]),
        text_embeds=flat(first["text_embeds"]),
        context_first_values=flat(first["context"].reshape(first["batch"], -1)[:, :8]),
        latent_shape=list(latents.shape),
        final_latents=flat(latents),
        image_shape_hwc=list(u8.shape),
        image_uint8_hwc_b64=[b64(im) for im in u8],
    )
    return result


def sha256(path):
    with open(path, "rb") as f:
        return hashlib.sha256(f.read()).hexdigest()


def main():
    args = sys.argv[1:]
    diffusers_dir = None
    if "--diffusers" in args:
        i = args.index("--diffusers")
        diffusers_dir = args[i + 1]
        del args[i:i + 2]
    out = os.path.abspath(args[0] if args else os.path.join(ROOT, "test", "fixtures", "sdxl"))
    c = build_components()
    folder = os.path.join(out, "tiny-sdxl")
    write_folder(c, folder)
    if diffusers_dir:
        StableDiffusionXLPipeline(**c, add_watermarker=False).save_pretrained(diffusers_dir)
    onnx_check = check_onnx(c, folder)
    cases = [run_case(c, case) for case in CASES]
    r = build_refiner(c)
    refiner_folder = os.path.join(out, "tiny-sdxl-refiner")
    write_refiner_folder(r, refiner_folder)
    refiner_cases = [run_refiner_case(c, r, case) for case in REFINER_CASES]
    files = {}
    for top in (folder, refiner_folder):
        for dirpath, _, names in os.walk(top):
            for n in sorted(names):
                p = os.path.join(dirpath, n)
                files[os.path.relpath(p, out)] = sha256(p)
    write_json(os.path.join(out, "tiny_sdxl_reference.json"), {
        "what": "StableDiffusionXL(Img2Img)Pipeline.__call__ on the tiny SDXL whose ONNX export is tiny-sdxl/ (float32, CPU)",
        "generator": "scripts/reference/gen_tiny_sdxl.py",
        "provenance": {"diffusers": diffusers.__version__, "diffusers_commit": DIFFUSERS_COMMIT, "torch": torch.__version__,
                       "transformers": transformers.__version__, "onnxruntime": ort.__version__, "numpy": np.__version__,
                       "python": sys.version.split()[0]},
        "fields": {
            "final_latents": "pipe(..., output_type='latent').images flattened C-order (before 1/scaling_factor)",
            "image_uint8_hwc_b64": "per image: (pipe(..., output_type='np') * 255).round() as uint8 HWC, base64",
            "time_ids": "the UNet's time_ids input at the first evaluation ([uncond rows; cond rows] with CFG), flattened",
            "text_embeds": "the UNet's text_embeds input at the first evaluation, flattened",
            "context_first_values": "the first 8 values of each row of encoder_hidden_states at the first evaluation",
            "unet_timesteps": "the timestep of every UNet call",
            "seeds": "a list of torch.Generator().manual_seed(seed), one per image; seed: one generator for the batch",
            "init_image": "img2img cases: the init image is init_image_uint8_hwc_b64 (64x64 RGB) via PIL",
        },
        "init_image_uint8_hwc_b64": b64(init_image()),
        "onnx_vs_torch_max_abs_diff": onnx_check,
        "files_sha256": files,
        "cases": cases,
        "refiner_cases": refiner_cases,
        "refiner_fields": "base = StableDiffusionXLPipeline(denoising_end=split, output_type='latent'), then refiner = "
                          "StableDiffusionXLImg2ImgPipeline on tiny-sdxl-refiner/ (requires_aesthetics_score, force_zeros_for_empty_prompt "
                          "false) with image=those latents, denoising_start=split, the SAME generator object; 64x64; "
                          "base_latents = the base's output; final_latents / images = the refiner's",
    })
    print(json.dumps(onnx_check))


if __name__ == "__main__":
    main()
