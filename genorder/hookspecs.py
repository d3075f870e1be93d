"""The plugin hooks. A plugin is a module with `@genorder.hookimpl` functions, listed under the
`genorder` entry-point group of its package's pyproject::

    [project.entry-points.genorder]
    my_order = "my_package.my_order"

Each hook receives a `register(name, cls)` callable. `cls` is a component class with a nested (or
attribute) `Config` (a `genorder.config.ComponentConfig` subclass) and an `__init__(self, config)`.
"""

from __future__ import annotations

from collections.abc import Callable

import pluggy

hookspec = pluggy.HookspecMarker("genorder")

Register = Callable[[str, type], None]


@hookspec
def register_tokenizers(register: Register) -> None:
    """Register `genorder.tokenizer.Tokenizer` subclasses (and named presets of them)."""


@hookspec
def register_orders(register: Register) -> None:
    """Register `genorder.order.Order` subclasses."""


@hookspec
def register_samplers(register: Register) -> None:
    """Register `genorder.sampler.Sampler` subclasses."""


@hookspec
def register_datasets(register: Register) -> None:
    """Register `genorder.data.ImageDataset` factories; `name:ARG` datasets receive ARG."""


@hookspec
def register_importers(register: Register) -> None:
    """Register `genorder.importers.Importer` subclasses (foreign checkpoints -> a run directory)."""
