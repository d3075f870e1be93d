"""The docs' figures are written from the results files in docs/results/ by scripts/render_docs.py:
the committed docs equal what the script renders, every marked block has a renderer and every
renderer is used, and a changed result changes the docs (so the check can fail)."""

from __future__ import annotations

import importlib.util
import json
import re
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]


def _script():
    spec = importlib.util.spec_from_file_location("render_docs", ROOT / "scripts" / "render_docs.py")
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod


R = _script()


@pytest.mark.parametrize("path", R.DOCS, ids=lambda p: p.relative_to(ROOT).as_posix())
def test_the_docs_are_what_the_results_render(path):
    text = path.read_text()
    assert R.render(text) == text, f"{path.name} differs from docs/results/: run python scripts/render_docs.py"


def test_every_block_has_a_renderer_and_every_renderer_a_block():
    used = [name for path in R.DOCS for name in R.blocks(path.read_text())]
    assert set(used) == set(R.RENDERERS)
    # begin and end markers pair up: no block is left open (it would not be rendered)
    for path in R.DOCS:
        text = path.read_text()
        begins = re.findall(r"<!-- genorder:begin ([\w-]+) -->", text)
        assert begins == R.blocks(text) == re.findall(r"<!-- genorder:end ([\w-]+) -->", text), path.name
    for name in ("determinism", "readme-compare", "readme-ablation", "readme-scaling"):
        assert name in R.blocks((ROOT / "README.md").read_text())
    assert {"determinism", "compare-table"} <= set(R.blocks((ROOT / "docs" / "RESULTS.md").read_text()))


def test_every_results_file_names_its_command_date_and_cpu_and_the_determinism_caveat():
    for path in sorted((ROOT / "docs" / "results").glob("*.json")):
        data = json.loads(path.read_text())
        runs = data.get("runs", [data])
        assert "deterministic on one machine" in data["note"] and "CPU models" in data["note"], path.name
        for run in runs:
            assert run["command"].startswith(("genorder ", "python scripts/")) and run["date"] and run["cpu_model"], path.name
    text = (ROOT / "README.md").read_text()
    assert "deterministic on one machine and may differ across CPU models" in text
    assert "Intel Xeon" in text and "AMD EPYC" in text


def test_a_changed_result_changes_the_docs_and_the_check_fails(tmp_path, monkeypatch, capsys):
    results = tmp_path / "results"
    results.mkdir()
    for f in (ROOT / "docs" / "results").glob("*.json"):
        (results / f.name).write_text(f.read_text())
    data = json.loads((results / "compare-cpu.json").read_text())
    data["runs"][0]["orders"]["raster"]["class_acc_mean_pct"] = 12.5
    (results / "compare-cpu.json").write_text(json.dumps(data))
    readme = tmp_path / "README.md"
    readme.write_text((ROOT / "README.md").read_text())
    monkeypatch.setattr(R, "RESULTS", results)
    monkeypatch.setattr(R, "DOCS", [readme])
    monkeypatch.setattr(R, "ROOT", tmp_path)
    assert R.main(["--check"]) == 1 and "README.md" in capsys.readouterr().err
    assert "raster **71.0%**" in readme.read_text()  # --check writes nothing
    assert R.main([]) == 0
    assert "raster **12.5%**" in readme.read_text() and "75.5 / 74.5 / 12.5%" in readme.read_text()
    assert R.main(["--check"]) == 0


def test_an_unknown_block_is_an_error():
    with pytest.raises(KeyError, match="no renderer"):
        R.render("<!-- genorder:begin nonesuch -->\nx\n<!-- genorder:end nonesuch -->\n")
