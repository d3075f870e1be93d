"""The wsd schedule and its cool-down branches (genorder.cooldown): a branch is the run of that length."""

from __future__ import annotations

import pytest
import torch
from test_faults import _tiny_trainer

from genorder.budget import Budget
from genorder.cooldown import anneal_branch, fork_at
from genorder.trainer import TrainConfig, lr_at


def test_wsd_is_flat_at_the_peak_until_the_cooldown_then_linear_to_final_lr():
    cfg = TrainConfig(lr=1.0, warmup=0.0, schedule="wsd", cooldown=0.25, final_lr=0.1, budget=Budget(steps=100))
    assert [lr_at(cfg, p) for p in (0.0, 0.5, 0.75)] == [1.0, 1.0, 1.0]
    assert lr_at(cfg, 0.875) == pytest.approx(0.55)
    assert lr_at(cfg, 1.0) == pytest.approx(0.1)
    lin0 = TrainConfig(lr=1.0, warmup=0.0, flat=0.0, final_lr=0.1, budget=Budget(steps=100))
    assert lr_at(lin0, 0.5) == pytest.approx(0.55)  # lin0 decays over the whole run
    assert fork_at(cfg, 0.8) == pytest.approx(0.6)


def _weights(tr) -> dict[str, torch.Tensor]:
    return {k: v.detach().clone() for k, v in tr.model.state_dict().items()}


def test_a_branch_ends_with_the_weights_of_a_separate_run_of_that_length_and_leaves_the_trunk_alone(tmp_path):
    wsd = {"schedule": "wsd", "cooldown": 0.5, "warmup": 0.0, "checkpoint_every": None}
    # trunk of 10 steps; the 6-step run leaves it at 0.6 * (1 - 0.5) = 0.3, i.e. after step 3
    trunk = _tiny_trainer(tmp_path / "trunk", 10, **wsd)
    got: dict = {}

    def at_fork(frac, m):
        if m["step"] == 3:
            got["w"], got["spent"] = anneal_branch(trunk, 0.6)

    trunk.fit(progress=at_fork)
    alone = _tiny_trainer(tmp_path / "alone", 6, **wsd)
    alone.fit()
    assert got["spent"]["steps"] == 6 and got["spent"]["images"] == 24
    want = _weights(alone)
    assert all(torch.equal(got["w"][k], want[k]) for k in want)
    # the trunk went on as if no branch had been taken
    plain = _tiny_trainer(tmp_path / "plain", 10, **wsd)
    plain.fit()
    assert all(torch.equal(v, _weights(trunk)[k]) for k, v in _weights(plain).items())
    assert [m["loss"] for m in trunk.history] == [m["loss"] for m in plain.history]
    assert not all(torch.equal(got["w"][k], _weights(plain)[k]) for k in want)  # the branch is another model


def test_a_branch_needs_the_wsd_schedule(tmp_path):
    tr = _tiny_trainer(tmp_path, 4)
    with pytest.raises(ValueError, match="wsd"):
        anneal_branch(tr, 0.5)


def test_compare_points_under_wsd_are_the_ends_of_runs_of_that_length(tmp_path):
    from genorder.checkpoint import load_checkpoint
    from genorder.experiments.compare_jobs import PointSaver

    wsd = {"schedule": "wsd", "cooldown": 0.5, "warmup": 0.0, "checkpoint_every": None}
    trunk = _tiny_trainer(tmp_path / "trunk", 10, **wsd)
    saver = PointSaver(tmp_path / "trunk", points=2, anneal=True)
    trunk.fit(progress=lambda frac, m: saver(trunk, m))
    assert [p["step"] for p in saver.saved] == [5, 10] and saver.branch_seconds > 0
    for steps in (5, 10):
        alone = _tiny_trainer(tmp_path / f"alone{steps}", steps, **wsd)
        alone.fit()
        point, _ = load_checkpoint(tmp_path / "trunk" / "points" / f"step-{steps:07d}")
        assert all(torch.equal(point[k], v) for k, v in _weights(alone).items())
