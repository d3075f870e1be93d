"""Regimes: an experiment's sizes, budgets and per-order learning rates, as a TOML file.

A regime is what an experiment's numbers depend on apart from the components: backbone size, budget,
batch, schedule, tokenizer budgets, evaluation sizes, and the peak learning rate each order was
found best at (the sweep that found it is a comment beside it). Two ship with the package
(`genorder/regimes/cpu.toml`, `gpu.toml`); any other TOML file of the same shape is one too.

    >>> r = load_regime("cpu", overrides=["train.steps=2000", "lr.orders.raster=8e-3"])
    >>> r.train.steps, r.lr_for("raster")
    (2000, (0.008, 'regime'))

Results of a sweep belong here, not on a component: an order the regime has no rate for gets
`lr.default` (`lr_for` says so, and callers print a notice suggesting --tune-lr).
"""

from __future__ import annotations

from importlib import resources
from pathlib import Path
from typing import Any, Literal

import tomllib
from pydantic import BaseModel, ConfigDict, Field, ValidationError

from genorder.config import format_validation_error
from genorder.config import nest_overrides  # noqa: F401 - re-exported (compare imports it from here)
from genorder.errors import UserError

BUILTIN = ("cpu", "gpu")


class _Section(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class BackboneRegime(_Section):
    depth: int = Field(gt=0)
    width_per_depth: int = Field(ge=0)  # 0: the backbone's own width


class TrainRegime(_Section):
    steps: int = Field(gt=0)
    batch_size: int = Field(gt=0)
    schedule: Literal["wsd", "lin0"]
    cooldown: float = Field(gt=0, lt=1)
    seeds: list[int] = Field(min_length=1)
    threads: int = Field(ge=0)  # 0: torch's default


class TokenizerRegime(_Section):
    steps: int = Field(gt=0)
    batch_size: int = Field(gt=0)
    lr: float = Field(gt=0, allow_inf_nan=False)
    presets: dict[str, str] = {}  # order kind -> preset; empty: the kind's declared default


class EvaluationRegime(_Section):
    points: int = Field(ge=1)
    n: int = Field(ge=2)  # paired-design samples per seed at every point but the last (class accuracy)
    final_n: int | None = Field(None, ge=2)  # ... at the last point (class accuracy, classifier FD); None: n
    fid_n: int | None = Field(None, ge=2)  # samples of the Inception FID and its floor; None: n
    boot_reps: int = Field(200, ge=2)  # bootstrap resamples of the classifier-feature FD's intervals
    ref_n: int = Field(ge=2)
    heldout_n: int = Field(ge=1)
    fid_points: Literal["all", "last"]

    @property
    def last_n(self) -> int:
        return self.final_n if self.final_n is not None else self.n

    @property
    def inception_n(self) -> int:
        return self.fid_n if self.fid_n is not None else self.n


class LRRegime(_Section):
    default: float = Field(gt=0, allow_inf_nan=False)
    tune: list[float] = Field(min_length=1)
    orders: dict[str, float] = {}


class Regime(_Section):
    name: str
    backbone: BackboneRegime
    train: TrainRegime
    tokenizer: TokenizerRegime
    evaluation: EvaluationRegime
    lr: LRRegime
    source: str = ""  # where it was read from (not a setting)

    def lr_for(self, order: str) -> tuple[float, str]:
        """(peak lr, "regime" or "default"): the rate the regime records for `order`, else its default."""
        if order in self.lr.orders:
            return self.lr.orders[order], "regime"
        return self.lr.default, "default"

    def width(self, depth: int) -> int | None:
        return self.backbone.width_per_depth * depth if self.backbone.width_per_depth else None

    def resolved(self) -> dict[str, Any]:
        """The regime as plain data (written into results files)."""
        return self.model_dump(exclude={"source"})


def regime_path(spec: str | Path) -> Path | None:
    """The file of a built-in regime name, or None when `spec` is not one."""
    if str(spec) in BUILTIN:
        return Path(str(resources.files("genorder") / "regimes" / f"{spec}.toml"))
    return None


def _set_key(data: dict[str, Any], item: str) -> None:
    if "=" not in item:
        raise UserError(f"--set expects key.path=value, got {item!r}")
    key, raw = item.split("=", 1)
    parts = [p.strip().strip('"') for p in key.split(".")]
    if not all(parts):
        raise UserError(f"--set: bad key {key!r}")
    try:
        value = tomllib.loads(f"v = {raw}")["v"]
    except tomllib.TOMLDecodeError:
        value = raw
    node = data
    for p in parts[:-1]:
        nxt = node.get(p)
        if not isinstance(nxt, dict):
            if nxt is not None:
                raise UserError(f"--set {key}: {p!r} is not a table")
            nxt = node[p] = {}
        node = nxt
    node[parts[-1]] = value


def load_regime(spec: str | Path = "cpu", overrides: list[str] | None = None) -> Regime:
    """Read a regime (a built-in name or a TOML path) and apply `overrides` ("a.b=value", values as
    TOML). Every problem is one `UserError`."""
    path = regime_path(spec) or Path(spec)
    if not path.is_file():
        raise UserError(f"--regime {spec}: not a built-in regime ({', '.join(BUILTIN)}) nor a file")
    try:
        data = tomllib.loads(path.read_text())
    except (tomllib.TOMLDecodeError, UnicodeDecodeError) as err:
        raise UserError(f"--regime {path}: invalid TOML: {err}") from None
    for item in overrides or []:
        _set_key(data, item)
    try:
        return Regime.model_validate({**data, "source": str(spec)})
    except ValidationError as err:
        raise UserError(format_validation_error(err, "regime ")) from None


def default_regime_name(device_type: str) -> str:
    return "gpu" if device_type == "cuda" else "cpu"


def tokenizer_regime(device: str | None = None) -> TokenizerRegime:
    """The tokenizer budget, lr and batch of the default regime for `device` (None: auto): what
    `train-tokenizer`, `train` and `compare` train a tokenizer preset with when nothing is given."""
    from genorder.trainer import resolve_device

    return load_regime(default_regime_name(resolve_device(device or "auto").type)).tokenizer


# -- `--set`: regime keys and component keys ---------------------------------------------------------
# The rule: a key the regime file defines sets the regime: every key of [lr] and [evaluation], and
# backbone.depth, backbone.width_per_depth, train.steps, train.batch_size, train.schedule,
# train.cooldown, train.seeds, train.threads, tokenizer.steps, tokenizer.batch_size, tokenizer.lr,
# tokenizer.presets.*. Any other key under [order] [backbone] [train] [sampler] [tokenizer] is passed
# to the component it names (e.g. backbone.width, backbone.adaln, train.warmup, tokenizer.vocab_size).
_REGIME_ONLY = ("lr", "evaluation")
_SHARED = {"backbone": BackboneRegime, "train": TrainRegime, "tokenizer": TokenizerRegime}


def is_regime_key(key: str) -> bool:
    """Whether `--set key=...` sets the regime (see the rule above) rather than a component."""
    parts = [p.strip().strip('"') for p in key.split(".")]
    if parts[0] in _REGIME_ONLY or parts == ["name"]:
        return True
    cls = _SHARED.get(parts[0])
    return cls is not None and len(parts) > 1 and parts[1] in cls.model_fields


def split_overrides(items: list[str]) -> tuple[list[str], list[str]]:
    """`--set` items split into (regime overrides, component overrides) by `is_regime_key`."""
    regime, component = [], []
    for item in items:
        if "=" not in item:
            raise UserError(f"--set expects key.path=value, got {item!r}")
        (regime if is_regime_key(item.split("=", 1)[0]) else component).append(item)
    return regime, component


def with_overrides(regime: Regime, overrides: list[str]) -> Regime:
    """`regime` with `overrides` ("a.b=value") applied, validated as a file would be."""
    data = regime.model_dump()
    for item in overrides:
        _set_key(data, item)
    try:
        return Regime.model_validate(data)
    except ValidationError as err:
        raise UserError(format_validation_error(err, "regime ")) from None
