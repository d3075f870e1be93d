"""Contract checks (`genorder.testing.contracts`) for every registered tokenizer, sampler and dataset
(built-in or third-party): a plugin added through the `genorder` entry points is checked here without
new tests. Tokenizers: shape facts on the meta device (VAR's 109M-parameter preset costs nothing),
unknown options rejected, a deterministic round trip for the small ones (<= 5M parameters), and two
training steps through the core loop for trainable ones. Datasets: consistent arrays or a one-line
UserError. Also `genorder check` and `pytest --pyargs genorder.testing`."""

from __future__ import annotations

import subprocess
import sys

import pytest
from typer.testing import CliRunner

from genorder.registry import registry
from genorder.testing import NotApplicable, one_thread, run_checks, select
from genorder.testing.contracts import DATASET_CHECKS, SAMPLER_CHECKS, TOKENIZER_CHECKS


def names(kind: str) -> list[str]:
    return registry(kind).names()


def test_every_builtin_is_registered():
    assert {"msvq", "var-256", "msvq-fmnist", "vq-fmnist", "msvq-tiny", "vq-tiny"} <= set(names("tokenizers"))
    assert {"msvq-rgb32", "vq-rgb32", "msvq-rgb64", "vq-rgb64", "vq-256"} <= set(names("tokenizers"))
    assert {"fashion-mnist", "imagefolder", "npz", "shapes"} <= set(names("datasets"))


def _run(checks, check, name):
    try:
        with one_thread():
            checks[check](name)
    except NotApplicable as err:
        pytest.skip(f"not applicable: {err}")


@pytest.mark.parametrize("check", list(TOKENIZER_CHECKS))
@pytest.mark.parametrize("name", names("tokenizers"))
def test_tokenizer_contract(name, check):
    _run(TOKENIZER_CHECKS, check, name)


@pytest.mark.parametrize("name", names("samplers"))
def test_sampler_contract(name):
    _run(SAMPLER_CHECKS, "draws", name)


@pytest.mark.parametrize("name", names("datasets"))
def test_dataset_contract(name):
    _run(DATASET_CHECKS, "loads", name)


def test_selection_by_component_and_by_plugin():
    assert select("raster") == [("orders", "raster")]
    by_plugin = select("vqvae")  # the entry-point name of the built-in VQVAE plugin
    assert ("tokenizers", "msvq-fmnist") in by_plugin and all(k == "tokenizers" for k, _ in by_plugin)
    from genorder.errors import UserError

    with pytest.raises(UserError, match="no registered component"):
        select("no-such-plugin")


def test_check_command_reports_and_exits(tmp_path):
    from genorder_cli.main import app

    res = CliRunner().invoke(app, ["check", "standard"], terminal_width=200)
    assert res.exit_code == 0, res.output
    assert "draws" in res.output and "passed" in res.output
    res = CliRunner().invoke(app, ["check", "no-such-plugin"])
    assert res.exit_code == 2 and "no registered component" in res.output


def test_failed_checks_are_reported_not_raised(monkeypatch):
    import genorder.testing.contracts as c

    monkeypatch.setitem(c.CHECKS["samplers"], "draws", lambda name: (_ for _ in ()).throw(AssertionError("boom")))
    [r] = run_checks("standard")
    assert r.status == "failed" and r.message == "boom"


def test_pytest_pyargs_runs_the_kit_on_one_component(tmp_path):
    """`pytest --pyargs genorder.testing --genorder-plugin NAME` collects one item per check."""
    cmd = [sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", "--pyargs", "genorder.testing",
           "--genorder-plugin", "standard", "--rootdir", str(tmp_path)]  # fmt: skip
    out = subprocess.run(cmd, capture_output=True, text=True, cwd=tmp_path, timeout=300)
    assert out.returncode == 0, out.stdout + out.stderr
    assert "1 passed" in out.stdout
