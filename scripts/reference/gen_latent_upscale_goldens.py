"""
Goldens for A1111's latent upscalers (hires fix): torch.nn.functional.interpolate with the modes
of A1111 v1.10.1's shared.latent_upscale_modes, on fixed latents, for test/unit/latent-upscale.test.ts.

  "Latent": bilinear; "Latent (antialiased)": bilinear, antialias; "Latent (bicubic)": bicubic;
  "Latent (bicubic antialiased)": bicubic, antialias; "Latent (nearest)": nearest;
  "Latent (nearest-exact)": nearest-exact (align_corners unset = False).

Usage: python scripts/reference/gen_latent_upscale_goldens.py > test/fixtures/a1111/latent_upscale.json
Made with Python 3.11.7, torch 2.13.0+cpu.
"""
import json
import sys

import numpy as np
import torch
import torch.nn.functional as F

MODES = {
    "Latent": ("bilinear", False),
    "Latent (antialiased)": ("bilinear", True),
    "Latent (bicubic)": ("bicubic", False),
    "Latent (bicubic antialiased)": ("bicubic", True),
    "Latent (nearest)": ("nearest", False),
    "Latent (nearest-exact)": ("nearest-exact", False),
}
SIZES = [((2, 4, 5, 6), (9, 11)), ((1, 4, 8, 8), (12, 12)), ((1, 4, 8, 8), (16, 16)), ((1, 4, 3, 7), (4, 10)), ((1, 4, 8, 8), (8, 8))]


def main():
    cases = []
    for n, (shape, size) in enumerate(SIZES):
        x = torch.randn(shape, generator=torch.Generator().manual_seed(100 + n))
        for name, (mode, antialias) in MODES.items():
            y = F.interpolate(x, size=size, mode=mode, antialias=antialias)
            cases.append({"upscaler": name, "mode": mode, "antialias": antialias, "shape": list(shape), "size": list(size),
                          "input": [float(np.float32(v)) for v in x.reshape(-1).tolist()],
                          "output": [float(np.float32(v)) for v in y.reshape(-1).tolist()]})
    json.dump({"format": "sd-trt-latent-upscale/1", "torch": torch.__version__, "cases": cases}, sys.stdout, separators=(",", ":"))


if __name__ == "__main__":
    main()
