"""Distribution metrics in the feature space of the dataset's own classifier: a Fréchet distance,
precision and recall at n >= 5,000 on a CPU, with the real-against-real floor at the same n.

Inception FID costs seconds per hundred images on a CPU; the class-consistency CNN of
`genorder.classifier` (trained once per dataset) embeds thousands a second. Its penultimate layer
(`Classifier.penultimate`, the MLP's hidden units, 128-d by default) is the feature space, the
established practice for small datasets (an FID with a dataset-specific network). The numbers are
comparable only between sets scored by the same classifier (same cache entry), and only next to the
floor: the first n *train* images scored like n generated ones against the test split.

* `classifier_features`: uint8 images (N, C, H, W) -> features (N, D).
* `classifier_metrics`: FD (float64 statistics, `genorder.metrics.fid_from_features`), precision
  and recall (torch-fidelity's k-NN manifolds with k = 3, through `genorder.metrics`, as for
  Inception features).
* `classifier_floor`: the same on train[:n] against the same reference.
* `FrechetToReference`: the FD of a batch of sets (R, n, D) at once, the statistic
  `genorder.stats.set_interval` / `paired_set_difference` bootstrap.

    >>> real_MD = classifier_features(clf, test.images)              # (10000, 128)
    >>> m = classifier_metrics(classifier_features(clf, samples), real_MD)
    >>> floor = classifier_floor(clf, train.images, real_MD, n=len(samples))
    >>> m["fd"], floor["fd"], m["precision"], m["recall"]
"""

from __future__ import annotations

from typing import Any

import torch

from genorder.errors import UserError

MIN_N = 5000  # the size this metric is meant for: below it, say so


@torch.no_grad()
def classifier_features(classifier, images: torch.Tensor, batch_size: int = 500) -> torch.Tensor:
    """uint8 images (N, C, H, W) in [0, 255] (or float in [-1, 1]) -> penultimate features (N, D)
    float32 on the CPU. Deterministic: eval mode, fixed batches."""
    if images.dim() != 4:
        raise UserError(f"classifier features take images (N, C, H, W), got shape {tuple(images.shape)}")
    if len(images) == 0:
        raise UserError("no images to embed")
    was_training = classifier.training
    classifier.eval()
    device = next(classifier.parameters()).device
    out = []
    for start in range(0, len(images), batch_size):
        x = images[start : start + batch_size]
        x = x.float().div(127.5).sub(1.0) if x.dtype == torch.uint8 else x.float()
        out.append(classifier.penultimate(x.to(device)).float().cpu())  # (b, D)
    classifier.train(was_training)
    return torch.cat(out)


class FrechetToReference:
    """FD of each set in a batch (R, n, D) to a fixed reference (M, D), in float64:
    ||mu - mu_r||^2 + tr S + tr S_r - 2 tr((S_r^1/2 S S_r^1/2)^1/2), the last term from the
    eigenvalues of the symmetric PSD matrix S_r^1/2 S S_r^1/2 (same spectrum as S S_r)."""

    def __init__(self, real_MD: torch.Tensor) -> None:
        real = torch.as_tensor(real_MD).double()
        if real.dim() != 2 or len(real) < 2:
            raise UserError(f"a reference needs features (M >= 2, D), got shape {tuple(real.shape)}")
        self.mu_D = real.mean(0)
        centred = real - self.mu_D
        self.sigma_DD = centred.T @ centred / (len(real) - 1)
        w, v = torch.linalg.eigh(self.sigma_DD)
        self.root_DD = (v * w.clamp_min(0).sqrt()) @ v.T  # S_r^1/2
        self.trace = float(torch.trace(self.sigma_DD))

    def __call__(self, x_RnD: torch.Tensor) -> torch.Tensor:
        x = x_RnD.double()
        n = x.shape[1]
        if n < 2:
            raise UserError("a Fréchet distance needs at least 2 samples per set")
        mu_RD = x.mean(1)
        xc = x - mu_RD[:, None]
        sigma_RDD = xc.transpose(1, 2) @ xc / (n - 1)
        m = self.root_DD @ sigma_RDD @ self.root_DD
        tr_covmean_R = torch.linalg.eigvalsh((m + m.transpose(1, 2)) / 2).clamp_min(0).sqrt().sum(-1)
        trace_R = torch.diagonal(sigma_RDD, dim1=1, dim2=2).sum(-1)
        return (mu_RD - self.mu_D).square().sum(-1) + trace_R + self.trace - 2 * tr_covmean_R  # (R,)


def classifier_metrics(fake_ND: torch.Tensor, real_MD: torch.Tensor, *, prc: bool = True) -> dict[str, Any]:
    """{"fd", "precision", "recall", "n", "ref_n", "warnings"} of generated features (N, D)
    against the reference (M, D); precision/recall only with `prc`."""
    from genorder import metrics

    n, m = len(fake_ND), len(real_MD)
    if n < 2 or m < 2:
        raise UserError(f"classifier-feature metrics need at least 2 generated and 2 reference sets, got {n} and {m}")
    out: dict[str, Any] = {"fd": float(FrechetToReference(real_MD)(fake_ND[None])[0]), "n": n, "ref_n": m}
    if prc:
        pr = metrics.metrics_from_features(fake_ND, real_MD, fid=False, kid=False, prc=True)
        out.update(precision=float(pr["precision"]), recall=float(pr["recall"]))
    out["warnings"] = [] if n >= MIN_N else [f"classifier FD at n = {n}: meant for n >= {MIN_N}"]
    return out


def classifier_floor(classifier, train_images: torch.Tensor, real_MD: torch.Tensor, n: int, *,
                     prc: bool = True, labels: torch.Tensor | None = None) -> dict[str, Any]:
    """The real-against-real floor at n: a seeded subset of n train images (class-balanced when
    their `labels` are given; never "the first n", which in a folder read class by class is a
    class or two), embedded and scored like n generated images against the same reference. Same
    keys as `classifier_metrics`."""
    from genorder.subsets import balanced_subset

    if n > len(train_images):
        raise UserError(f"the floor at n = {n} needs {n} train images, the split has {len(train_images)}")
    idx = balanced_subset(labels, n, total=len(train_images))
    return classifier_metrics(classifier_features(classifier, train_images[idx]), real_MD, prc=prc)
