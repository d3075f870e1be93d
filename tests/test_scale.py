"""`genorder scale`: the power-law fit recovers a known exponent, the frontier and budgets are right,
and the command at a tiny size writes one JSON line per point, skips finished points on a re-run,
and draws the figures."""

from __future__ import annotations

import json
import math
import random
from pathlib import Path

import pytest
import torch
from genorder_cli.main import app
from typer.testing import CliRunner

from genorder import scaling as S
from genorder.config import build_config
from genorder.data import render_shapes
from genorder.errors import UserError

# -- the fit -----------------------------------------------------------------------------------------


def test_fit_recovers_a_known_exponent_from_noisy_points():
    rng = random.Random(0)
    xs = [1e5 * 2**k for k in range(8)]
    ys = [7.0 * x**-0.25 * math.exp(rng.gauss(0, 0.01)) for x in xs]
    f = S.fit_power_law(xs, ys, n_boot=500, seed=0)
    assert f["b"] == pytest.approx(-0.25, abs=0.01)
    assert f["a"] == pytest.approx(7.0, rel=0.15)
    for lo, hi in (f["b_ci_t"], f["b_ci_boot"]):
        assert lo < -0.25 < hi and hi - lo < 0.03
    assert f["r"] < -0.99 and f["n"] == 8 and f["n_boot"] == 500


def test_the_regression_interval_covers_the_true_exponent_about_95_percent_of_the_time():
    xs = [1e4 * 2**k for k in range(6)]
    hits = 0
    for seed in range(300):
        rng = random.Random(seed)
        ys = [2.0 * x**-0.4 * math.exp(rng.gauss(0, 0.05)) for x in xs]
        lo, hi = S.fit_power_law(xs, ys, n_boot=0)["b_ci_t"]
        hits += lo < -0.4 < hi
    assert 0.90 <= hits / 300 <= 0.99


def test_fit_is_exact_on_exact_points_and_wider_with_noise():
    xs = [1, 2, 4, 8, 16]
    exact = S.fit_power_law(xs, [3 * x**0.5 for x in xs], n_boot=200)
    assert exact["b"] == pytest.approx(0.5, abs=1e-9) and exact["r"] == pytest.approx(1.0)
    assert exact["b_ci_t"][1] - exact["b_ci_t"][0] < 1e-6
    rng = random.Random(0)
    noisy = S.fit_power_law(xs, [3 * x**0.5 * math.exp(rng.gauss(0, 0.2)) for x in xs], n_boot=200)
    assert noisy["b_ci_t"][1] - noisy["b_ci_t"][0] > 0.05 and abs(noisy["r"]) < 1
    with pytest.raises(ValueError):
        S.fit_power_law([2, 2, 2], [1, 2, 3])
    assert S.t975(3) == pytest.approx(3.182) and S.t975(100) == 1.96


def test_frontier_keeps_only_points_no_cheaper_point_beats():
    pts = [{"order": "a", "depth": 1, "flops": 1.0, "loss": 3.0}, {"order": "b", "depth": 1, "flops": 2.0, "loss": 3.5},
           {"order": "a", "depth": 2, "flops": 4.0, "loss": 2.0}, {"order": "b", "depth": 2, "flops": 3.0, "loss": 2.5}]  # fmt: skip
    assert [(q["order"], q["depth"]) for q in S.frontier(pts)] == [("a", 1), ("b", 2), ("a", 2)]


def test_exponents_differ_only_when_intervals_do_not_overlap():
    fits = {"x": {"params": {"b": -0.3, "b_ci_boot": [-0.32, -0.28]}},
            "y": {"params": {"b": -0.1, "b_ci_boot": [-0.12, -0.08]}},
            "z": {"params": {"b": -0.29, "b_ci_boot": [-0.35, -0.2]}}}  # fmt: skip
    d = {(c["a"], c["b"]): c["differ"] for c in S.compare_exponents(fits)}
    assert d == {("x", "y"): True, ("x", "z"): False, ("y", "z"): True}


def test_budget_is_the_same_tokens_per_parameter_in_whole_steps():
    cfg = S.SweepConfig(tokens_per_param=10, batch_size=16)
    steps, images = S.plan_budget(cfg, params=1000, tokens_per_image=64)  # 10,000 tokens -> 157 images
    assert (steps, images) == (10, 160)
    steps2, _ = S.plan_budget(cfg, params=1000, tokens_per_image=128)  # twice the tokens per image
    assert steps2 == 5
    with pytest.raises(UserError, match="depths"):
        build_config(S.SweepConfig, {"depths": [1, 2]})  # a fit with an interval needs 3 sizes at least


def test_points_file_ignores_a_line_cut_off_by_a_crash(tmp_path):
    path = tmp_path / "points.jsonl"
    S.append_point(path, {"key": "a", "loss": 1.0})
    with path.open("a") as f:
        f.write('{"key": "b", "lo')
    assert S.done_keys(S.read_points(path)) == {"a"}


# -- the command at a tiny size ----------------------------------------------------------------------


def invoke(*args: str):
    return CliRunner().invoke(app, ["scale", *args], terminal_width=200)


@pytest.fixture(scope="module")
def tiny(tmp_path_factory):
    """A 16 px grey shapes .npz, the tiny tokenizer presets (trained for 3 steps by `scale` itself)."""
    import numpy as np

    root = tmp_path_factory.mktemp("scale")
    train, train_lab = render_shapes(96, 16, seed=1)
    test, test_lab = render_shapes(48, 16, seed=2)
    grey = lambda x: x.float().mean(1, keepdim=True).round().to(torch.uint8).numpy()  # noqa: E731
    np.savez(root / "grey16.npz", images=grey(train), labels=train_lab.numpy(), test_images=grey(test),
             test_labels=test_lab.numpy())  # fmt: skip
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    mp = pytest.MonkeyPatch()
    mp.chdir(root)  # the tokenizer cache (runs/tokenizers) lands here
    yield root, f"npz:{root / 'grey16.npz'}"
    mp.undo()
    torch.set_num_threads(threads)


def common(data: str, out: Path, orders: str) -> list[str]:
    return ["--dataset", data, "--orders", orders, "--depths", "1,2,3", "--width-per-depth", "16",
            "--tokens-per-param", "0.02", "--batch-size", "8", "--lr", "3e-3", "--eval-n", "24",
            "--tokenizer-multi", "msvq-tiny", "--tokenizer-single", "vq-tiny", "--tokenizer-steps", "3",
            "--bootstrap", "50", "--device", "cpu", "--out", str(out)]  # fmt: skip


def test_scale_writes_points_fits_and_figures_and_resumes(tiny):
    root, data = tiny
    out = root / "out"
    r = invoke(*common(data, out, "raster"), "--accuracy-n", "8")
    assert r.exit_code == 0, r.output
    lines = (out / "points.jsonl").read_text().splitlines()
    pts = [json.loads(x) for x in lines]
    assert [(p["order"], p["depth"], p["width"]) for p in pts] == [("raster", d, 16 * d) for d in (1, 2, 3)]
    for p in pts:
        assert p["loss"] > 0 and math.isfinite(p["loss"]) and p["eval_images"] == 24
        assert p["flops"] > 0 and p["steps"] >= 1 and p["images"] == 8 * p["steps"]
        assert p["tokens_per_image"] == 16
        # the budget: 0.02 target tokens per parameter, in whole steps of 8 images
        assert p["steps"] == max(1, math.ceil(math.ceil(0.02 * p["params"] / 16) / 8))
    assert pts[0]["params"] < pts[1]["params"] < pts[2]["params"]
    for p in pts:  # class consistency of 8 samples, scored by genorder.classifier (cached in runs/classifiers)
        acc = p["class_acc"]
        assert acc["n"] == 8 and acc["lo"] <= acc["acc"] <= acc["hi"] and p["class_error"] == pytest.approx(1 - acc["acc"])
        assert 0 < acc["classifier_test_accuracy"] <= 1
    assert list((root / "runs" / "classifiers").glob("*/classifier.safetensors"))
    rep = json.loads((out / "scaling.json").read_text())
    assert set(rep["fits"]["class_error"]) == {"raster"}
    fit = rep["fits"]["loss"]["raster"]["params"]
    assert fit["n"] == 3 and "b" in fit and fit["b_ci_t"] is not None and -1 <= fit["r"] <= 1
    assert rep["frontier"] and len(rep["points"]) == 3
    for name in ("scaling_flops.png", "scaling_params.png"):
        assert (out / name).read_bytes()[:4] == b"\x89PNG"

    # resume: the finished raster points are skipped (not retrained), maskgit's are added
    mtimes = {p: p.stat().st_mtime_ns for p in out.glob("runs/raster-*/model.safetensors")}
    assert len(mtimes) == 3
    r = invoke(*common(data, out, "raster,maskgit"), "--accuracy-n", "8")
    assert r.exit_code == 0, r.output
    assert r.output.count("already in points.jsonl, skipping") == 3
    assert {p: p.stat().st_mtime_ns for p in out.glob("runs/raster-*/model.safetensors")} == mtimes
    lines2 = (out / "points.jsonl").read_text().splitlines()
    assert lines2[:3] == lines and [json.loads(x)["order"] for x in lines2[3:]] == ["maskgit"] * 3
    rep = json.loads((out / "scaling.json").read_text())
    assert set(rep["fits"]["loss"]) == {"raster", "maskgit"} and len(rep["points"]) == 6

    # other scoring (no class accuracy): new points from the same trained models, nothing retrained
    r = invoke(*common(data, out, "raster"))
    assert r.exit_code == 0, r.output
    assert "skipping" not in r.output and "train raster" not in r.output  # scored again, not trained
    assert {p: p.stat().st_mtime_ns for p in out.glob("runs/raster-*/model.safetensors")} == mtimes
    rescored = json.loads((out / "scaling.json").read_text())["points"]
    assert [q["loss"] for q in rescored] == [p["loss"] for p in pts] and all(q["class_acc"] is None for q in rescored)

    # another budget in the same folder: new points in new run folders, nothing reused from the old ones
    args = common(data, out, "raster")
    args[args.index("--tokens-per-param") + 1] = "0.05"
    r = invoke(*args)
    assert r.exit_code == 0, r.output
    assert "skipping" not in r.output and len(list(out.glob("runs/raster-*/model.safetensors"))) == 6
    rep = json.loads((out / "scaling.json").read_text())
    assert len(rep["points"]) == 3 and {p["key"] for p in rep["points"]}.isdisjoint({p["key"] for p in pts})
    assert all(q["steps"] >= p["steps"] for q, p in zip(rep["points"], pts))


def test_two_workers_give_the_same_points(tiny):
    root, data = tiny
    r1 = invoke(*common(data, root / "w1", "raster,next-scale"))
    r2 = invoke(*common(data, root / "w2", "raster,next-scale"), "--workers", "2")
    assert r1.exit_code == 0 and r2.exit_code == 0, r1.output + r2.output
    read = lambda out: {p["key"]: (p["loss"], p["steps"], p["flops"]) for p in map(json.loads, (out / "points.jsonl").read_text().splitlines())}  # noqa: E731
    one, two = read(root / "w1"), read(root / "w2")
    assert len(one) == 6 and one == two


def test_plan_only_writes_nothing_and_bad_options_exit_2(tiny):
    root, data = tiny
    out = root / "plan"
    r = invoke(*common(data, out, "next-scale,raster"), "--plan-only")
    assert r.exit_code == 0, r.output
    assert "next-scale-d3-w48" in r.output and "to train" in r.output and not out.exists()
    for bad in (["--depths", "1,2"], ["--depths", "1,1,2"], ["--orders", "zigzag"], ["--tokens-per-param", "0"],
                ["--bootstrap", "-1"], ["--workers", "0"]):  # fmt: skip
        r = invoke(*common(data, out, "raster"), *bad)
        assert r.exit_code == 2, (bad, r.output)
        assert "error:" in r.output
    assert not out.exists()


# -- regimes -------------------------------------------------------------------------------------------


def test_a_regime_fills_what_the_options_leave_and_old_point_keys_stay():
    from genorder.experiments.scale import DEFAULTS, ScaleConfig, resolve_sweep
    from genorder.hashing import config_fingerprint
    from genorder.regime import load_regime

    plain, regime, steps = resolve_sweep(ScaleConfig(orders=["raster"]))
    assert regime is None and steps == DEFAULTS["tokenizer_steps"]
    assert (plain.width_per_depth, plain.batch_size, plain.lr, plain.eval_n) == (64, 64, 2e-3, 1000)
    assert plain.train_opts() == {"batch_size": 64, "lr": 2e-3, "seed": 0} and plain.tokenizer_train_opts() is None
    cpu = load_regime("cpu")
    swept, regime, steps = resolve_sweep(ScaleConfig(orders=["raster"], regime="cpu", lr=5e-3))
    assert regime == cpu.resolved() and steps == cpu.tokenizer.steps
    assert (swept.width_per_depth, swept.batch_size, swept.eval_n) == (32, 64, cpu.evaluation.heldout_n)
    assert swept.lr == 5e-3  # an explicit option wins over the regime
    assert swept.train_opts() == {"batch_size": 64, "lr": 5e-3, "seed": 0, "schedule": "wsd", "cooldown": 0.1}
    assert swept.tokenizer_train_opts() == {"batch_size": 32, "lr": 2e-3}
    # a sweep without a regime keeps the keys it had before the regime fields existed
    plan = S.Plan("raster", 1, 64, 1000, 64, 10, 640, 1e9)
    old_shared = plain.model_dump(mode="json", exclude={"orders", "depths", *S.EVAL_FIELDS, "schedule", "cooldown",
                                                        "tokenizer_batch", "tokenizer_lr"})  # fmt: skip
    from dataclasses import asdict

    assert S.train_key(plain, plan, {}) == config_fingerprint({"shared": old_shared, "point": asdict(plan), "context": {}})
    assert S.train_key(swept, plan, {}) != S.train_key(plain, plan, {})


def test_scale_in_a_regime_trains_its_schedule_and_records_it(tiny, tmp_path):
    _, data = tiny
    path = tmp_path / "r.toml"
    path.write_text((Path(__file__).parent / "test_ablate.py").read_text().split('TINY_REGIME = """')[1].split('"""')[0])
    out = tmp_path / "out"
    args = ["--dataset", data, "--orders", "raster", "--depths", "1,2,3", "--tokens-per-param", "0.02",
            "--tokenizer-single", "vq-tiny", "--bootstrap", "20", "--device", "cpu", "--out", str(out),
            "--regime", str(path), "--set", "train.batch_size=8", "--set", "lr.default=3e-3"]  # fmt: skip
    r = invoke(*args, "--plan-only")
    assert r.exit_code == 0 and "raster-d3-w192" in r.output and not out.exists(), r.output  # width 0: 64·d
    r = invoke(*args, "--width-per-depth", "16")
    assert r.exit_code == 0, r.output
    rep = json.loads((out / "scaling.json").read_text())
    assert rep["regime"]["train"]["batch_size"] == 8 and rep["config"]["lr"] == 3e-3
    assert rep["config"]["width_per_depth"] == 16 and rep["config"]["schedule"] == "lin0" and rep["config"]["eval_n"] == 1
    assert json.loads((out / "scale-config.json").read_text())["regime"]["lr"]["default"] == 3e-3
    assert all(p["images"] == 8 * p["steps"] and p["eval_images"] == 1 for p in rep["points"])
    for bad in (["--set", "train.batch_size=0"], ["--regime", "nowhere"]):
        r = invoke(*args, *bad)
        assert r.exit_code == 2 and "error:" in r.output, (bad, r.output)


def test_the_library_call_plans_runs_and_returns_the_fits(tiny, tmp_path):
    from genorder.executors import LocalExecutor
    from genorder.experiments.scale import ScaleConfig, ScaleResult, plan_scale, run_scale

    _, data = tiny
    config = ScaleConfig(dataset=data, orders=["raster"], depths=[1, 2, 3], width_per_depth=16, tokens_per_param=0.02,
                         batch_size=8, lr=3e-3, eval_n=24, tokenizer_single="vq-tiny", tokenizer_steps=3, bootstrap=20,
                         device="cpu", out=tmp_path / "out")  # fmt: skip
    plan = plan_scale(config)
    assert [p.name for p in plan.plans] == ["raster-d1-w16", "raster-d2-w32", "raster-d3-w48"]
    assert {plan.status(p) for p in plan.plans} == {"to train"} and not config.out.exists()
    said: list[str] = []
    res = run_scale(config, LocalExecutor(1), progress=said.append, plan=plan)
    assert isinstance(res, ScaleResult) and len(res.points) == 3 and "b" in res.fits["loss"]["raster"]["params"]
    assert json.loads((config.out / "scaling.json").read_text()) == json.loads(json.dumps(res.data()))
    assert sum("test loss" in s for s in said) == 3
    said.clear()
    again = run_scale(config, progress=said.append)
    assert sum("already in points.jsonl" in s for s in said) == 3 and again.points == res.points
