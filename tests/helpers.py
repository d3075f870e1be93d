"""Kept for tests written before `genorder.testing` existed: the stubs and helpers live there now."""

from genorder.testing.stubs import (  # noqa: F401
    CallRecorder,
    TinyCodebookTokenizer,
    TinyLatentTokenizer,
    masked_ce,
    one_thread,
    tiny_backbone,
    tokenizer_for,
    train_steps,
)
