"""The ADM `.npz` format (OpenAI's guided-diffusion evaluator, `evaluations/evaluator.py`), which
the VAR and LlamaGen papers' FIDs are computed in.

A *sample batch* holds `arr_0`, uint8 (N, H, W, 3) images in [0, 255], and, from a class-conditional
sampler, `arr_1`, the (N,) int labels. A *reference batch* (`VIRTUAL_imagenet256_labeled.npz`)
holds `arr_0` (the reference images) and the evaluator's precomputed statistics of its Inception
pool3 features: `mu` (2048,) and `sigma` (2048, 2048) (and `mu_s`/`sigma_s` of the spatial features
sFID uses). `read_samples` also reads genorder's older `images` (N, C, H, W) / `labels` layout.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np
from einops import rearrange

from genorder.checkpoint import save_npz
from genorder.errors import UserError


def write_samples(path: str | Path, images_NCHW: np.ndarray, labels_N: np.ndarray | None = None) -> Path:
    """uint8 (N, C, H, W) images (C = 1 or 3; grey is repeated to RGB) -> ADM `arr_0` (N, H, W, 3)
    and `arr_1` labels, written atomically (uncompressed, as ADM's sampler writes them)."""
    if images_NCHW.dtype != np.uint8 or images_NCHW.ndim != 4 or images_NCHW.shape[1] not in (1, 3):
        raise ValueError(f"expected uint8 (N, 1|3, H, W) images, got {images_NCHW.dtype} {images_NCHW.shape}")
    if images_NCHW.shape[1] == 1:
        images_NCHW = np.repeat(images_NCHW, 3, axis=1)
    arrays = {"arr_0": np.ascontiguousarray(rearrange(images_NCHW, "n c h w -> n h w c"))}
    if labels_N is not None:
        arrays["arr_1"] = np.asarray(labels_N, dtype=np.int64)
    return save_npz(path, **arrays)


def read_samples(path: str | Path) -> tuple[np.ndarray, np.ndarray | None]:
    """(uint8 (N, C, H, W) images, labels or None) from an ADM sample batch (`arr_0` NHWC,
    `arr_1`) or genorder's older layout (`images` NCHW, `labels`); UserError otherwise."""
    p = Path(path)
    try:
        with np.load(p, allow_pickle=False) as z:
            if "arr_0" in z.files:
                arr = z["arr_0"]
                if arr.dtype != np.uint8 or arr.ndim != 4 or arr.shape[-1] != 3:
                    raise UserError(f"{p}: 'arr_0' must be uint8 (N, H, W, 3), got {arr.dtype} {arr.shape}")
                images = np.ascontiguousarray(rearrange(arr, "n h w c -> n c h w"))
                labels = z["arr_1"] if "arr_1" in z.files else None
            elif "images" in z.files:
                images = z["images"]
                if images.dtype != np.uint8 or images.ndim != 4:
                    raise UserError(f"{p}: 'images' must be uint8 (N, C, H, W), got {images.dtype} {images.shape}")
                labels = z["labels"] if "labels" in z.files else None
            else:
                raise UserError(f"{p} holds neither 'arr_0' (ADM) nor 'images' (genorder); arrays: {z.files}")
    except (OSError, ValueError) as err:
        raise UserError(f"cannot read {p} as an .npz: {err}") from None
    if labels is not None and len(labels) != len(images):
        raise UserError(f"{p} holds {len(images)} images but {len(labels)} labels")
    return images, labels


@dataclass
class ReferenceBatch:
    """What a reference batch gives: precomputed statistics and/or its images (uint8 NCHW)."""

    mu: np.ndarray | None
    sigma: np.ndarray | None
    images: np.ndarray | None


def read_reference(path: str | Path) -> ReferenceBatch:
    """An ADM reference batch: `mu`/`sigma` when present (checked: (D,) and (D, D)), `arr_0` when
    present; at least one of the two; UserError otherwise."""
    p = Path(path)
    if not p.is_file():
        raise UserError(f"--ref-batch: {p} not found")
    try:
        with np.load(p, allow_pickle=False) as z:
            mu = z["mu"].astype(np.float64) if "mu" in z.files else None
            sigma = z["sigma"].astype(np.float64) if "sigma" in z.files else None
            arr = z["arr_0"] if "arr_0" in z.files else None
    except (OSError, ValueError) as err:
        raise UserError(f"--ref-batch: cannot read {p} as an .npz: {err}") from None
    if (mu is None) != (sigma is None):
        raise UserError(f"--ref-batch: {p} has only one of 'mu' and 'sigma'")
    if mu is not None and (mu.ndim != 1 or sigma.shape != (len(mu), len(mu))):
        raise UserError(f"--ref-batch: {p}: 'mu' {mu.shape} and 'sigma' {sigma.shape} are not (D,) and (D, D)")
    images = None
    if arr is not None:
        if arr.dtype != np.uint8 or arr.ndim != 4 or arr.shape[-1] != 3:
            raise UserError(f"--ref-batch: {p}: 'arr_0' must be uint8 (N, H, W, 3), got {arr.dtype} {arr.shape}")
        images = np.ascontiguousarray(rearrange(arr, "n h w c -> n c h w"))
    if mu is None and images is None:
        raise UserError(f"--ref-batch: {p} holds neither 'mu'/'sigma' nor images 'arr_0'")
    return ReferenceBatch(mu, sigma, images)
