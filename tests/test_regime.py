"""Regimes are files: the shipped ones load, overrides reach any key, bad values are one error."""

import pytest

from genorder.errors import UserError
from genorder.regime import BUILTIN, load_regime


@pytest.mark.parametrize("name", BUILTIN, ids=[f"builtin{i}" for i in range(len(BUILTIN))])
def test_builtin_regimes_load(name):
    r = load_regime(name)
    assert r.name == name
    assert r.train.steps > 0 and r.evaluation.n >= 2 and r.lr.default > 0


def test_overrides_reach_nested_keys_and_lr_falls_back_to_default():
    r = load_regime("cpu", ["train.steps=7", "lr.orders.my-order=1e-3", "evaluation.fid_points=all"])
    assert r.train.steps == 7 and r.evaluation.fid_points == "all"
    assert r.lr_for("my-order") == (1e-3, "regime")
    assert r.lr_for("not-in-regime") == (r.lr.default, "default")


@pytest.mark.parametrize("bad", ["train.steps=0", "lr.default=inf", "train.nope=1", "train.schedule=cosine", "backbone=3"])
def test_bad_overrides_are_user_errors(bad):
    with pytest.raises(UserError):
        load_regime("cpu", [bad])


def test_a_regime_file_by_path(tmp_path):
    from genorder.regime import regime_path

    text = regime_path("cpu").read_text().replace('name = "cpu"', 'name = "mine"')
    p = tmp_path / "mine.toml"
    p.write_text(text)
    assert load_regime(str(p)).name == "mine"
    with pytest.raises(UserError):
        load_regime(str(tmp_path / "missing.toml"))
    (tmp_path / "bin.toml").write_bytes(b"\xff\xfe\x00bad")
    with pytest.raises(UserError):
        load_regime(str(tmp_path / "bin.toml"))
