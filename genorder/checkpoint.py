"""Checkpoints as safetensors + JSON: nothing is ever unpickled, every write is atomic.

A checkpoint is a pair of files sharing a stem, e.g. `runs/x/model.safetensors` (the tensors) and
`runs/x/model.json` (the metadata: configs, step counts, versions)::

    save_checkpoint("runs/x/model", model.state_dict(), {"step": 1000, "order": {...}})
    state, meta = load_checkpoint("runs/x/model")          # or ".../model.safetensors"

Several pairs that must change together (a model and its optimizer state) form a *checkpoint set*:
a directory written under a temporary name, closed by `manifest.json` (the step and the sha256 of
every file) and renamed into place, so a kill at any moment leaves either the old set or the new
one, never a mix::

    commit_set(parent, "step-000016", {"model": (state, meta), "optim": (...)}, {"step": 16})
    manifest = verify_set(parent / "step-000016")    # UserError when a file is missing or altered
"""

from __future__ import annotations

import errno
import json
import os
import platform
import shutil
import tempfile
from collections.abc import Callable
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

import numpy as np
import torch

from genorder.errors import UserError

FORMAT = "genorder-checkpoint/1"
SUFFIXES = (".safetensors", ".json")


def checkpoint_paths(path: str | Path) -> tuple[Path, Path]:
    """Stem, `.safetensors` or `.json` path -> (tensor file, metadata file)."""
    p = Path(path)
    if p.suffix in SUFFIXES:
        p = p.with_suffix("")
    return p.with_name(p.name + ".safetensors"), p.with_name(p.name + ".json")


def _file_mode() -> int:
    """0o666 minus the process umask: the mode a plain `open(path, "w")` would give."""
    mask = os.umask(0)
    os.umask(mask)
    return 0o666 & ~mask


# a write that fails for want of room (or a read-only disk): the user's to fix, not a crash
DISK_ERRNOS = frozenset({errno.ENOSPC, errno.EDQUOT, errno.EFBIG, errno.EROFS})


class WriteFailed(UserError):
    """A file could not be written (disk full, quota, read-only): the previous version is kept."""


def _write_failed(target: Path, reason: str) -> WriteFailed:
    return WriteFailed(f"cannot write {target}: {reason}; nothing was replaced")


def atomic_write(target: Path, write: Callable[[Path], None]) -> None:
    """Run `write(tmp)` on a temp file next to `target`, fsync it, then os.replace onto `target`.

    Readers see the old file or the new one, never a partial one; the temp file never outlives a
    failure. A disk-full (or quota, file-size, read-only) OSError becomes `WriteFailed` (a
    UserError: `error:` and exit 2 in the CLI)."""
    target.parent.mkdir(parents=True, exist_ok=True)
    try:
        fd, tmp_name = tempfile.mkstemp(dir=target.parent, prefix=f".{target.name}.", suffix=".tmp")
    except OSError as err:
        if err.errno in DISK_ERRNOS:
            raise _write_failed(target, err.strerror or str(err)) from None
        raise
    os.close(fd)
    tmp = Path(tmp_name)
    try:
        write(tmp)
        with open(tmp, "rb+") as f:
            os.fsync(f.fileno())
        os.chmod(tmp, _file_mode())
        os.replace(tmp, target)
    except BaseException as err:
        tmp.unlink(missing_ok=True)
        if isinstance(err, OSError) and err.errno in DISK_ERRNOS:
            raise _write_failed(target, err.strerror or str(err)) from None
        raise


def _save_safetensors(tensors: dict[str, torch.Tensor], path: Path) -> None:
    """safetensors' save_file, its I/O errors (a SafetensorError, not an OSError) as WriteFailed."""
    from safetensors import SafetensorError
    from safetensors.torch import save_file

    try:
        save_file(tensors, str(path), metadata={"format": "pt"})
    except SafetensorError as err:
        text = str(err)
        if "I/O error" not in text and "os error" not in text:
            raise
        raise _write_failed(path, text.split(": ", 1)[-1]) from None


def _storage_key(t: torch.Tensor) -> tuple[str, int]:
    return (str(t.device), t.untyped_storage().data_ptr())


def prepare_state(state: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """Detached, contiguous CPU tensors, each owning its whole storage (tied weights are cloned)."""
    seen: set[tuple[str, int]] = set()
    out: dict[str, torch.Tensor] = {}
    for name, tensor in state.items():
        if not isinstance(tensor, torch.Tensor):
            raise TypeError(f"checkpoint state {name!r} is a {type(tensor).__name__}, not a Tensor")
        t = tensor.detach().to("cpu").contiguous()
        key = _storage_key(t)
        partial = t.untyped_storage().nbytes() != t.nbytes
        if key in seen or partial:
            t = t.clone()
            key = _storage_key(t)
        seen.add(key)
        out[name] = t
    return out


def _json_default(obj: Any) -> Any:
    """JSON fallback for values configs commonly hold (paths, pydantic models, sets)."""
    if isinstance(obj, Path):
        return str(obj)
    if hasattr(obj, "model_dump"):
        return obj.model_dump(mode="json")
    if isinstance(obj, (set, frozenset)):
        return sorted(obj)
    raise TypeError(
        f"checkpoint metadata value of type {type(obj).__name__} is not JSON-serialisable"
    )


def _versions() -> dict[str, str]:
    import genorder

    return {
        "genorder": genorder.__version__,
        "torch": torch.__version__,
        "python": platform.python_version(),
    }


def save_checkpoint(path: str | Path, state: dict[str, torch.Tensor], meta: dict[str, Any]) -> Path:
    """Write `<stem>.safetensors` and `<stem>.json` atomically; returns the `.safetensors` path.

    `meta` is stored with `format`, `versions` and `saved_at` added (overriding same-named keys)."""
    tensor_path, meta_path = checkpoint_paths(path)
    tensors = prepare_state(state)
    saved_at = datetime.now(timezone.utc).isoformat(timespec="seconds")
    full_meta = {**meta, "format": FORMAT, "versions": _versions(), "saved_at": saved_at}
    text = json.dumps(full_meta, indent=2, sort_keys=True, default=_json_default) + "\n"
    atomic_write(tensor_path, lambda tmp: _save_safetensors(tensors, tmp))
    atomic_write(meta_path, lambda tmp: tmp.write_text(text))
    return tensor_path


def read_meta(path: str | Path) -> dict[str, Any]:
    """The metadata dict of a checkpoint (stem or either file name)."""
    _, meta_path = checkpoint_paths(path)
    if not meta_path.is_file():
        raise UserError(f"checkpoint metadata not found: {meta_path}")
    try:
        meta = json.loads(meta_path.read_text())
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as err:
        raise UserError(f"{meta_path} is not valid checkpoint metadata: {err}") from None
    if not isinstance(meta, dict) or meta.get("format") != FORMAT:
        raise UserError(f"{meta_path} is not a {FORMAT} metadata file")
    return meta


def load_checkpoint(path: str | Path) -> tuple[dict[str, torch.Tensor], dict[str, Any]]:
    """(state dict of CPU tensors, metadata) of a checkpoint (stem or either file name)."""
    from safetensors import SafetensorError
    from safetensors.torch import load_file

    tensor_path, _ = checkpoint_paths(path)
    if not tensor_path.is_file():
        raise UserError(f"checkpoint not found: {tensor_path}")
    meta = read_meta(path)
    try:
        state = load_file(str(tensor_path), device="cpu")
    except (SafetensorError, OSError, ValueError, RuntimeError) as err:
        raise UserError(f"{tensor_path} is corrupt or not a safetensors file: {err}") from None
    return state, meta


def save_npz(path: str | Path, compressed: bool = False, **arrays: np.ndarray) -> Path:
    """Write arrays to a .npz atomically (a temp file, then os.replace). The file is what np.savez
    writes, except that every member's zip timestamp is fixed (1980-01-01), so the same arrays give
    the same bytes: two runs, or any number of processes, can be compared file for file."""
    import zipfile

    method = zipfile.ZIP_DEFLATED if compressed else zipfile.ZIP_STORED

    def write(tmp: Path) -> None:
        with zipfile.ZipFile(tmp, "w", compression=method, allowZip64=True) as zf:
            for name, value in arrays.items():
                info = zipfile.ZipInfo(f"{name}.npy", date_time=(1980, 1, 1, 0, 0, 0))
                info.compress_type = method
                with zf.open(info, "w", force_zip64=True) as f:
                    np.lib.format.write_array(f, np.asanyarray(value), allow_pickle=False)

    target = Path(path)
    atomic_write(target, write)
    return target


# -- checkpoint sets: several checkpoints committed as one unit -------------------------------

MANIFEST = "manifest.json"
SET_FORMAT = "genorder-checkpoint-set/1"
TMP_PREFIX = ".tmp-"
TRASH_PREFIX = ".trash-"


def _fsync_dir(path: Path) -> None:
    try:
        fd = os.open(path, os.O_RDONLY)
    except OSError:
        return
    try:
        os.fsync(fd)
    except OSError:
        pass
    finally:
        os.close(fd)


def commit_set(
    parent: str | Path,
    name: str,
    parts: dict[str, tuple[dict[str, torch.Tensor], dict[str, Any]]],
    info: dict[str, Any],
) -> Path:
    """Write checkpoints `parts` (stem -> (state, meta)) as the directory `parent/name`, atomically.

    The files go to `parent/.tmp-<name>-XXXX/`, then `manifest.json` ({**info, files: {name:
    sha256}}) is written last and the directory renamed to `name`. An existing `name` is moved
    aside first (to `.trash-…`, then removed). Returns the committed directory."""
    from genorder.hashing import file_sha256

    parent = Path(parent)
    parent.mkdir(parents=True, exist_ok=True)
    try:
        tmp = Path(tempfile.mkdtemp(dir=parent, prefix=f"{TMP_PREFIX}{name}-"))
    except OSError as err:
        if err.errno in DISK_ERRNOS:
            raise _write_failed(parent / name, err.strerror or str(err)) from None
        raise
    try:
        for stem, (state, meta) in parts.items():
            save_checkpoint(tmp / stem, state, meta)
        files = {f.name: file_sha256(f) for f in sorted(tmp.iterdir()) if f.is_file()}
        manifest = {**info, "format": SET_FORMAT, "files": files}
        text = json.dumps(manifest, indent=2, sort_keys=True, default=_json_default) + "\n"
        atomic_write(tmp / MANIFEST, lambda t: t.write_text(text))
        _fsync_dir(tmp)
        os.chmod(tmp, 0o777 & ~_umask())
        final = parent / name
        if final.exists():
            discard(final)
        os.rename(tmp, final)
        _fsync_dir(parent)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    return final


def _umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask


def discard(path: str | Path) -> None:
    """Remove a committed set: renamed aside first (one atomic step), then deleted."""
    path = Path(path)
    aside = path.with_name(f"{TRASH_PREFIX}{path.name}-{os.getpid()}")
    os.rename(path, aside)
    shutil.rmtree(aside, ignore_errors=True)


def clean_stale(parent: str | Path) -> list[Path]:
    """Delete the temporaries a killed writer left in `parent` (unfinished or discarded sets, and
    `atomic_write` temp files); returns what was removed. Call it holding the run's lock."""
    parent = Path(parent)
    removed = []
    if not parent.is_dir():
        return removed
    for p in parent.iterdir():
        if p.name.startswith((TMP_PREFIX, TRASH_PREFIX)) or (p.name.startswith(".") and p.name.endswith(".tmp")):
            if p.is_dir():
                shutil.rmtree(p, ignore_errors=True)
            else:
                p.unlink(missing_ok=True)
            removed.append(p)
    return removed


def verify_set(path: str | Path) -> dict[str, Any]:
    """The manifest of the committed set at `path`, after checking every file it lists is there
    with the recorded sha256 (and no checkpoint file is there unlisted); UserError otherwise."""
    from genorder.hashing import file_sha256

    path = Path(path)
    mpath = path / MANIFEST
    try:
        manifest = json.loads(mpath.read_text())
    except FileNotFoundError:
        raise UserError(f"checkpoint {path} has no {MANIFEST}; it is incomplete") from None
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as err:
        raise UserError(f"checkpoint {path}: unreadable {MANIFEST}: {err}") from None
    files = manifest.get("files") if isinstance(manifest, dict) else None
    if manifest.get("format") != SET_FORMAT or not isinstance(files, dict) or not files:  # type: ignore[union-attr]
        raise UserError(f"checkpoint {path}: {MANIFEST} is not a {SET_FORMAT} manifest")
    bad = []
    for name, digest in sorted(files.items()):
        f = path / name
        if Path(name).name != name or not f.is_file():
            bad.append(f"{name} missing")
        elif file_sha256(f) != digest:
            bad.append(f"{name} altered (sha256 differs from the manifest)")
    extra = sorted(f.name for f in path.iterdir() if f.suffix in SUFFIXES and f.name not in files and f.name != MANIFEST)
    bad += [f"{name} not in the manifest" for name in extra]
    if bad:
        raise UserError(f"checkpoint {path} is damaged: " + "; ".join(bad))
    return manifest
