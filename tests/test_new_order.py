"""`genorder new-order NAME` writes a plugin package whose order passes `genorder check` (issue 25,
item 10). The package is put on sys.path and registered through the plugin manager the way its
entry point would be (a pip install into a fresh venv is too slow for CI)."""

from __future__ import annotations

import importlib
import importlib.util
import sys

from plugin_kit import failed_checks, register_plugin
from typer.testing import CliRunner

from genorder.config import load_toml
from genorder_cli.main import app


def invoke(*args):
    return CliRunner().invoke(app, [str(a) for a in args], terminal_width=200)


def test_new_order_skeleton_passes_genorder_check(tmp_path, monkeypatch):
    r = invoke("new-order", "zig-zag", "--out", tmp_path)
    assert r.exit_code == 0, r.output
    root = tmp_path / "genorder-zig-zag"
    assert sorted(p.relative_to(root).as_posix() for p in root.rglob("*") if p.is_file()) == [
        "README.md", "genorder_zig_zag/__init__.py", "genorder_zig_zag/order.py", "pyproject.toml",
        "tests/test_zig_zag.py",
    ]  # fmt: skip
    meta = load_toml(root / "pyproject.toml")
    assert meta["project"]["name"] == "genorder-zig-zag"
    assert meta["project"]["entry-points"]["genorder"] == {"zig-zag": "genorder_zig_zag"}
    # what the entry point would load, registered the same way
    monkeypatch.syspath_prepend(str(root))
    module = importlib.import_module(meta["project"]["entry-points"]["genorder"]["zig-zag"])
    register_plugin(monkeypatch, module, "zig-zag")
    from genorder.registry import registry

    assert registry("orders").get("zig-zag").__name__ == "ZigZag"
    assert failed_checks("zig-zag") == []
    # the package's own test runs the same checks
    spec = importlib.util.spec_from_file_location("skeleton_test", root / "tests" / "test_zig_zag.py")
    skeleton_test = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(skeleton_test)
    skeleton_test.test_genorder_zig_zag_passes_genorder_check()
    sys.modules.pop("genorder_zig_zag", None)
    sys.modules.pop("genorder_zig_zag.order", None)


def test_new_order_refuses_bad_names_and_existing_folders(tmp_path):
    for bad in ("Zig", "zig_zag", "zig-", "zig--zag", "2d", ""):
        r = invoke("new-order", bad, "--out", tmp_path)
        assert r.exit_code == 2 and "error:" in r.output, (bad, r.output)
    assert list(tmp_path.iterdir()) == []  # nothing written
    assert invoke("new-order", "zig", "--out", tmp_path).exit_code == 0
    before = (tmp_path / "genorder-zig" / "genorder_zig" / "order.py").read_text()
    r = invoke("new-order", "zig", "--out", tmp_path)
    assert r.exit_code == 2 and "already exists" in r.output
    assert (tmp_path / "genorder-zig" / "genorder_zig" / "order.py").read_text() == before
    assert sorted(p.name for p in tmp_path.iterdir()) == ["genorder-zig"]  # no staging folder left
