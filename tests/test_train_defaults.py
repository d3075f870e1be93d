"""`genorder train` takes its defaults from the regime (depth, width, batch, budget, schedule, the
order's peak lr), so a user's `train` on a CPU learns; what a flag or --set gives is left alone, and
an order the regime has no rate for is told which rate it got."""

from __future__ import annotations

from genorder_cli.main import app
from helpers import one_thread
from test_compare import shapes_npz
from typer.testing import CliRunner

from genorder.regime import load_regime, regime_path
from genorder.training_run import regime_defaults


def test_defaults_come_from_the_regime_and_flags_win():
    cpu = load_regime("cpu")
    d = regime_defaults("raster", None, "cpu", {})
    assert (d.depth, d.steps, d.backbone_opts) == (cpu.backbone.depth, cpu.train.steps, {"width": 32 * cpu.backbone.depth})
    assert d.train_opts == {"batch_size": cpu.train.batch_size, "schedule": "wsd", "cooldown": cpu.train.cooldown,
                            "lr": cpu.lr.orders["raster"]} and d.notice is None  # fmt: skip
    gpu = regime_defaults("raster", None, "cuda", {})  # by device
    assert gpu.depth == 16 and gpu.backbone_opts == {} and gpu.train_opts["lr"] == load_regime("gpu").lr.default
    given = regime_defaults("raster", "cpu", "cpu", {"backbone": {"width": 80}, "train": {"lr": 1e-3, "schedule": "lin0"}},
                            depth=3, batch_size=16)  # fmt: skip
    assert given.depth == 3 and given.backbone_opts == {} and given.train_opts == {"cooldown": cpu.train.cooldown}
    assert regime_defaults("raster", "cpu", "cpu", {}, lr=1e-3).train_opts.get("lr") is None


def test_an_order_without_a_rate_gets_the_default_with_a_notice(tmp_path):
    f = tmp_path / "r.toml"
    f.write_text(regime_path("cpu").read_text().replace('"raster" = 1.6e-2', ""))  # a regime without raster's rate
    d = regime_defaults("raster", f, "cpu", {})
    assert d.train_opts["lr"] == 8e-3 and "--tune-lr" in d.notice and "raster" in d.notice


def test_train_cli_records_the_regime_defaults(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    data = shapes_npz(tmp_path / "shapes.npz")
    with one_thread():
        r = CliRunner().invoke(app, ["train", "--order", "raster", "--dataset", data, "--tokenizer", "vq-tiny",
                                     "--tokenizer-steps", "2", "--steps", "3", "--batch-size", "8", "--out", "run",
                                     "--cfg", "0"])  # fmt: skip
    assert r.exit_code == 0, r.output
    from genorder.checkpoint import read_meta

    ident = read_meta(tmp_path / "run" / "model")["identity"]
    assert ident["backbone"]["depth"] == 2 and ident["backbone"]["width"] == 64
    assert ident["train"]["lr"] == 1.6e-2 and ident["train"]["schedule"] == "wsd" and ident["train"]["batch_size"] == 8


def test_a_tokenizer_is_trained_as_the_regime_says_wherever_it_is_trained(tmp_path, monkeypatch):
    """`train-tokenizer` and the tokenizer `train` trains first use the regime's tokenizer budget, lr
    and batch (those compare uses), so `train` finds the tokenizer `train-tokenizer`'s settings
    gave in the content-keyed cache; a flag still wins."""
    import json

    from genorder.tokenizer_run import TOKENIZER_CACHE

    monkeypatch.chdir(tmp_path)
    cpu = load_regime("cpu").tokenizer
    assert regime_defaults("raster", None, "cpu", {}).tokenizer_train == {"lr": cpu.lr, "batch_size": cpu.batch_size}
    assert regime_defaults("raster", None, "cpu", {}).tokenizer_steps == cpu.steps
    data = shapes_npz(tmp_path / "shapes.npz")
    with one_thread():
        r = CliRunner().invoke(app, ["train-tokenizer", "--dataset", data, "--tokenizer", "vq-tiny", "--steps", "2", "--out", "tok"])
        assert r.exit_code == 0, r.output
        rec = json.loads((tmp_path / "tok" / "tokenizer.json").read_text())
        assert json.dumps(rec).count(f'"lr": {cpu.lr}') >= 1  # the regime's rate, not the config's 3e-4
        r = CliRunner().invoke(app, ["train", "--order", "raster", "--dataset", data, "--tokenizer", "vq-tiny", "--tokenizer-steps", "2",
                                     "--depth", "1", "--steps", "1", "--batch-size", "8", "--out", "run"])  # fmt: skip
        assert r.exit_code == 0, r.output
        cached = [json.loads(p.read_text()) for p in (tmp_path / TOKENIZER_CACHE).glob("*/cache.json")]
        assert len(cached) == 1 and json.dumps(cached[0]).count(f'"lr": {cpu.lr}') >= 1
        r = CliRunner().invoke(app, ["train-tokenizer", "--dataset", data, "--tokenizer", "vq-tiny", "--steps", "2", "--lr", "1e-3",
                                     "--out", "tok2"])  # fmt: skip
        assert r.exit_code == 0 and '"lr": 0.001' in (tmp_path / "tok2" / "tokenizer.json").read_text()
