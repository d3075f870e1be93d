"""genorder-spiral: a complete third-party order plugin (docs/PLUGINS.md walks through it).

Registers the order `spiral` (centre-out spiral autoregression over a single-scale token map) and
the trainable tokenizer `palette` (a learned colour palette over a pooled grid). Everything used
comes from genorder's public API (`import genorder`)."""

from genorder import hookimpl

from .order import Spiral
from .palette import PaletteTokenizer


@hookimpl
def register_orders(register):
    register("spiral", Spiral)


@hookimpl
def register_tokenizers(register):
    register("palette", PaletteTokenizer)


__all__ = ["PaletteTokenizer", "Spiral"]
