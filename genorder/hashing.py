"""Content identity: hashes of files, tensors, datasets and configs.

Caches (tokenizers, classifiers, FID reference statistics) and run directories are keyed by *what*
they were built from, never by a path or a name alone: the same preset trained on a dataset whose
files changed must not be reused, and a run resumed with another tokenizer must be refused.

    dataset_fingerprint(ds)        -> "sha256:…" over labels, shapes and pixel bytes
    tensors_fingerprint(state)     -> "sha256:…" over names, dtypes, shapes and bytes
    file_sha256(path)              -> "sha256:…" of a file's bytes
    config_fingerprint(obj)        -> "sha256:…" of canonical JSON
    short(h)                       -> the first 12 hex digits, for folder names
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import torch

PREFIX = "sha256:"


def _hex(h: hashlib._Hash) -> str:  # type: ignore[name-defined]
    return PREFIX + h.hexdigest()


def short(digest: str, n: int = 12) -> str:
    """'sha256:abcd…' -> 'abcd…' cut to n hex digits (for file and folder names)."""
    return digest.removeprefix(PREFIX)[:n]


def file_sha256(path: str | Path, chunk: int = 1 << 20) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        while block := f.read(chunk):
            h.update(block)
    return _hex(h)


def _update_tensor(h: Any, name: str, t: torch.Tensor) -> None:
    t = t.detach().to("cpu").contiguous()
    h.update(f"{name}|{t.dtype}|{tuple(t.shape)}|".encode())
    if t.dtype == torch.bfloat16:  # numpy has no bfloat16: hash the raw 16-bit words
        t = t.view(torch.int16)
    h.update(t.numpy().tobytes())


def tensors_fingerprint(state: Mapping[str, torch.Tensor]) -> str:
    """Hash of a state dict: sorted names, dtypes, shapes and raw bytes."""
    h = hashlib.sha256()
    for name in sorted(state):
        _update_tensor(h, name, state[name])
    return _hex(h)


def config_fingerprint(obj: Any) -> str:
    """Hash of a JSON-able object (pydantic models are dumped first), key order ignored."""
    if hasattr(obj, "model_dump"):
        obj = obj.model_dump(mode="json")
    text = json.dumps(obj, sort_keys=True, separators=(",", ":"), default=str)
    return _hex(hashlib.sha256(text.encode()))


def dataset_fingerprint(dataset: Any) -> str:
    """Hash of an in-memory dataset's content (`images` uint8 (N,C,H,W), `labels` (N,), class
    names): the same pixels and labels give the same hash whatever the path they were read from.

    Cached on the dataset object, since hashing 60,000 images takes a moment."""
    cached = getattr(dataset, "_genorder_fingerprint", None)
    if cached is not None:
        return cached
    h = hashlib.sha256()
    _update_tensor(h, "images", dataset.images)
    _update_tensor(h, "labels", dataset.labels)
    h.update(json.dumps(list(getattr(dataset, "class_names", []))).encode())
    digest = _hex(h)
    try:
        dataset._genorder_fingerprint = digest
    except AttributeError:
        pass
    return digest
