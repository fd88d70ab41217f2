#!/usr/bin/env python3
"""Goldens for clip skip and textual inversion as A1111 computes the conditioning, on a tiny real
export of transformers' CLIPTextModel. Writes test/fixtures/a1111/clip-ti/:

  text_encoder.onnx   transformers CLIPTextModel (hidden 8, 4 layers, vocab 49408, weights from
                      torch.manual_seed(1111), final_layer_norm bias 0.5 — see below), exported the
                      way optimum exports SD text encoders: torch.onnx.export (TorchScript exporter,
                      dynamo=False), opset 14, input_ids int32 [batch_size, sequence_length],
                      outputs last_hidden_state and pooler_output
  embeddings/         textual-inversion files written with safetensors.torch.save_file, and one
                      `.pt` name (never a real pickle: the tests check it is refused unopened)
  goldens.json        A1111's own chunks, fixes, token counts, `TI hashes` and conditioning
  te05_clip_skip.json A1111's conditioning with clip skip 1 and 2 on test/fixtures/tiny-sd-te05
                      (the tiny-sd text encoder used by the pipeline-level tests), see below

Upstream code run (nothing re-implemented): AUTOMATIC1111/stable-diffusion-webui at
82a973c04367123ae98bd9abdf80d9eda9b910e2 (v1.10.1): `modules/sd_hijack_clip.py` (imported:
FrozenCLIPEmbedderWithCustomWords — tokenize_line, forward, process_tokens,
encode_with_transformers with opts.CLIP_stop_at_last_layers), `modules/sd_emphasis.py`,
`modules/prompt_parser.py`; and, taken out of their modules with `ast` because importing those
modules pulls in the whole UI: `EmbeddingsWithFixes` from `modules/sd_hijack.py`; `Embedding`,
`EmbeddingDatabase` (register_embedding_by_name, get_expected_shape, load_from_file,
find_embedding_at_position) and `create_embedding_from_data` from
`modules/textual_inversion/textual_inversion.py`; `calculate_sha256` from `modules/hashes.py`.
The script checks the git blob ids of those files.

Stubs: modules.shared (opts with A1111's defaults, sd_model.cond_stage_model = the embedder),
modules.devices (CPU), modules.sd_hijack.model_hijack (fixes, extra_generation_params, the
embedding database), hashes.sha256(path, title) = calculate_sha256(path) (A1111's cache skipped).
The token embedding is wrapped in EmbeddingsWithFixes exactly as `StableDiffusionModelHijack.hijack`
does for FrozenCLIPEmbedder (`model_embeddings.token_embedding = EmbeddingsWithFixes(...)`). transformers 5 has no
`CLIPTextModel.text_model`; the embedder sees the model through a one-line module that has it
(`TextModelAsInTransformers4`), as transformers 4.x (A1111 pins 4.30.2) lays it out.

final_layer_norm's bias is 0.5 (instead of transformers' initial 0) for the reason given in
shared/goldens/a1111_prompts.md: with bias 0 every token vector has mean 0 and A1111's "Original"
emphasis divides by that mean, i.e. by rounding noise.

tiny-sd-te05 is not a transformers model (a CLIP-like module exported to ONNX; its torch source is
not in this repository), so for te05_clip_skip.json A1111's FrozenCLIPEmbedderWithCustomWords
runs with a stand-in `transformer`: the ONNX graph in onnxruntime with its residual stream added
as outputs (`/Add_output_0` = embeddings, `/Add_2_output_0` = after block 0, `/Add_4_output_0` =
after block 1, picked by the export's node names, which name the blocks) as `hidden_states`, and
`text_model.final_layer_norm` = torch.nn.LayerNorm with the graph's ln_f weight, bias and eps. The
script checks that this LayerNorm on hidden_states[-1] gives the graph's own last_hidden_state.

Usage (offline, from the repository root; lark on the path, e.g. pip install --target /tmp/larkpkg lark==1.3.1):
  PYTHONPATH=/tmp/larkpkg python scripts/reference/a1111_clip_skip_ti.py A1111_CHECKOUT
with torch, transformers 5, safetensors, onnx, onnxruntime importable; A1111_CHECKOUT
a folder holding that commit's `modules/` (`git archive 82a973c modules` of a full-history copy).
Made with Python 3.11.7, torch 2.13.0+cpu, transformers 5.18.0, safetensors 0.8.0, onnx 1.23.1,
onnxruntime 1.30.0, lark 1.3.1, tokenizer files from data/clip-tokenizer.
"""
import ast
import hashlib
import json
import os
import shutil
import sys
import types
from pathlib import Path

import numpy as np
import torch

A1111_COMMIT = "82a973c04367123ae98bd9abdf80d9eda9b910e2"
BLOBS = {
    "modules/prompt_parser.py": "4e393d2866f6bc93a527d5eb6827a1613ca08097",
    "modules/sd_hijack_clip.py": "a479148fc2175baf8b96d29cdc63cddc5b4e84aa",
    "modules/sd_emphasis.py": "49ef1a6acb3c72f2c3cea1870884d8d04558ff34",
    "modules/sd_hijack.py": "0de8305418699be9048a6cef55949070848051c0",
    "modules/textual_inversion/textual_inversion.py": "dc7833e9394b567f48f817f4b54193d8dab8c166",
}
OUT = Path("test/fixtures/a1111/clip-ti")
HIDDEN, LAYERS, HEADS = 8, 4, 2


def git_blob(data: bytes) -> str:
    return hashlib.sha1(b"blob %d\0" % len(data) + data).hexdigest()


def extract(path: Path, names: set, namespace: dict) -> None:
    """Executes the top-level definitions `names` of an A1111 file, verbatim, in `namespace`."""
    tree = ast.parse(path.read_text())
    body = [n for n in tree.body if isinstance(n, (ast.ClassDef, ast.FunctionDef)) and n.name in names]
    missing = names - {n.name for n in body}
    if missing:
        raise SystemExit(f"{path}: no {missing}")
    exec(compile(ast.Module(body=body, type_ignores=[]), str(path), "exec"), namespace)


class Opts:
    def __init__(self):
        self.values = {
            "emphasis": "Original",
            "comma_padding_backtrack": 20,
            "CLIP_stop_at_last_layers": 1,
            "use_old_emphasis_implementation": False,
            "textual_inversion_add_hashes_to_infotext": True,
            "textual_inversion_print_at_load": False,
        }

    def __getattr__(self, name):
        values = self.__dict__["values"]
        if name not in values:
            raise AttributeError(f"opts.{name} is not stubbed")
        return values[name]


class TextModelAsInTransformers4(torch.nn.Module):
    """transformers 5 made CLIPTextModel the text transformer itself; A1111 (which pins transformers
    4.30) reaches it as `transformer.text_model` (final_layer_norm, embeddings). Same module, 4.x path."""

    def __init__(self, model):
        super().__init__()
        self.text_model = model

    def forward(self, **kwargs):
        return self.text_model(**kwargs)


def f32(values) -> list:
    return [float(np.float32(v)) for v in np.asarray(values, dtype=np.float32).reshape(-1)]


def main() -> None:
    checkout = Path(sys.argv[1])
    for rel, blob in BLOBS.items():
        got = git_blob((checkout / rel).read_bytes())
        if got != blob:
            raise SystemExit(f"{rel}: git blob {got}, expected {blob} (commit {A1111_COMMIT})")

    import transformers
    from transformers import CLIPTextConfig, CLIPTextModel, CLIPTokenizer
    import safetensors
    import safetensors.torch
    import onnx
    import onnxruntime
    import lark

    # --- the tiny text encoder and its export ---------------------------------------------------
    torch.manual_seed(1111)
    config = CLIPTextConfig(vocab_size=49408, hidden_size=HIDDEN, intermediate_size=16, num_hidden_layers=LAYERS,
                            num_attention_heads=HEADS, max_position_embeddings=77, hidden_act="quick_gelu",
                            bos_token_id=49406, eos_token_id=49407, pad_token_id=49407)
    model = CLIPTextModel(config).eval()
    model.config._attn_implementation = "eager"
    with torch.no_grad():
        model.final_layer_norm.bias.fill_(0.5)
    if OUT.exists():
        shutil.rmtree(OUT)
    (OUT / "embeddings").mkdir(parents=True)
    onnx_path = OUT / "text_encoder.onnx"
    dummy = torch.full((1, 77), 49407, dtype=torch.int32)
    torch.onnx.export(model, (dummy,), str(onnx_path), opset_version=14, dynamo=False, do_constant_folding=True,
                      input_names=["input_ids"], output_names=["last_hidden_state", "pooler_output"],
                      dynamic_axes={"input_ids": {0: "batch_size", 1: "sequence_length"},
                                    "last_hidden_state": {0: "batch_size", 1: "sequence_length"},
                                    "pooler_output": {0: "batch_size"}})
    onnx.checker.check_model(str(onnx_path))
    session = onnxruntime.InferenceSession(str(onnx_path), providers=["CPUExecutionProvider"])

    # --- A1111's modules with the smallest stubs ------------------------------------------------
    opts = Opts()
    modules_pkg = types.ModuleType("modules")
    modules_pkg.__path__ = [str(checkout / "modules")]
    sys.modules["modules"] = modules_pkg
    shared = types.ModuleType("modules.shared")
    shared.opts = opts
    sys.modules["modules.shared"] = shared
    devices = types.ModuleType("modules.devices")
    devices.device = torch.device("cpu")
    devices.torch_npu_set_device = lambda: None
    devices.cond_cast_unet = lambda x: x
    sys.modules["modules.devices"] = devices
    hijack_module = types.ModuleType("modules.sd_hijack")
    sys.modules["modules.sd_hijack"] = hijack_module
    for name in ("shared", "devices", "sd_hijack"):
        setattr(modules_pkg, name, sys.modules[f"modules.{name}"])

    hashes_ns = {"hashlib": hashlib}
    extract(checkout / "modules/hashes.py", {"calculate_sha256"}, hashes_ns)
    hashes = types.SimpleNamespace(sha256=lambda filename, title, use_addnet_hash=False: hashes_ns["calculate_sha256"](filename))

    hijack_ns = {"torch": torch, "devices": devices}
    extract(checkout / "modules/sd_hijack.py", {"EmbeddingsWithFixes"}, hijack_ns)
    ti_ns = {"torch": torch, "os": os, "devices": devices, "shared": shared, "hashes": hashes, "safetensors": safetensors}
    extract(checkout / "modules/textual_inversion/textual_inversion.py", {"Embedding", "EmbeddingDatabase", "create_embedding_from_data"}, ti_ns)

    embedding_db = ti_ns["EmbeddingDatabase"]()
    model_hijack = types.SimpleNamespace(fixes=None, extra_generation_params={}, embedding_db=embedding_db)
    hijack_module.model_hijack = model_hijack

    from modules import sd_hijack_clip  # noqa: E402  (A1111's module, imported from the checkout)

    tokenizer = CLIPTokenizer("data/clip-tokenizer/vocab.json", "data/clip-tokenizer/merges.txt")
    embeddings = model.embeddings
    embeddings.token_embedding = hijack_ns["EmbeddingsWithFixes"](embeddings.token_embedding, model_hijack)
    wrapped = types.SimpleNamespace(tokenizer=tokenizer, transformer=TextModelAsInTransformers4(model))
    embedder = sd_hijack_clip.FrozenCLIPEmbedderWithCustomWords(wrapped, model_hijack)
    shared.sd_model = types.SimpleNamespace(cond_stage_model=embedder)

    # --- embedding files ------------------------------------------------------------------------
    gen = torch.Generator().manual_seed(2222)
    files = {
        # kohya / sd-scripts layout: one tensor named emb_params
        "lowpoly.safetensors": {"emb_params": torch.randn(1, HIDDEN, generator=gen)},
        # A1111's own layout flattened by safetensors: string_to_param.*
        "neg-style.safetensors": {"string_to_param.*": torch.randn(3, HIDDEN, generator=gen)},
        # a name that is several CLIP tokens, five vectors
        "Sketchy Art.safetensors": {"emb_params": torch.randn(5, HIDDEN, generator=gen)},
        # one vector stored as a 1-D tensor (A1111 unsqueezes it)
        "dot.safetensors": {"emb_params": torch.randn(HIDDEN, generator=gen)},
    }
    for filename, tensors in files.items():
        safetensors.torch.save_file(tensors, str(OUT / "embeddings" / filename), metadata={"format": "pt"})
    embedding_db.expected_shape = embedding_db.get_expected_shape()
    for filename in sorted(files):
        embedding_db.load_from_file(str(OUT / "embeddings" / filename), filename)
    loaded = {}
    for name, e in embedding_db.word_embeddings.items():
        loaded[name] = {"file": os.path.basename(e.filename), "vectors": e.vectors, "shape": e.shape, "step": e.step,
                        "hash": e.hash, "shorthash": e.shorthash, "values": f32(e.vec)}
    if embedding_db.skipped_embeddings:
        raise SystemExit(f"skipped: {list(embedding_db.skipped_embeddings)}")

    # Files for the refusal tests (not loaded by A1111 here): a wrong width and a pickle's name.
    safetensors.torch.save_file({"emb_params": torch.zeros(2, HIDDEN + 4)}, str(OUT / "wrong-width.safetensors"))
    (OUT / "pickled.pt").write_bytes(b"not opened: sd-trt refuses .pt files by name\n")

    # --- cases ------------------------------------------------------------------------------------
    long_words = ", ".join(["red apple"] * 24)  # 72 tokens, then more
    cases = [
        ("t01", "a photo of lowpoly", [1, 2, 3], "one-vector embedding (emb_params)"),
        ("t02", "neg-style, worst quality", [1, 2], "three-vector embedding (string_to_param.*) at the start"),
        ("t03", "(lowpoly:1.3) castle [neg-style]", [1, 2], "embeddings inside emphasis"),
        ("t04", "a Sketchy Art drawing of dot", [1, 3], "multi-token name, five vectors; a 1-D tensor"),
        ("t05", f"{long_words} Sketchy Art tree", [1, 2], "a five-vector embedding that does not fit the chunk moves to the next"),
        ("t06", f"{long_words}, neg-style", [1], "three vectors at the chunk end after a comma"),
        ("t07", "lowpoly BREAK neg-style neg-style", [2], "BREAK and a repeated embedding"),
        ("t08", "lowpolyx sketchy art Lowpoly", [1], "near misses: not a token-id match"),
        ("c01", "a castle on a hill", [1, 2, 3, 4], "clip skip without embeddings"),
        ("c02", "(masterpiece:1.2), a [blurry] castle BREAK dramatic sky", [2, 3], "clip skip with emphasis and BREAK"),
        ("c03", f"{long_words} at dusk, {long_words}", [2], "clip skip on three chunks"),
    ]
    out_cases = []
    for case_id, text, skips, note in cases:
        chunks, token_count = embedder.tokenize_line(text)
        entry = {"id": case_id, "text": text, "note": note, "token_count": token_count,
                 "chunks": [{"tokens": c.tokens, "multipliers": c.multipliers,
                             "fixes": [[f.offset, f.embedding.name] for f in c.fixes]} for c in chunks],
                 "conds": {}}
        for skip in skips:
            opts.values["CLIP_stop_at_last_layers"] = skip
            model_hijack.extra_generation_params = {}
            with torch.no_grad():
                z = embedder([text])
            entry["conds"][str(skip)] = {"shape": list(z.shape[1:]), "values": f32(z[0])}
            entry["ti_hashes"] = model_hijack.extra_generation_params.get("TI hashes")
        out_cases.append(entry)
    opts.values["CLIP_stop_at_last_layers"] = 1

    # Cross-check: the ONNX export against the torch module (no embeddings, clip skip 1).
    ids = np.array([embedder.tokenize_line("a castle on a hill")[0][0].tokens], dtype=np.int32)
    with torch.no_grad():
        ref = model(input_ids=torch.from_numpy(ids).long()).last_hidden_state.numpy()
    got = session.run(["last_hidden_state"], {"input_ids": ids})[0]

    te05 = te05_goldens(sd_hijack_clip, model_hijack, tokenizer, opts, shared, embedder)

    golden = {
        "format": "a1111-clip-skip-ti/1",
        "provenance": {
            "a1111_commit": A1111_COMMIT, "a1111_files": BLOBS,
            "generator": "scripts/reference/a1111_clip_skip_ti.py",
            "versions": {"python": sys.version.split()[0], "torch": torch.__version__, "transformers": transformers.__version__,
                         "safetensors": safetensors.__version__, "onnx": onnx.__version__, "onnxruntime": onnxruntime.__version__,
                         "lark": lark.__version__},
            "model": {"class": "transformers.CLIPTextModel", "hidden_size": HIDDEN, "layers": LAYERS, "heads": HEADS,
                      "seed": 1111, "final_layer_norm_bias": 0.5, "export": "torch.onnx.export opset 14, dynamo=False"},
            "opts": {k: v for k, v in opts.values.items() if k != "CLIP_stop_at_last_layers"},
            "onnx_vs_torch_max_abs": float(np.abs(ref - got).max()),
        },
        "expected_shape": embedding_db.expected_shape,
        "embeddings": loaded,
        "cases": out_cases,
    }
    (OUT / "goldens.json").write_text(json.dumps(golden, separators=(",", ":")) + "\n")
    (OUT / "te05_clip_skip.json").write_text(json.dumps(te05, separators=(",", ":")) + "\n")
    print(f"wrote {OUT}: {len(out_cases)} cases, {len(loaded)} embeddings, onnx vs torch {golden['provenance']['onnx_vs_torch_max_abs']:.2e}")


def te05_goldens(sd_hijack_clip, model_hijack, tokenizer, opts, shared, ti_embedder):
    import safetensors.torch
    import onnx
    import onnxruntime
    from onnx import numpy_helper

    path = "test/fixtures/tiny-sd-te05/text_encoder/model.onnx"
    graph = onnx.load(path)
    stream = ["/Add_output_0", "/Add_2_output_0", "/Add_4_output_0"]
    for name in stream:
        graph.graph.output.append(onnx.helper.make_tensor_value_info(name, onnx.TensorProto.FLOAT, None))
    session = onnxruntime.InferenceSession(graph.SerializeToString(), providers=["CPUExecutionProvider"])
    init = {t.name: numpy_helper.to_array(t) for t in graph.graph.initializer}
    consts = {n.output[0]: numpy_helper.to_array(n.attribute[0].t) for n in graph.graph.node if n.op_type == "Constant"}
    weight_name = next(n.input[0] for n in graph.graph.node if n.output[0] == "ln_f.weight")  # an Identity of a shared initializer
    ln = torch.nn.LayerNorm(32, eps=float(consts["/ln_f/Constant_1_output_0"]))
    with torch.no_grad():
        ln.weight.copy_(torch.from_numpy(init[weight_name]))
        ln.bias.copy_(torch.from_numpy(init["ln_f.bias"]))

    class OnnxTextModel(torch.nn.Module):
        def __init__(self):
            super().__init__()
            self.text_model = types.SimpleNamespace(final_layer_norm=ln)

        def forward(self, input_ids, output_hidden_states=False):
            out = session.run(["last_hidden_state", *stream], {"input_ids": input_ids.numpy().astype(np.int32)})
            return types.SimpleNamespace(last_hidden_state=torch.from_numpy(out[0]), hidden_states=tuple(torch.from_numpy(o) for o in out[1:]))

    transformer = OnnxTextModel()
    check = transformer(input_ids=torch.full((1, 77), 49407))
    with torch.no_grad():
        ln_error = float((ln(check.hidden_states[-1]) - check.last_hidden_state).abs().max())
    if ln_error > 1e-5:
        raise SystemExit(f"the LayerNorm stand-in differs from the graph's ln_f by {ln_error}")
    embedder = sd_hijack_clip.FrozenCLIPEmbedderWithCustomWords(types.SimpleNamespace(tokenizer=tokenizer, transformer=transformer), model_hijack)
    saved_db = model_hijack.embedding_db
    model_hijack.embedding_db = types.SimpleNamespace(find_embedding_at_position=lambda tokens, offset: (None, None))
    # Width-32 embeddings for the pipeline-level tests on tiny-sd-te05: A1111 loads them (hashes,
    # vectors) and chunks a prompt with them; the conditioning with them is checked through the
    # edited graph in the tests (this stand-in cannot take token embeddings).
    folder = OUT / "embeddings-32"
    folder.mkdir()
    gen = torch.Generator().manual_seed(3333)
    safetensors.torch.save_file({"emb_params": torch.randn(1, 32, generator=gen)}, str(folder / "lowpoly.safetensors"))
    safetensors.torch.save_file({"string_to_param.*": torch.randn(3, 32, generator=gen)}, str(folder / "neg-style.safetensors"))
    db32 = type(saved_db)()
    db32.expected_shape = 32
    for filename in ("lowpoly.safetensors", "neg-style.safetensors"):
        db32.load_from_file(str(folder / filename), filename)
    model_hijack.embedding_db = db32
    ti_cases = []
    for text in ["a photo of lowpoly", "(neg-style:1.2), worst quality"]:
        chunks, token_count = embedder.tokenize_line(text)
        ti_cases.append({"text": text, "token_count": token_count,
                         "chunks": [{"tokens": c.tokens, "multipliers": c.multipliers, "fixes": [[f.offset, f.embedding.name] for f in c.fixes]} for c in chunks]})
    embeddings32 = {name: {"file": os.path.basename(e.filename), "vectors": e.vectors, "hash": e.hash, "shorthash": e.shorthash, "values": f32(e.vec)}
                    for name, e in db32.word_embeddings.items()}
    model_hijack.embedding_db = types.SimpleNamespace(find_embedding_at_position=lambda tokens, offset: (None, None))
    cases = []
    for text in ["a castle on a hill", "(masterpiece:1.2), a [blurry] castle BREAK dramatic sky"]:
        chunks, _ = embedder.tokenize_line(text)
        conds = {}
        for skip in (1, 2):
            opts.values["CLIP_stop_at_last_layers"] = skip
            with torch.no_grad():
                z = embedder([text])
            conds[str(skip)] = {"shape": list(z.shape[1:]), "values": f32(z[0])}
        cases.append({"text": text, "chunks": len(chunks), "conds": conds})
    opts.values["CLIP_stop_at_last_layers"] = 1
    model_hijack.embedding_db = saved_db
    return {
        "format": "a1111-clip-skip-te05/1",
        "model": "test/fixtures/tiny-sd-te05/text_encoder/model.onnx",
        "stand_in": {"hidden_states": stream, "final_layer_norm": "torch.nn.LayerNorm(ln_f weight, bias, eps)", "ln_check_max_abs": ln_error},
        "cases": cases,
        "embeddings": embeddings32,
        "ti_cases": ti_cases,
    }


if __name__ == "__main__":
    main()
