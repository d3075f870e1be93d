"""The helpers the experiments share (training a run, training a tokenizer, scoring samples,
building a sampler, the cool-down point saver), forwarded to the library modules that define them.
Each is imported when called, so `import genorder.experiments.ablate` stays light."""

from __future__ import annotations

from typing import Any


def train_run(*args: Any, **kwargs: Any) -> dict:
    """`train_run`: one training run from options into a run folder."""
    from genorder.training_run import train_run as fn

    return fn(*args, **kwargs)


def train_tokenizer_run(*args: Any, **kwargs: Any) -> dict:
    from genorder.tokenizer_run import train_tokenizer_run as fn

    return fn(*args, **kwargs)


def resolve_tokenizer(*args: Any, **kwargs: Any):
    from genorder.tokenizer_run import resolve_tokenizer as fn

    return fn(*args, **kwargs)


def tokenizer_checkpoint(spec: str | None):
    """The checkpoint stem `spec` names, or None when it names a preset (or nothing)."""
    from genorder.training_run import is_checkpoint_spec, tokenizer_stem

    return tokenizer_stem(spec) if spec and is_checkpoint_spec(spec) else None


def check_extractor(extractor: str) -> dict:
    from genorder.scoring import check_extractor as fn

    return fn(extractor)


def score_images(*args: Any, **kwargs: Any) -> dict:
    from genorder.scoring import score_images as fn

    return fn(*args, **kwargs)


def eval_record(kind: str, metrics: dict, **fields: Any) -> dict:
    from genorder.scoring import record

    return record(kind, metrics, **fields)


def make_sampler(**options: Any):
    from genorder.training_run import make_sampler as fn

    return fn({}, **options)


def point_saver(*args: Any, **kwargs: Any):
    """compare's `PointSaver` (cool-down branches saved under points/) as an `on_step` callback."""
    from genorder.experiments.compare_jobs import PointSaver

    return PointSaver(*args, **kwargs)


def points_folder() -> str:
    from genorder.experiments.compare_jobs import POINTS

    return POINTS
