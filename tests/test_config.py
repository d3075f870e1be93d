"""Config validation: `section.field: message` errors, extra keys, TOML files, --set overrides."""

from __future__ import annotations

from typing import Literal

import pytest
from pydantic import Field, ValidationError

from genorder.config import ComponentConfig, build_config, load_toml, parse_overrides, prune_none
from genorder.errors import UserError


class Backbone(ComponentConfig):
    depth: int = Field(default=4, gt=0)
    width: int = 64
    norm: Literal["ln", "rms"] = "ln"


def test_defaults_and_layers_merge_left_to_right():
    cfg = build_config(Backbone, {"depth": 2, "width": 32}, {"width": 16}, None, section="backbone")
    assert (cfg.depth, cfg.width, cfg.norm) == (2, 16, "ln")
    assert build_config(Backbone) == Backbone()


def test_none_never_overrides():
    cfg = build_config(Backbone, {"depth": 3}, {"depth": None, "width": None})
    assert cfg.depth == 3 and cfg.width == 64
    assert prune_none({"a": None, "b": 0, "c": False}) == {"b": 0, "c": False}


def test_errors_are_section_field_lines():
    with pytest.raises(UserError) as info:
        build_config(Backbone, {"depth": 0, "norm": "bn"}, section="backbone")
    lines = str(info.value).splitlines()
    assert len(lines) == 2
    assert lines[0].startswith("backbone.depth: ") and "greater than 0" in lines[0]
    assert lines[1].startswith("backbone.norm: ")
    assert info.value.__cause__ is None  # no pydantic traceback chained for users


def test_error_without_section():
    with pytest.raises(UserError, match=r"^width: "):
        build_config(Backbone, {"width": "wide"})


def test_extra_keys_rejected():
    with pytest.raises(UserError, match=r"backbone\.dept: Extra inputs are not permitted"):
        build_config(Backbone, {"dept": 3}, section="backbone")


def test_configs_are_frozen():
    cfg = Backbone()
    with pytest.raises(ValidationError):
        cfg.depth = 9  # type: ignore[misc]


def test_load_toml(tmp_path):
    path = tmp_path / "run.toml"
    path.write_text('[tokenizer]\nname = "msvq-fmnist"\n[backbone]\ndepth = 8\nwidths = [1, 2]\n')
    data = load_toml(path)
    assert data == {
        "tokenizer": {"name": "msvq-fmnist"},
        "backbone": {"depth": 8, "widths": [1, 2]},
    }
    assert load_toml(str(path)) == data


def test_load_toml_errors(tmp_path):
    with pytest.raises(UserError, match="config file not found"):
        load_toml(tmp_path / "missing.toml")
    bad = tmp_path / "bad.toml"
    bad.write_text("[backbone\ndepth = ")
    with pytest.raises(UserError, match="invalid TOML"):
        load_toml(bad)


def test_parse_overrides():
    items = ["backbone.depth=8", "sampler.cfg=1.5", "order.name=raster", "sampler.top_k=[1, 2]"]
    out = parse_overrides([*items, "a.flag=true", 'a.s="quoted"', "a.expr=x=y"])
    assert out["backbone"] == {"depth": 8}
    assert out["sampler"] == {"cfg": 1.5, "top_k": [1, 2]}
    assert out["order"] == {"name": "raster"}  # a bare word stays a string
    assert out["a"] == {"flag": True, "s": "quoted", "expr": "x=y"}
    assert parse_overrides(None) == {} and parse_overrides([]) == {}


def test_parse_overrides_feeds_build_config():
    over = parse_overrides(["backbone.depth=2"])
    assert build_config(Backbone, {"depth": 6}, over["backbone"]).depth == 2


@pytest.mark.parametrize("item", ["depth=3", "backbone.depth", "noequals"])
def test_parse_overrides_errors(item):
    with pytest.raises(UserError, match="section.key=value"):
        parse_overrides([item])


def test_one_nesting_for_the_cli_layers_and_the_regime_overrides():
    """`--set` keys are nested by one function (genorder.config.nest_keys) whether they go to a
    command's config layers or to compare's component sections."""
    from genorder.config import nest_keys, nest_overrides, parse_overrides
    from genorder.errors import UserError

    parsed = parse_overrides(["train.budget.steps=5", "train.lr=0.1", "backbone.width=64"])
    assert nest_overrides(parsed) == {"train": {"budget": {"steps": 5}, "lr": 0.1}, "backbone": {"width": 64}}
    assert nest_overrides(parsed)["train"] == nest_keys(parsed["train"], "train")
    with pytest.raises(UserError, match=r"--set: train\.budget\.\.steps has an empty part"):
        nest_keys({"budget..steps": 1}, "train")
    with pytest.raises(UserError, match=r"--set: train\.budget conflicts with another value"):
        nest_keys({"budget.steps": 1, "budget": 2}, "train")
