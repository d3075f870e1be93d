"""The plugin manager and registries, with test plugins registered by hand (no entry points)."""

from __future__ import annotations

import types

import pytest
from pydantic import Field

from genorder import hookimpl
from genorder.config import ComponentConfig
from genorder.errors import UserError
from genorder.registry import KINDS, Registry, collect, make_plugin_manager, registry


class WidgetConfig(ComponentConfig):
    size: int = Field(default=3, gt=0)


class Widget:
    """A stand-in component."""

    Config = WidgetConfig

    def __init__(self, config: WidgetConfig, extra: str = "") -> None:
        self.config = config
        self.extra = extra


class OtherWidget(Widget):
    """Another stand-in."""


def plugin_module(name: str, **hooks) -> types.ModuleType:
    """A module object whose attributes are the given hook implementations."""
    module = types.ModuleType(name)
    for hook_name, fn in hooks.items():
        setattr(module, hook_name, hookimpl(fn))
    return module


def orders_plugin(name: str, *entries: tuple[str, type]) -> types.ModuleType:
    def register_orders(register):
        for entry_name, cls in entries:
            register(entry_name, cls)

    return plugin_module(name, register_orders=register_orders)


def manager(*plugins: types.ModuleType):
    pm = make_plugin_manager(load_entrypoints=False)
    for p in plugins:
        pm.register(p, name=p.__name__)
    return pm


def test_collect_builds_every_kind():
    def register_datasets(register):
        register("toy", Widget)

    pm = manager(
        orders_plugin("plugin_a", ("alpha", Widget), ("beta", OtherWidget)),
        plugin_module("plugin_b", register_datasets=register_datasets),
    )
    regs = collect(pm)
    assert set(regs) == set(KINDS)
    assert regs["orders"].names() == ["alpha", "beta"]
    assert regs["orders"].names("b*") == ["beta"]
    assert regs["datasets"].names() == ["toy"]
    assert regs["tokenizers"].names() == [] and regs["samplers"].names() == []
    assert regs["orders"].entries["beta"].plugin == "plugin_a"
    assert regs["datasets"].entries["toy"].plugin == "plugin_b"
    assert regs["orders"].get("beta") is OtherWidget
    assert regs["orders"].config_class("alpha") is WidgetConfig


def test_no_plugins_no_components():
    regs = collect(make_plugin_manager(load_entrypoints=False))
    assert all(reg.names() == [] for reg in regs.values())


def test_duplicate_name_names_both_plugins():
    pm = manager(
        orders_plugin("plugin_a", ("alpha", Widget)),
        orders_plugin("plugin_b", ("alpha", OtherWidget)),
    )
    with pytest.raises(UserError, match="duplicate order name 'alpha'") as info:
        collect(pm)
    assert "plugin_a" in str(info.value) and "plugin_b" in str(info.value)


def test_problems_are_collected_not_raised():
    """With a problems list: a hook that raises is `broken` (none of its names kept), a taken name
    is a `collision` (the built-in keeps it, even when the plugin registered first)."""

    def register_orders(register):
        register("half", Widget)
        raise RuntimeError("boom")

    pm = manager(
        orders_plugin("third_party", ("alpha", OtherWidget), ("gamma", OtherWidget)),
        orders_plugin("builtin", ("alpha", Widget)),
        plugin_module("crashing", register_orders=register_orders),
    )
    problems: list = []
    regs = collect(pm, problems, builtin={"builtin"})
    assert regs["orders"].get("alpha") is Widget and regs["orders"].entries["alpha"].plugin == "builtin"
    assert regs["orders"].get("gamma") is OtherWidget and "half" not in regs["orders"].names()
    by = {p.plugin: p for p in problems}
    assert set(by) == {"third_party", "crashing"}
    assert by["third_party"].status == "collision" and "'alpha' is already registered by builtin" in by["third_party"].error
    assert by["crashing"].status == "broken" and "RuntimeError: boom" in by["crashing"].error


def test_unknown_name_lists_available():
    regs = collect(manager(orders_plugin("plugin_a", ("alpha", Widget), ("beta", OtherWidget))))
    with pytest.raises(UserError, match=r"unknown order 'gamma'; available: alpha, beta"):
        regs["orders"].get("gamma")
    with pytest.raises(UserError, match=r"available: \(none\)"):
        regs["samplers"].create("x")


def test_create_validates_config_and_passes_kwargs():
    regs = collect(manager(orders_plugin("plugin_a", ("alpha", Widget))))
    widget = regs["orders"].create("alpha", {"size": 5}, extra="hi")
    assert isinstance(widget, Widget) and widget.config.size == 5 and widget.extra == "hi"
    assert regs["orders"].create("alpha").config.size == 3
    assert regs["orders"].create("alpha", {"size": None}).config.size == 3  # None = unset
    with pytest.raises(UserError, match=r"^order\.size: "):
        regs["orders"].create("alpha", {"size": -1})
    with pytest.raises(UserError, match=r"order\.colour: Extra inputs"):
        regs["orders"].create("alpha", {"colour": "red"})


def test_registry_add_directly():
    reg = Registry("samplers")
    reg.add("s", Widget, "mine")
    with pytest.raises(UserError, match="registered by mine and by yours"):
        reg.add("s", OtherWidget, "yours")


def test_default_registry_has_builtin_datasets():
    assert {"fashion-mnist", "imagefolder", "npz", "shapes"} <= set(registry("datasets").names())
    assert registry("datasets").entries["shapes"].plugin == "builtin_data"
    with pytest.raises(ValueError):
        registry("widgets")
