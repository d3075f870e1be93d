"""Importers: other projects' checkpoints -> a genorder run directory (safetensors + JSON).

An importer is a component like an order or a tokenizer: a class with a nested pydantic `Config`
(its sources and the facts the weights cannot tell), registered through the `register_importers`
hook. It knows a foreign format's parameter names; the core knows none. `Importer.load()` returns an
`ImportedRun` (order, tokenizer, model with the foreign weights); `write_run` writes it as a normal
run that `sample`, `eval`, `bench --run` and `edit` load with `genorder.runs.load_run`.

Foreign files are read by `read_state_dict`: `.safetensors`, or a PyTorch pickle through
`torch.load(..., weights_only=True)` (never a full unpickle), and only a flat {str: Tensor} dict is
accepted.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch

from genorder.checkpoint import save_checkpoint
from genorder.config import ComponentConfig
from genorder.errors import UserError
from genorder.hashing import file_sha256, short
from genorder.model import BackboneConfig, GenModel
from genorder.order import Order
from genorder.runs import run_meta, save_tokenizer, write_json
from genorder.tokenizer import Tokenizer


@dataclass
class ImportedRun:
    """What an importer built: everything `write_run` needs, with the foreign weights loaded."""

    order_name: str
    order: Order
    tokenizer_name: str  # registry name that rebuilds the tokenizer from its config
    tokenizer: Tokenizer
    model: GenModel
    backbone: BackboneConfig
    meta: dict[str, Any] = field(default_factory=dict)  # provenance, stored in model.json under "imported"


class Importer(ABC):
    Config: type[ComponentConfig]

    def __init__(self, config: ComponentConfig) -> None:
        self.config = config

    @abstractmethod
    def load(self) -> ImportedRun:
        """Read the sources named in the config; raise `UserError` on anything unexpected."""


def read_state_dict(path: str | Path, prefix: str = "") -> dict[str, torch.Tensor]:
    """A flat {name: tensor} dict from `.safetensors` or a PyTorch pickle (`weights_only=True`).

    With `prefix`, only the names that start with it are kept, without it (a file holding several
    state dicts, e.g. `vae.` and `var.`). Anything but a flat str -> Tensor dict is a `UserError`."""
    p = Path(path)
    if not p.is_file():
        raise UserError(f"{p}: file not found")
    if p.suffix == ".safetensors":
        from safetensors import SafetensorError
        from safetensors.torch import load_file

        try:
            obj: Any = load_file(str(p), device="cpu")
        except (SafetensorError, OSError, ValueError, RuntimeError) as err:
            raise UserError(f"{p}: not a readable safetensors file: {err}") from None
    else:
        import pickle

        try:
            obj = torch.load(p, map_location="cpu", weights_only=True)
        except (pickle.UnpicklingError, RuntimeError, EOFError, OSError, ValueError, AttributeError) as err:
            first = str(err).strip().splitlines()[0] if str(err).strip() else type(err).__name__
            raise UserError(f"{p}: not a plain state dict (refused by torch.load(weights_only=True): {first})") from None
    if not isinstance(obj, dict):
        raise UserError(f"{p}: holds a {type(obj).__name__}, not a state dict")
    for k, v in obj.items():
        if not isinstance(k, str):
            raise UserError(f"{p}: key {k!r} is not a string; not a flat state dict")
        if not isinstance(v, torch.Tensor):
            hint = " (a nested dict: pass the inner state dict)" if isinstance(v, dict) else ""
            raise UserError(f"{p}: {k!r} holds a {type(v).__name__}, not a tensor{hint}")
    if prefix:
        obj = {k[len(prefix):]: v for k, v in obj.items() if k.startswith(prefix)}
        if not obj:
            raise UserError(f"{p}: no tensor name starts with {prefix!r}")
    return obj


def map_state(
    state: Mapping[str, torch.Tensor],
    ours: Mapping[str, torch.Tensor],
    official_name: Callable[[str], str | None],
    source: str,
    used: set[str] | None = None,
) -> dict[str, torch.Tensor]:
    """Fill every tensor of `ours` (a model's state dict) from `state` (the official names): each
    name maps through `official_name` (None: keep ours, e.g. a buffer the release does not store),
    must exist with the same shape, and is cast to our dtype. Every key of `state` must be used
    (by the mapping, or listed in `used` by the caller); otherwise a `UserError` names the first
    offenders."""
    used = set(used or ())
    new: dict[str, torch.Tensor] = {}
    for name, t in ours.items():
        off = official_name(name)
        if off is None:
            new[name] = t
            continue
        if off not in state:
            raise UserError(f"{source}: missing key {off!r} (needed for {name})")
        src = state[off]
        if tuple(src.shape) != tuple(t.shape):
            raise UserError(f"{source}: {off} has shape {tuple(src.shape)}, expected {tuple(t.shape)}")
        new[name] = src.to(t.dtype)
        used.add(off)
    extra = sorted(set(state) - used)
    if extra:
        more = f" (+{len(extra) - 3} more)" if len(extra) > 3 else ""
        raise UserError(f"{source}: unexpected key(s) {', '.join(repr(k) for k in extra[:3])}{more}")
    return new


def source_record(path: str | Path, prefix: str = "") -> dict[str, str]:
    """Provenance of one source file for the run's metadata."""
    return {"path": str(path), "prefix": prefix, "sha256": short(file_sha256(path), 16)}


def write_run(imported: ImportedRun, out: str | Path, importer_name: str, **extra_meta: Any) -> Path:
    """Write an imported model as a run directory: model.safetensors/.json, tokenizer.safetensors/.json
    and summary.json (no optimizer state: it cannot be resumed, only sampled, evaluated, benched and
    edited). Refuses a directory that already holds a run."""
    from genorder.model import count_params
    from genorder.outdir import RUN, check_out, mark

    out = Path(out)
    if (out / "model.json").exists():
        raise UserError(f"{out} already holds a run; choose another --out")
    check_out(out, RUN)  # a folder genorder did not write (or a tokenizer's) is refused, untouched
    mark(out, RUN)
    save_tokenizer(imported.tokenizer, imported.tokenizer_name, out / "tokenizer")
    layout = imported.order.layout(imported.tokenizer)
    meta = run_meta(
        imported.order_name, imported.order, imported.backbone, imported.model,
        layout=list(layout.scales), imported={"importer": importer_name, **imported.meta}, **extra_meta,
    )
    save_checkpoint(out / "model", imported.model.state_dict(), meta)
    write_json(out / "summary.json", {"order": imported.order_name, "params": count_params(imported.model),
                                      "depth": imported.backbone.depth, "imported": meta["imported"]})
    return out
