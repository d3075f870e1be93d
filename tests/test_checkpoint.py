"""Checkpoints: exact round trips, metadata, atomic writes, corrupt files, tied weights."""

from __future__ import annotations

import json

import pytest
import torch
from torch import nn

import genorder
from genorder.checkpoint import (
    FORMAT,
    checkpoint_paths,
    load_checkpoint,
    read_meta,
    save_checkpoint,
)
from genorder.errors import UserError


def sample_state() -> dict[str, torch.Tensor]:
    return {
        "w": torch.randn(4, 5),
        "half": torch.randn(3).to(torch.bfloat16),
        "ids": torch.arange(7),
        "flag": torch.tensor([True, False]),
        "transposed": torch.randn(5, 4).t(),  # non-contiguous
        "scalar": torch.tensor(3.5),
    }


def test_round_trip_exact(tmp_path):
    state = sample_state()
    out = save_checkpoint(
        tmp_path / "run" / "model", state, {"step": 10, "order": {"name": "raster"}}
    )
    assert out == tmp_path / "run" / "model.safetensors"
    assert (tmp_path / "run" / "model.json").is_file()
    for path in (tmp_path / "run" / "model", out, tmp_path / "run" / "model.json", str(out)):
        loaded, meta = load_checkpoint(path)
        assert loaded.keys() == state.keys()
        for k, v in state.items():
            assert loaded[k].dtype == v.dtype and torch.equal(loaded[k], v), k
        assert meta["step"] == 10 and meta["order"] == {"name": "raster"}


def test_meta_content(tmp_path):
    save_checkpoint(tmp_path / "m", {"x": torch.zeros(1)}, {"note": "hi", "path": tmp_path})
    meta = read_meta(tmp_path / "m.safetensors")
    assert meta["format"] == FORMAT == "genorder-checkpoint/1"
    assert meta["versions"]["genorder"] == genorder.__version__
    assert meta["versions"]["torch"] == torch.__version__
    assert meta["versions"]["python"].count(".") == 2
    assert "T" in meta["saved_at"] and meta["note"] == "hi" and meta["path"] == str(tmp_path)
    assert json.loads((tmp_path / "m.json").read_text()) == meta


def test_atomic_no_temp_files_left(tmp_path):
    save_checkpoint(tmp_path / "m", {"x": torch.ones(3)}, {})
    save_checkpoint(tmp_path / "m", {"x": torch.zeros(3)}, {"v": 2})  # overwrite in place
    assert sorted(p.name for p in tmp_path.iterdir()) == ["m.json", "m.safetensors"]
    state, meta = load_checkpoint(tmp_path / "m")
    assert torch.equal(state["x"], torch.zeros(3)) and meta["v"] == 2


def test_failed_save_leaves_nothing(tmp_path):
    with pytest.raises(TypeError):
        save_checkpoint(tmp_path / "m", {"x": torch.ones(1)}, {"bad": object()})
    assert list(tmp_path.iterdir()) == []


def test_missing_and_corrupt_files(tmp_path):
    with pytest.raises(UserError, match="not found"):
        load_checkpoint(tmp_path / "nothing")
    save_checkpoint(tmp_path / "m", {"x": torch.ones(2)}, {})
    tensors, meta_path = checkpoint_paths(tmp_path / "m")
    tensors.write_bytes(b"\x10\x00\x00\x00\x00\x00\x00\x00{not json header}")
    with pytest.raises(UserError, match="corrupt"):
        load_checkpoint(tmp_path / "m")
    meta_path.write_text("{ truncated")
    with pytest.raises(UserError, match="metadata"):
        read_meta(tmp_path / "m")
    meta_path.write_text('{"format": "something-else"}')
    with pytest.raises(UserError, match="genorder-checkpoint/1"):
        read_meta(tmp_path / "m")
    meta_path.unlink()
    with pytest.raises(UserError, match="not found"):
        load_checkpoint(tmp_path / "m")


def test_tied_and_view_tensors(tmp_path):
    emb = nn.Embedding(10, 4)
    head = nn.Linear(4, 10, bias=False)
    head.weight = emb.weight  # tied weights share storage
    model = nn.ModuleDict({"emb": emb, "head": head})
    big = torch.randn(6, 4)
    state = {**model.state_dict(), "row": big[2], "rows": big[1:3]}
    save_checkpoint(tmp_path / "tied", state, {})
    loaded, _ = load_checkpoint(tmp_path / "tied")
    assert torch.equal(loaded["emb.weight"], emb.weight) and torch.equal(
        loaded["head.weight"], emb.weight
    )
    assert torch.equal(loaded["row"], big[2]) and torch.equal(loaded["rows"], big[1:3])
    assert emb.weight.data_ptr() == head.weight.data_ptr()  # the model itself is untouched


def test_checkpoint_paths_keep_dotted_stems(tmp_path):
    assert checkpoint_paths("runs/a.v2/model.best") == (
        checkpoint_paths("runs/a.v2/model.best.json")[0],
        checkpoint_paths("runs/a.v2/model.best.safetensors")[1],
    )
    assert checkpoint_paths("x/model.best")[0].name == "model.best.safetensors"


# -- checkpoint sets ----------------------------------------------------------------------------


def test_commit_set_is_one_unit_verified_by_its_manifest(tmp_path):
    from genorder.checkpoint import clean_stale, commit_set, verify_set

    parts = {"model": ({"w": torch.ones(3)}, {"step": 2}), "optim": ({"m": torch.zeros(2)}, {"step": 2})}
    d = commit_set(tmp_path, "step-2", parts, {"step": 2})
    assert d == tmp_path / "step-2" and sorted(p.name for p in d.iterdir()) == [
        "manifest.json", "model.json", "model.safetensors", "optim.json", "optim.safetensors"]  # fmt: skip
    manifest = verify_set(d)
    assert manifest["step"] == 2 and set(manifest["files"]) == {"model.json", "model.safetensors", "optim.json", "optim.safetensors"}
    assert [p.name for p in tmp_path.iterdir()] == ["step-2"]  # no temporaries left
    (d / "optim.safetensors").write_bytes((d / "optim.safetensors").read_bytes()[:-1])
    with pytest.raises(UserError, match="optim.safetensors altered"):
        verify_set(d)
    (d / "optim.safetensors").unlink()
    with pytest.raises(UserError, match="optim.safetensors missing"):
        verify_set(d)
    (d / "manifest.json").unlink()
    with pytest.raises(UserError, match="incomplete"):
        verify_set(d)
    # what a killed writer leaves: an unfinished set and an atomic_write temp file
    (tmp_path / ".tmp-step-3-abc").mkdir()
    (tmp_path / ".tmp-step-3-abc" / "model.safetensors").write_bytes(b"partial")
    (tmp_path / ".model.json.xyz.tmp").write_text("")
    removed = clean_stale(tmp_path)
    assert len(removed) == 2 and [p.name for p in tmp_path.iterdir()] == ["step-2"]


def test_commit_set_failure_leaves_nothing(tmp_path):
    from genorder.checkpoint import commit_set

    with pytest.raises(TypeError):
        commit_set(tmp_path, "step-1", {"model": ({"w": "not a tensor"}, {})}, {"step": 1})  # type: ignore[dict-item]
    assert list(tmp_path.iterdir()) == []
