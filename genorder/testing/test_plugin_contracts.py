"""The contracts and equivalence checks of `genorder.testing.contracts`, one pytest item per
(component, check); the selection comes from `--genorder-plugin NAME` or $GENORDER_PLUGIN."""

from __future__ import annotations

import pytest

from genorder.testing.contracts import CHECKS, NotApplicable
from genorder.testing.stubs import one_thread


def test_contract(genorder_check):
    kind, name, check = genorder_check
    try:
        with one_thread():
            CHECKS[kind][check](name)
    except NotApplicable as err:
        pytest.skip(f"not applicable: {err}")
