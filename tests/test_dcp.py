"""Sharded, resharding checkpoints (DCP) of FSDP runs, on the CPU with gloo: a set saved by 2
processes resumes in 1 (a plain model) and in 2 (FSDP) with the losses of the uninterrupted run; a
kill -9 while a sharded set is being written leaves the last complete set, from which the run
resumes to the uninterrupted losses; `genorder export` consolidates a sharded set into the
ordinary model.safetensors that `sample` reads."""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
import torch
import torch.distributed as dist
from safetensors.torch import load_file
from test_fsdp import GENORDER, TRAIN, losses, make_lab, run

from genorder.runs import committed_checkpoints, latest_checkpoint

pytestmark = pytest.mark.skipif(not dist.is_available(), reason="torch.distributed is not built in")

FSDP = [*TRAIN, "--parallel", "fsdp"]


@pytest.fixture(scope="module")
def lab(tmp_path_factory) -> Path:
    d = make_lab(tmp_path_factory.mktemp("dcp"))
    r = run([*FSDP, "--steps", "4", "--out", "runs/ref"], d, procs=2)  # the uninterrupted run
    assert r.returncode == 0, r.stdout + r.stderr
    return d


def test_saved_at_two_resumes_at_one_and_at_two(lab):
    r = run([*FSDP, "--steps", "2", "--out", "runs/half"], lab, procs=2)
    assert r.returncode == 0, r.stdout + r.stderr
    _, manifest = latest_checkpoint(lab / "runs/half")
    assert manifest["sharded"] == "dcp/1" and manifest["world_size"] == 2
    ref = losses(lab / "runs/ref")
    for name, procs in (("at1", 1), ("at2", 2)):
        shutil.copytree(lab / "runs/half", lab / "runs" / name)
        r = run([*FSDP, "--steps", "4", "--out", f"runs/{name}", "--resume"], lab, procs=procs)
        assert r.returncode == 0, r.stdout + r.stderr
        got = losses(lab / "runs" / name)
        assert len(got) == 4 and got[:2] == ref[:2]  # the log up to the checkpoint is kept as written
        assert np.allclose(got, ref, rtol=1e-4, atol=1e-5), (name, got, ref)
        _, m = latest_checkpoint(lab / "runs" / name)
        assert m["step"] == 4 and m["world_size"] == procs  # re-saved at the new world size
    # a changed setting is still refused on a sharded run (identity check as for any run)
    r = run([*FSDP, "--steps", "4", "--set", "train.label_drop=0.5", "--out", "runs/at2", "--resume"], lab, procs=1)
    assert r.returncode == 2 and "train.label_drop" in r.stdout + r.stderr


def _writing(run_dir: Path) -> bool:
    try:
        return any(p.name.startswith(".tmp-") for p in (run_dir / "checkpoints").iterdir())
    except FileNotFoundError:
        return False


def test_kill9_during_a_sharded_save_resumes_from_the_last_complete_set(lab):
    env = {**os.environ, "OMP_NUM_THREADS": "1", "COLUMNS": "200"}
    target = lab / "runs/killed"
    caught = False
    for _attempt in range(4):
        shutil.rmtree(target, ignore_errors=True)
        cmd = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node=2", GENORDER,
               *FSDP, "--steps", "4", "--checkpoint-every", "1", "--out", "runs/killed"]  # fmt: skip
        p = subprocess.Popen(cmd, cwd=lab, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
                             start_new_session=True)  # fmt: skip
        deadline = time.monotonic() + 300
        while p.poll() is None and time.monotonic() < deadline:
            if committed_checkpoints(target) and _writing(target):  # a set exists and the next is being written
                os.killpg(p.pid, signal.SIGKILL)
                caught = True
                break
        p.wait(timeout=60)
        if caught:
            break
    assert caught, "no kill landed while a sharded set was being written"
    ((step, _),) = committed_checkpoints(target)
    assert latest_checkpoint(target)[1]["step"] == step < 4  # the complete set, verified
    assert _writing(target)  # the half-written one is still there
    r = run([*FSDP, "--steps", "4", "--checkpoint-every", "1", "--out", "runs/killed", "--resume"], lab, procs=2)
    assert r.returncode == 0, r.stdout + r.stderr
    assert not _writing(target)  # the temporary was cleaned
    assert np.allclose(losses(target), losses(lab / "runs/ref"), rtol=1e-5, atol=1e-6)
    assert [m["step"] for m in map(json.loads, (target / "log.jsonl").read_text().splitlines())] == [1, 2, 3, 4]


def test_export_consolidates_a_sharded_run(lab):
    src = lab / "runs/ref"
    published = load_file(src / "model.safetensors")
    exp = lab / "runs/exported"
    shutil.copytree(src, exp)
    for f in ("model.safetensors", "model.json"):
        (exp / f).unlink()
    r = run(["export", "--run", "runs/exported"], lab)
    assert r.returncode == 0, r.stdout + r.stderr
    got = load_file(exp / "model.safetensors")
    assert got.keys() == published.keys() and all(torch.equal(got[k], published[k]) for k in got)
    r = run(["sample", "--run", "runs/exported", "--per-class", "1", "--out", "g.png"], lab)
    assert r.returncode == 0 and (lab / "g.png").is_file(), r.stdout + r.stderr
    (lab / "empty").mkdir()
    r = run(["export", "--run", "empty"], lab)
    assert r.returncode == 2 and "error:" in r.stdout + r.stderr
