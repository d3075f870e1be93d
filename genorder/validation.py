"""Validating the paired statistics on generated samples (issue 22, item 5), at no training cost:

* `aa_check`: one model's samples (a pool drawn from one paired design) split, again and again,
  into two arms of label-matched seed sets (`genorder.paired.label_matched_split`); both arms come
  from the same distribution, so the interval of A - B must cover 0 in about 95% of the pairs
  (class accuracy and the classifier-feature FD);
* `planted_check`: two arms with a known difference (the same run at temperature 1.0 and 1.6, or a
  final against an early checkpoint), which must be detected.

`score_design` samples and scores one model on one design. tests/test_paired.py runs both checks
on a tiny regime; scripts/stats_validation.py on the runs of a `genorder compare` output.
"""

from __future__ import annotations

import math
from typing import Any

import torch

from genorder.stats import paired_difference, paired_set_difference

Scored = tuple[torch.Tensor, torch.Tensor, torch.Tensor]  # labels (n,), correct (n,) float64, features (n, D)


def score_design(order, tokenizer, model, classifier, sampler, n: int, seed: int, block: int = 50) -> Scored:
    """Samples of `paired_design(K, n, seed)` scored by the classifier: (labels, correct, features)."""
    from genorder.classifier_fd import classifier_features
    from genorder.images import to_uint8
    from genorder.paired import paired_design
    from genorder.sampling import generate_design

    labels, seeds = paired_design(model.num_classes, n, seed)
    images = to_uint8(generate_design(order, model, tokenizer, labels, seeds, sampler, block=block))
    feats = classifier_features(classifier, images)
    with torch.no_grad():
        correct = classifier.logits_from_penultimate(feats).argmax(dim=1) == labels
    return labels, correct.double(), feats


def aa_check(pool: Scored, fd_statistic, *, num_classes: int, seeds: int = 3, per_seed: int = 100, pairs: int = 40,
             fd_reps: int = 30, seed: int = 0) -> dict[str, Any]:
    """A/A on a pool of one model's scored samples: `pairs` replicate pairs of two arms of `seeds`
    label-matched seed sets of `per_seed` samples each. Returns, per metric, how many intervals
    covered 0, the false-positive rate and its binomial standard error at the nominal 5%."""
    from genorder.paired import label_matched_split

    labels, correct, feats = pool
    g = torch.Generator().manual_seed(seed)
    covered = {"class_acc": 0, "classifier_fd": 0}
    for r in range(pairs):
        a, b = label_matched_split(labels, num_classes, 2, seeds, per_seed, g)
        covered["class_acc"] += paired_difference(correct[a], correct[b]).diff.covers(0.0)
        fd = paired_set_difference([feats[i] for i in a], [feats[i] for i in b], fd_statistic, reps=fd_reps, seed=r)
        covered["classifier_fd"] += fd.diff.covers(0.0)
    se = math.sqrt(0.05 * 0.95 / pairs)
    return {
        "pairs": pairs, "seeds_per_arm": seeds, "per_seed": per_seed, "pool": len(labels),
        "metrics": {k: {"covered": v, "false_positive_rate": 1 - v / pairs} for k, v in covered.items()},
        "nominal_rate": 0.05, "binomial_se": se,
    }  # fmt: skip


def planted_check(arm_a: list[Scored], arm_b: list[Scored], fd_statistic, *, fd_reps: int = 50) -> dict[str, Any]:
    """A against B (lists of seed sets of one paired design each, A the expected better arm):
    the class-accuracy and classifier-FD comparisons, as `Comparison.as_dict()`."""
    acc = paired_difference(torch.stack([s[1] for s in arm_a]), torch.stack([s[1] for s in arm_b]), metric="class_acc")
    fd = paired_set_difference([s[2] for s in arm_a], [s[2] for s in arm_b], fd_statistic, reps=fd_reps,
                               higher_is_better=False, metric="classifier_fd")  # fmt: skip
    return {"class_acc": acc.as_dict(), "classifier_fd": fd.as_dict()}
