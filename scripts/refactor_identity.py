"""Issue 21's goal, measured: the default main job's comparison.json from the code before the
experiments became library code, and from the code after, are the same file (timings apart: they
live in comparison_timings.json). The new code adds one key, "regime" (the resolved regime file),
last; it is removed and the document rewritten by the same writer before hashing.

    python scripts/refactor_identity.py OLD/comparison.json NEW/comparison.json \
        --old-commit 57b65de --new-commit 9dcade5 --command "genorder compare --workers 1" \
        --json docs/results/refactor-identity.json

Writes the sha256 of both documents, whether they are equal and, when they are not, the dotted
paths where they differ, with the date and the CPU model (results are deterministic on one machine
and may differ across CPU models).
"""

from __future__ import annotations

import argparse
import datetime
import hashlib
import json
import subprocess
import sys
import tempfile
from pathlib import Path


def differences(a, b, path: str = "") -> list[str]:
    if isinstance(a, dict) and isinstance(b, dict):
        out = [f"{path}.{k}" for k in list(a) + [k for k in b if k not in a] if (k in a) != (k in b)]
        return out + [d for k in a if k in b for d in differences(a[k], b[k], f"{path}.{k}")]
    if isinstance(a, list) and isinstance(b, list) and len(a) == len(b):
        return [d for i, (x, y) in enumerate(zip(a, b)) for d in differences(x, y, f"{path}[{i}]")]
    return [] if a == b else [path or "."]


def cpu_model() -> str:
    try:
        out = subprocess.run(["lscpu"], capture_output=True, text=True, check=False).stdout
    except OSError:
        return "unknown"
    return next((ln.split(":", 1)[1].strip() for ln in out.splitlines() if ln.startswith("Model name")), "unknown")


def main(argv: list[str] | None = None) -> int:
    from genorder.runs import write_json

    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("old", type=Path)
    ap.add_argument("new", type=Path)
    ap.add_argument("--old-commit", required=True)
    ap.add_argument("--new-commit", required=True)
    ap.add_argument("--command", required=True, help="the command both ran")
    ap.add_argument("--json", type=Path, required=True)
    args = ap.parse_args(argv)
    old_bytes = args.old.read_bytes()
    new_doc = json.loads(args.new.read_text())
    regime = new_doc.pop("regime", None)
    with tempfile.TemporaryDirectory() as tmp:
        stripped = Path(tmp) / "comparison.json"
        write_json(stripped, new_doc)
        new_bytes = stripped.read_bytes()
    diff = differences(json.loads(old_bytes), new_doc)
    record = {
        "command": " ".join(["python", *sys.argv]), "compared_command": args.command,
        "date": datetime.date.today().isoformat(), "cpu_model": cpu_model(),
        "note": "results are deterministic on one machine and may differ across CPU models: both ran on this one",
        "old_commit": args.old_commit, "new_commit": args.new_commit,
        "old_sha256": hashlib.sha256(old_bytes).hexdigest(), "new_sha256": hashlib.sha256(new_bytes).hexdigest(),
        "new_extra_key": "regime" if regime is not None else None,
        "equal": old_bytes == new_bytes, "differences": diff,
    }  # fmt: skip
    args.json.parent.mkdir(parents=True, exist_ok=True)
    args.json.write_text(json.dumps(record, indent=2) + "\n")
    print(json.dumps(record, indent=2))
    return 0 if record["equal"] else 1


if __name__ == "__main__":
    sys.exit(main())
