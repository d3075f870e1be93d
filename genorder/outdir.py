"""Output folders: a command writes only into a folder that is new, empty, or its own kind's.

Every output folder the toolkit makes (a run of `genorder train`, a tokenizer of `genorder
train-tokenizer`) gets a marker, `.genorder.json` ({"format", "kind", "created_at"}), before
anything else is written into it. Before a command writes into an existing `--out`:

    check_out(out, "run")    # UserError naming --out unless `out` may be written as a run
    mark(out, "run")         # after taking the folder (and its lock): create it, write the marker

`check_out` lets a command write into `out` when it does not exist, is empty (a PID-only `.lock`
aside), or is a folder of that kind the toolkit wrote (`folder_kind`): by its marker or, for
folders older than markers, by what only genorder writes there (a run's `model.json` or committed
checkpoint sets; a tokenizer's `tokenizer.json`). Everything else is refused with nothing written,
so nothing the toolkit did not write is ever deleted or overwritten. The command itself decides
what it does in a folder of its own (resume a run, replace a tokenizer on --overwrite, ...).
"""

from __future__ import annotations

import json
from datetime import datetime, timezone
from pathlib import Path

from genorder.errors import UserError

MARKER = ".genorder.json"
MARKER_FORMAT = "genorder-folder/1"
RUN = "run"
TOKENIZER = "tokenizer"


def _json(path: Path) -> dict | None:
    try:
        data = json.loads(path.read_text())
    except (OSError, UnicodeDecodeError, ValueError):
        return None
    return data if isinstance(data, dict) else None


def _has_committed_set(path: Path) -> bool:
    from genorder.checkpoint import SET_FORMAT

    root = path / "checkpoints"
    try:
        dirs = [d for d in root.iterdir() if d.is_dir() and d.name.startswith("step-")]
    except OSError:
        return False
    return any((_json(d / "manifest.json") or {}).get("format") == SET_FORMAT for d in dirs)


def folder_kind(path: str | Path) -> str | None:
    """"run", "tokenizer" (or another kind a marker names) when genorder wrote `path`; else None."""
    from genorder.checkpoint import FORMAT

    p = Path(path)
    marker = _json(p / MARKER)
    if marker is not None and marker.get("format") == MARKER_FORMAT and isinstance(marker.get("kind"), str):
        return marker["kind"]
    model = _json(p / "model.json")
    if (model and model.get("format") == FORMAT and model.get("component") == "run") or _has_committed_set(p):
        return RUN
    tok = _json(p / "tokenizer.json")
    if tok and tok.get("format") == FORMAT and tok.get("component") == "tokenizer" and not (p / "model.json").exists():
        return TOKENIZER
    return None


def foreign_entries(path: str | Path) -> list[str]:
    """Names in `path` other than a PID-only `.lock` (what makes a folder not empty)."""
    from genorder.lock import LOCK_NAME, is_pid_file

    p = Path(path)
    return sorted(e.name for e in p.iterdir() if not (e.name == LOCK_NAME and is_pid_file(e)))


def is_own(path: str | Path, kind: str) -> bool:
    """`path` exists and is a `kind` folder the toolkit wrote."""
    return Path(path).is_dir() and folder_kind(path) == kind


def check_out(path: str | Path, kind: str, flag: str = "--out") -> None:
    """UserError naming `flag` unless `path` may be written as a `kind` folder (see the module
    docstring). Reads only; writes nothing."""
    p = Path(path)
    if not p.exists():
        return
    if not p.is_dir():
        raise UserError(f"{flag} {p} is a file, not a folder")
    try:
        entries = foreign_entries(p)
    except OSError as err:
        raise UserError(f"{flag} {p}: cannot read the folder ({err.strerror})") from None
    if not entries:
        return
    found = folder_kind(p)
    if found == kind:
        return
    what = f"holds a genorder {found}, not a {kind}" if found else "is not empty and was not written by genorder"
    shown = ", ".join(entries[:4]) + (f", ... ({len(entries)} entries)" if len(entries) > 4 else "")
    raise UserError(
        f"{flag} {p} {what} (it holds {shown}); nothing was written: choose a new or empty folder"
    )


def mark(path: str | Path, kind: str) -> None:
    """Create `path` (and parents) and write its marker, unless it already has one."""
    from genorder.checkpoint import atomic_write

    p = Path(path)
    p.mkdir(parents=True, exist_ok=True)
    if (p / MARKER).exists():
        return
    stamp = datetime.now(timezone.utc).isoformat(timespec="seconds")
    text = json.dumps({"format": MARKER_FORMAT, "kind": kind, "created_at": stamp}, indent=2) + "\n"
    atomic_write(p / MARKER, lambda tmp: tmp.write_text(text))
