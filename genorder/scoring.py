"""Scoring images against a dataset's test split: FID, KID, precision/recall (`genorder.metrics`),
the real-against-real FID floor, class consistency, reconstruction PSNR, and the eval.json record
shared by `eval` and `ablate`. Prints nothing: `on_progress(stage, done, total, info)` gets the
feature passes' progress and `on_status(text)` (a context manager, e.g. a spinner) wraps the steps
that are cached after their first run."""

from __future__ import annotations

from contextlib import AbstractContextManager, nullcontext
from datetime import datetime, timezone
from pathlib import Path
from typing import Any, Callable

import torch

from genorder.data import to_float
from genorder.images import to_uint8

INCEPTION = "genorder-inception-fid"  # = genorder.metrics.INCEPTION (imported lazily: torch-fidelity is optional)

OnProgress = Callable[[str, float, "float | None", str], None]  # (stage, done, total, info)
OnStatus = Callable[[str], AbstractContextManager]


def _no_progress(stage: str, done: float, total: float | None, info: str = "") -> None:
    return None


def _no_status(text: str) -> AbstractContextManager:
    return nullcontext()


def check_extractor(extractor: str) -> dict[str, Any]:
    """Fail before any work when torch-fidelity, the extractor or its weights are missing."""
    from genorder import metrics

    metrics.require_torch_fidelity()
    return metrics.extractor_info(extractor)


def score_images(
    images: torch.Tensor,
    dataset: str,
    *,
    extractor: str = INCEPTION,
    device: str | torch.device = "cpu",
    bootstrap: int = 0,
    seed: int = 0,
    ref_n: int | None = None,
    kid: bool = True,
    prc: bool = True,
    kid_subsets: int = 100,
    cache_dir: Path | None = None,
    batch_size: int = 64,
    title: str = "features",
    labels: torch.Tensor | None = None,
    classifier_cache: Path | None = None,
    floor: bool = True,
    on_progress: OnProgress | None = None,
    on_status: OnStatus | None = None,
) -> dict[str, Any]:
    """uint8 images (N, C, H, W) -> the metrics dict of `genorder.metrics.compute_metrics` against the
    test split of `dataset` (reference features cached); plus `fid_floor`, the real-against-real FID
    at the same n (when `floor`), and with the requested `labels` (N,) `class_acc`: the
    class-consistency classifier's accuracy with a 95% bootstrap interval. Progress: stage
    "reference features (computed once, then cached)" (only when not cached yet), then `title`."""
    from genorder import metrics

    progress = on_progress or _no_progress
    status = on_status or _no_status
    size = {"image_size": int(images.shape[-1]), "channels": int(images.shape[1])}  # every score at the images' size
    ref_stage = "reference features (computed once, then cached)"
    key, real = metrics.reference_features(dataset, "test", ref_n, extractor, device, cache_dir, batch_size,
                                           progress=lambda d, t: progress(ref_stage, d, t, ""), **size)  # fmt: skip
    cache = cache_dir or metrics.default_cache_dir()
    out = metrics.compute_metrics(
        images, key, kid=kid, prc=prc, extractor=extractor, device=device, batch_size=batch_size,
        bootstrap=bootstrap, seed=seed, cache_dir=cache, kid_subsets=kid_subsets,
        progress=lambda d, t: progress(title, d, t, ""),
    )  # fmt: skip
    out["reference"] = {"dataset": dataset, "split": "test", "n": len(real), "key": key}
    if floor:
        with status(f"real-against-real FID at n = {len(images)} (cached)"):
            out["fid_floor"] = metrics.fid_floor(dataset, len(images), ref_n=ref_n, extractor=extractor, device=device,
                                                 cache_dir=cache_dir, batch_size=batch_size, **size)["fid_floor"]  # fmt: skip
    if labels is not None:
        out["class_acc"] = class_consistency(images, labels, dataset, device,
                                             classifier_cache or classifier_cache_dir(cache_dir), seed,
                                             on_status=on_status)  # fmt: skip
    return out


def classifier_cache_dir(fid_cache: Path | None) -> Path:
    """Where class-consistency classifiers are kept: next to the FID reference statistics
    (CACHE/classifiers), as both are evaluation caches shared by every run."""
    from genorder import metrics

    return Path(fid_cache or metrics.default_cache_dir()) / "classifiers"


def class_consistency(images: torch.Tensor, labels: torch.Tensor, dataset: str, device, cache: Path,
                      seed: int = 0, on_status: OnStatus | None = None) -> dict[str, Any]:
    """The class-consistency classifier's accuracy on `images` against the requested `labels`."""
    from genorder.classifier import class_accuracy, load_or_train_classifier

    with (on_status or _no_status)(f"class-consistency classifier for {dataset} (trained once, then cached)"):
        clf, info = load_or_train_classifier(dataset, device=device, cache_root=cache, image_size=int(images.shape[-1]))
    return {**class_accuracy(clf, images, labels, seed=seed), "classifier": info["path"],
            "classifier_test_accuracy": info["test_accuracy"]}


def record(kind: str, metrics: dict[str, Any], **fields: Any) -> dict[str, Any]:
    """The eval.json layout shared by `eval` and `ablate`."""
    from genorder import __version__

    ext = metrics.get("feature_extractor", {})
    keep = ("fid", "kid_mean", "kid_std", "kid_subset_size", "kid_subsets", "precision", "recall", "f_score",
            "isc", "isc_reason", "fid_bootstrap", "psnr", "fid_floor", "class_acc")  # fmt: skip
    return {
        "kind": kind,
        **fields,
        "metrics": {k: metrics[k] for k in keep if k in metrics},
        "n_fake": metrics.get("n_fake"),
        "reference": metrics.get("reference"),
        "feature_extractor": ext.get("name"),
        "protocol": ext.get("protocol"),
        "weights_file": ext.get("weights"),
        "weights_sha1": ext.get("weights_sha1"),
        "date": datetime.now(timezone.utc).isoformat(timespec="seconds"),
        "genorder_version": __version__,
    }


def _psnr(a_uint8: torch.Tensor, b_uint8: torch.Tensor) -> float:
    """Mean per-image PSNR in dB of two uint8 image sets (N, C, H, W)."""
    mse = (a_uint8.float() - b_uint8.float()).square().flatten(1).mean(1)
    return float((10 * torch.log10(255.0**2 / mse.clamp_min(1e-10))).mean())


@torch.inference_mode()
def reconstruct(tokenizer, images_uint8: torch.Tensor, device: torch.device, batch_size: int = 100) -> torch.Tensor:
    """Test images -> encode -> decode, uint8 (N, C, H, W)."""
    out = []
    for chunk in images_uint8.split(batch_size):
        x = to_float(chunk).to(device)
        out.append(to_uint8(tokenizer.decode(tokenizer.encode(x)).float().clamp(-1, 1)))
    return torch.cat(out)
