#!/usr/bin/env python3
"""A tiny SDXL as people download it: a diffusers folder and the single-file `.safetensors` (fp32, fp16),
with the outputs torch computes for each component, for lib/convert/checkpoint/sdxl*.ts (issue 13 item 2).

Writes test/fixtures/checkpoints/sdxl/:
  diffusers/                    a StableDiffusionXLPipeline folder (save_pretrained, weights fp16): model_index.json,
                                scheduler/, tokenizer/, tokenizer_2/, text_encoder/, text_encoder_2/, unet/, vae/
  single_file.safetensors       fp32 } the original SDXL layout, written by diffusers'
  single_file.fp16.safetensors  fp16 } scripts/convert_diffusers_to_original_sdxl.py
  component_goldens.json/.bin   torch outputs of each component on fixed inputs (index + little-endian arrays)
  pipeline_goldens.json         one StableDiffusionXLPipeline run on the folder (latents and uint8 pixels)
  full_size_shapes.json         the tensor names and shapes of a full-size SDXL base single file (no weights) with
                                the published configs they were made from (FULL_SIZE below), for the configs
                                derived from shapes: the models built on the meta device, renamed by the same
                                conversion functions

The models are the real classes at tiny widths with SDXL's structure, so that the conversion script's
functions (convert_unet_state_dict, convert_vae_state_dict, convert_openai_text_enc_state_dict,
convert_openclip_text_enc_state_dict, and its text_projection transpose) run unchanged on them:
- text_encoder: CLIPTextModel (CLIP ViT-L's shape: quick_gelu), hidden 4, 2 layers, 2 heads;
- text_encoder_2: CLIPTextModelWithProjection (OpenCLIP bigG's: gelu), hidden 6, 3 layers, 2 heads,
  projection 6. The two widths differ as 768 and 1280 do: diffusers tells the encoders of a single file
  apart by their width;
- unet: SDXL base's block layout (DownBlock2D, CrossAttnDownBlock2D ×2; CrossAttnUpBlock2D ×2, UpBlock2D;
  layers_per_block 2, linear projections, per-block transformer depth [1, 2, 2], "text_time" added embedding
  with addition_time_embed_dim 8 and 6 · 8 + 6 inputs), channels (8, 8, 16), cross_attention_dim 4 + 6;
- vae: SDXL's (4 levels, 2 layers per block, scaling_factor 0.13025, force_upcast), channels (8, 8, 16, 16);
- scheduler: SDXL base's EulerDiscreteScheduler config (timestep_spacing "leading", steps_offset 1).
Weights: the classes' init plus seeded noise (gen_tiny_checkpoints.perturb), saved as float16, so the fp32 and
fp16 single files hold the same numbers; goldens come from the models reloaded from disk in float32.
The vocabulary keeps its 49408 rows (the real tokenizers' ids are valid) but each token embedding repeats
its first 1361 rows (row i = row i mod 1361): 1361 rows of a 6-wide fp32 table fit deflate's 32 KiB window,
so git stores the large tables compressed. Every id still looks up its own row of a plain nn.Embedding.

Each single file is checked to load back through StableDiffusionXLPipeline.from_single_file(file,
config=<folder>) to exactly the weights from_pretrained(<folder>) loads, and to give the same latents.

Made with (offline, see scripts/reference/README.md):
  PYTHONPATH=/tmp/diffusers-src/src /tmp/dvenv/bin/python scripts/reference/gen_tiny_sdxl_single_file.py
  diffusers 0.40.0.dev0 at git 58eb52c0803ea9af3abec60841c2a093bdf1f951 (its scripts/ at /tmp/diffusers-src/scripts),
  transformers 5.18.0, torch 2.13.0+cpu, safetensors 0.8.0 (asserted; PROVENANCE is written into the json).
"""
import importlib.util
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
from diffusers import AutoencoderKL, EulerDiscreteScheduler, StableDiffusionXLPipeline, UNet2DConditionModel
from safetensors.torch import load_file, save_file
from transformers import CLIPTextConfig, CLIPTextModel, CLIPTextModelWithProjection, CLIPTokenizer

sys.path.insert(0, str(Path(__file__).resolve().parent))
import gen_tiny_checkpoints as tiny  # noqa: E402  (perturb, write_tokenizer, Goldens, PROMPTS, add_sdxl_unet_goldens, assert_same_weights)

DIFFUSERS_COMMIT = "58eb52c0803ea9af3abec60841c2a093bdf1f951"
DIFFUSERS_SCRIPTS = Path(os.environ.get("DIFFUSERS_SCRIPTS", "/tmp/diffusers-src/scripts"))
ROOT = Path(__file__).resolve().parents[2]
OUT = ROOT / "test/fixtures/checkpoints/sdxl"
EMBED_PERIOD = 1361
SEED = 1301

PROVENANCE = {
    "script": "scripts/reference/gen_tiny_sdxl_single_file.py",
    "diffusers": f"{diffusers.__version__} (git {DIFFUSERS_COMMIT})",
    "transformers": transformers.__version__,
    "torch": torch.__version__,
    "safetensors": safetensors.__version__,
    "numpy": np.__version__,
}

# stabilityai/stable-diffusion-xl-base-1.0 scheduler/scheduler_config.json.
SDXL_SCHEDULER = dict(
    num_train_timesteps=1000, beta_start=0.00085, beta_end=0.012, beta_schedule="scaled_linear",
    prediction_type="epsilon", interpolation_type="linear", timestep_spacing="leading", steps_offset=1,
    use_karras_sigmas=False, clip_sample=False, sample_max_value=1.0, set_alpha_to_one=False, skip_prk_steps=True,
)

# stabilityai/stable-diffusion-xl-base-1.0's unet/, text_encoder/, text_encoder_2/ and vae/ config.json: the keys
# that decide shapes and those a converter must get right (the rest are the classes' defaults).
FULL_SIZE = {
    "unet": dict(
        act_fn="silu", addition_embed_type="text_time", addition_time_embed_dim=256, attention_head_dim=[5, 10, 20],
        block_out_channels=[320, 640, 1280], cross_attention_dim=2048, down_block_types=["DownBlock2D", "CrossAttnDownBlock2D", "CrossAttnDownBlock2D"],
        flip_sin_to_cos=True, freq_shift=0, in_channels=4, layers_per_block=2, norm_num_groups=32, out_channels=4,
        projection_class_embeddings_input_dim=2816, sample_size=128, transformer_layers_per_block=[1, 2, 10],
        up_block_types=["CrossAttnUpBlock2D", "CrossAttnUpBlock2D", "UpBlock2D"], upcast_attention=False, use_linear_projection=True,
    ),
    "text_encoder": dict(hidden_size=768, intermediate_size=3072, num_hidden_layers=12, num_attention_heads=12, hidden_act="quick_gelu",
                         projection_dim=768, vocab_size=49408, max_position_embeddings=77),
    "text_encoder_2": dict(hidden_size=1280, intermediate_size=5120, num_hidden_layers=32, num_attention_heads=20, hidden_act="gelu",
                           projection_dim=1280, vocab_size=49408, max_position_embeddings=77),
    "vae": dict(block_out_channels=[128, 256, 512, 512], down_block_types=["DownEncoderBlock2D"] * 4, up_block_types=["UpDecoderBlock2D"] * 4,
                in_channels=3, out_channels=3, latent_channels=4, layers_per_block=2, norm_num_groups=32, sample_size=1024,
                scaling_factor=0.13025, force_upcast=True),
}

CASE = dict(id="sdxl-euler-cfg", prompt="a photograph of an astronaut riding a horse", negative_prompt="blurry",
            seed=42, steps=3, guidance_scale=5.0, height=64, width=64)


def text_encoder(cls, gen, **spec):
    # SDXL's text encoder configs: bos 0, eos 2 (transformers pools at argmax(ids), its legacy rule), pad 1.
    config = CLIPTextConfig(vocab_size=49408, max_position_embeddings=77, layer_norm_eps=1e-5, num_attention_heads=2,
                            bos_token_id=0, eos_token_id=2, pad_token_id=1, **spec)
    model = cls(config).eval()
    tiny.perturb(model, gen)
    with torch.no_grad():
        emb = model.get_input_embeddings()
        emb.weight.copy_(emb.weight[torch.arange(emb.weight.shape[0]) % EMBED_PERIOD])
    return model


def build(gen):
    te = text_encoder(CLIPTextModel, gen, hidden_size=4, intermediate_size=8, num_hidden_layers=2, hidden_act="quick_gelu")
    te2 = text_encoder(CLIPTextModelWithProjection, gen, hidden_size=6, intermediate_size=12, num_hidden_layers=3,
                       hidden_act="gelu", projection_dim=6)
    unet = UNet2DConditionModel(
        sample_size=8, in_channels=4, out_channels=4, layers_per_block=2, block_out_channels=(8, 8, 16),
        down_block_types=("DownBlock2D", "CrossAttnDownBlock2D", "CrossAttnDownBlock2D"),
        up_block_types=("CrossAttnUpBlock2D", "CrossAttnUpBlock2D", "UpBlock2D"),
        attention_head_dim=(2, 2, 4), transformer_layers_per_block=(1, 2, 2), use_linear_projection=True,
        addition_embed_type="text_time", addition_time_embed_dim=8, projection_class_embeddings_input_dim=6 * 8 + 6,
        cross_attention_dim=4 + 6, norm_num_groups=8, flip_sin_to_cos=True, freq_shift=0,
    ).eval()
    tiny.perturb(unet, gen)
    vae = AutoencoderKL(
        in_channels=3, out_channels=3, latent_channels=4, sample_size=64, layers_per_block=2,
        down_block_types=("DownEncoderBlock2D",) * 4, up_block_types=("UpDecoderBlock2D",) * 4,
        block_out_channels=(8, 8, 16, 16), norm_num_groups=4, scaling_factor=0.13025, force_upcast=True,
    ).eval()
    tiny.perturb(vae, gen)
    return te, te2, unet, vae


def write_folder(folder: Path, gen) -> None:
    te, te2, unet, vae = build(gen)
    for name, model in [("text_encoder", te), ("text_encoder_2", te2), ("unet", unet), ("vae", vae)]:
        model.to(torch.float16).save_pretrained(folder / name, safe_serialization=True)
    for name in ("text_encoder", "text_encoder_2"):
        # The `text_model.` prefix of every SDXL folder people download (transformers 5 saves it flattened).
        path = folder / name / "model.safetensors"
        tensors = load_file(path)
        save_file({k if k.startswith(("text_model.", "text_projection.")) else f"text_model.{k}": v for k, v in tensors.items()},
                  path, metadata={"format": "pt"})
    tiny.write_tokenizer(folder / "tokenizer", "<|endoftext|>")
    tiny.write_tokenizer(folder / "tokenizer_2", "!")  # OpenCLIP bigG's tokenizer_2 pads with "!" (id 0)
    scheduler = EulerDiscreteScheduler.from_config(SDXL_SCHEDULER)
    pipe = StableDiffusionXLPipeline(
        vae=vae, text_encoder=te, text_encoder_2=te2, unet=unet, scheduler=scheduler,
        tokenizer=CLIPTokenizer.from_pretrained(folder / "tokenizer"), tokenizer_2=CLIPTokenizer.from_pretrained(folder / "tokenizer_2"),
    )
    scheduler.save_pretrained(folder / "scheduler")
    pipe.save_config(folder)


def load_converter():
    spec = importlib.util.spec_from_file_location("convert_to_original_sdxl", DIFFUSERS_SCRIPTS / "convert_diffusers_to_original_sdxl.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def single_file_state_dict(conv, folder: Path) -> dict:
    """The script's __main__ (safetensors branch), its functions run as they are."""
    unet = conv.convert_unet_state_dict(load_file(folder / "unet/diffusion_pytorch_model.safetensors"))
    vae = conv.convert_vae_state_dict(load_file(folder / "vae/diffusion_pytorch_model.safetensors"))
    te = conv.convert_openai_text_enc_state_dict(load_file(folder / "text_encoder/model.safetensors"))
    te2 = conv.convert_openclip_text_enc_state_dict(load_file(folder / "text_encoder_2/model.safetensors"))
    state = {"model.diffusion_model." + k: v for k, v in unet.items()}
    state.update({"first_stage_model." + k: v for k, v in vae.items()})
    state.update({"conditioner.embedders.0.transformer." + k: v for k, v in te.items()})
    te2 = {"conditioner.embedders.1.model." + k: v for k, v in te2.items()}
    te2["conditioner.embedders.1.model.text_projection"] = te2.pop("conditioner.embedders.1.model.text_projection.weight").T.contiguous()
    state.update(te2)
    return state


COMPONENTS = ("text_encoder", "text_encoder_2", "unet", "vae")


def full_size_shapes(conv) -> None:
    """FULL_SIZE's models on the meta device, renamed as single_file_state_dict renames the tiny ones."""
    with torch.device("meta"):
        unet = UNet2DConditionModel(**FULL_SIZE["unet"])
        vae = AutoencoderKL(**FULL_SIZE["vae"])
        te = CLIPTextModel(CLIPTextConfig(**FULL_SIZE["text_encoder"]))
        te2 = CLIPTextModelWithProjection(CLIPTextConfig(**FULL_SIZE["text_encoder_2"]))
    prefixed = lambda model: {k if k.startswith(("text_model.", "text_projection.")) else f"text_model.{k}": v for k, v in model.state_dict().items()}
    state = {"model.diffusion_model." + k: v for k, v in conv.convert_unet_state_dict(unet.state_dict()).items()}
    state.update({"first_stage_model." + k: v for k, v in conv.convert_vae_state_dict(vae.state_dict()).items()})
    state.update({"conditioner.embedders.0.transformer." + k: v for k, v in conv.convert_openai_text_enc_state_dict(prefixed(te)).items()})
    te2_state = {"conditioner.embedders.1.model." + k: v for k, v in conv.convert_openclip_text_enc_state_dict(prefixed(te2)).items()}
    te2_state["conditioner.embedders.1.model.text_projection"] = te2_state.pop("conditioner.embedders.1.model.text_projection.weight").T
    state.update(te2_state)
    # position_ids are buffers (int64), not weights: a single file's loader skips them.
    tensors = {k: list(v.shape) for k, v in state.items() if v.dtype.is_floating_point}
    doc = {"provenance": PROVENANCE, "configs": FULL_SIZE, "tensors": tensors}
    (OUT / "full_size_shapes.json").write_text(json.dumps(doc, indent=None) + "\n")
    print(f"full_size_shapes.json: {len(tensors)} tensors")


def component_weights(pipe) -> dict:
    return {f"{name}.{k}": v for name in COMPONENTS for k, v in getattr(pipe, name).state_dict().items()}


def run_case(pipe, case: dict):
    common = dict(prompt=case["prompt"], negative_prompt=case["negative_prompt"], num_inference_steps=case["steps"],
                  guidance_scale=case["guidance_scale"], height=case["height"], width=case["width"])
    latents = pipe(**common, generator=torch.Generator("cpu").manual_seed(case["seed"]), output_type="latent").images
    image = pipe(**common, generator=torch.Generator("cpu").manual_seed(case["seed"]), output_type="np").images
    return latents[0].numpy(), (image[0] * 255).round().astype("uint8")


class Goldens(tiny.Goldens):
    def write(self, folder: Path, extra: dict) -> None:
        (folder / "component_goldens.bin").write_bytes(b"".join(self.chunks))
        doc = {"provenance": PROVENANCE, **extra, "arrays": self.index}
        (folder / "component_goldens.json").write_text(json.dumps(doc, indent=1) + "\n")


def record_component_goldens(pipe, gen) -> None:
    g = Goldens()
    prompts = tiny.PROMPTS
    for name, tok in [("text_encoder", pipe.tokenizer), ("text_encoder_2", pipe.tokenizer_2)]:
        ids = tok(prompts, padding="max_length", max_length=77, truncation=True, return_tensors="pt").input_ids
        out = getattr(pipe, name)(ids, output_hidden_states=True)
        g.add(f"{name}.input_ids", ids)
        g.add(f"{name}.last_hidden_state", out.last_hidden_state)
        if name == "text_encoder":
            g.add(f"{name}.pooler_output", out.pooler_output)
        else:
            g.add(f"{name}.text_embeds", out.text_embeds)
        for i, h in enumerate(out.hidden_states):
            g.add(f"{name}.hidden_states.{i}", h)
    # 8 × 12 latents: divisible by 4, as the two downsamplers need (the pipeline asks multiples of 8).
    tiny.add_sdxl_unet_goldens(g, pipe.unet, gen, latent_width=12, context_width=10)
    latent = torch.randn(1, 4, 4, 5, generator=gen)
    g.add("vae.decoder.latent_sample", latent)
    g.add("vae.decoder.sample", pipe.vae.decode(latent).sample)
    image = torch.rand(1, 3, 32, 24, generator=gen) * 2 - 1
    posterior = pipe.vae.encode(image).latent_dist
    g.add("vae.encoder.sample", image)
    g.add("vae.encoder.moments", posterior.parameters)
    g.write(OUT, {"prompts": prompts, "unet_timesteps": [546.2345]})


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

    reference = StableDiffusionXLPipeline.from_pretrained(folder, torch_dtype=torch.float32)
    reference.set_progress_bar_config(disable=True)
    expected = component_weights(reference)
    conv = load_converter()
    state = single_file_state_dict(conv, folder)
    files = {}
    latents, image = run_case(reference, CASE)
    for dtype, name in [("fp32", "single_file.safetensors"), ("fp16", "single_file.fp16.safetensors")]:
        path = OUT / name
        save_file({k: v.to(torch.float32 if dtype == "fp32" else torch.float16).contiguous() for k, v in state.items()}, path)
        loaded = StableDiffusionXLPipeline.from_single_file(str(path), config=str(folder), torch_dtype=torch.float32)
        loaded.set_progress_bar_config(disable=True)
        tiny.assert_same_weights(name, component_weights(loaded), expected)
        a, _ = run_case(loaded, CASE)
        assert np.array_equal(a, latents), f"{name}: the single-file pipeline's latents differ from the folder's"
        files[name] = {"dtype": dtype, "bytes": path.stat().st_size, "tensors": len(state)}
        print(f"{name} ({path.stat().st_size} bytes, {len(state)} tensors) loads back to the folder's {len(expected)} weights exactly")

    record_component_goldens(reference, torch.Generator().manual_seed(SEED + 100))
    case = {**CASE, "scheduler_config": {k: v for k, v in reference.scheduler.config.items() if k != "_use_default_values"},
            "latents": {"shape": list(latents.shape), "values": [float(x) for x in latents.reshape(-1)]},
            "image_uint8_hwc": {"shape": list(image.shape), "values": image.reshape(-1).tolist()}}
    doc = {"provenance": PROVENANCE, "single_files": files, "cases": [case]}
    (OUT / "pipeline_goldens.json").write_text(json.dumps(doc, indent=None, default=str) + "\n")
    print(f"{CASE['id']}: latents |max| {np.abs(latents).max():.4f}")
    full_size_shapes(conv)


if __name__ == "__main__":
    main()
