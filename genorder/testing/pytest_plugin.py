"""The pytest plugin behind `pytest --pyargs genorder.testing [--genorder-plugin NAME]`: the option
naming what to check, and the parametrisation of `genorder_check` over (kind, component, check).
Registered through the `pytest11` entry point of the genorder distribution."""

from __future__ import annotations

import os


def pytest_addoption(parser):
    parser.addoption(
        "--genorder-plugin", default=None,
        help="component or plugin to check (default $GENORDER_PLUGIN, else every registered component)",
    )  # fmt: skip


def pytest_generate_tests(metafunc):
    if "genorder_check" not in metafunc.fixturenames:
        return
    from genorder.testing.contracts import CHECKS, select

    target = metafunc.config.getoption("--genorder-plugin", default=None) or os.environ.get("GENORDER_PLUGIN") or None
    cases = [(k, n, c) for k, n in select(target) for c in CHECKS[k]]
    metafunc.parametrize("genorder_check", cases, ids=[f"{k[:-1]}:{n}:{c}" for k, n, c in cases])
