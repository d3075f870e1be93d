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
            raise UserError(f"{p}: not a readable safetensors file: {_first_line(err)}") from None
        except Exception as err:  # noqa: BLE001 -- untrusted bytes: whatever the parser raises, the file is unreadable
            raise UserError(f"{p}: not a readable safetensors file: {type(err).__name__}: {_first_line(err)}") from None
    else:
        try:
            obj = torch.load(p, map_location="cpu", weights_only=True)
        except MemoryError:
            raise UserError(f"{p}: not a plain state dict (it declares more data than fits in memory)") from None
        except Exception as err:  # noqa: BLE001 -- untrusted bytes (damaged, forged, fuzzed): any parser error means unreadable
            raise UserError(f"{p}: not a plain state dict (refused by torch.load(weights_only=True): "
                            f"{type(err).__name__}: {_first_line(err)})") from None  # fmt: skip
    if not isinstance(obj, dict):
        raise UserError(f"{p}: holds a {type(obj).__name__}, not a state dict")
    for k, v in obj.items():
        if not isinstance(k, str):
            raise UserError(f"{p}: key {k!r} is not a string; not a flat state dict")
        if not isinstance(v, torch.Tensor):
            hint = " (a nested dict: pass the inner state dict)" if isinstance(v, dict) else ""
            raise UserError(f"{p}: {k!r} holds a {type(v).__name__}, not a tensor{hint}")
        _check_plain_tensor(v, f"{p}: {k!r}")
    if prefix:
        obj = {k[len(prefix):]: v for k, v in obj.items() if k.startswith(prefix)}
        if not obj:
            raise UserError(f"{p}: no tensor name starts with {prefix!r}")
    return obj


def _first_line(err: BaseException) -> str:
    text = str(err).strip()
    return text.splitlines()[0][:300] if text else type(err).__name__


def _check_plain_tensor(t: torch.Tensor, what: str, finite: bool = False) -> None:
    """A tensor we can use as it is: dense and real (complex is refused, not cast); with `finite`
    (a weight, not a mask buffer such as VAR's -inf attention bias), free of NaN and inf."""
    if t.layout != torch.strided:
        raise UserError(f"{what} is a {str(t.layout).removeprefix('torch.')} tensor; only dense tensors are read")
    if t.is_quantized or t.is_complex():
        raise UserError(f"{what} has dtype {str(t.dtype).removeprefix('torch.')}; weights must be real "
                        "(float, int or bool), and are never cast")  # fmt: skip
    if finite and t.is_floating_point() and not bool(torch.isfinite(t).all()):
        raise UserError(f"{what} holds non-finite values (NaN or inf)")


def tensor(state: Mapping[str, torch.Tensor], key: str, source: str, ndim: int | None = None,
           integral: bool = False, min_shape: tuple[int, ...] | None = None) -> torch.Tensor:
    """`state[key]` checked for what an importer reads from it: present, with `ndim` dimensions,
    an integer dtype when `integral`, and each dimension at least `min_shape`'s; else a `UserError`
    naming the key (a malformed file is bad input, not an IndexError)."""
    if key not in state:
        raise UserError(f"{source}: missing key {key!r}")
    t = state[key]
    if ndim is not None and t.ndim != ndim:
        raise UserError(f"{source}: {key} has shape {tuple(t.shape)} ({t.ndim}-D); expected a {ndim}-D tensor")
    if integral and (t.is_floating_point() or t.is_complex() or t.dtype == torch.bool):
        raise UserError(f"{source}: {key} has dtype {str(t.dtype).removeprefix('torch.')}; expected integers")
    if min_shape is not None and any(n < m for n, m in zip(t.shape, min_shape)):
        raise UserError(f"{source}: {key} has shape {tuple(t.shape)}; each dimension must be at least {min_shape}")
    return t


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
        _check_plain_tensor(src, f"{source}: {off}", finite=True)
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
