"""`train` writes TensorBoard event files beside log.jsonl when tensorboard is installed, with the
same loss values as the log."""

from __future__ import annotations

import json

import pytest
from genorder_cli.main import app
from helpers import one_thread
from test_compare import shapes_npz
from typer.testing import CliRunner

pytest.importorskip("tensorboard")


def test_train_writes_event_files_with_the_loss_scalars(tmp_path, monkeypatch):
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    monkeypatch.chdir(tmp_path)
    data = shapes_npz(tmp_path / "shapes.npz")
    with one_thread():
        r = CliRunner().invoke(app, ["train", "--order", "raster", "--dataset", data, "--tokenizer", "vq-tiny",
                                     "--tokenizer-steps", "2", "--depth", "1", "--steps", "5", "--batch-size", "8",
                                     "--set", "train.log_every=2", "--out", "run", "--cfg", "0"])  # fmt: skip
    assert r.exit_code == 0, r.output
    events = list((tmp_path / "run" / "tensorboard").glob("events.out.tfevents.*"))
    assert len(events) == 1
    acc = EventAccumulator(str(events[0]))
    acc.Reload()
    assert {"train/loss", "train/acc", "train/lr"} <= set(acc.Tags()["scalars"])
    logged = [json.loads(line) for line in (tmp_path / "run" / "log.jsonl").read_text().splitlines()]
    scalars = acc.Scalars("train/loss")
    assert [s.step for s in scalars] == [m["step"] for m in logged] == [1, 2, 4]
    assert [s.value for s in scalars] == pytest.approx([m["loss"] for m in logged], rel=1e-6)
