"""genorder: train and compare image generation orders behind one set of interfaces.

Public API for plugin authors: `hookimpl`, `Tokenizer`, `Order`, `Stem`, `TrainBatch`, `Sampler`,
`TokenLayout`, `ComponentConfig`, `UserError`.
"""

import pluggy

hookimpl = pluggy.HookimplMarker("genorder")

__version__ = "0.1.0"

from genorder.config import ComponentConfig  # noqa: E402
from genorder.errors import UserError  # noqa: E402
from genorder.layout import TokenLayout  # noqa: E402
from genorder.order import Order, Stem, TrainBatch  # noqa: E402
from genorder.sampler import Sampler, StandardSampler  # noqa: E402
from genorder.tokenizer import Tokenizer  # noqa: E402

__all__ = [
    "ComponentConfig",
    "Order",
    "Sampler",
    "StandardSampler",
    "Stem",
    "TokenLayout",
    "Tokenizer",
    "TrainBatch",
    "UserError",
    "hookimpl",
]
