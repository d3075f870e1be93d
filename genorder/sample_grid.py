"""The sample grid a training run ends with: one row per class, written to RUN/samples.png.

A component that fails while generating it (an order's `generate()` raising: a `PluginFailure`)
does not lose the run: the failure is returned as one line, for the caller to record in
summary.json and report, so that `--resume` finds the run complete instead of repeating it.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

from genorder.data import class_balanced_labels
from genorder.images import save_grid
from genorder.registry import PluginFailure
from genorder.sampler import Sampler


def write_sample_grid(
    run,
    class_names: list[str],
    sampler: Sampler,
    seed: int,
    per_class: int,
    path: Path,
    progress: Callable[[int, int], None] | None = None,
    batch_size: int = 64,
) -> str | None:
    """Generate `per_class` images per class of `run` (a `genorder.runs.Run`) and save them as a
    grid at `path`. Returns None, or the failure of the order's own code as one line (nothing is
    written then)."""
    from genorder.sampling import generate_images

    labels = class_balanced_labels(len(class_names), len(class_names) * per_class)  # (K * per_class,)
    try:
        images = generate_images(run, labels, sampler, seed=seed, batch_size=batch_size, progress=progress)
    except PluginFailure as err:
        return str(err)
    save_grid(images, path, nrow=per_class, scale=2, labels_left=class_names)
    return None
