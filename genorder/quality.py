"""Sample quality at one checkpoint, scored the same way for every order: class consistency, FID /
KID / precision-recall next to the real-against-real floor, and the held-out token loss.

`CheckpointProbe` is built once per comparison (classifier, reference features, a fixed test
subset, the sampler) and called on a model at each evaluation point of training; `compare` draws
its results against training FLOPs and wall-clock. Everything in a probe's result is a function of
the weights and the seeds; its timings are returned separately, so results can be diffed.

    >>> probe = CheckpointProbe(classifier, real_MD, extractor, test_images, test_labels, sampler, n=100)
    >>> point, seconds = probe(order, tokenizer, model)
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from typing import Any

import torch

from genorder.classifier import class_accuracy
from genorder.data import class_balanced_labels
from genorder.heldout import heldout_loss


def score_samples(images_u8: torch.Tensor, labels: torch.Tensor, *, classifier, real_MD: torch.Tensor | None,
                  extractor=None, n_boot: int = 1000, seed: int = 0, kid_subsets: int = 100) -> dict[str, Any]:
    """uint8 samples (N, C, H, W) generated for `labels` (N,) -> {"class_acc": {acc, lo, hi, n}, "fid",
    "kid_mean", "kid_std", "precision", "recall"} (the FID family only when `real_MD`, reference
    features (M, D), and the feature `extractor` module are given)."""
    from genorder import metrics

    out: dict[str, Any] = {"class_acc": class_accuracy(classifier, images_u8, labels, n_boot=n_boot, seed=seed)}
    if real_MD is not None and extractor is not None:
        fake_ND = metrics.extract_features(images_u8, extractor)
        m = metrics.metrics_from_features(fake_ND, real_MD, kid_subsets=kid_subsets, seed=seed)
        out.update({k: float(m[k]) for k in ("fid", "kid_mean", "kid_std", "precision", "recall")})
    return out


@dataclass
class CheckpointProbe:
    """Scores a model: `n` class-balanced samples (seeded) and `heldout_images` test images."""

    classifier: Any
    real_MD: torch.Tensor | None  # reference features, None: no FID
    extractor: Any  # a feature-extractor module (genorder.metrics.make_extractor), None: no FID
    heldout_images: torch.Tensor  # (M, C, H, W) uint8, the fixed test subset for the held-out loss
    heldout_labels: torch.Tensor  # (M,)
    sampler: Any
    n: int = 100
    seed: int = 0
    batch_size: int = 100
    n_boot: int = 1000

    def __call__(self, order, tokenizer, model) -> tuple[dict[str, Any], dict[str, float]]:
        """(point, seconds): point = held-out loss + `score_samples` of fresh samples; seconds =
        {"sample", "score"} wall-clock (kept apart: they depend on the machine's load)."""
        from genorder.generation import make_generator
        from genorder.images import to_uint8

        was_training = model.training
        model.eval()
        t0 = time.perf_counter()
        loss = heldout_loss(order, tokenizer, model, self.heldout_images, self.heldout_labels)
        device = next(model.parameters()).device
        labels = class_balanced_labels(model.num_classes, self.n)
        g = make_generator(self.seed, device)
        chunks = []
        for start in range(0, self.n, self.batch_size):
            lab = labels[start : start + self.batch_size].to(device)
            tokens = order.generate(model, tokenizer, lab, self.sampler, g)
            with torch.inference_mode():
                chunks.append(tokenizer.decode(tokens).float().clamp(-1, 1).cpu())
        images = to_uint8(torch.cat(chunks))  # (n, C, H, W) uint8
        t1 = time.perf_counter()
        scores = score_samples(images, labels, classifier=self.classifier, real_MD=self.real_MD,
                               extractor=self.extractor, n_boot=self.n_boot, seed=self.seed)  # fmt: skip
        t2 = time.perf_counter()
        model.train(was_training)
        return {"heldout_loss": loss, **scores}, {"sample": t1 - t0, "score": t2 - t1}


# -- the paired probe: the same labels and per-sample seeds for every order ---------------------


@dataclass
class PairedResult:
    """One model's samples of a paired design, scored: per-sample correctness and features, so that
    two results of the same design can be differenced sample by sample (`genorder.stats`)."""

    labels: torch.Tensor  # (n,) int64, the design's
    correct: torch.Tensor  # (n,) bool: the classifier's class is the requested one
    features: torch.Tensor  # (n, D) float32, the classifier's penultimate layer
    metrics: dict[str, Any]  # class_acc, per_class_acc, classifier_fd {fd, precision, recall, n, ref_n}, floor
    seconds: dict[str, float]  # wall-clock, apart from the results

    def summary(self) -> dict[str, Any]:
        """JSON-ready: the metrics and the per-sample correctness as 0/1."""
        return {**self.metrics, "correct": self.correct.to(torch.int64).tolist()}


@dataclass
class PairedProbe:
    """Scores a model on `n` samples of `paired_design(K, n, seed)` (labels i mod K, per-sample
    seeds), generated by `generate_indexed` in blocks of `block`; `batch_size` is the batch of the
    classifier pass and does not change any result. Build with `PairedProbe.build`, which embeds
    the test split (the reference) and computes the real-against-real floor at the same n once."""

    classifier: Any
    real_MD: torch.Tensor  # classifier features of the test split (M, D)
    floor: dict[str, Any]  # `classifier_floor` at n
    sampler: Any
    n: int
    seed: int = 0
    block: int = 50
    batch_size: int = 500
    prc: bool = True  # precision/recall (k-NN; the slow part at large n)

    @classmethod
    def build(cls, classifier, test_images: torch.Tensor, train_images: torch.Tensor, sampler, n: int,
              **kw: Any) -> PairedProbe:
        from genorder.classifier_fd import classifier_features, classifier_floor

        real_MD = classifier_features(classifier, test_images)
        floor = classifier_floor(classifier, train_images, real_MD, n, prc=kw.get("prc", True))
        return cls(classifier, real_MD, floor, sampler, n, **kw)

    def __call__(self, order, tokenizer, model) -> PairedResult:
        from genorder.classifier_fd import classifier_features, classifier_metrics
        from genorder.images import to_uint8
        from genorder.paired import paired_design
        from genorder.sampling import generate_indexed

        was_training = model.training
        model.eval()
        t0 = time.perf_counter()
        labels, seeds = paired_design(model.num_classes, self.n, self.seed)
        images = to_uint8(generate_indexed(order, model, tokenizer, labels, seeds, self.sampler, block=self.block))
        model.train(was_training)
        t1 = time.perf_counter()
        feats = classifier_features(self.classifier, images, self.batch_size)  # (n, D)
        with torch.no_grad():
            pred = self.classifier.logits_from_penultimate(feats).argmax(dim=1)
        correct = pred == labels
        per_class = [float(correct[labels == k].double().mean()) if (labels == k).any() else None
                     for k in range(model.num_classes)]  # fmt: skip
        metrics = {
            "n": self.n, "seed": self.seed, "block": self.block,
            "class_acc": float(correct.double().mean()), "per_class_acc": per_class,
            "classifier_fd": classifier_metrics(feats, self.real_MD, prc=self.prc), "floor": self.floor,
        }  # fmt: skip
        t2 = time.perf_counter()
        return PairedResult(labels, correct, feats, metrics, {"sample": t1 - t0, "score": t2 - t1})
