"""Shared by tests/test_robust.py and tests/test_fuzz.py: a tiny lab (a 16 px grey npz with 4
classes and a 2-step msvq-tiny tokenizer), in-process CLI calls, and the checks every bad-input
case makes (exit 0 or 2, an `error:` line with 2, never a traceback, nothing written outside --out).
"""

from __future__ import annotations

import hashlib
import os
from contextlib import contextmanager
from pathlib import Path

import numpy as np
import torch
from typer.testing import CliRunner

from genorder.data import render_shapes
from genorder_cli.main import app


@contextmanager
def cwd(path: Path):
    old = Path.cwd()
    os.chdir(path)
    try:
        yield
    finally:
        os.chdir(old)


def invoke(root: Path, *args: object):
    """`genorder ARGS` in this process, run from `root` (relative paths resolve there)."""
    with cwd(root):
        return CliRunner().invoke(app, [str(a) for a in args], terminal_width=200)


def text(result) -> str:
    return " ".join(result.output.split())  # rich wraps long lines


def traceback_of(result) -> str | None:
    """The uncaught exception of a CLI call (None when it exited through typer/sys.exit)."""
    exc = result.exception
    if exc is None or isinstance(exc, SystemExit):
        return None
    import traceback

    return "".join(traceback.format_exception(type(exc), exc, exc.__traceback__))


def assert_clean_error(result, *needles: str) -> None:
    """Exit 2 with an `error:` line holding every needle, and no traceback."""
    tb = traceback_of(result)
    assert tb is None, tb
    assert result.exit_code == 2, result.output
    assert "error:" in result.output and "Traceback" not in result.output, result.output
    for n in needles:
        assert n in text(result), (n, result.output)


def snapshot(folder: Path, skip: tuple[Path, ...] = ()) -> dict[str, str]:
    """relative path -> sha256 of every file under `folder`, except those under `skip`."""
    out = {}
    skip_abs = tuple(p.resolve() for p in skip)
    for p in sorted(folder.rglob("*")):
        if not p.is_file() or p.name == ".lock":
            continue
        rp = p.resolve()
        if any(rp == s or s in rp.parents for s in skip_abs):
            continue
        out[str(p.relative_to(folder))] = hashlib.sha256(p.read_bytes()).hexdigest()
    return out


def make_npz(path: Path, n: int = 64, seed: int = 1) -> Path:
    """Grey 16 px shapes, 4 classes (uint8 (N, 16, 16) + int labels)."""
    images, labels = render_shapes(n, 16, seed=seed)  # (N, 3, 16, 16) uint8
    grey = images.float().mean(dim=1).round().to(torch.uint8)  # (N, 16, 16)
    np.savez(path, images=grey.numpy(), labels=labels.numpy())
    return path


def make_lab(root: Path) -> Path:
    """root/tiny.npz and root/tok (a 2-step msvq-tiny tokenizer folder)."""
    make_npz(root / "tiny.npz")
    torch.set_num_threads(1)
    r = invoke(root, "train-tokenizer", "--tokenizer", "msvq-tiny", "--dataset", "npz:tiny.npz", "--steps", "2",
               "--batch-size", "8", "--out", "tok")  # fmt: skip
    assert r.exit_code == 0, r.output
    return root


TRAIN = ("train", "--order", "next-scale", "--depth", "1", "--dataset", "npz:tiny.npz", "--tokenizer", "tok",
         "--batch-size", "8")  # fmt: skip
