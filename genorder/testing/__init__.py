"""Test kit for plugin authors: the contracts, the equivalence checks and the stub tokenizers.

Run every check against an installed plugin (a component name, or a plugin's entry-point, module
or distribution name) either way:

    genorder check my-order
    pytest --pyargs genorder.testing --genorder-plugin my-order     # or GENORDER_PLUGIN=my-order

With no name, every registered component is checked. What each check asserts is in
`genorder.testing.contracts` and docs/PLUGINS.md. For your own tests:

    from genorder.testing import TinyCodebookTokenizer, tiny_backbone, tokenizer_for, run_checks
"""

from genorder.testing.contracts import CHECKS, NotApplicable, Result, run_checks, select
from genorder.testing.stubs import (
    CallRecorder,
    TinyCodebookTokenizer,
    TinyLatentTokenizer,
    masked_ce,
    one_thread,
    tensor_dataset,
    tiny_backbone,
    tokenizer_for,
    train_steps,
)

__all__ = [
    "CHECKS",
    "CallRecorder",
    "NotApplicable",
    "Result",
    "TinyCodebookTokenizer",
    "TinyLatentTokenizer",
    "masked_ce",
    "one_thread",
    "run_checks",
    "select",
    "tensor_dataset",
    "tiny_backbone",
    "tokenizer_for",
    "train_steps",
]
