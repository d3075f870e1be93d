"""compare's paired design (issue 22): every order and seed scored on the same labels and per-sample
seeds at each point, the two-level and samples-only intervals, per-class accuracy, and the pairwise
verdicts with their minimum detectable difference, through compare's own code path."""

from __future__ import annotations

import json

import pytest
import torch
from test_compare import _in_tmp, invoke, shapes_npz, tiny  # noqa: F401 - _in_tmp: compare's autouse fixture

from genorder.errors import UserError
from genorder.experiments import compare_paired as cp
from genorder.paired import paired_design

pytest.importorskip("torch_fidelity")


def test_every_order_and_seed_is_scored_on_the_same_design_and_compared_pair_by_pair(tmp_path):
    data = shapes_npz(tmp_path / "shapes.npz")
    r = invoke(*tiny(data, "p", "--orders", "raster,next-scale", "--no-fid", "--n", "12", "--final-n", "20"))
    assert r.exit_code == 0, r.output
    doc = json.loads((tmp_path / "p" / "comparison.json").read_text())
    K = 4  # the shapes' classes
    # what every run recorded: the same design at each point, the one paired_design gives
    for i, n in enumerate((12, 20)):
        want = cp.design_fingerprint(*paired_design(K, n, cp.DESIGN_SEED))
        got = {(nm, run["seed"]): run["points"][i]["design"] for nm, runs in doc["runs"].items() for run in runs}
        assert len(got) == 4 and all(d == {"n": n, "seed": 0, "block": cp.BLOCK, "fingerprint": want} for d in got.values())
    # what every run used: the per-sample files the statistics read hold the same labels and seeds
    files = [cp.load_paired(cp.paired_path(tmp_path / "p" / nm / f"seed{s}", 4)) for nm in ("raster", "next-scale") for s in (0, 1)]
    labels, seeds = paired_design(K, 20, 0)
    for f in files:
        assert torch.equal(f["labels"], labels) and torch.equal(f["sample_seeds"], seeds)
        assert f["correct"].shape == (20,) and f["features"].shape[0] == 20
    # a point's class accuracy is its own per-sample correctness
    run0 = doc["runs"]["raster"][0]["points"][-1]
    assert run0["class_acc"]["acc"] == pytest.approx(float(files[0]["correct"].double().mean()))
    assert len(run0["per_class_acc"]) == K
    for row in doc["rows"]:  # both scopes of the class-accuracy interval, which one dominates, per-class accuracy
        ci = row["class_acc_interval"]
        assert ci["seeds"]["scope"] == "seeds" and ci["samples"]["scope"] == "samples"
        assert ci["seeds"]["n_seeds"] == 2 and ci["seeds"]["n_per_seed"] == 20 and ci["seeds"]["df"] == 1
        assert ci["samples"]["df"] is None  # normal quantile: conditional on these trained models
        assert ci["dominant"] in ("seeds", "samples") and ci["seeds"]["estimate"] == pytest.approx(row["class_acc"])
        assert [c["class"] for c in row["per_class_acc"]] == list(range(K))
        assert all(c["n"] == 2 * 20 // K and c["seeds"][0] <= c["acc"] <= c["seeds"][1] for c in row["per_class_acc"])
        fd = row["classifier_fd"]
        assert fd["n"] == 40 and fd["fd"] >= 0 and fd["per_seed"]["n"] == 20 and "precision" in fd
        assert fd["over_floor"] == pytest.approx(fd["fd"] / doc["classifier_fd_floor"]["fd"])
    assert doc["classifier_fd_floor"]["n"] == 40  # the floor at the same (pooled) n
    (pair,) = doc["pairwise"]
    assert (pair["a"], pair["b"]) == ("raster", "next-scale")
    for metric in ("class_acc", "classifier_fd"):
        for scope in ("seeds", "samples"):
            c = pair[metric][scope]
            assert c["verdict"] in ("better", "worse", "no detectable difference") and c["mdd"] >= 0
            assert c["diff"]["scope"] == scope and c["diff"]["lo"] <= c["diff"]["estimate"] <= c["diff"]["hi"]
    # the paired difference is the difference of the two orders' seed-averaged accuracies
    rows = {row["order"]: row for row in doc["rows"]}
    assert pair["class_acc"]["seeds"]["diff"]["estimate"] == pytest.approx(rows["raster"]["class_acc"] - rows["next-scale"]["class_acc"])
    assert doc["pairwise_scope"]["verdict_scope"] == "seeds"
    out = " ".join(r.output.split())
    assert "pairwise at the last point" in out and "raster − next-scale" in out and "per-class accuracy" in out
    assert "verdict scope: verdicts use the two-level interval" in out and "MDD" in out


def _arm(g: torch.Generator, p: float, shift: float, fd, S: int = 2, N: int = 1000, D: int = 8, reps: int = 50) -> dict:
    """An arm of S seeds x N samples: correctness ~ Bernoulli(p), features ~ N(shift, I), with the
    classifier FD's replicates as compare's per-order job computes them."""
    features = [torch.randn(N, D, generator=g) + shift for _ in range(S)]
    return {"correct": (torch.rand(S, N, generator=g) < p).double(), "features": features,
            **cp.fd_replicates(features, fd, reps=reps)}  # fmt: skip


def test_a_planted_effect_is_detected_by_compares_pairwise_code_and_its_absence_is_not_called():
    from genorder.classifier_fd import FrechetToReference

    g = torch.Generator().manual_seed(0)
    fd = FrechetToReference(torch.randn(4000, 8, generator=g))  # the "test split": N(0, I)
    good, bad = _arm(g, 0.8, 0.0, fd), _arm(g, 0.5, 0.6, fd)
    got = cp.compare_arms(good, bad)
    for scope in ("seeds", "samples"):  # A (good) is better: higher accuracy, lower FD, in both scopes
        acc, dist = got["class_acc"][scope], got["classifier_fd"][scope]
        assert acc["verdict"] == "better" and acc["diff"]["lo"] > 0 and acc["diff"]["estimate"] == pytest.approx(0.3, abs=0.05)
        assert dist["verdict"] == "better" and dist["diff"]["hi"] < 0
        assert acc["mdd"] < 0.3 and dist["mdd"] < abs(dist["diff"]["estimate"])  # the design could detect it
    back = cp.compare_arms(bad, good)
    assert back["class_acc"]["seeds"]["verdict"] == back["classifier_fd"]["seeds"]["verdict"] == "worse"
    # A/A: two arms of one distribution, again and again; a verdict other than "no detectable
    # difference" is a false positive, nominally 5% of the pairs (P(>= 9 of 60 | 5%) = 0.003)
    pairs, false = 60, {(m, s): 0 for m in ("class_acc", "classifier_fd") for s in ("seeds", "samples")}
    for r in range(pairs):
        same = cp.compare_arms(_arm(g, 0.8, 0.0, fd, N=500, reps=30), _arm(g, 0.8, 0.0, fd, N=500, reps=30))
        for m, s in false:
            false[m, s] += same[m][s]["verdict"] != "no detectable difference"
    assert all(v <= 8 for v in false.values()), false
    # with 2 seeds the two-level interval (t = 12.7) is wider than the samples-only one
    assert got["class_acc"]["seeds"]["diff"]["df"] == 1 and got["class_acc"]["samples"]["diff"]["df"] is None
    assert got["class_acc"]["seeds"]["mdd"] > got["class_acc"]["samples"]["mdd"]


def test_the_fd_difference_from_per_order_replicates_is_the_librarys_paired_bootstrap():
    """compare bootstraps each order's FD once (a job per order) and differences the replicates: the
    same resampled indices in both arms, so the interval equals genorder.stats.paired_set_difference's."""
    from genorder.classifier_fd import FrechetToReference
    from genorder.stats import paired_set_difference

    g = torch.Generator().manual_seed(3)
    fd = FrechetToReference(torch.randn(500, 6, generator=g))
    a, b = _arm(g, 0.7, 0.0, fd, N=300, D=6, reps=40), _arm(g, 0.6, 0.3, fd, N=300, D=6, reps=40)
    mine = cp.compare_arms(a, b)["classifier_fd"]["seeds"]["diff"]
    lib = paired_set_difference(a["features"], b["features"], fd, reps=40, seed=0).diff
    for key in ("estimate", "lo", "hi", "se", "var_within", "var_between"):
        assert mine[key] == pytest.approx(getattr(lib, key), rel=1e-9, abs=1e-12), key


def test_runs_scored_on_another_design_are_refused(tmp_path):
    from types import SimpleNamespace

    def save(run: str, seed: int) -> None:
        labels, seeds = paired_design(4, 8, seed)
        res = SimpleNamespace(labels=labels, sample_seeds=seeds, correct=torch.ones(8, dtype=torch.bool), features=torch.zeros(8, 3))
        cp.save_paired(cp.paired_path(tmp_path / run, 2), res, with_features=True)

    save("a", 0)
    save("b", 1)  # another design seed: other per-sample seeds
    with pytest.raises(UserError, match="another design"):
        cp.load_correct(["x", "y"], {"x": [(tmp_path / "a", 2)], "y": [(tmp_path / "b", 2)]})
    with pytest.raises(UserError, match="missing"):
        cp.load_correct(["x"], {"x": [(tmp_path / "c", 2)]})


def test_a_final_n_the_floor_cannot_match_is_refused_before_any_training(tmp_path):
    data = shapes_npz(tmp_path / "shapes.npz")  # 96 train images: 2 seeds x 60 would need 120
    r = invoke(*tiny(data, "big", "--orders", "raster", "--no-fid", "--final-n", "60"))
    assert r.exit_code == 2 and "lower --final-n" in " ".join(r.output.split()), r.output
    assert not (tmp_path / "big" / "raster").exists() and not (tmp_path / "big" / "comparison.json").exists()
