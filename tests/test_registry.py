"""The one registry mechanism behind metrics, attacks and datasets."""

from __future__ import annotations

import pytest

from iqa_robustness.registry import Registry, split_commas


class UnknownThing(ValueError):
    pass


@pytest.fixture
def things() -> Registry[int]:
    registry: Registry[int] = Registry(
        "thing", error=UnknownThing, normalise=lambda n: n.strip().lower().replace("_", "-")
    )
    registry.register("nima-koniq", 1, aliases=("nima_k",))
    registry.register("nima", 2)
    registry.register("niqe", 3)
    return registry


def test_names_are_found_through_the_key_rule_and_aliases(things):
    assert things["NIMA_KONIQ"] == 1
    assert things["nima_k"] == 1
    assert "Niqe" in things
    assert things.names() == ["nima", "nima-koniq", "niqe"]


def test_a_typo_raises_the_registry_error_with_close_matches(things):
    with pytest.raises(UnknownThing, match=r"unknown thing 'nqie'; did you mean 'niqe'"):
        things.canonical("nqie")


def test_selection_expands_all_globs_and_comma_lists_once_each(things):
    assert things.select("all") == ["nima", "nima-koniq", "niqe"]
    assert things.select("nima*, niqe") == ["nima", "nima-koniq", "niqe"]
    assert things.select(["niqe", "NIQE"]) == ["niqe"]
    assert things.select("zzz*") == []


def test_a_missing_name_can_be_resolved_on_demand():
    registry: Registry[str] = Registry("thing", resolve_missing=lambda name: bool(registry.register(name, "late")))
    assert registry["made-up"] == "late"


def test_replace_false_refuses_a_taken_name(things):
    with pytest.raises(ValueError, match="already registered"):
        things.register("niqe", 4, replace=False)
    things.unregister("nima_k")
    assert "nima-koniq" not in things
    assert "nima_k" not in things


def test_commas_inside_parentheses_stay_with_their_item():
    assert split_commas("ifgsm(eps=4/255,iters=20), uap ,,mifgsm") == ["ifgsm(eps=4/255,iters=20)", "uap", "mifgsm"]
