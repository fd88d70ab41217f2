#!/usr/bin/env python3
"""Goldens for SDXL's text conditioning as A1111 v1.10.1 computes it, on the tiny SDXL of
gen_tiny_sdxl.py (test/fixtures/sdxl/tiny-sdxl). Writes test/fixtures/a1111/sdxl-conditioning/:

  goldens.json   cases: A1111's `prompt_parser.get_learned_conditioning` on the model (a list of
                 [end_at_step, cond] per prompt, cond = {crossattn, vector}), the chunks each
                 embedder made, the size/crop inputs behind `vector`; values in goldens.bin
  goldens.bin    the float32 values (little-endian), each case's at the offsets in goldens.json
  embeddings/    SDXL textual-inversion files ({clip_l, clip_g}), written with safetensors

Upstream code run (nothing re-implemented):
- AUTOMATIC1111/stable-diffusion-webui at 82a973c04367123ae98bd9abdf80d9eda9b910e2 (v1.10.1):
  `modules/prompt_parser.py` (imported: get_learned_conditioning, SdConditioning, the schedules),
  `modules/sd_hijack_clip.py` (imported: FrozenCLIPEmbedderForSDXLWithCustomWords, with
  `opts.sdxl_clip_l_skip` and `opts.CLIP_stop_at_last_layers`), `modules/sd_hijack_open_clip.py`
  (imported: FrozenOpenCLIPEmbedder2WithCustomWords), `modules/sd_emphasis.py`; taken out of their
  modules with `ast` (those modules import the whole UI): `get_learned_conditioning`,
  `encode_embedding_init_text`, `tokenize` and `process_texts` from `modules/sd_models_xl.py` (what
  A1111 patches into DiffusionEngine and GeneralConditioner), `EmbeddingsWithFixes` from `modules/sd_hijack.py`, `Embedding`, `EmbeddingDatabase`,
  `create_embedding_from_data` from `modules/textual_inversion/textual_inversion.py`,
  `calculate_sha256` from `modules/hashes.py`. The embedders are wrapped exactly as
  `StableDiffusionModelHijack.hijack` wraps a GeneralConditioner's (EmbeddingsWithFixes on each
  token embedding, `textual_inversion_key='clip_g'` for the second).
- Stability-AI/generative-models (sgm) at 45c443b316737a4ab6e40413d7794a7f5657c19f (the commit
  A1111 v1.10.1 pins in launch_utils.py), taken out with `ast`: `GeneralConditioner`,
  `AbstractEmbModel`, `FrozenCLIPEmbedder`, `FrozenOpenCLIPEmbedder2`, `ConcatTimestepEmbedderND`
  (sgm/modules/encoders/modules.py), `Timestep` (openaimodel.py), `timestep_embedding` (util.py),
  `autocast`, `disabled_train`, `count_params`, `expand_dims_like` (sgm/util.py). The conditioner is
  configured as sd_xl_base.yaml configures it: FrozenCLIPEmbedder layer "hidden" at the penultimate
  index, FrozenOpenCLIPEmbedder2 layer "penultimate", always_return_pooled, legacy False, then
  ConcatTimestepEmbedderND for original_size_as_tuple, crop_coords_top_left, target_size_as_tuple
  (outdim = the UNet's addition_time_embed_dim).
- mlfoundations/open_clip at bb6e834e9c70d9c27d0dc3ecedeebeaeb1ffad6b (the commit A1111 pins):
  `src/open_clip/tokenizer.py` imported as `open_clip.tokenizer` (A1111's clip_g tokenizer).

Stubs (the smallest that let that code run): modules.shared (opts with A1111's defaults,
sd_model.cond_stage_model = the conditioner), modules.devices (CPU, float32), modules.sd_hijack
(model_hijack: fixes, extra_generation_params, the embedding database); sgm's
`instantiate_from_config` hands the conditioner its prebuilt embedders; FrozenCLIPEmbedder's
`CLIPTokenizer`/`CLIPTextModel.from_pretrained` return the tiny model (through
`TextModelAsInTransformers4`, transformers 4's `.text_model` path A1111 uses); open_clip's
`create_model_and_transforms` returns `OpenClipTextTower`, which lays transformers'
CLIPTextModelWithProjection out as open_clip's text tower (token_embedding, positional_embedding,
transformer.resblocks taking LND input and open_clip's causal attn_mask, ln_final,
text_projection = the projection's weight transposed, attn_mask) — the same modules and weights as
the ONNX file (checked below), so sgm's own encode_with_transformer/pool run on it.

The tiny models come from gen_tiny_sdxl.py's `build_components` (same seeds); the script checks
that they give the fixture's ONNX outputs (hidden states, text_embeds) and that diffusers' UNet
`add_time_proj` of the time ids [h, w, top, left, h, w] equals the tail of sgm's `vector`.

Usage (offline, from the repository root):
  PYTHONPATH=/tmp/diffusers-src/src:PKGS python scripts/reference/a1111_sdxl_conditioning.py A1111 SGM OPEN_CLIP
with A1111 a folder holding 82a973c's `modules/`, SGM a folder holding 45c443b's `sgm/`, OPEN_CLIP a
folder holding bb6e834's `src/open_clip/tokenizer.py` and `bpe_simple_vocab_16e6.txt.gz`; PKGS
with lark 1.3.1 and einops 0.8.2 (pip install --no-deps --target). Made with Python 3.11.7, torch
2.13.0+cpu, transformers 5.18.0, onnxruntime 1.30.0, safetensors 0.8.0, lark 1.3.1, einops 0.8.2.
"""
import __future__
import ast
import hashlib
import json
import math
import os
import shutil
import sys
import types
from contextlib import nullcontext
from functools import partial
from pathlib import Path
from typing import Dict, List, Optional, Tuple, Union

import numpy as np
import torch

A1111_COMMIT = "82a973c04367123ae98bd9abdf80d9eda9b910e2"
SGM_COMMIT = "45c443b316737a4ab6e40413d7794a7f5657c19f"
OPEN_CLIP_COMMIT = "bb6e834e9c70d9c27d0dc3ecedeebeaeb1ffad6b"
A1111_BLOBS = {
    "modules/prompt_parser.py": "4e393d2866f6bc93a527d5eb6827a1613ca08097",
    "modules/sd_hijack_clip.py": "a479148fc2175baf8b96d29cdc63cddc5b4e84aa",
    "modules/sd_emphasis.py": "49ef1a6acb3c72f2c3cea1870884d8d04558ff34",
    "modules/sd_hijack.py": "0de8305418699be9048a6cef55949070848051c0",
    "modules/textual_inversion/textual_inversion.py": "dc7833e9394b567f48f817f4b54193d8dab8c166",
}
OUT = Path("test/fixtures/a1111/sdxl-conditioning")
MODEL = Path("test/fixtures/sdxl/tiny-sdxl")
STEPS = 4

torch.set_num_threads(1)


def git_blob(data: bytes) -> str:
    return hashlib.sha1(b"blob %d\0" % len(data) + data).hexdigest()


def extract(path: Path, names: set, namespace: dict) -> None:
    """Executes the top-level definitions `names` of an upstream file, verbatim, in `namespace`."""
    tree = ast.parse(path.read_text())
    body = [n for n in tree.body if isinstance(n, (ast.ClassDef, ast.FunctionDef)) and n.name in names]
    missing = names - {n.name for n in body}
    if missing:
        raise SystemExit(f"{path}: no {missing}")
    # A file with `from __future__ import annotations` keeps its annotations unevaluated.
    lazy = any(isinstance(n, ast.ImportFrom) and n.module == "__future__" and any(a.name == "annotations" for a in n.names) for n in tree.body)
    flags = __future__.annotations.compiler_flag if lazy else 0
    exec(compile(ast.Module(body=body, type_ignores=[]), str(path), "exec", flags=flags, dont_inherit=True), namespace)


class Opts:
    def __init__(self):
        self.values = {
            "emphasis": "Original",
            "comma_padding_backtrack": 20,
            "CLIP_stop_at_last_layers": 1,
            "sdxl_clip_l_skip": False,
            "use_old_emphasis_implementation": False,
            "textual_inversion_add_hashes_to_infotext": True,
            "textual_inversion_print_at_load": False,
            "sdxl_crop_top": 0,
            "sdxl_crop_left": 0,
            "sdxl_refiner_low_aesthetic_score": 2.5,
            "sdxl_refiner_high_aesthetic_score": 6.0,
        }

    def __getattr__(self, name):
        values = self.__dict__["values"]
        if name not in values:
            raise AttributeError(f"opts.{name} is not stubbed")
        return values[name]


class TextModelAsInTransformers4(torch.nn.Module):
    """transformers 5 made CLIPTextModel the text transformer itself; A1111 (transformers 4.30)
    reaches it as `transformer.text_model`. Same module, 4.x path."""

    def __init__(self, model):
        super().__init__()
        self.text_model = model

    def forward(self, **kwargs):
        return self.text_model(**kwargs)


class ResidualBlockLND(torch.nn.Module):
    """One transformers CLIPEncoderLayer called as open_clip's ResidualAttentionBlock: x [L, N, D],
    attn_mask the additive [L, L] causal mask."""

    def __init__(self, layer):
        super().__init__()
        self.layer = layer

    def forward(self, x, attn_mask=None):
        h = self.layer(x.permute(1, 0, 2), attention_mask=attn_mask[None, None])
        return h.permute(1, 0, 2)


class OpenClipTextTower(torch.nn.Module):
    """transformers' CLIPTextModelWithProjection laid out as open_clip's CLIP text tower."""

    def __init__(self, model):
        super().__init__()
        text = model.text_model
        self.visual = torch.nn.Identity()  # sgm deletes it
        self.token_embedding = text.embeddings.token_embedding
        self.positional_embedding = torch.nn.Parameter(text.embeddings.position_embedding.weight.detach().clone())
        self.transformer = torch.nn.Module()
        self.transformer.resblocks = torch.nn.ModuleList(ResidualBlockLND(l) for l in text.encoder.layers)
        self.transformer.grad_checkpointing = False
        self.ln_final = text.final_layer_norm
        self.text_projection = torch.nn.Parameter(model.text_projection.weight.detach().t().contiguous())
        n = self.positional_embedding.shape[0]
        # open_clip's build_attention_mask: -inf above the diagonal.
        self.register_buffer("attn_mask", torch.empty(n, n).fill_(float("-inf")).triu_(1), persistent=False)


class Values:
    """float32 values appended to goldens.bin; JSON gets {offset, shape}."""

    def __init__(self):
        self.parts, self.count = [], 0

    def add(self, tensor) -> dict:
        a = np.ascontiguousarray(np.asarray(tensor.detach() if hasattr(tensor, "detach") else tensor, dtype=np.float32))
        entry = {"offset": self.count, "shape": list(a.shape)}
        self.parts.append(a.reshape(-1))
        self.count += a.size
        return entry


def main() -> None:
    a1111, sgm_dir, open_clip_dir = (Path(p) for p in sys.argv[1:4])
    for rel, blob in A1111_BLOBS.items():
        got = git_blob((a1111 / rel).read_bytes())
        if got != blob:
            raise SystemExit(f"{rel}: git blob {got}, expected {blob} (commit {A1111_COMMIT})")
    blobs = {
        "a1111": {rel: git_blob((a1111 / rel).read_bytes()) for rel in ["modules/sd_models_xl.py", "modules/sd_hijack_open_clip.py", "modules/hashes.py"]},
        "sgm": {rel: git_blob((sgm_dir / rel).read_bytes()) for rel in ["sgm/modules/encoders/modules.py", "sgm/modules/diffusionmodules/openaimodel.py", "sgm/modules/diffusionmodules/util.py", "sgm/util.py"]},
        "open_clip": {rel: git_blob((open_clip_dir / rel).read_bytes()) for rel in ["src/open_clip/tokenizer.py", "src/open_clip/bpe_simple_vocab_16e6.txt.gz"]},
    }

    import transformers
    from transformers import CLIPTokenizer
    import safetensors
    import safetensors.torch
    import onnxruntime
    import lark
    import einops

    sys.path.insert(0, str(Path(__file__).parent))
    import gen_tiny_sdxl

    c = gen_tiny_sdxl.build_components()
    te1, te2, unet = c["text_encoder"], c["text_encoder_2"], c["unet"]
    for m in (te1, te2):
        m.config._attn_implementation = "eager"
    onnx_check = check_against_onnx(te1, te2)
    layers = te1.config.num_hidden_layers

    # --- open_clip: its package stub with the real tokenizer module ------------------------------
    open_clip = types.ModuleType("open_clip")
    open_clip.__path__ = [str(open_clip_dir / "src" / "open_clip")]
    sys.modules["open_clip"] = open_clip
    import open_clip.tokenizer  # noqa: E402  (open_clip's file at the pinned commit)
    open_clip.create_model_and_transforms = lambda arch, device=None, pretrained=None: (OpenClipTextTower(te2), None, None)

    # --- sgm's classes ---------------------------------------------------------------------------
    sgm_ns = {"torch": torch, "nn": torch.nn, "np": np, "math": math, "nullcontext": nullcontext, "partial": partial,
              "Dict": Dict, "List": List, "Optional": Optional, "Tuple": Tuple, "Union": Union,
              "ListConfig": list,  # omegaconf's type, in an annotation only
              "rearrange": einops.rearrange, "repeat": einops.repeat, "open_clip": open_clip,
              "checkpoint": torch.utils.checkpoint.checkpoint,
              "CLIPTokenizer": types.SimpleNamespace(from_pretrained=lambda v: CLIPTokenizer(str(MODEL / "tokenizer" / "vocab.json"), str(MODEL / "tokenizer" / "merges.txt"))),
              "CLIPTextModel": types.SimpleNamespace(from_pretrained=lambda v: TextModelAsInTransformers4(te1)),
              }
    extract(sgm_dir / "sgm/util.py", {"autocast", "disabled_train", "count_params", "expand_dims_like"}, sgm_ns)
    extract(sgm_dir / "sgm/modules/diffusionmodules/util.py", {"timestep_embedding"}, sgm_ns)
    extract(sgm_dir / "sgm/modules/diffusionmodules/openaimodel.py", {"Timestep"}, sgm_ns)
    extract(sgm_dir / "sgm/modules/encoders/modules.py",
            {"AbstractEmbModel", "GeneralConditioner", "FrozenCLIPEmbedder", "FrozenOpenCLIPEmbedder2", "ConcatTimestepEmbedderND"}, sgm_ns)
    outdim = unet.config.addition_time_embed_dim
    prebuilt = {
        "clip_l": sgm_ns["FrozenCLIPEmbedder"](version="tiny-sdxl/text_encoder", device="cpu", layer="hidden", layer_idx=layers - 1),
        "clip_g": sgm_ns["FrozenOpenCLIPEmbedder2"](arch="tiny-sdxl/text_encoder_2", version=None, device="cpu", layer="penultimate",
                                                     always_return_pooled=True, legacy=False),
        "original": sgm_ns["ConcatTimestepEmbedderND"](outdim),
        "crop": sgm_ns["ConcatTimestepEmbedderND"](outdim),
        "target": sgm_ns["ConcatTimestepEmbedderND"](outdim),
    }
    sgm_ns["instantiate_from_config"] = lambda config: prebuilt[config["target"]]
    conditioner = sgm_ns["GeneralConditioner"]([
        {"target": "clip_l", "is_trainable": False, "input_key": "txt"},
        {"target": "clip_g", "is_trainable": False, "input_key": "txt"},
        {"target": "original", "is_trainable": False, "input_key": "original_size_as_tuple"},
        {"target": "crop", "is_trainable": False, "input_key": "crop_coords_top_left"},
        {"target": "target", "is_trainable": False, "input_key": "target_size_as_tuple"},
    ])

    # --- A1111's modules -------------------------------------------------------------------------
    opts = Opts()
    modules_pkg = types.ModuleType("modules")
    modules_pkg.__path__ = [str(a1111 / "modules")]
    sys.modules["modules"] = modules_pkg
    shared = types.ModuleType("modules.shared")
    shared.opts = opts
    devices = types.ModuleType("modules.devices")
    devices.device = torch.device("cpu")
    devices.dtype = torch.float32
    devices.torch_npu_set_device = lambda: None
    devices.cond_cast_unet = lambda x: x
    hijack_module = types.ModuleType("modules.sd_hijack")
    for name, module in (("shared", shared), ("devices", devices), ("sd_hijack", hijack_module)):
        sys.modules[f"modules.{name}"] = module
        setattr(modules_pkg, name, module)

    hashes_ns = {"hashlib": hashlib}
    extract(a1111 / "modules/hashes.py", {"calculate_sha256"}, hashes_ns)
    hashes = types.SimpleNamespace(sha256=lambda filename, title, use_addnet_hash=False: hashes_ns["calculate_sha256"](filename))
    hijack_ns = {"torch": torch, "devices": devices}
    extract(a1111 / "modules/sd_hijack.py", {"EmbeddingsWithFixes"}, hijack_ns)
    ti_ns = {"torch": torch, "os": os, "devices": devices, "shared": shared, "hashes": hashes, "safetensors": safetensors}
    extract(a1111 / "modules/textual_inversion/textual_inversion.py", {"Embedding", "EmbeddingDatabase", "create_embedding_from_data"}, ti_ns)
    embedding_db = ti_ns["EmbeddingDatabase"]()
    model_hijack = types.SimpleNamespace(fixes=None, extra_generation_params={}, embedding_db=embedding_db)
    hijack_module.model_hijack = model_hijack

    from modules import sd_hijack_clip, sd_hijack_open_clip, prompt_parser  # noqa: E402  (A1111's, from the checkout)
    xl_ns = {"torch": torch, "devices": devices, "shared": shared, "prompt_parser": prompt_parser}
    extract(a1111 / "modules/sd_models_xl.py", {"get_learned_conditioning", "encode_embedding_init_text", "tokenize", "process_texts"}, xl_ns)

    # StableDiffusionModelHijack.hijack for a GeneralConditioner (sd_hijack.py lines 206-230).
    EmbeddingsWithFixes = hijack_ns["EmbeddingsWithFixes"]
    e0, e1 = conditioner.embedders[0], conditioner.embedders[1]
    e0.transformer.text_model.embeddings.token_embedding = EmbeddingsWithFixes(e0.transformer.text_model.embeddings.token_embedding, model_hijack)
    conditioner.embedders[0] = sd_hijack_clip.FrozenCLIPEmbedderForSDXLWithCustomWords(e0, model_hijack)
    e1.model.token_embedding = EmbeddingsWithFixes(e1.model.token_embedding, model_hijack, textual_inversion_key="clip_g")
    conditioner.embedders[1] = sd_hijack_open_clip.FrozenOpenCLIPEmbedder2WithCustomWords(e1, model_hijack)
    # sd_models_xl.py's patches of sgm.modules.GeneralConditioner.
    for name in ("encode_embedding_init_text", "tokenize", "process_texts"):
        setattr(conditioner, name, types.MethodType(xl_ns[name], conditioner))
    model = types.SimpleNamespace(conditioner=conditioner)
    model.get_learned_conditioning = types.MethodType(xl_ns["get_learned_conditioning"], model)
    shared.sd_model = types.SimpleNamespace(cond_stage_model=conditioner)

    # --- SDXL embeddings -------------------------------------------------------------------------
    if OUT.exists():
        shutil.rmtree(OUT)
    (OUT / "embeddings").mkdir(parents=True)
    gen = torch.Generator().manual_seed(1313)
    h1, h2 = te1.config.hidden_size, te2.config.hidden_size
    files = {
        "lowpoly.safetensors": {"clip_l": torch.randn(1, h1, generator=gen), "clip_g": torch.randn(1, h2, generator=gen)},
        "neg-style.safetensors": {"clip_l": torch.randn(3, h1, generator=gen), "clip_g": torch.randn(3, h2, generator=gen)},
    }
    for filename, tensors in files.items():
        safetensors.torch.save_file(tensors, str(OUT / "embeddings" / filename))
    embedding_db.expected_shape = embedding_db.get_expected_shape()
    for filename in sorted(files):
        embedding_db.load_from_file(str(OUT / "embeddings" / filename), filename)
    if embedding_db.skipped_embeddings or len(embedding_db.word_embeddings) != len(files):
        raise SystemExit(f"embeddings not loaded: skipped {list(embedding_db.skipped_embeddings)}")
    embeddings = {name: {"file": os.path.basename(e.filename), "vectors": e.vectors, "shape": e.shape, "hash": e.hash, "shorthash": e.shorthash}
                  for name, e in embedding_db.word_embeddings.items()}

    # --- cases -----------------------------------------------------------------------------------
    long_words = ", ".join(["red apple"] * 30)  # 89 tokens: two chunks
    P = "prompt"
    N = "negative"
    cases = [
        ("p01", P, "a photo of a cat", 64, 64, {}, "plain prompt"),
        ("p02", P, "(masterpiece:1.3), a [blurry] castle on a hill, ((sunset))", 64, 64, {}, "weights: emphasis on both encoders"),
        ("p03", P, "a castle BREAK dramatic sky, (storm:0.8)", 96, 64, {}, "BREAK: two chunks; width 96 x height 64 in vector"),
        ("p04", P, f"{long_words} (green:1.2) tree", 64, 64, {}, "over 75 tokens: two chunks, the pooled output from the first"),
        ("p05", P, f"{long_words} BREAK (night:1.1) sky", 64, 128, {}, "three chunks (long + BREAK)"),
        ("n01", N, "", 64, 64, {}, "empty negative prompt: crossattn and pooled zeros, size embeddings kept"),
        ("n02", N, "blurry, (lowres:1.2)", 64, 64, {}, "a negative prompt is encoded like a prompt"),
        ("n03", N, "[:blurry:2]", 64, 64, {}, "negative with editing: \"\" then \"blurry\"; not all empty, so \"\" is encoded"),
        ("s01", P, "a [cat:dog:0.5] in the snow", 64, 64, {}, "prompt editing: two conds, both crossattn and vector"),
        ("s02", P, "[red|blue] ball, (shiny:1.2)", 64, 64, {}, "alternation: a cond per step"),
        ("s03", P, f"{long_words} [castle:(tower:1.3):2]", 64, 64, {}, "editing inside a two-chunk prompt with a weight"),
        ("k01", P, "(masterpiece:1.3), a [blurry] castle on a hill, ((sunset))", 64, 64,
         {"sdxl_clip_l_skip": True, "CLIP_stop_at_last_layers": 1}, "Clip skip SDXL on, clip skip 1: clip_l's last hidden state (no final norm)"),
        ("k02", P, "(masterpiece:1.3), a [blurry] castle on a hill, ((sunset))", 64, 64,
         {"sdxl_clip_l_skip": True, "CLIP_stop_at_last_layers": 2}, "Clip skip SDXL on, clip skip 2: the penultimate, as without it"),
        ("k03", P, "a castle BREAK dramatic sky, (storm:0.8)", 64, 64,
         {"sdxl_clip_l_skip": True, "CLIP_stop_at_last_layers": 3}, "Clip skip SDXL on, clip skip 3: clip_l's embeddings output"),
        ("k04", P, "a castle BREAK dramatic sky, (storm:0.8)", 64, 64,
         {"sdxl_clip_l_skip": False, "CLIP_stop_at_last_layers": 3}, "Clip skip SDXL off (A1111's default): clip skip changes nothing"),
        ("t01", P, "a photo of lowpoly", 64, 64, {}, "SDXL embedding, one vector: clip_l to the first encoder, clip_g to the second"),
        ("t02", P, "(neg-style:1.2), worst quality, lowpoly", 64, 64, {}, "three-vector embedding with a weight, and a second embedding"),
        ("t03", N, "neg-style", 64, 64, {}, "an embedding in the negative prompt"),
    ]
    values = Values()
    out_cases = []
    for case_id, side, text, width, height, case_opts, note in cases:
        saved = dict(opts.values)
        opts.values.update(case_opts)
        model_hijack.extra_generation_params = {}
        prompts = prompt_parser.SdConditioning([text], is_negative_prompt=side == N, width=width, height=height)
        with torch.no_grad():
            [schedule] = prompt_parser.get_learned_conditioning(model, prompts, STEPS)
        texts = [t for _, t in prompt_parser.get_learned_conditioning_prompt_schedules([text], STEPS)[0]]
        entry = {
            "id": case_id, "side": side, "text": text, "note": note, "width": width, "height": height, "steps": STEPS,
            "opts": case_opts,
            "texts": texts,
            "chunks": {name: [[{"tokens": ch.tokens, "multipliers": ch.multipliers, "fixes": [[f.offset, f.embedding.name] for f in ch.fixes]}
                               for ch in embedder.tokenize_line(t)[0]] for t in texts]
                       for name, embedder in (("clip_l", conditioner.embedders[0]), ("clip_g", conditioner.embedders[1]))},
            "sdxl_conds": {"original_size_as_tuple": [height, width], "crop_coords_top_left": [opts.sdxl_crop_top, opts.sdxl_crop_left],
                           "target_size_as_tuple": [height, width]},
            "ti_hashes": model_hijack.extra_generation_params.get("TI hashes"),
            "schedule": [{"end_at_step": s.end_at_step, "crossattn": values.add(s.cond["crossattn"]), "vector": values.add(s.cond["vector"])}
                         for s in schedule],
        }
        opts.values = saved
        out_cases.append(entry)

    # diffusers' side of `vector`: the UNet's add_time_proj of [h, w, top, left, h, w] must be
    # sgm's size embeddings (what lets sd-trt feed time ids instead of `vector`).
    with torch.no_grad():
        ids = torch.tensor([[64.0, 96, 0, 0, 64, 96]])
        diffusers_tail = unet.add_time_proj(ids.flatten()).reshape(1, -1)
        sgm_tail = torch.cat([prebuilt[k](torch.tensor([[64.0, 96]]) if k != "crop" else torch.tensor([[0.0, 0]])) for k in ("original", "crop", "target")], 1)
    time_proj_check = float((diffusers_tail - sgm_tail).abs().max())
    if time_proj_check > 1e-6:
        raise SystemExit(f"diffusers' add_time_proj differs from sgm's ConcatTimestepEmbedderND by {time_proj_check}")

    golden = {
        "format": "a1111-sdxl-conditioning/1",
        "provenance": {
            "generator": "scripts/reference/a1111_sdxl_conditioning.py",
            "a1111_commit": A1111_COMMIT, "a1111_files": {**A1111_BLOBS, **blobs["a1111"]},
            "sgm_commit": SGM_COMMIT, "sgm_files": blobs["sgm"],
            "open_clip_commit": OPEN_CLIP_COMMIT, "open_clip_files": blobs["open_clip"],
            "versions": {"python": sys.version.split()[0], "torch": torch.__version__, "transformers": transformers.__version__,
                         "safetensors": safetensors.__version__, "onnxruntime": onnxruntime.__version__, "lark": lark.__version__,
                         "einops": einops.__version__},
            "model": str(MODEL), "opts": {k: v for k, v in Opts().values.items()},
            "onnx_vs_torch_max_abs": onnx_check, "diffusers_add_time_proj_vs_sgm_max_abs": time_proj_check,
        },
        "layout": {"crossattn": "[tokens, clip_l hidden + clip_g hidden]", "vector": "[clip_g pooled, embed(original) , embed(crop), embed(target)]",
                   "hidden": [h1, h2], "pooled": te2.config.projection_dim, "size_embedding": outdim},
        "expected_shape": embedding_db.expected_shape,
        "embeddings": embeddings,
        "cases": out_cases,
    }
    (OUT / "goldens.bin").write_bytes(np.concatenate(values.parts).astype("<f4").tobytes())
    (OUT / "goldens.json").write_text(json.dumps(golden, indent=None, separators=(",", ":")) + "\n")
    print(f"wrote {OUT}: {len(out_cases)} cases, {values.count} values, onnx vs torch {onnx_check:.2e}, time proj {time_proj_check:.2e}")


def check_against_onnx(te1, te2) -> float:
    """The rebuilt torch encoders against the fixture's ONNX files (hidden states, text_embeds)."""
    import onnxruntime as ort
    ids = np.array([[49406, 1929, 539, 320, 2368, 49407] + [0] * 71, [49406, 320, 1125, 49407] + [49407] * 73], dtype=np.int64)
    worst = 0.0
    with torch.no_grad():
        for name, m in (("text_encoder", te1), ("text_encoder_2", te2)):
            session = ort.InferenceSession(str(MODEL / name / "model.onnx"), providers=["CPUExecutionProvider"])
            names = [o.name for o in session.get_outputs()]
            got = dict(zip(names, session.run(None, {"input_ids": ids})))
            out = m(torch.from_numpy(ids), output_hidden_states=True)
            for i, h in enumerate(out.hidden_states):
                worst = max(worst, float(np.abs(got[f"hidden_states.{i}"] - h.numpy()).max()))
            if name == "text_encoder_2":
                worst = max(worst, float(np.abs(got["text_embeds"] - out.text_embeds.numpy()).max()))
    if worst > 1e-5:
        raise SystemExit(f"the rebuilt tiny SDXL encoders differ from {MODEL}'s ONNX files by {worst}")
    return worst


if __name__ == "__main__":
    main()
