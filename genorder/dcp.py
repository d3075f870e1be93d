"""Sharded, resharding checkpoints through `torch.distributed.checkpoint` (DCP), for FSDP runs.

A sharded checkpoint set is an ordinary run checkpoint set (`genorder.runs`, committed as one unit
by the same protocol as `genorder.checkpoint.commit_set`), whose tensors are DCP files instead of
safetensors::

    checkpoints/step-<N>/
      .metadata, __0_0.distcp, __1_0.distcp, ...   DCP: {"model": FQN -> tensor, "optim": FQN-keyed
                                                   AdamW state}, each process writing its shards
      model.json                                   the run's meta (identity, spent, step), as in an
                                                   ordinary set, so `--resume` checks identity alike
      manifest.json                                step, sha256 of every file above, "sharded": "dcp/1"

Every process writes its shards into one temporary folder (`.tmp-step-N-XXXX`, named by rank 0),
rank 0 then hashes the files, writes model.json and manifest.json last and renames the folder into
place: a kill at any moment leaves the previous complete set (the temporary is removed by the next
run's `clean_run`). DCP stores each tensor's global shape and each shard's offsets, so a set saved
by W processes loads into any other number of processes (FSDP, DDP, or one plain process): it
reshards on load. After each commit rank 0 also publishes the consolidated weights as the run's
top-level `model.safetensors` + `model.json` (gathered from the shards, a collective), so `sample`,
`eval`, `bench` read an FSDP run as they read any other; `export_run` does the same offline from a
set alone (one process, no group).
"""

from __future__ import annotations

import json
import os
import shutil
import tempfile
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

import torch

from genorder.checkpoint import (
    FORMAT,
    MANIFEST,
    SET_FORMAT,
    TMP_PREFIX,
    _fsync_dir,
    _json_default,
    _umask,
    _versions,
    atomic_write,
    discard,
    read_meta,
    save_checkpoint,
)
from genorder.distributed import all_sum, from_main
from genorder.errors import UserError
from genorder.fsdp import local

SHARDED = "dcp/1"


def is_sharded(manifest: dict[str, Any]) -> bool:
    return manifest.get("sharded") == SHARDED


def _no_dist() -> bool:
    import torch.distributed as dist

    return not (dist.is_available() and dist.is_initialized())


def _write_meta(path: Path, meta: dict[str, Any]) -> None:
    saved_at = datetime.now(timezone.utc).isoformat(timespec="seconds")
    text = json.dumps({**meta, "format": FORMAT, "versions": _versions(), "saved_at": saved_at}, indent=2,
                      sort_keys=True, default=_json_default) + "\n"  # fmt: skip
    atomic_write(path, lambda tmp: tmp.write_text(text))


def _nonfinite(tree: Any, prefix: str = "") -> list[str]:
    """Names of floating tensors (this process's shards) holding a NaN or an inf."""
    if isinstance(tree, dict):
        return [n for k, v in tree.items() for n in _nonfinite(v, f"{prefix}{k}.")]
    if isinstance(tree, (list, tuple)):
        return [n for i, v in enumerate(tree) for n in _nonfinite(v, f"{prefix}{i}.")]
    if torch.is_tensor(tree):
        t = local(tree)
        if t.is_floating_point() and not torch.isfinite(t).all():
            return [prefix.rstrip(".")]
    return []


def training_state(model: torch.nn.Module, optimizer: torch.optim.Optimizer) -> dict[str, Any]:
    """{"model", "optim"}: FQN-keyed state dicts of the (possibly sharded) model and its optimizer,
    the same keys whatever the wrapping; DCP saves into it and loads from it."""
    from torch.distributed.checkpoint.state_dict import get_state_dict

    model_sd, optim_sd = get_state_dict(model, optimizer)
    return {"model": model_sd, "optim": optim_sd}


def full_model_state(model: torch.nn.Module) -> dict[str, torch.Tensor]:
    """The whole model's weights as CPU tensors on rank 0 (an empty dict elsewhere); a collective
    under FSDP (every process must call it)."""
    from torch.distributed.checkpoint.state_dict import StateDictOptions, get_model_state_dict

    return get_model_state_dict(model, options=StateDictOptions(full_state_dict=True, cpu_offload=True))


def save_sharded(trainer, final: bool = False) -> None:
    """Commit the trainer's model + optimizer + budget spent as one sharded set (every process
    calls it), then publish the consolidated top-level model.* (rank 0)."""
    import torch.distributed.checkpoint as dcp

    from genorder.runs import CHECKPOINTS, committed_checkpoints
    from genorder.trainer import TrainingDiverged

    tr, w = trainer, trainer.world
    state = training_state(tr.model, tr.optimizer)
    bad = _nonfinite(state)
    (n_bad,) = all_sum([float(len(bad))], tr.device)
    step = tr.tracker.spent.steps
    if n_bad:
        raise TrainingDiverged(
            f"refusing to checkpoint a non-finite state at step {step} ({int(n_bad)} tensors"
            + (f", e.g. {bad[0]}" if bad else "") + f"); the last good checkpoint (step {tr.saved_step}) is kept"
        )
    spent = tr.tracker.spent.as_dict()
    meta = {**tr.meta, "spent": spent, "step": step, "final": final, "train": tr.cfg.model_dump(mode="json"),
            "nonfinite": dict(tr.nonfinite), "sharded": {"format": SHARDED, "world_size": w.size}}  # fmt: skip
    root = tr.out_dir / CHECKPOINTS
    name = f"step-{step:09d}"
    tmp_name = None
    if w.main:
        root.mkdir(parents=True, exist_ok=True)
        tmp_name = tempfile.mkdtemp(dir=root, prefix=f"{TMP_PREFIX}{name}-")
    tmp = Path(from_main(tmp_name))
    try:
        dcp.save(state, checkpoint_id=str(tmp), no_dist=_no_dist())
        full = full_model_state(tr.model)  # collective; rank 0 holds it
        if w.main:
            from genorder.hashing import file_sha256

            _write_meta(tmp / "model.json", meta)
            files = {f.name: file_sha256(f) for f in sorted(tmp.iterdir()) if f.is_file()}
            manifest = {"step": step, "format": SET_FORMAT, "sharded": SHARDED, "world_size": w.size, "files": files}
            text = json.dumps(manifest, indent=2, sort_keys=True) + "\n"
            atomic_write(tmp / MANIFEST, lambda t: t.write_text(text))
            _fsync_dir(tmp)
            os.chmod(tmp, 0o777 & ~_umask())
            final_dir = root / name
            if final_dir.exists():
                discard(final_dir)
            os.rename(tmp, final_dir)
            _fsync_dir(root)
            for _, older in committed_checkpoints(tr.out_dir):
                if older != final_dir:
                    discard(older)
            save_checkpoint(tr.out_dir / "model", full, meta)  # the readers' copy (sample, eval, bench)
    except BaseException:
        if w.main and tmp.exists():
            shutil.rmtree(tmp, ignore_errors=True)
        raise
    from_main(None)  # every process waits for rank 0's commit
    tr.saved_step = step


def load_sharded(trainer, d: Path, manifest: dict[str, Any]) -> bool:
    """Load a sharded set into the trainer (any number of processes, any wrapping: DCP reshards),
    with the same checks as an ordinary resume; cut log.jsonl back to its step."""
    import torch.distributed.checkpoint as dcp
    from torch.distributed.checkpoint.state_dict import set_state_dict

    from genorder.budget import BudgetTracker, Spent
    from genorder.runs import truncate_log

    tr = trainer
    meta = read_meta(d / "model")
    state = training_state(tr.model, tr.optimizer)
    try:
        dcp.load(state, checkpoint_id=str(d), no_dist=_no_dist())
        set_state_dict(tr.model, tr.optimizer, model_state_dict=state["model"], optim_state_dict=state["optim"])
        spent = Spent(**meta["spent"])
    except (RuntimeError, ValueError, KeyError, TypeError) as err:
        first = (str(err).strip().splitlines() or ["mismatch"])[0]
        raise UserError(f"checkpoint {d} does not fit this model and optimizer: {first}") from None
    bad = _nonfinite(state)
    (n_bad,) = all_sum([float(len(bad))], tr.device)
    if n_bad:
        raise UserError(f"checkpoint {d} holds non-finite values; it cannot be resumed")
    if spent.steps != manifest["step"]:
        raise UserError(f"checkpoint {d}: model.json says step {spent.steps}, the manifest {manifest['step']}")
    tr.tracker = BudgetTracker(tr.cfg.budget, spent)
    tr.nonfinite = {"streak": 0, "total": 0, **(meta.get("nonfinite") or {})}
    tr.saved_step = spent.steps
    if tr.world.main:
        truncate_log(tr.out_dir / "log.jsonl", spent.steps)
    return True


def read_model_state(d: str | Path) -> dict[str, torch.Tensor]:
    """The full model weights of a sharded set, in one process without a group (FQN -> CPU tensor),
    read with DCP into tensors shaped from the set's own metadata."""
    import torch.distributed.checkpoint as dcp
    from torch.distributed.checkpoint import FileSystemReader
    from torch.distributed.checkpoint.metadata import TensorStorageMetadata

    reader = FileSystemReader(str(d))
    md = reader.read_metadata().state_dict_metadata
    model: dict[str, torch.Tensor] = {}
    for key, m in md.items():
        if key.startswith("model.") and isinstance(m, TensorStorageMetadata):
            model[key[len("model."):]] = torch.empty(m.size, dtype=m.properties.dtype)
    if not model:
        raise UserError(f"checkpoint {d}: its DCP metadata holds no model tensors")
    box = {"model": model}
    dcp.load(box, storage_reader=reader, no_dist=True)
    return box["model"]


def export_run(run_dir: str | Path) -> Path:
    """Write the run's top-level `model.safetensors` + `model.json` from its latest checkpoint set
    (sharded: consolidated from the DCP shards), verified against its manifest first. Returns the
    weights' path. An ordinary set is copied as `genorder.runs.publish_model` does."""
    from genorder.runs import latest_checkpoint, publish_model

    run_dir = Path(run_dir)
    found = latest_checkpoint(run_dir)
    if found is None:
        raise UserError(f"{run_dir}: no checkpoint set (checkpoints/step-N) to export")
    d, manifest = found
    if not is_sharded(manifest):
        publish_model(run_dir, d)
        return run_dir / "model.safetensors"
    state = read_model_state(d)
    return save_checkpoint(run_dir / "model", state, read_meta(d / "model"))
