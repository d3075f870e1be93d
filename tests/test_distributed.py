"""Data-parallel training under torchrun, on the CPU with gloo: two processes that each take half of
every global batch follow the single-process run step for step (DDP averages the gradients, and
next-scale's per-token loss has the same token count on every rank), rank 0 alone writes the run,
and a run that would have to train its tokenizer first is refused with a clear error."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch.distributed as dist

from genorder.data import SHAPE_CLASSES, render_shapes

pytestmark = pytest.mark.skipif(not dist.is_available(), reason="torch.distributed is not built in")

GENORDER = str(Path(sys.executable).parent / "genorder")


def run(args: list[str], cwd: Path, procs: int = 1) -> subprocess.CompletedProcess:
    env = {**os.environ, "OMP_NUM_THREADS": "1", "COLUMNS": "200"}
    if procs == 1:
        cmd = [sys.executable, GENORDER, *args]
    else:
        cmd = [sys.executable, "-m", "torch.distributed.run", "--standalone", f"--nproc_per_node={procs}",
               GENORDER, *args]  # fmt: skip
    return subprocess.run(cmd, cwd=cwd, env=env, capture_output=True, text=True, timeout=600)


@pytest.fixture(scope="module")
def workdir(tmp_path_factory) -> Path:
    d = tmp_path_factory.mktemp("ddp")
    train, train_lab = render_shapes(64, 16, seed=1)
    test, test_lab = render_shapes(16, 16, seed=2)
    np.savez(d / "shapes16.npz", images=train.numpy(), labels=train_lab.numpy(), test_images=test.numpy(),
             test_labels=test_lab.numpy(), class_names=np.array(SHAPE_CLASSES))  # fmt: skip
    r = run(["train-tokenizer", "--tokenizer", "msvq-tiny", "--set", "tokenizer.channels=3", "--dataset",
             "npz:shapes16.npz", "--steps", "2", "--batch-size", "8", "--out", "tok"], d)  # fmt: skip
    assert r.returncode == 0, r.stdout + r.stderr
    return d


TRAIN = ["train", "--order", "next-scale", "--depth", "1", "--dataset", "npz:shapes16.npz", "--tokenizer",
         "tok/tokenizer", "--steps", "4", "--batch-size", "8", "--lr", "3e-3", "--device", "cpu",
         "--set", "backbone.drop_path=0", "--set", "train.log_every=1"]  # fmt: skip


def losses(run_dir: Path) -> list[float]:
    return [json.loads(line)["loss"] for line in (run_dir / "log.jsonl").read_text().splitlines()]


def test_two_processes_follow_the_single_process_run(workdir):
    one = run([*TRAIN, "--out", "runs/one"], workdir)
    assert one.returncode == 0, one.stdout + one.stderr
    two = run([*TRAIN, "--out", "runs/two"], workdir, procs=2)
    assert two.returncode == 0, two.stdout + two.stderr
    a, b = losses(workdir / "runs/one"), losses(workdir / "runs/two")
    assert len(a) == len(b) == 4
    assert np.allclose(a, b, rtol=1e-4, atol=1e-5), (a, b)
    assert a[-1] < a[0]
    s1 = json.loads((workdir / "runs/one/summary.json").read_text())["spent"]
    s2 = json.loads((workdir / "runs/two/summary.json").read_text())["spent"]
    # budgets count the global batch and all tokens, whatever the number of processes
    assert (s2["steps"], s2["images"], s2["tokens"], s2["flops"]) == (s1["steps"], s1["images"], s1["tokens"], s1["flops"])
    assert (workdir / "runs/two/samples.png").is_file() and (workdir / "runs/two/model.safetensors").is_file()
    assert two.stdout.count("done (steps)") == 1  # rank 0 alone reports


def test_a_tokenizer_is_not_trained_under_torchrun(workdir):
    r = run(["train", "--order", "raster", "--depth", "1", "--dataset", "npz:shapes16.npz", "--steps", "1",
             "--batch-size", "8", "--device", "cpu", "--out", "runs/notok"], workdir, procs=2)  # fmt: skip
    assert r.returncode != 0
    assert "under torchrun, train it first in one process" in " ".join((r.stdout + r.stderr).split())
    assert not (workdir / "runs/notok").exists() and not (workdir / "runs/tokenizers").exists()


def test_sampling_gives_the_same_npz_whatever_the_world_size(workdir):
    r = run([*TRAIN[:TRAIN.index("--steps")], "--steps", "1", *TRAIN[TRAIN.index("--steps") + 2:],
             "--out", "runs/sampled"], workdir)  # fmt: skip
    assert r.returncode == 0, r.stdout + r.stderr
    got = {}
    for procs in (1, 2):
        # 3 per class in chunks of 5: the chunks straddle classes and split unevenly over 2 processes
        r = run(["sample", "--run-dir", "runs/sampled", "--per-class", "3", "--batch-size", "5", "--cfg", "1.5",
                 "--top-k", "5", "--seed", "7", "--npz", f"s{procs}.npz", "--out", f"g{procs}.png"], workdir, procs)  # fmt: skip
        assert r.returncode == 0, r.stdout + r.stderr
        with np.load(workdir / f"s{procs}.npz") as z:
            assert sorted(z.files) == ["arr_0", "arr_1"]
            got[procs] = (z["arr_0"].copy(), z["arr_1"].copy())
    (a, la), (b, lb) = got[1], got[2]
    k = len(SHAPE_CLASSES)
    assert a.dtype == np.uint8 and a.shape == (3 * k, 16, 16, 3)  # ADM: uint8 N x H x W x 3
    assert la.tolist() == [c for c in range(k) for _ in range(3)]
    assert a.tobytes() == b.tobytes() and la.tobytes() == lb.tobytes()
    assert len({im.tobytes() for im in a}) > 1  # not one image repeated
    assert not list(workdir.glob(".s2.npz.part-*"))  # the processes' parts are removed
    assert (workdir / "s1.npz").read_bytes() == (workdir / "s2.npz").read_bytes()  # the files, byte for byte
