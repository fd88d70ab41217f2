#!/usr/bin/env python3
"""Small .safetensors files written by huggingface/safetensors' own writer (safetensors.torch.save_file),
and the float32 values torch reads back from them, for test/unit/model-safetensors.test.ts.

Writes test/fixtures/safetensors/{mixed,embedding}.safetensors and expected.json.
Made with safetensors 0.8.0, torch 2.13.0+cpu (Python 3.11), offline:
  /tmp/ref-venv/bin/pip install --no-index --find-links /opt/wheels --find-links /opt/pypi/files torch safetensors
  /tmp/ref-venv/bin/python scripts/reference/safetensors_fixtures.py
"""
import json
import sys
from pathlib import Path

import safetensors
import torch
from safetensors.torch import load_file, save_file

OUT = Path("test/fixtures/safetensors")


def main() -> None:
    g = torch.Generator().manual_seed(5)
    mixed = {
        "f32": torch.randn(3, 4, generator=g),
        "f16": (torch.randn(2, 5, generator=g) * 100).to(torch.float16),
        "bf16": (torch.randn(7, generator=g) * 1e-3).to(torch.bfloat16),
        "scalar": torch.tensor(2.5),
        "empty": torch.zeros(0, 3),
    }
    mixed["f16"][0, 0] = float("inf")
    mixed["f16"][0, 1] = 6.0e-8  # a float16 subnormal
    save_file(mixed, OUT / "mixed.safetensors", metadata={"format": "pt", "note": "sd-trt fixture"})
    # A1111's textual-inversion layout: {"emb_params": [vectors, hidden]}.
    save_file({"emb_params": torch.randn(2, 32, generator=g)}, OUT / "embedding.safetensors")

    expected = {}
    for name in ("mixed", "embedding"):
        loaded = load_file(OUT / f"{name}.safetensors")
        expected[name] = {k: {"dtype": str(v.dtype).replace("torch.", ""), "shape": list(v.shape), "values": [repr(x) for x in v.float().flatten().tolist()]} for k, v in loaded.items()}
    expected["provenance"] = {"safetensors": safetensors.__version__, "torch": torch.__version__, "python": sys.version.split()[0]}
    (OUT / "expected.json").write_text(json.dumps(expected, indent=1) + "\n")
    print("wrote", OUT)


if __name__ == "__main__":
    main()
