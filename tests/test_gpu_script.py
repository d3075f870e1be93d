"""`scripts/gpu_results.sh all --dry-run`: the one-call GPU script's whole flow on the CPU at tiny
sizes (wheels, install line, every part, the result files), and its deadline: parts that no longer
fit are recorded as skipped, and what is done is still written."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import tarfile
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
SCRIPT = ROOT / "scripts" / "gpu_results.sh"
PARTS = ["wheels", "install", "speed-eager", "speed-raster-compiled", "speed-tokens", "train-step",
         "speed-compiled", "raster-nocache", "fid-5k", "gpu-tests"]  # fmt: skip


def run_script(out: Path, *args: str, budget: int | None = None, timeout: int = 400) -> subprocess.CompletedProcess:
    env = {**os.environ, "OUT": str(out), "PYTHON": sys.executable}
    env.pop("GENORDER_CACHE_DIR", None)
    wheels = ROOT / ".whl"
    if any(wheels.glob("*.whl")):  # wheels already fetched by ../shared/device/wheels.sh: no download
        env["GPU_RESULTS_WHEELS"] = str(wheels)
    if budget is not None:
        env["GPU_RESULTS_BUDGET_S"] = str(budget)
    return subprocess.run(["bash", str(SCRIPT), *args], env=env, capture_output=True, text=True, timeout=timeout)


@pytest.fixture(scope="module")
def dry_run(tmp_path_factory):
    out = tmp_path_factory.mktemp("gpu-out")
    return out, run_script(out, "all", "--dry-run")


def test_dry_run_runs_every_part_and_writes_parseable_results(dry_run):
    out, proc = dry_run
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    status = json.loads((out / "status.json").read_text())
    assert status["dry_run"] is True
    by = {p["part"]: p for p in status["parts"]}
    expected = PARTS[1:] if any((ROOT / ".whl").glob("*.whl")) else PARTS  # no wheel step with .whl/ there
    assert list(by) == expected
    for name, p in by.items():
        assert p["rc"] == 0 and not p["timed_out"], (name, p)
    # (a) the speed table: every order and batch size timed, decode timed on its own in every row
    with tarfile.open(out / "results.tgz") as tar:
        names = set(tar.getnames())
        tokens = json.load(tar.extractfile("results/results-tokens.json"))
    rows = {"speed-tokens": tokens["rows"]}
    for name in ("speed-eager", "speed-raster", "speed-raster-compiled-b1", "speed-raster-compiled"):
        rows[name] = json.loads((out / f"{name}.json").read_text())["rows"]
    for name, rs in rows.items():
        for r in rs:
            assert r["error"] is None and r["latency_s"] > 0 and r["decode_s"] > 0 and r["images_per_s"] > 0
        want = {"speed-raster-compiled-b1": [1], "speed-raster-compiled": [2]}.get(name, [1, 2])
        assert sorted({r["batch"] for r in rs}) == want, name
    assert {r["order"] for r in rows["speed-eager"]} == {"next-scale", "maskgit"}
    assert all(r["include_decode"] for r in rows["speed-eager"])
    assert not any(r["include_decode"] for r in rows["speed-tokens"] + rows["speed-raster"])
    assert all(r["kv_cache"] and not r["static_step"] for r in rows["speed-raster"])
    assert all(r["kv_cache"] and r["static_step"] for r in rows["speed-raster-compiled"] + rows["speed-raster-compiled-b1"])
    # (b) the training step
    train = json.loads((out / "train-step.json").read_text())
    assert [(r["backend"], r["batch"]) for r in train["rows"]] == [("sdpa", 2), ("sdpa", 4)]
    for r in train["rows"]:
        assert "error" not in r and r["images_per_s"] > 0 and r["train_gflops_per_image"] > 0
    # everything else travels in results.tgz; what comes back fits the device tool's limits
    for name in ("results/results-compiled.json", "results/results-nocache.json", "results/train-step.log",
                 "results/speed-eager.png", "results/results-install-report.json", "status.jsonl"):
        assert name in names, name
    files = [p for p in out.iterdir()]
    assert len(files) <= 8 and all(p.is_file() and p.stat().st_size <= 16 * 2**20 for p in files)
    assert not any(p.name.endswith(".part") for p in files)


def test_the_deadline_skips_parts_and_still_writes_the_status(tmp_path):
    proc = run_script(tmp_path, "all", "--dry-run", budget=20, timeout=120)
    assert proc.returncode == 0, proc.stderr[-2000:]
    status = json.loads((tmp_path / "status.json").read_text())
    assert status["budget_s"] == 20
    assert status["parts"] and all(p.get("skipped") == "no time left" for p in status["parts"])
    assert (tmp_path / "results.tgz").is_file()


def test_usage_errors_exit_2(tmp_path):
    for args in ([], ["speed"], ["all", "--fast"]):
        proc = run_script(tmp_path, *args, timeout=30)
        assert proc.returncode == 2 and "usage:" in proc.stderr, args
