"""Compare's paired statistics (issue 22): every order and seed is scored, at each evaluation point,
on the same paired design (`genorder.paired.paired_design(K, n, DESIGN_SEED)`: labels i mod K and
per-sample seeds, generated in blocks of `BLOCK` by `genorder.sampling.generate_design`), so that
order A seed s and order B seed s are differenced sample by sample (`genorder.stats`).

The score job (`compare_jobs.score_job`) writes each point's per-sample results next to the run,
RUN/paired/step-NNNNNNN.safetensors: labels (n,), sample_seeds (n,), correct (n,) uint8 and, at the
last point, the classifier's penultimate features (n, D). `final_statistics` reads the last point
of every order and seed; a job per order (`compare_jobs.order_stats_job`) computes its pooled
classifier FD / precision / recall and the per-seed FD's bootstrap replicates, a job beside the
training (`compare_jobs.classifier_floor_job`) the floor, and `final_statistics` combines them,
all deterministic given the files:

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

    >>> stats = final_statistics(["raster", "maskgit"], labels, correct, per_order, floor, num_classes=10)
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


def fd_replicates(sets: list[torch.Tensor], statistic, *, reps: int = 200, seed: int = 0, chunk: int = 8) -> dict[str, Any]:
    """A set-level statistic of each seed's set (S sets of (n, D)) and its within-seed bootstrap:
    {"theta": (S,) values, "within": (R, S) values on resamples of each set's rows}. The resampled
    indices depend on (seed, S, n) only, drawn as `genorder.stats.set_interval` draws them, so two
    arms of one design get the same indices: the replicates of A - B are A's minus B's, the
    paired bootstrap of `genorder.stats.paired_set_difference` (tests/test_compare_paired.py)."""
    if len({len(x) for x in sets}) != 1 or len(sets[0]) < 2:
        raise UserError(f"paired sets need one size >= 2 per seed, got {[len(x) for x in sets]}")
    g = torch.Generator().manual_seed(seed)
    theta, within = [], []
    for x in sets:
        n = len(x)
        theta.append(statistic(x[None]).double()[0])
        reps_s = []
        for start in range(0, reps, chunk):
            idx = torch.randint(0, n, (min(chunk, reps - start), n), generator=g)  # (r, n)
            reps_s.append(statistic(x[idx]).double())
        within.append(torch.cat(reps_s))
    return {"theta": torch.stack(theta), "within": torch.stack(within, dim=1)}


def _scopes(theta: torch.Tensor, within: torch.Tensor, n: int) -> tuple[Any, Any]:
    from genorder.stats import combine

    return combine(theta, within, n, scope="seeds"), combine(theta, within, n, scope="samples")


def _comparison_dict(metric: str, diff, higher_is_better: bool) -> dict[str, Any]:
    from genorder.stats import MDD_FORMULA, minimum_detectable, verdict

    return {"metric": metric, "diff": _iv(diff), "higher_is_better": higher_is_better,
            "verdict": verdict(diff, higher_is_better),
            "mdd": minimum_detectable(diff.se, diff.df, level=diff.level), "power": 0.8, "mdd_formula": MDD_FORMULA}  # fmt: skip


def compare_arms(a: dict[str, Any], b: dict[str, Any]) -> dict[str, Any]:
    """A - B of two arms of one paired design, each {"correct": (S, N) 0/1, "theta": (S,),
    "within": (R, S)} (the classifier FD and its replicates, `fd_replicates`): class accuracy
    (higher is better) and classifier FD (lower is better), each in both scopes."""
    from genorder.stats import paired_difference

    acc = {scope: paired_difference(a["correct"], b["correct"], metric="class_acc", scope=scope) for scope in ("seeds", "samples")}
    n = a["correct"].shape[1]
    fd_seeds, fd_samples = _scopes(a["theta"] - b["theta"], a["within"] - b["within"], n)
    return {"class_acc": {scope: _comparison_dict("class_acc", c.diff, True) for scope, c in acc.items()},
            "classifier_fd": {"seeds": _comparison_dict("classifier_fd", fd_seeds, False),
                              "samples": _comparison_dict("classifier_fd", fd_samples, False)}}  # fmt: skip


def reference(classifier, test_images: torch.Tensor) -> torch.Tensor:
    """The classifier-FD reference: the test split's penultimate features (M, D)."""
    from genorder.classifier_fd import classifier_features

    return classifier_features(classifier, test_images)


def order_statistics(features: list[torch.Tensor], real_MD: torch.Tensor, *, reps: int = 200, prc: bool = True) -> dict[str, Any]:
    """One order's last point, its S seeds' features (n, D) each: the classifier FD / precision /
    recall of the seeds' samples pooled (S x n) against the reference, and the per-seed FD with its
    bootstrap replicates (`fd_replicates`, as lists: the record of a job)."""
    from genorder.classifier_fd import FrechetToReference, classifier_metrics

    pooled = classifier_metrics(torch.cat(features), real_MD, prc=prc)
    rep = fd_replicates(features, FrechetToReference(real_MD), reps=reps, seed=0)
    return {"pooled": pooled, "n_per_seed": len(features[0]), "theta": rep["theta"].tolist(), "within": rep["within"].tolist()}


def load_correct(names: list[str], runs: dict[str, list[tuple[Path, int]]], with_features: bool = False):
    """The last point of every order and seed: `runs[order]` is [(run dir, last step)] in seed
    order. Returns (the design's labels (N,), {order: (S, N) correctness 0/1}, {order: [(N, D)]}
    features or None), after checking that every run was scored on the same design."""
    correct: dict[str, torch.Tensor] = {}
    feats: dict[str, list[torch.Tensor]] = {}
    ref: tuple[torch.Tensor, torch.Tensor] | None = None
    for nm in names:
        rows = []
        for run_dir, step in runs[nm]:
            rec = load_paired(paired_path(run_dir, step))
            if ref is None:
                ref = (rec["labels"], rec["sample_seeds"])
            elif not (torch.equal(ref[0], rec["labels"]) and torch.equal(ref[1], rec["sample_seeds"])):
                raise UserError(f"{run_dir}: scored on another design than the first run; rerun compare to rescore it")
            rows.append(rec["correct"].double())
            if with_features:
                feats.setdefault(nm, []).append(rec["features"])
        correct[nm] = torch.stack(rows)
    assert ref is not None
    return ref[0], correct, (feats if with_features else None)


def final_statistics(names: list[str], labels: torch.Tensor, correct: dict[str, torch.Tensor], per_order: dict[str, dict],
                     floor: dict[str, Any], *, num_classes: int) -> dict[str, Any]:
    """Per order and per pair of orders, at the last point (see the module docstring): `correct`
    {order: (S, N)}, `per_order` {order: `order_statistics`}, `floor` the classifier FD's
    real-against-real floor at the pooled n."""
    from genorder.stats import hierarchical_mean, per_class_intervals

    arms = {nm: {"correct": correct[nm], "theta": torch.tensor(per_order[nm]["theta"], dtype=torch.float64),
                 "within": torch.tensor(per_order[nm]["within"], dtype=torch.float64)} for nm in names}  # fmt: skip
    S, N = correct[names[0]].shape
    orders: dict[str, Any] = {}
    for nm in names:
        x = correct[nm]
        seeds_iv, samples_iv = hierarchical_mean(x, scope="seeds"), hierarchical_mean(x, scope="samples")
        per_seeds = per_class_intervals(x, labels, num_classes, scope="seeds")
        per_samples = per_class_intervals(x, labels, num_classes, scope="samples")
        per_class = [None if a is None else {"class": k, "acc": a.estimate, "seeds": [a.lo, a.hi], "samples": [b.lo, b.hi],
                                             "n": a.n_per_seed * a.n_seeds}
                     for k, (a, b) in enumerate(zip(per_seeds, per_samples, strict=True))]  # fmt: skip
        m = per_order[nm]["pooled"]
        fd_seeds, fd_samples = _scopes(arms[nm]["theta"], arms[nm]["within"], N)
        fd = {**m, "over_floor": m["fd"] / floor["fd"] if floor["fd"] > 0 else None,
              "per_seed": {"n": N, "seeds": _iv(fd_seeds), "samples": _iv(fd_samples), "dominant": fd_seeds.dominant}}  # fmt: skip
        orders[nm] = {"class_acc": {"seeds": _iv(seeds_iv), "samples": _iv(samples_iv), "dominant": seeds_iv.dominant},
                      "per_class_acc": per_class, "classifier_fd": fd}  # fmt: skip
    pairwise = [{"a": a, "b": b, **compare_arms(arms[a], arms[b])} for i, a in enumerate(names) for b in names[i + 1 :]]
    return {"n_per_seed": N, "seeds": S, "classifier_fd_floor": floor, "orders": orders, "pairwise": pairwise,
            "verdict_scope": VERDICT_SCOPE, "note": SCOPE_NOTE}  # fmt: skip
