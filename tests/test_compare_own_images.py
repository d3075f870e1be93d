"""`genorder compare` on your own images (issue 25): the held-out loss on seeded class-balanced
subsets of the test split (never "the first n" of a class-sorted folder), the held-out split and
`--holdout`, every score at the trained size, and the duration estimate before a run."""

from __future__ import annotations

import json
from collections import Counter

import pytest
import torch
from test_compare import _in_tmp, invoke  # noqa: F401 - _in_tmp: compare's autouse fixture (a tmp cwd, one thread)
from test_subsets import K, class_sorted_folder, ids

pytest.importorskip("torch_fidelity")


@pytest.fixture(autouse=True)
def _no_holdout_env(monkeypatch):
    monkeypatch.delenv("GENORDER_HOLDOUT", raising=False)


def test_the_held_out_loss_subsets_are_class_balanced_on_a_class_sorted_folder(tmp_path):
    from genorder.data import load_dataset
    from genorder.experiments.compare_jobs import heldout_subset

    spec = class_sorted_folder(tmp_path / "photos", per_class=40)  # 4 test images a class after the 10% split
    job = {"dataset": spec, "image_size": 8, "heldout_n": 10}
    test = load_dataset(spec, "test", image_size=8)
    (a_img, a_lab), (b_img, b_lab) = heldout_subset(job, 0), heldout_subset(job, 1)
    for img, lab in ((a_img, a_lab), (b_img, b_lab)):
        assert Counter(lab.tolist()) == {c: 2 for c in range(K)}  # every class, not the first two
        assert torch.equal(img[:, 1, 0, 0].long(), 40 * lab)  # the images are those of their labels
    assert set(a_img[:, 0, 0, 0].tolist()).isdisjoint(b_img[:, 0, 0, 0].tolist())  # reported vs tuned: disjoint
    assert set(a_img[:, 0, 0, 0].tolist()) <= ids(test)  # both from the held-out test split
    assert torch.equal(heldout_subset(job, 0)[0], a_img)  # seeded


TINY = ["--tokenizer", "msvq-tiny,vq-tiny", "--tokenizer-steps", "2", "--depth", "1", "--steps", "2",
        "--batch-size", "8", "--points", "1", "--n", "5", "--ref-n", "10", "--seeds", "0", "--extractor",
        "genorder-tiny-random", "--fid-cache", "fid", "--per-class", "1", "--workers", "1", "--threads", "1",
        "--device", "cpu", "--image-size", "16", "--orders", "raster", "--final-n", "10", "--fid-n", "5"]  # fmt: skip


def test_compare_on_a_folder_holds_out_a_split_and_scores_at_the_trained_size(tmp_path):
    data = class_sorted_folder(tmp_path / "photos", per_class=20, size=24)  # 24 px originals, trained at 16 px
    r = invoke("compare", "--dataset", data, *TINY, "--holdout", "0.2", "--out", "out")
    assert r.exit_code == 0, r.output
    assert "held-out split: 20 images (20% of each class, seed 0) kept out of training; 80 train images" in r.output
    assert "estimate:" in r.output  # the duration estimate, printed before the runs
    doc = json.loads((tmp_path / "out" / "comparison.json").read_text())
    assert doc["evaluation"]["test_split"] == {"source": "held out", "holdout": 0.2, "seed": 0, "train": 80, "test": 20}
    assert doc["fid_floor"]["image_size"] == 16  # the FID floor saw the images at the trained size
    clf = [p.name for p in (tmp_path / "fid" / "classifiers").iterdir()]
    assert clf and all("16px" in name for name in clf)  # and so did the classifier (the size in its cache key)
    # --holdout 0: no held-out split, and the run says what that means
    r = invoke("compare", "--dataset", data, *TINY, "--holdout", "0", "--out", "out0")
    assert r.exit_code == 0, r.output
    assert "no test split and none is held out" in r.output
    assert json.loads((tmp_path / "out0" / "comparison.json").read_text())["evaluation"]["test_split"]["source"] == "training images"


def test_bad_holdout_is_a_clear_error(tmp_path):
    data = class_sorted_folder(tmp_path / "photos")
    r = invoke("compare", "--dataset", data, *TINY, "--holdout", "1.5", "--out", "out")
    assert r.exit_code == 2 and "--holdout 1.5: give a fraction in [0, 1)" in r.output
    assert not (tmp_path / "out").exists()


def test_a_cpu_comparison_estimated_over_an_hour_is_refused_before_anything_is_written(tmp_path):
    data = class_sorted_folder(tmp_path / "photos")
    args = [a for a in TINY]
    args[args.index("--steps") + 1] = "100000000"  # ~1e8 steps: far over an hour at any step time
    r = invoke("compare", "--dataset", data, *args, "--out", "out")
    assert r.exit_code == 2, r.output
    assert "this CPU comparison is estimated at" in r.output and "--force" in r.output
    assert not (tmp_path / "out").exists() and not (tmp_path / "runs").exists()


def test_the_estimate_counts_every_cooldown_branch():
    from genorder.experiments.compare_estimate import CompareEstimate, branch_steps, check_compare
    from genorder.errors import UserError

    assert branch_steps(1000, 5, "wsd", 0.1) == 1000 + 20 + 40 + 60 + 80  # the branches of runs of 200..800 steps
    assert branch_steps(1000, 5, "lin0", 0.1) == 1000 and branch_steps(1000, 1, "wsd", 0.1) == 1000
    long = CompareEstimate(seconds=3601.0, device="cpu", workers=2, seeds=2)
    with pytest.raises(UserError, match="--force"):
        check_compare(long)
    check_compare(long, force=True)
    check_compare(CompareEstimate(seconds=3601.0, device="cuda", workers=1, seeds=2))  # the limit is a CPU's
