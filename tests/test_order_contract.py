"""Contract and equivalence checks (`genorder.testing.contracts`) run against every registered order,
built-in or third-party, with the smallest stub tokenizer that serves it (by `tokenizer_kind`):
build_model, teacher forcing to a finite loss with finite gradients, a seeded `generate` that returns
token maps of the layout's shapes in `num_steps` backbone calls, cached = uncached tokens for orders
declaring a KV-cache option, the bench's static and compiled step paths keeping the tokens, and the
counted FLOPs against FlopCounterMode with masks accounted."""

from __future__ import annotations

import pytest
import torch

from genorder.registry import registry
from genorder.testing import NotApplicable, TinyCodebookTokenizer, one_thread, tiny_backbone
from genorder.testing.contracts import ORDER_CHECKS, order_build

ORDERS = registry("orders").names()


def test_builtin_orders_are_registered():
    assert {"next-scale", "raster", "maskgit"} <= set(ORDERS)


@pytest.mark.parametrize("check", list(ORDER_CHECKS))
@pytest.mark.parametrize("name", ORDERS)
def test_order_contract(name, check):
    try:
        with one_thread():
            ORDER_CHECKS[check](name)
    except NotApplicable as err:
        pytest.skip(f"not applicable: {err}")


def test_capabilities_are_declared_not_named():
    """Bench and FLOP counting read `uses_kv_cache`, which follows the declared option."""
    for name in ORDERS:
        cls = registry("orders").get(name)
        if cls.kv_cache_option is None:
            assert registry("orders").create(name).uses_kv_cache is False
        else:
            assert registry("orders").create(name, {cls.kv_cache_option: True}).uses_kv_cache
            assert not registry("orders").create(name, {cls.kv_cache_option: False}).uses_kv_cache


def test_a_broken_order_fails_its_checks(monkeypatch):
    """The checks can fail: a stem whose no_decay names a missing table, and an order whose generate
    makes one backbone call too many, are both caught."""
    from genorder_plugins.raster.order import Raster
    from genorder_plugins.raster.stem import RasterStem

    monkeypatch.setattr(RasterStem, "no_decay", ("pos_1LC", "no_such_table"))
    with pytest.raises(AssertionError, match="no_such_table"):
        order_build("raster")
    monkeypatch.undo()

    original = Raster.num_steps
    monkeypatch.setattr(Raster, "num_steps", lambda self, layout: original(self, layout) + 1)
    with pytest.raises(AssertionError, match="num_steps"):
        ORDER_CHECKS["generate"]("raster")


def test_stub_tokenizer_serves_a_model():
    from genorder.model import build_model

    order = registry("orders").create("maskgit", {"steps": 2})
    model = build_model(order, TinyCodebookTokenizer((4,), 16), tiny_backbone(), 3)
    assert model.seq_len == 17 and isinstance(model.stem.no_decay, tuple)
    assert torch.isfinite(next(model.parameters())).all()
