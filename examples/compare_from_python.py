"""A tiny comparison from Python, no shell: two orders on 16 px shapes, a few steps, under a minute
on a CPU. The same library call `genorder compare` makes.

    python examples/compare_from_python.py [OUT]
"""

from __future__ import annotations

import sys
from pathlib import Path

import numpy as np

from genorder.data import SHAPE_CLASSES, render_shapes
from genorder.executors import LocalExecutor
from genorder.experiments import CompareConfig, run_compare


def main(out: Path) -> None:
    out.mkdir(parents=True, exist_ok=True)
    train, train_labels = render_shapes(96, 16, seed=1)  # grey 16 px shapes with their classes
    test, test_labels = render_shapes(40, 16, seed=2)
    np.savez(out / "shapes.npz", images=train[:, :1].numpy(), labels=train_labels.numpy(),
             test_images=test[:, :1].numpy(), test_labels=test_labels.numpy(), class_names=np.array(SHAPE_CLASSES))  # fmt: skip
    config = CompareConfig.build(
        "cpu",  # the regime: sizes, budgets and per-order learning rates (genorder/regimes/cpu.toml)
        orders=["raster", "maskgit"], dataset=f"npz:{out / 'shapes.npz'}", tokenizer=["msvq-tiny", "vq-tiny"],
        tokenizer_steps=2, depth=1, steps=6, batch_size=8, points=2, n=8, final_n=16, seeds=[0], no_fid=True, per_class=2,
        fid_cache=out / "fid", out=out / "compare", device="cpu",
    )  # fmt: skip

    def progress(event) -> None:
        if event.kind == "message":
            print(event.text)

    result = run_compare(config, LocalExecutor(workers=1, threads=1), progress=progress)
    for row in result.rows:
        print(f"{row['order']:>8}: held-out loss {row['heldout_loss']:.3f}, class accuracy {100 * row['class_acc']:.0f}%")
    for path in result.write():
        print("wrote", path)


if __name__ == "__main__":
    main(Path(sys.argv[1]) if len(sys.argv) > 1 else Path("runs/compare-from-python"))
