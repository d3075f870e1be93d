"""How far genorder's FID extractor is from the ADM evaluator's convention, measured offline on one
shared sample (docs/EVAL.md).

ADM's evaluator feeds float32 NHWC images in [0, 255] into the TF `inception-2015-12-05` graph at
`ExpandDims:0`; the graph itself resizes to 299x299 with TF1's `ResizeBilinear` (align_corners=False,
no half-pixel centres: source coordinate = destination x in/out) and scales (x - 128) / 128, and
pool3 gives the 2048-d features. genorder does the same steps in PyTorch (torch-fidelity's TF1
bilinear emulation, then the TorchScript port of the graph's weights). Without TensorFlow here, this
script measures what can be measured:

1. the resize: genorder's 299x299 input against an independent NumPy implementation of TF1's
   legacy bilinear rule (max abs difference in 0..255 units);
2. what the convention is worth: FID and relative feature difference between genorder's pipeline
   and the same network fed with PyTorch's half-pixel bilinear resize, and with an antialiased one
   (the conventions other evaluators use), on the same images.

    python scripts/adm_convention.py [--n 24] [--size 256]
"""

from __future__ import annotations

import argparse
import json

import numpy as np
import torch
import torch.nn.functional as F

from genorder.data import render_shapes
from genorder.metrics import (
    INCEPTION,
    feature_stats,
    frechet_distance,
    interpolate_bilinear_2d_like_tensorflow1x,
    make_extractor,
)


def tf1_legacy_bilinear(x_NCHW: np.ndarray, out: int) -> np.ndarray:
    """TF1 ResizeBilinear, align_corners=False, half_pixel_centers=False, in float64."""
    h, w = x_NCHW.shape[2:]
    ys, xs = np.arange(out) * (h / out), np.arange(out) * (w / out)
    y0, x0 = np.floor(ys).astype(int), np.floor(xs).astype(int)
    y1, x1 = np.minimum(y0 + 1, h - 1), np.minimum(x0 + 1, w - 1)
    dy, dx = (ys - y0)[:, None], (xs - x0)[None, :]
    x = x_NCHW.astype(np.float64)
    top = x[:, :, y0][:, :, :, x0] * (1 - dx) + x[:, :, y0][:, :, :, x1] * dx
    bot = x[:, :, y1][:, :, :, x0] * (1 - dx) + x[:, :, y1][:, :, :, x1] * dx
    return top * (1 - dy) + bot * dy


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--n", type=int, default=24)
    ap.add_argument("--size", type=int, default=256)
    a = ap.parse_args()
    images, _ = render_shapes(a.n, a.size, seed=0)  # uint8 (n, 3, size, size)
    x = images.float()
    ours = interpolate_bilinear_2d_like_tensorflow1x(x, size=(299, 299), align_corners=False)
    ref = tf1_legacy_bilinear(images.numpy(), 299)
    resize_err = float(np.abs(ours.double().numpy() - ref).max())
    net = make_extractor(INCEPTION, "cpu").net

    @torch.inference_mode()
    def feats(x299: torch.Tensor) -> torch.Tensor:
        out = []
        for s in range(0, len(x299), 16):
            with torch.jit.optimized_execution(False):
                out.append(net((x299[s : s + 16] - 128) / 128).reshape(-1, 2048).double())
        return torch.cat(out)

    f_ours = feats(ours)
    result = {"n": a.n, "size": a.size, "resize_max_abs_diff_vs_numpy_tf1": resize_err}
    for name, alt in (("torch_half_pixel_bilinear", F.interpolate(x, size=299, mode="bilinear", align_corners=False)),
                      ("torch_antialiased_bilinear", F.interpolate(x, size=299, mode="bilinear", align_corners=False,
                                                                   antialias=True))):  # fmt: skip
        f_alt = feats(alt)
        rel = float(((f_alt - f_ours).norm(dim=1) / f_ours.norm(dim=1)).mean())
        fid = frechet_distance(*feature_stats(f_ours.numpy()), *feature_stats(f_alt.numpy()))
        result[name] = {"fid_vs_genorder": fid, "mean_relative_feature_diff": rel}
    print(json.dumps(result, indent=2))


if __name__ == "__main__":
    main()
