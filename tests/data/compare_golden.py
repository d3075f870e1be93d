"""The tiny comparison whose comparison.json is kept as tests/data/compare_golden.json: written once
by the code before `genorder.experiments` existed (issue 21), so that tests can show the library
gives the same document, byte for byte, on the machine that made it.

Issue 22 added `--final-n 16 --fid-n 8` (flags the old code did not have): the paired design's size
at the last point, and the Inception FID's n kept at the old `--n 8`, so every field the old code
wrote with the same meaning (held-out losses, FID, tokenizers, lr, ...) keeps its old value.
compare_golden_balanced.json is the whole document (without "regime") the current code writes.

    python tests/data/compare_golden.py DIR [GENORDER]   # writes DIR/shapes.npz, runs compare in DIR
"""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import numpy as np

ARGS = ["compare", "--dataset", "npz:shapes.npz", "--tokenizer", "msvq-tiny,vq-tiny", "--tokenizer-steps", "2",
        "--depth", "1", "--steps", "4", "--batch-size", "8", "--points", "2", "--n", "8", "--final-n", "16", "--fid-n", "8", "--ref-n", "16",
        "--seeds", "0,1", "--extractor", "genorder-tiny-random", "--fid-cache", "fid", "--per-class", "1",
        "--workers", "1", "--threads", "1", "--device", "cpu", "--out", "out"]  # fmt: skip


def write_npz(path: Path) -> None:
    from genorder.data import SHAPE_CLASSES, render_shapes

    train, train_lab = render_shapes(96, 16, seed=1)
    test, test_lab = render_shapes(40, 16, seed=2)
    np.savez(path, images=train[:, :1].numpy(), labels=train_lab.numpy(), test_images=test[:, :1].numpy(),
             test_labels=test_lab.numpy(), class_names=np.array(SHAPE_CLASSES))  # fmt: skip


if __name__ == "__main__":
    root = Path(sys.argv[1])
    root.mkdir(parents=True, exist_ok=True)
    write_npz(root / "shapes.npz")
    exe = sys.argv[2] if len(sys.argv) > 2 else "genorder"
    subprocess.run([exe, *ARGS], cwd=root, check=True)
