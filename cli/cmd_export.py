"""`genorder export`: a run's latest checkpoint set as the ordinary single-file `model.safetensors`."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer
from genorder_cli.app import app, console, guarded

from genorder.dcp import export_run
from genorder.lock import RunLock


@app.command("export")
@guarded
def export(
    run: Annotated[Path, typer.Option(help="run directory (an FSDP run's sharded checkpoints are consolidated)")],
) -> None:
    """Write RUN/model.safetensors + model.json from the run's latest checkpoint set (verified
    against its manifest): a sharded (DCP) set of any world size is gathered into one file that
    `sample`, `eval` and `bench` read."""
    lock = RunLock(run)
    if run.is_dir():
        lock.acquire()
    try:
        path = export_run(run)
    finally:
        lock.release()
    console.print(f"wrote {path}")
