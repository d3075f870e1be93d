"""Compare's paired statistics (issue 22): every order and seed is scored, at each evaluation point,
on the same paired design (`genorder.paired.paired_design(K, n, DESIGN_SEED)`: labels i mod K and
per-sample seeds, generated in blocks of `BLOCK` by `genorder.sampling.generate_design`), so that
order A seed s and order B seed s are differenced sample by sample (`genorder.stats`).

The score job (`compare_jobs.score_job`) writes each point's per-sample results next to the run,
RUN/paired/step-NNNNNNN.safetensors: labels (n,), sample_seeds (n,), correct (n,) uint8 and, at the
last point, the classifier's penultimate features (n, D). `final_statistics` reads the last point
of every order and seed and computes, all deterministic given the files:

* per order: class accuracy with the two-level interval over seeds x samples (`hierarchical_mean`,
  scope "seeds") and the samples-only interval (scope "samples": conditional on these trained
  models), which source of noise dominates, per-class accuracy, and the classifier-feature FD /
  precision / recall of the seeds' samples pooled (S x n) against the test split, next to the
  real-against-real floor at the same n; the FD's interval at the per-seed n, both scopes;
* per pair of orders (A before B in the order list): A - B in class accuracy and in classifier FD,
  with its 95% interval, the verdict (better / worse / no detectable difference, for A) and the
  minimum detectable difference, in both scopes. The verdict of record is the two-level one
  (`VERDICT_SCOPE`); the samples-scope verdict is reported beside it, labelled as conditional on
  the trained models.

    >>> stats = final_statistics(["raster", "maskgit"], arms, clf, test.images, train.images)
    >>> stats["pairwise"][0]["class_acc"]["seeds"]["verdict"]
"""

from __future__ import annotations

import hashlib
from pathlib import Path
from typing import Any

import torch

from genorder.errors import UserError

BLOCK = 50  # generate_design's block: the same for every order, so designs are comparable
DESIGN_SEED = 0
VERDICT_SCOPE = "seeds"
SCOPE_NOTE = ("verdicts use the two-level interval (seeds x samples: it generalises over training seeds; with 2 "
              "seeds its t multiplier is 12.7); the samples-scope verdict is conditional on these trained models")  # fmt: skip
PAIRED_DIR = "paired"


def design_fingerprint(labels: torch.Tensor, sample_seeds: torch.Tensor) -> str:
    """A short content hash of a design's labels and per-sample seeds (both (n,) int64)."""
    h = hashlib.sha256()
    for t in (labels, sample_seeds):
        h.update(t.to(torch.int64).contiguous().numpy().tobytes())
    return "sha256:" + h.hexdigest()[:16]


def paired_path(run_dir: Path, step: int) -> Path:
    return Path(run_dir) / PAIRED_DIR / f"step-{step:07d}.safetensors"


def save_paired(path: Path, result, with_features: bool) -> None:
    """One point's `genorder.quality.PairedResult` per sample (features only with `with_features`)."""
    from safetensors.torch import save_file

    tensors = {"labels": result.labels.to(torch.int64).contiguous(),
               "sample_seeds": result.sample_seeds.to(torch.int64).contiguous(),
               "correct": result.correct.to(torch.uint8).contiguous()}  # fmt: skip
    if with_features:
        tensors["features"] = result.features.float().contiguous()
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_suffix(".tmp")
    save_file(tensors, str(tmp))
    tmp.replace(path)


def load_paired(path: Path) -> dict[str, torch.Tensor]:
    from safetensors.torch import load_file

    if not Path(path).is_file():
        raise UserError(f"{path}: the per-sample results of this point are missing; rerun compare to rescore it")
    return load_file(str(path))


def point_summary(result, num_classes: int) -> dict[str, Any]:
    """What comparison.json records of one run's point: class accuracy with its samples-only
    interval (this one trained model), per-class accuracy, n and the design's fingerprint."""
    from genorder.stats import hierarchical_mean

    correct = result.correct.double()
    iv = hierarchical_mean(correct, scope="samples")
    per_class = [float(correct[result.labels == k].mean()) if bool((result.labels == k).any()) else None
                 for k in range(num_classes)]  # fmt: skip
    return {"class_acc": {"acc": iv.estimate, "lo": max(0.0, iv.lo), "hi": min(1.0, iv.hi), "n": len(correct),
                          "interval": "samples (this model), normal"},
            "per_class_acc": per_class,
            "design": {"n": len(correct), "seed": DESIGN_SEED, "block": BLOCK,
                       "fingerprint": design_fingerprint(result.labels, result.sample_seeds)}}  # fmt: skip


def _iv(iv) -> dict[str, Any]:
    return iv.as_dict()


def _scopes_of_set(sets: list[torch.Tensor], statistic, reps: int, seed: int) -> dict[str, Any]:
    """Both scopes' intervals of a set-level statistic averaged over seeds, one bootstrap."""
    from genorder.stats import combine, set_interval

    seeds_iv = set_interval(sets, statistic, reps=reps, seed=seed, scope="seeds")
    theta = torch.stack([statistic(x[None]).double()[0] for x in sets])
    samples_iv = combine(theta, None, len(sets[0]), scope="samples", var_within=seeds_iv.var_within)
    return {"seeds": _iv(seeds_iv), "samples": _iv(samples_iv), "dominant": seeds_iv.dominant}


def _comparison_dict(metric: str, diff, higher_is_better: bool) -> dict[str, Any]:
    from genorder.stats import MDD_FORMULA, minimum_detectable, verdict

    return {"metric": metric, "diff": _iv(diff), "higher_is_better": higher_is_better,
            "verdict": verdict(diff, higher_is_better),
            "mdd": minimum_detectable(diff.se, diff.df, level=diff.level), "power": 0.8, "mdd_formula": MDD_FORMULA}  # fmt: skip


def compare_arms(a: dict[str, Any], b: dict[str, Any], statistic, *, reps: int = 200, seed: int = 0) -> dict[str, Any]:
    """A - B of two arms {"correct": (S, N) float64, "features": [S x (N, D)]} of one paired design:
    class accuracy (higher is better) and classifier FD (lower is better), each in both scopes."""
    from genorder.stats import combine, paired_difference, paired_set_difference

    out: dict[str, Any] = {}
    acc = {scope: paired_difference(a["correct"], b["correct"], metric="class_acc", scope=scope)
           for scope in ("seeds", "samples")}  # fmt: skip
    out["class_acc"] = {scope: _comparison_dict("class_acc", c.diff, True) for scope, c in acc.items()}
    fd = paired_set_difference(a["features"], b["features"], statistic, higher_is_better=False, metric="classifier_fd",
                               reps=reps, seed=seed, scope="seeds")  # fmt: skip
    theta = torch.stack([(statistic(x[None]) - statistic(y[None])).double()[0] for x, y in zip(a["features"], b["features"])])
    fd_samples = combine(theta, None, fd.diff.n_per_seed, scope="samples", var_within=fd.diff.var_within)
    out["classifier_fd"] = {"seeds": _comparison_dict("classifier_fd", fd.diff, False),
                            "samples": _comparison_dict("classifier_fd", fd_samples, False)}  # fmt: skip
    return out


def load_arms(names: list[str], runs: dict[str, list[tuple[Path, int]]]) -> tuple[torch.Tensor, dict[str, dict]]:
    """The last point of every order and seed: `runs[order]` is [(run dir, last step)] in seed
    order. Returns (the design's labels (N,), {order: {"correct": (S, N), "features": [(N, D)]}}),
    after checking that every run was scored on the same design."""
    arms: dict[str, dict] = {}
    ref: tuple[torch.Tensor, torch.Tensor] | None = None
    for nm in names:
        correct, feats = [], []
        for run_dir, step in runs[nm]:
            rec = load_paired(paired_path(run_dir, step))
            if ref is None:
                ref = (rec["labels"], rec["sample_seeds"])
            elif not (torch.equal(ref[0], rec["labels"]) and torch.equal(ref[1], rec["sample_seeds"])):
                raise UserError(f"{run_dir}: scored on another design than the first run; rerun compare to rescore it")
            correct.append(rec["correct"].double())
            feats.append(rec["features"])
        arms[nm] = {"correct": torch.stack(correct), "features": feats}
    assert ref is not None
    return ref[0], arms


def final_statistics(names: list[str], labels: torch.Tensor, arms: dict[str, dict], classifier, test_images: torch.Tensor,
                     train_images: torch.Tensor, *, num_classes: int, reps: int = 200, prc: bool = True) -> dict[str, Any]:
    """Per order and per pair of orders, at the last point (see the module docstring)."""
    from genorder.classifier_fd import FrechetToReference, classifier_features, classifier_floor, classifier_metrics
    from genorder.stats import hierarchical_mean, per_class_intervals

    real_MD = classifier_features(classifier, test_images)  # (M, D)
    statistic = FrechetToReference(real_MD)
    S, N = arms[names[0]]["correct"].shape
    pooled = S * N
    if pooled > len(train_images):
        raise UserError(f"the classifier FD's floor at n = {pooled} needs {pooled} train images, the split has {len(train_images)}")
    floor = classifier_floor(classifier, train_images, real_MD, pooled, prc=prc)
    orders: dict[str, Any] = {}
    for nm in names:
        x = arms[nm]["correct"]
        seeds_iv, samples_iv = hierarchical_mean(x, scope="seeds"), hierarchical_mean(x, scope="samples")
        per_seeds = per_class_intervals(x, labels, num_classes, scope="seeds")
        per_samples = per_class_intervals(x, labels, num_classes, scope="samples")
        per_class = [None if a is None else {"class": k, "acc": a.estimate, "seeds": [a.lo, a.hi], "samples": [b.lo, b.hi],
                                             "n": a.n_per_seed * a.n_seeds}
                     for k, (a, b) in enumerate(zip(per_seeds, per_samples, strict=True))]  # fmt: skip
        m = classifier_metrics(torch.cat(arms[nm]["features"]), real_MD, prc=prc)
        fd = {**m, "over_floor": m["fd"] / floor["fd"] if floor["fd"] > 0 else None,
              "per_seed": {"n": N, **_scopes_of_set(arms[nm]["features"], statistic, reps, seed=0)}}  # fmt: skip
        orders[nm] = {"class_acc": {"seeds": _iv(seeds_iv), "samples": _iv(samples_iv), "dominant": seeds_iv.dominant},
                      "per_class_acc": per_class, "classifier_fd": fd}  # fmt: skip
    pairwise = []
    for i, a in enumerate(names):
        for b in names[i + 1 :]:
            pairwise.append({"a": a, "b": b, **compare_arms(arms[a], arms[b], statistic, reps=reps, seed=0)})
    return {"n_per_seed": N, "seeds": S, "classifier_fd_floor": floor, "orders": orders, "pairwise": pairwise,
            "verdict_scope": VERDICT_SCOPE, "note": SCOPE_NOTE}  # fmt: skip
