"""`genorder ablate`: the row definitions (one budget, rows differ only where the paper's did), the
aggregation, and the `tiny` preset end to end through the CLI (train, sample, time, score, table),
its row-by-row resume and the --no-eval / --eval-only split."""

from __future__ import annotations

import json
import shutil
import sys
import types
from pathlib import Path

import pytest
import torch
from typer.testing import CliRunner

pytest.importorskip("torch_fidelity")

from genorder_cli.main import app

from genorder import ablation as A
from genorder.errors import UserError

TRAINED_FILES = ("model.safetensors", "model.json", "optim.safetensors")


def invoke(*args: str):
    """The tiny preset; one seed unless the test says otherwise (the presets default to three)."""
    seeds = [] if "--seeds" in args else ["--seeds", "0"]
    return CliRunner().invoke(app, ["ablate", "--preset", "tiny", *seeds, *args], terminal_width=200)


# -- rows and options --------------------------------------------------------------------------


def test_rows_differ_only_in_what_the_paper_changed():
    p = A.get_preset("fmnist")
    trained = [r for r in A.ROWS if r.reuses is None]
    opts = {r.id: A.train_options(r, p, seed=3) for r in trained}
    for o in opts.values():  # one budget, one optimizer, one seed
        assert o["budget"] == p.budget and o["train_opts"] == {**p.train, "seed": 3, "device": None}
    bb = {i: o["backbone_opts"] for i, o in opts.items()}
    assert (bb[1]["adaln"], bb[1]["qk_norm"]) == (False, False)
    assert bb[2] == bb[1] and opts[2]["order_name"] == "next-scale"
    assert bb[3] == {**bb[2], "adaln": True}
    assert bb[6] == {**bb[3], "qk_norm": True}
    assert bb[7] == bb[6] and opts[7]["depth"] > opts[6]["depth"]
    assert {opts[i]["depth"] for i in opts if i != 7} == {p.depth}
    assert opts[9]["order_opts"] == {"multiscale": True} and A.row_by_id(9).tokens == "multi"
    assert opts[8]["order_opts"] == {"steps": p.maskgit_steps}
    # rows 8-10 change the order or the tokenizer on row 6's recipe, nothing else
    assert bb[8] == bb[9] == bb[10] == bb[6] and {opts[i]["depth"] for i in (8, 9, 10)} == {opts[6]["depth"]}
    assert (opts[10]["order_name"], A.row_by_id(10).tokens) == (opts[1]["order_name"], A.row_by_id(1).tokens)
    assert opts[10]["order_opts"] == opts[1]["order_opts"] == {}
    with pytest.raises(ValueError):
        A.train_options(A.row_by_id(4), p, 0)  # sampling-only rows are not trained


def test_sampler_options_top_k_and_cfg():
    assert A.top_k_for(4096) == 600 and A.top_k_for(64) == 9 and A.top_k_for(2) == 1
    s = {r.id: A.sampler_options(r, 4096) for r in A.ROWS}
    assert s[3] == s[1] == {"top_k": 0, "cfg": 0.0, "cfg_schedule": "linear", "top_p": 0.0, "temperature": 1.0}
    assert s[4] == {**s[3], "top_k": 600}
    assert s[5] == s[6] == s[7] == s[8] == s[9] == s[10] == {**s[4], "cfg": 2.0}
    assert A.row_by_id(4).train_id == A.row_by_id(5).train_id == 3


def test_row_and_seed_parsing():
    assert [r.id for r in A.select_rows("all")] == list(range(1, 11))
    assert [r.id for r in A.select_rows(" 3,1 ,3")] == [1, 3]
    for bad in ("0", "11", "x", "1,-2", "", ","):
        with pytest.raises(UserError):
            A.select_rows(bad)
    assert A.parse_seeds("1,0,1") == [1, 0]
    for bad in ("", "a", "-1"):
        with pytest.raises(UserError):
            A.parse_seeds(bad)
    with pytest.raises(UserError, match="unknown ablation preset"):
        A.get_preset("imagenet")


def test_aggregate_means_stds_and_paired_deltas():
    def ev(fid):
        return {"eval": {"metrics": {"fid": fid, "kid_mean": 0.01, "precision": 0.5, "recall": 0.4}},
                "timing": {"seconds_per_image": 0.5}, "params": 10}  # fmt: skip

    results = {1: {0: ev(10.0), 1: ev(12.0)}, 2: {0: ev(4.0), 1: ev(8.0)}}
    table = A.aggregate([A.row_by_id(1), A.row_by_id(2), A.row_by_id(3)], results, [0, 1])
    r1, r2, r3 = table
    assert r1["fid"]["mean"] == 11.0 and r1["fid"]["std"] == pytest.approx(2**0.5)
    assert r2["delta_fid"]["mean"] == -5.0 and r2["delta_fid"]["std"] == pytest.approx(2**0.5)
    assert r2["cost"] == 1.0 and r2["paper_fid"] == 5.22
    assert r3["fid"]["mean"] is None and r3["seeds_evaluated"] == 0
    md = A.render_markdown(table, {"preset": "t", "command": "c", "date": "d", "device": "cpu", "seeds": [0, 1],
                                   "dataset": "x", "tokenizers": "y", "budget": {}, "train": {},
                                   "evaluation": "e"}, Path("."))  # fmt: skip
    assert "11.00 ± 1.41" in md and "-5.00 ± 1.41" in md and "| 3 | + AdaLN |" in md


# -- the tiny preset end to end -------------------------------------------------------------------


@pytest.fixture(scope="module", autouse=True)
def single_thread():
    """At these sizes threads only add synchronisation; on a shared 2-core machine two threads per
    process made the tiny pipeline several times slower than one (78 s against > 5 min, load 9)."""
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


@pytest.fixture(scope="module")
def tiny_run(tmp_path_factory, single_thread):
    root = tmp_path_factory.mktemp("ablate")
    mp = pytest.MonkeyPatch()
    mp.setenv("GENORDER_FID_CACHE", str(root / "fid-cache"))
    mp.chdir(root)  # nothing may be written outside --out and the cache
    out = root / "out"
    result = invoke("--out", str(out))
    yield root, out, result
    mp.undo()


def test_tiny_preset_writes_the_whole_table(tiny_run):
    root, out, result = tiny_run
    assert result.exit_code == 0, result.output
    md = (out / "ABLATION.md").read_text()
    for row in A.ROWS:
        assert f"| {row.id} | {row.title} |" in md
        link = f"seed0/{row.dirname}/samples.png"
        assert f"[png]({link})" in md and (out / link).is_file()
    data = json.loads((out / "ablation.json").read_text())
    assert [r["row"] for r in data["rows"]] == list(range(1, 11))
    for r in data["rows"]:
        assert r["fid"]["mean"] is not None and r["fid_ci95"] is not None
        assert r["kid_mean"]["mean"] is not None and r["precision"]["mean"] is not None
        assert r["cost"] is not None and r["params"] > 0 and r["gen_steps"] >= 1
    assert data["rows"][0]["cost"] == 1.0 and data["rows"][0]["delta_fid"]["mean"] == 0.0
    by = {r["row"]: r for r in data["rows"]}
    assert by[4]["params"] == by[3]["params"] and by[7]["params"] > by[6]["params"]
    assert by[2]["gen_steps"] == 3 and by[1]["gen_steps"] == 16 and by[9]["gen_steps"] == 21
    # rows 4 and 5 sample row 3's model; they train nothing
    for rid in (4, 5):
        d = out / "seed0" / A.row_by_id(rid).dirname
        assert not (d / "model.json").exists() and (d / "eval.json").is_file()
    ev = json.loads((out / "seed0/r5-cfg/eval.json").read_text())
    assert ev["sampler"]["cfg"] == 2.0 and ev["sampler"]["top_k"] == 9 and ev["n"] == 32 and ev["seed"] == 0
    assert sorted(p.name for p in root.iterdir()) == ["fid-cache", "out"]


def test_two_workers_give_the_same_rows(tiny_run, tmp_path, monkeypatch):
    """--workers 2 trains and scores rows in two processes: the same FID and class accuracy per row."""
    _, out, first = tiny_run
    assert first.exit_code == 0
    monkeypatch.setenv("GENORDER_FID_CACHE", str(tmp_path / "fid-cache"))
    monkeypatch.chdir(tmp_path)
    result = invoke("--out", str(tmp_path / "two"), "--seeds", "0", "--workers", "2")
    assert result.exit_code == 0, result.output
    assert "done row 7 seed 0: train and sample" in " ".join(result.output.split())
    for row in A.ROWS:
        d1, d2 = out / "seed0" / row.dirname, tmp_path / "two" / "seed0" / row.dirname
        e1, e2 = json.loads((d1 / "eval.json").read_text()), json.loads((d2 / "eval.json").read_text())
        assert e2["metrics"]["fid"] == e1["metrics"]["fid"], row.id
        c1, c2 = json.loads((d1 / "class.json").read_text()), json.loads((d2 / "class.json").read_text())
        assert (c2["acc"], c2["lo"], c2["hi"]) == (c1["acc"], c1["lo"], c1["hi"]), row.id


def test_rerun_does_not_retrain_or_rescore(tiny_run):
    root, out, first = tiny_run
    assert first.exit_code == 0
    watched = [p for p in out.glob("seed0/*/*") if p.name in (*TRAINED_FILES, "eval.json", "samples.npz")]
    watched += list(out.glob("tokenizers/*/tokenizer.safetensors"))
    before = {p: p.stat().st_mtime_ns for p in watched}
    assert len([p for p in before if p.name == "model.safetensors"]) == 8  # rows 4 and 5 sample row 3
    mp = pytest.MonkeyPatch()
    mp.setenv("GENORDER_FID_CACHE", str(root / "fid-cache"))
    try:
        result = invoke("--out", str(out))
    finally:
        mp.undo()
    assert result.exit_code == 0, result.output
    assert result.output.count("not retraining") == 8
    assert result.output.count("not re-scoring") == 10
    assert {p: p.stat().st_mtime_ns for p in watched} == before


def test_eval_only_on_a_copy_without_weights(tiny_run, tmp_path, monkeypatch):
    """The GPU -> CPU split: score samples.npz in a copy of OUT that has no .safetensors files."""
    _, out, first = tiny_run
    assert first.exit_code == 0
    copy = tmp_path / "copy"
    shutil.copytree(out, copy, ignore=shutil.ignore_patterns("*.safetensors", "eval.json", "ABLATION.md"))
    monkeypatch.setenv("GENORDER_FID_CACHE", str(tmp_path / "cache"))
    result = invoke("--out", str(copy), "--eval-only")
    assert result.exit_code == 0, result.output
    orig = json.loads((out / "ablation.json").read_text())["rows"]
    again = json.loads((copy / "ablation.json").read_text())["rows"]
    assert [r["fid"]["mean"] for r in again] == pytest.approx([r["fid"]["mean"] for r in orig], rel=1e-6)
    assert "no FID yet" not in (copy / "ABLATION.md").read_text()


def test_a_copy_without_weights_resumes_and_retrains_only_what_it_must(tiny_run, tmp_path, monkeypatch):
    """The sliced GPU workflow: OUT comes back without the rows' weights (tokenizers included)."""
    _, out, first = tiny_run
    assert first.exit_code == 0
    copy = tmp_path / "copy"
    shutil.copytree(out, copy)
    for f in copy.glob("seed*/*/*.safetensors"):
        f.unlink()
    shutil.rmtree(copy / "seed0" / "r4-top-k")  # a row that still needs row 3's model
    monkeypatch.setenv("GENORDER_FID_CACHE", str(tmp_path / "cache"))
    result = invoke("--out", str(copy))
    assert result.exit_code == 0, result.output
    text = " ".join(result.output.split())  # rich wraps long lines
    assert text.count("not retraining") == 7
    assert "row 3 seed 0: " in text and "has no weights and rows left to sample; retraining" in text
    assert (copy / "seed0/r3-adaln/model.safetensors").is_file()
    assert not (copy / "seed0/r1-raster/model.safetensors").exists()
    ev = json.loads((copy / "seed0/r4-top-k/eval.json").read_text())
    assert ev["sampler"]["top_k"] == 9


def test_no_eval_leaves_metrics_pending_and_eval_only_needs_samples(tmp_path, monkeypatch):
    monkeypatch.setenv("GENORDER_FID_CACHE", str(tmp_path / "cache"))
    out = tmp_path / "out"
    r = invoke("--out", str(out), "--rows", "2", "--eval-only")
    assert r.exit_code == 2 and "no samples to score" in r.output and not out.exists()
    r = invoke("--out", str(out), "--rows", "8", "--no-eval")
    assert r.exit_code == 0, r.output
    d = out / "seed0" / "r8-maskgit"
    assert (d / "samples.npz").is_file() and (d / "timing.json").is_file() and not (d / "eval.json").exists()
    assert "**pending**" in (out / "ABLATION.md").read_text()
    r = invoke("--out", str(out), "--rows", "8", "--images", "32")
    assert r.exit_code == 2 and "other settings (budget)" in r.output


def test_bad_options_exit_2_and_write_nothing(tmp_path):
    out = tmp_path / "out"
    for args in (["--rows", "1,12"], ["--rows", "abc"], ["--seeds", "x"], ["--no-eval", "--eval-only"], ["--n", "1"]):
        r = invoke("--out", str(out), *args)
        assert r.exit_code == 2, (args, r.output)
        assert "error:" in r.output
    r = invoke("--out", str(out), "--images", "40")  # not whole steps of 16 images
    assert r.exit_code == 2 and "whole number of steps" in r.output
    r = CliRunner().invoke(app, ["ablate", "--preset", "imagenet", "--out", str(out)])
    assert r.exit_code == 2 and "unknown ablation preset" in r.output
    assert not out.exists()


# -- seeds, budgets, intervals and the reading --------------------------------------------------------


def test_every_preset_defaults_to_three_seeds_and_a_deterministic_budget():
    import dataclasses

    for name, p in A.PRESETS.items():
        assert len(A.parse_seeds(p.seeds)) >= 3, name
        A.check_budget(p)
        assert "minutes" not in p.budget
        steps, images = A.budget_steps_images(p)
        assert steps >= 1 and images == steps * p.train["batch_size"], name
    reg = A.get_preset("fmnist-regime")
    # the ablation preset is the CPU regime written out (genorder/regimes/cpu.toml, the regime of
    # `genorder compare` on a CPU): same tokenizers trained the same way, depth, width, budget,
    # batch, schedule and learning rate, so `--regime cpu` trains exactly what the preset trains
    from genorder.experiments.ablate import FINGERPRINT
    from genorder.regime import load_regime
    from genorder.registry import registry

    cpu = load_regime("cpu")
    assert A.budget_steps_images(reg) == (cpu.train.steps, cpu.train.steps * cpu.train.batch_size)
    assert (reg.depth, reg.train["batch_size"], reg.train["lr"]) == (cpu.backbone.depth, cpu.train.batch_size, cpu.lr.default)
    assert (reg.tokenizer_steps, reg.tokenizer_batch, reg.tokenizer_lr) == (cpu.tokenizer.steps, cpu.tokenizer.batch_size, cpu.tokenizer.lr)
    assert reg.width_per_depth == cpu.backbone.width_per_depth and reg.train["cooldown"] == cpu.train.cooldown
    assert reg.train["schedule"] == cpu.train.schedule == "wsd"
    applied = A.apply_regime(reg, cpu)
    assert {k: getattr(applied, k) for k in FINGERPRINT} == {k: getattr(reg, k) for k in FINGERPRINT}
    assert applied == reg
    assert A.train_options(A.row_by_id(7), reg, 0)["backbone_opts"]["width"] == 96  # deeper and wider
    # fmnist-plateau is the same regime trained longer, nothing else
    plat = A.get_preset("fmnist-plateau")
    assert dataclasses.replace(plat, name=reg.name, budget=reg.budget, note=reg.note) == reg
    assert A.budget_steps_images(plat)[0] == 2500 > A.budget_steps_images(reg)[0]
    longer = A.apply_regime(reg, load_regime("cpu", ["train.steps=2500"]))  # `--regime cpu --set train.steps=2500`
    assert {k: getattr(longer, k) for k in FINGERPRINT} == {k: getattr(plat, k) for k in FINGERPRINT}
    multi = registry("tokenizers").create(*reg.tokenizers["multi"])
    single = registry("tokenizers").create(*reg.tokenizers["single"])
    assert tuple(multi.scales) == (1, 2, 3, 4, 6, 8) and tuple(single.scales) == (8,)

    for bad in ({"minutes": 5.0}, {"images": 100}):  # wall-clock; not whole steps of 64
        with pytest.raises(UserError):
            A.check_budget(dataclasses.replace(reg, budget=bad))


def _res(fid: float, acc: float | None = None) -> dict:
    return {"eval": {"metrics": {"fid": fid}}, "class": None if acc is None else {"acc": acc, "lo": acc, "hi": acc}}


def test_readings_give_paired_intervals_and_the_sign_against_the_paper():
    results = {
        1: {0: _res(10.0, 0.50), 1: _res(11.0, 0.55), 2: _res(12.0, 0.60)},
        2: {0: _res(5.0, 0.70), 1: _res(6.0, 0.75), 2: _res(7.0, 0.80)},  # 5 better, every seed
        3: {0: _res(6.0), 1: _res(5.0), 2: _res(8.0)},  # +1, -1, +1: cannot tell
        4: {0: _res(8.0), 1: _res(7.5), 2: _res(10.0)},  # +2, +2.5, +2: worse than row 3
    }
    by = {it["name"]: it for it in A.readings(results, [0, 1, 2])}
    ar = by["AR → VAR"]
    assert ar["fid"]["mean"] == pytest.approx(-5.0) and ar["fid"]["ci95"] == pytest.approx([-5.0, -5.0])
    assert ar["fid_verdict"] == "better: the paper's sign reproduces"
    assert ar["acc"]["mean"] == pytest.approx(0.2) and ar["acc_verdict"] == "better: the paper's sign reproduces"
    assert by["+ AdaLN"]["fid_verdict"].startswith("inconclusive") and by["+ AdaLN"]["acc_verdict"] == "not scored"
    lo, hi = by["+ AdaLN"]["fid"]["ci95"]
    assert lo < 1 / 3 < hi and hi - 1 / 3 == pytest.approx(4.303 * (4 / 3) ** 0.5 / 3**0.5)  # t(2) interval
    assert by["+ top-k"]["fid_verdict"] == "worse: the paper's sign is reversed"
    assert by["+ CFG"]["fid_verdict"] == "not scored"
    one = A.readings({10: {0: _res(10.0)}, 8: {0: _res(9.0)}}, [0])
    assert {it["name"]: it["fid_verdict"] for it in one}["MaskGIT against raster"] == "no interval (fewer than 2 seeds)"
    text = "\n".join(A.render_reading(A.readings(results, [0, 1, 2])))
    assert "**AR → VAR** (row 1 → 2" in text and "FID -5.00 [-5.00, -5.00] (n=3)" in text
    assert "class accuracy +20.00 pts [+20.00, +20.00] (n=3)" in text and "paper: FID -13.43" in text


def test_plateau_from_the_training_log(tmp_path):
    flat, falling = tmp_path / "flat.jsonl", tmp_path / "falling.jsonl"
    flat.write_text("".join(json.dumps({"step": s, "loss": 2.0 + 1.0 / s}) + "\n" for s in range(10, 401, 10)))
    falling.write_text("".join(json.dumps({"step": s, "loss": 5.0 - 0.01 * s}) + "\n" for s in range(10, 401, 10)))
    a, b = A.plateau_from_log(flat), A.plateau_from_log(falling)
    assert a["flat"] and 0 <= a["improvement"] < 0.02 and a["steps"] == 400
    assert not b["flat"] and b["improvement"] > 0.2
    assert A.plateau_from_log(tmp_path / "missing.jsonl") is None


def test_a_wsd_preset_scores_each_row_s_plateau_on_the_held_out_loss_of_annealed_runs(tmp_path, monkeypatch):
    import dataclasses

    tiny = A.get_preset("tiny")
    monkeypatch.setitem(A.PRESETS, "tiny", dataclasses.replace(tiny, budget={"images": 160}, train={**tiny.train, "schedule": "wsd"}))
    monkeypatch.setenv("GENORDER_FID_CACHE", str(tmp_path / "cache"))
    out = tmp_path / "out"
    r = invoke("--out", str(out), "--rows", "8", "--no-eval")
    assert r.exit_code == 0, r.output
    d = out / "seed0" / "r8-maskgit"
    assert sorted(f.name for f in (d / "points").glob("*.safetensors")) == ["step-0000008.safetensors", "step-0000010.safetensors"]
    pl = json.loads((d / "plateau.json").read_text())
    assert [q["step"] for q in pl["points"]] == [8, 10] and pl["kind"].startswith("held-out")
    losses = [q["heldout_loss"] for q in pl["points"]]
    assert pl["improvement"] == pytest.approx((losses[0] - losses[1]) / losses[0]) and pl["flat"] == (pl["improvement"] < 0.02)
    text = (out / "ABLATION.md").read_text()
    assert "held-out loss (500 test images) improved by < 2% from the run of 80% the length" in text
    assert f"; curve {100 * pl['improvement']:.1f}% (seeds ≤ {100 * pl['improvement']:.1f}%)" in text  # one seed: the same


def test_class_accuracy_seeds_and_reading_through_the_command(tmp_path, monkeypatch):
    """With `genorder.classifier` present (a stand-in with the shared API that always predicts class
    0), every row and seed gets class.json, and the table and the reading carry intervals over seeds."""
    calls = []
    fake = types.ModuleType("genorder.classifier")

    def load_or_train_classifier(dataset_spec, *, device="cpu", cache_root=None, progress=None):
        calls.append((dataset_spec, Path(cache_root)))
        return (lambda images: torch.zeros(len(images), dtype=torch.long)), {"test_accuracy": 0.9, "path": "x",
                                                                            "reused": False, "dataset_hash": "h"}

    def class_accuracy(classifier, images, labels, n_boot=1000, seed=0):
        hit = (classifier(images) == labels.cpu()).float()
        return {"acc": float(hit.mean()), "lo": float(hit.mean()) - 0.1, "hi": float(hit.mean()) + 0.1, "n": len(hit)}

    fake.load_or_train_classifier, fake.class_accuracy = load_or_train_classifier, class_accuracy
    monkeypatch.setitem(sys.modules, "genorder.classifier", fake)
    monkeypatch.setenv("GENORDER_FID_CACHE", str(tmp_path / "cache"))
    out = tmp_path / "out"
    r = invoke("--out", str(out), "--rows", "8,10", "--seeds", "0,1,2")
    assert r.exit_code == 0, r.output
    for seed in (0, 1, 2):
        for d in ("r10-raster-full", "r8-maskgit"):
            c = json.loads((out / f"seed{seed}" / d / "class.json").read_text())
            assert c["acc"] == 0.25 and c["n"] == 32 and c["seed"] == seed  # 8 of 32 balanced labels are class 0
    assert calls and all(root == out / "classifiers" for _, root in calls)
    data = json.loads((out / "ablation.json").read_text())
    for row in data["rows"]:
        assert row["class_acc"]["mean"] == 0.25 and row["class_acc"]["ci95"] == pytest.approx([0.25, 0.25])
        assert row["fid"]["n"] == 3 and row["fid"]["ci95"][0] <= row["fid"]["mean"] <= row["fid"]["ci95"][1]
        assert row["train_steps"] == 6 and row["train_images"] == 96 and row["plateau_seeds"][1] == 3
    mg = {it["name"]: it for it in data["readings"]}["MaskGIT against raster"]
    assert mg["fid"]["n"] == 3 and mg["acc"]["mean"] == 0 and mg["acc_verdict"].startswith("inconclusive")
    md = (out / "ABLATION.md").read_text()
    assert "## Reading, delta by delta" in md and "**MaskGIT against raster** (row 10 → 8" in md
    assert "| 25.0 ± 0.0 [25.0, 25.0] |" in md and "**pending**" not in md
    assert "classifier with 90.0% test accuracy on real images" in md
    r = invoke("--out", str(out), "--rows", "8,10", "--seeds", "0,1,2")  # nothing left to do
    assert r.exit_code == 0 and r.output.count("not retraining") == 6 and "class accuracy" not in r.output


# -- regimes ------------------------------------------------------------------------------------------

TINY_REGIME = """
name = "tiny-test"
[backbone]
depth = 1
width_per_depth = 0
[train]
steps = 4
batch_size = 16
schedule = "lin0"
cooldown = 0.1
seeds = [0]
threads = 1
[tokenizer]
steps = 20
batch_size = 16
lr = 1e-3
[evaluation]
points = 1
n = 2
ref_n = 2
heldout_n = 1
fid_points = "last"
[lr]
default = 1e-3
tune = [1e-3]
[lr.orders]
maskgit = 2e-3
"""


def test_a_regime_gives_sizes_budgets_and_rates_and_the_preset_keeps_its_evaluation():
    from genorder.regime import load_regime

    reg = A.get_preset("fmnist-regime")
    gpu = load_regime("gpu", ["train.steps=123", "lr.orders.maskgit=1e-3"])
    p = A.apply_regime(reg, gpu)
    assert (p.depth, p.deep_depth, p.width_per_depth) == (16, 17, None)  # width 0: the backbone's 64·d
    assert p.budget == {"steps": 123} and p.train["batch_size"] == 128 and p.train["lr"] == 4e-4
    assert (p.tokenizer_steps, p.tokenizer_batch, p.tokenizer_lr) == (3000, 32, 3e-4)
    assert (p.n_eval, p.ref_n, p.seeds, p.dataset, p.tokenizers) == (reg.n_eval, reg.ref_n, reg.seeds, reg.dataset, reg.tokenizers)
    # one rate for every row unless asked: then each row at its order's rate (the default where none)
    assert {A.train_options(r, p, 0)["train_opts"]["lr"] for r in A.ROWS if r.reuses is None} == {4e-4}
    per = A.apply_regime(reg, gpu, per_order_lr=True)
    lrs = {r.id: A.train_options(r, per, 0)["train_opts"]["lr"] for r in A.ROWS if r.reuses is None}
    assert lrs[8] == 1e-3 and lrs[1] == lrs[2] == 4e-4
    named = A.apply_regime(reg, load_regime("cpu", ['tokenizer.presets."single-scale"="vq-tiny"']))
    assert named.tokenizers["single"] == ("vq-tiny", {}) and named.tokenizers["multi"] == reg.tokenizers["multi"]


def test_ablate_in_a_regime_file_trains_its_budget_and_records_the_regime(tmp_path, monkeypatch):
    monkeypatch.setenv("GENORDER_FID_CACHE", str(tmp_path / "cache"))
    path = tmp_path / "tiny.toml"
    path.write_text(TINY_REGIME)
    out = tmp_path / "out"
    r = invoke("--out", str(out), "--rows", "8", "--no-eval", "--regime", str(path), "--set", "train.steps=3",
               "--per-order-lr")  # fmt: skip
    assert r.exit_code == 0, r.output
    info = json.loads((out / "seed0" / "r8-maskgit" / "row.json").read_text())
    assert (info["train_steps"], info["train_images"], info["depth"]) == (3, 48, 1)
    data = json.loads((out / "ablation.json").read_text())
    assert data["regime"]["train"]["steps"] == 3 and data["regime"]["lr"]["orders"] == {"maskgit": 2e-3}
    assert "--regime" in data["header"]["command"] and "--set train.steps=3" in data["header"]["command"]
    assert data["header"]["train"]["lr"]["maskgit"] == 2e-3
    assert json.loads((out / "ablation-config.json").read_text())["order_lr"]["maskgit"] == 2e-3
    assert "- regime: " in (out / "ABLATION.md").read_text()
    # the same OUT in another regime (another budget) is refused, and bad regimes write nothing
    r = invoke("--out", str(out), "--rows", "8", "--no-eval", "--regime", str(path), "--per-order-lr")
    assert r.exit_code == 2 and "other settings (budget)" in r.output
    fresh = tmp_path / "fresh"
    for args in (["--set", "train.steps=3"], ["--regime", "nowhere"], ["--regime", str(path), "--set", "train.steps=0"],
                 ["--regime", str(path), "--set", "train.bogus=1"], ["--per-order-lr"]):  # fmt: skip
        r = invoke("--out", str(fresh), "--rows", "8", "--no-eval", *args)
        assert r.exit_code == 2 and "error:" in r.output, (args, r.output)
    assert not fresh.exists()


# -- the library ----------------------------------------------------------------------------------------


def test_the_library_call_returns_the_table_writes_its_files_and_reports_progress(tmp_path, monkeypatch):
    from genorder.executors import LocalExecutor
    from genorder.experiments.ablate import AblateConfig, AblateResult, run_ablate

    monkeypatch.setenv("GENORDER_FID_CACHE", str(tmp_path / "cache"))
    config = AblateConfig(preset="tiny", seeds="0", rows="8", no_eval=True, out=tmp_path / "out")
    said: list[str] = []
    res = run_ablate(config, LocalExecutor(1), progress=said.append)
    assert isinstance(res, AblateResult) and [r["row"] for r in res.rows] == [8]
    assert res.rows[0]["train_steps"] == 6 and res.regime is None and "regime" not in res.data()
    on_disk = json.loads((config.out / "ablation.json").read_text())
    assert on_disk == json.loads(json.dumps(res.data()))
    assert (config.out / "ABLATION.md").read_text().startswith("# Ablation: tiny preset")
    assert said[0].startswith("ablate preset tiny") and any(s.startswith("row 8 (") for s in said)
    again: list[str] = []
    run_ablate(config, progress=again.append)  # the default executor: this process
    assert any("not retraining" in s for s in again)
    with pytest.raises(UserError, match="exclude each other"):
        run_ablate(AblateConfig(preset="tiny", no_eval=True, eval_only=True, out=tmp_path / "bad"))
    assert not (tmp_path / "bad").exists()


def test_the_experiments_do_not_import_rich():
    import subprocess

    code = ("import sys, genorder.experiments.ablate, genorder.experiments.scale; "
            "sys.exit(1 if any(m == 'rich' or m.startswith('rich.') for m in sys.modules) else 0)")  # fmt: skip
    assert subprocess.run([sys.executable, "-c", code], check=False).returncode == 0
