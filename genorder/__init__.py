"""genorder: train and compare image generation orders behind one set of interfaces.

Public API for plugin authors (everything an order, tokenizer, sampler or dataset plugin needs;
docs/PLUGINS.md walks through a complete order):

* registering: `hookimpl` (decorate `register_orders(register)` etc.), `ComponentConfig` (the
  pydantic base of every component's nested `Config`, extra="forbid"), `UserError`;
* interfaces: `Order`, `Stem`, `TrainBatch`, `IGNORE`, `Progress`, `Tokenizer`,
  `TrainableTokenizer` with its `TokenizerTrainConfig`, `DefaultFor` (a preset's declared default
  shape), `Sampler`, `StandardSampler`;
* layouts and attention patterns: `TokenLayout`, `causal_groups`, `block_causal_groups`,
  `bidirectional_groups`;
* the backbone an order runs: `GenModel` (its `new_cache`, `forward(inputs, labels, start, cache)`,
  `null_class`), `KVCache`, `BackboneConfig`, `build_model`, and the initialisation helper
  `init_std` (VAR's sqrt(1 / 3C), for a stem's `reset_parameters`);
* generation helpers: `inference` (eval mode + inference_mode around `generate`), `cfg_labels`,
  `double`, `sample_step`, `make_generator`;
* `genorder.testing`: the contracts and equivalence checks a plugin must pass
  (`genorder check NAME`, `pytest --pyargs genorder.testing --genorder-plugin NAME`).
"""

import pluggy

hookimpl = pluggy.HookimplMarker("genorder")

__version__ = "0.1.0"

from genorder.attention import KVCache  # noqa: E402
from genorder.config import ComponentConfig  # noqa: E402
from genorder.errors import UserError  # noqa: E402
from genorder.generation import cfg_labels, double, inference, make_generator, sample_step  # noqa: E402
from genorder.layout import TokenLayout, bidirectional_groups, block_causal_groups, causal_groups  # noqa: E402
from genorder.model import BackboneConfig, GenModel, build_model, init_std  # noqa: E402
from genorder.order import IGNORE, Order, Progress, Stem, TrainBatch  # noqa: E402
from genorder.sampler import Sampler, StandardSampler  # noqa: E402
from genorder.tokenizer import DefaultFor, Tokenizer, TokenizerTrainConfig, TrainableTokenizer  # noqa: E402

__all__ = [
    "IGNORE",
    "BackboneConfig",
    "ComponentConfig",
    "DefaultFor",
    "GenModel",
    "KVCache",
    "Order",
    "Progress",
    "Sampler",
    "StandardSampler",
    "Stem",
    "TokenLayout",
    "Tokenizer",
    "TokenizerTrainConfig",
    "TrainBatch",
    "TrainableTokenizer",
    "UserError",
    "bidirectional_groups",
    "block_causal_groups",
    "build_model",
    "causal_groups",
    "cfg_labels",
    "double",
    "hookimpl",
    "inference",
    "init_std",
    "make_generator",
    "sample_step",
]
