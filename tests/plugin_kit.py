"""Register a plugin module in the process-wide registries for one test, the way an installed entry
point would be (no `pip install`): the built-in entry points, then the module, under `name`."""

from __future__ import annotations

import types

import genorder.registry as R


def register_plugin(monkeypatch, module: types.ModuleType, name: str) -> None:
    pm = R.make_plugin_manager(load_entrypoints=False)
    problems: list = []
    builtin = R.load_entry_points(pm, problems)
    pm.register(module, name=name)
    regs = R.collect(pm, problems, builtin)

    def default():
        return regs, tuple(problems), frozenset(builtin)

    default.cache_clear = lambda: None
    monkeypatch.setattr(R, "_default", default)


def failed_checks(target: str) -> list[str]:
    """`genorder check TARGET`'s failures (each "check: message"), after asserting some checks ran."""
    from genorder.testing.contracts import run_checks

    results = run_checks(target)
    assert results and sum(r.status == "passed" for r in results) >= 5, [(r.check, r.status) for r in results]
    return [f"{r.check}: {r.message}" for r in results if r.status == "failed"]
